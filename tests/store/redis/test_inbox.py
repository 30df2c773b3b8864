"""RedisInbox / RedisCursors against a real redis-server: windows, atomic cursor, fencing."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from tether import LeaseLost, StoreTypeError
from tether.store import Cursor, CursorStore, InboxStore
from tether.store.redis import RedisInbox

pytestmark = pytest.mark.system


@pytest.fixture
async def inbox(redis_server, prefix, clock):
    b = RedisInbox(redis_server.url, prefix=prefix, clock=clock, window_count=3, window_age=100)
    yield b
    await b.close()


async def test_satisfies_the_protocols(inbox):
    """RedisInbox is an InboxStore and its cursors a CursorStore."""
    assert isinstance(inbox, InboxStore) and isinstance(inbox.cursors, CursorStore)


async def test_mark_drops_duplicates_and_keeps_the_cursor(inbox):
    """A second mark of an id is False and does not move the cursor back."""
    assert await inbox.mark("s", "u1", cursor=Cursor(offset=2))
    assert await inbox.seen("s", "u1")
    assert not await inbox.mark("s", "u1", cursor=Cursor(offset=1))
    assert await inbox.cursors.get("s") == Cursor(offset=2)


async def test_window_is_bounded_by_count_and_age(inbox, clock, redis_server, prefix):
    """Ids older than window_age or beyond window_count are forgotten; the set stays bounded."""
    for i in range(5):
        await inbox.mark("s", f"u{i}")
    assert not await inbox.seen("s", "u0") and await inbox.seen("s", "u4")
    r = aioredis.Redis.from_url(redis_server.url)
    assert await r.zcard(f"{prefix}:in:{{s}}") == 3
    await r.aclose()
    await clock.advance(101)
    assert not await inbox.seen("s", "u4")
    assert await inbox.mark("s", "u4")


async def test_cursor_round_trip(inbox):
    """Cursors keep offset, seq and epoch exactly (an empty epoch too); unknown sessions are None."""
    assert await inbox.cursors.get("s") is None
    await inbox.cursors.set("s", Cursor(seq=7, epoch=""))
    assert await inbox.cursors.get("s") == Cursor(seq=7, epoch="")
    await inbox.cursors.set("s", Cursor(offset=9, epoch="abc"))
    assert await inbox.cursors.get("s") == Cursor(offset=9, epoch="abc")
    with pytest.raises(StoreTypeError):
        await inbox.cursors.set("s", {"offset": 1})  # type: ignore[arg-type]


async def test_fenced_mark_and_cursor_refused_after_takeover(inbox, redis_server, prefix):
    """With a fence, mark() and cursors.set() after the lease moved raise LeaseLost and write nothing."""
    r = aioredis.Redis.from_url(redis_server.url)
    await r.set(f"{prefix}:own:{{s}}", "n1:5")
    inbox.fence("s", "n1:5")
    assert await inbox.mark("s", "a", cursor=Cursor(offset=1))
    await r.set(f"{prefix}:own:{{s}}", "n2:6")
    with pytest.raises(LeaseLost):
        await inbox.mark("s", "b", cursor=Cursor(offset=2))
    with pytest.raises(LeaseLost):
        await inbox.cursors.set("s", Cursor(offset=3))
    assert not await inbox.seen("s", "b")
    assert await inbox.cursors.get("s") == Cursor(offset=1)
    await r.aclose()

"""RedisOutbox against a real redis-server: the OutboxStore contract, streams and fencing."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from tether import ConfigError, LeaseLost, StoreTypeError, StoreUnavailable
from tether.store import OutboxStore
from tether.store.redis import RedisOutbox

pytestmark = pytest.mark.system


@pytest.fixture
async def box(redis_server, prefix, clock):
    b = RedisOutbox(redis_server.url, prefix=prefix, clock=clock, consumer="n1", max_attempts=3)
    await b.open()
    yield b
    await b.close()


async def test_satisfies_the_protocol(box):
    """RedisOutbox is an OutboxStore (the service can swap it for the SQLite Outbox)."""
    assert isinstance(box, OutboxStore)


async def test_put_lease_ack_in_order(box):
    """Messages come back in put order with their type kept; ack removes them from the depth."""
    ids = [await box.put("s1", f"m{i}") for i in range(5)]
    await box.put("s1", b"\x00bin")
    got = await box.lease("s1", 10)
    assert [m.payload for m in got] == ["m0", "m1", "m2", "m3", "m4", b"\x00bin"]
    assert [m.id for m in got[:5]] == ids and all(m.status == "leased" for m in got)
    assert await box.depth("s1") == 6
    await box.ack([m.id for m in got])
    assert await box.depth("s1") == 0 and await box.depth() == 0
    assert await box.lease("s1", 10) == []


async def test_sessions_are_separate(box):
    """Each session has its own stream; depth() without a session sums them."""
    await box.put("a", "1")
    await box.put("b", "2")
    assert [m.payload for m in await box.lease("b", 5)] == ["2"]
    assert await box.depth() == 2


async def test_head_of_line_blocks_while_leased(box, clock):
    """While the head is leased nothing later is handed out; an expired lease counts one attempt."""
    await box.put("s", "first")
    [m] = await box.lease("s", 1, lease_for=5)
    await box.put("s", "second")
    assert await box.lease("s", 5) == []
    await clock.advance(6)
    again = await box.lease("s", 5)
    assert [x.payload for x in again] == ["first", "second"]
    assert again[0].attempts == 1 and again[0].last_error == "lease expired"


async def test_nack_delays_and_gives_back_the_run(box, clock):
    """nack(delay) holds the head back, returns the later leased ones too, and redelivers in order."""
    for p in "abc":
        await box.put("s", p)
    run = await box.lease("s", 3)
    await box.nack([run[0].id], delay=10, reason="503")
    assert await box.lease("s", 3) == []
    await clock.advance(11)
    again = await box.lease("s", 3)
    assert [m.payload for m in again] == ["a", "b", "c"]
    assert [m.attempts for m in again] == [1, 0, 0] and again[0].last_error == "503"


async def test_max_attempts_dead_letters_with_reason(box, clock):
    """After max_attempts nacks the message is a dead letter with the reason; the next one flows."""
    await box.put("s", "bad")
    await box.put("s", "good")
    for _ in range(3):
        [m] = await box.lease("s", 1)
        await box.nack([m.id], reason="boom")
    [dl] = await box.dead_letters("s")
    assert dl.payload == "bad" and dl.reason == "gave up after 3 attempts: boom" and dl.attempts == 3
    assert await box.dead_count() == 1
    assert [m.payload for m in await box.lease("s", 5)] == ["good"]
    assert [m.status for m in await box.messages("s")] == ["leased", "dead"]


async def test_ttl_expires_to_dead_letters(box, clock):
    """An undelivered message past its ttl becomes a dead letter 'expired' when a lease reaches it."""
    await box.put("s", "old", ttl=5)
    await box.put("s", "new")
    await clock.advance(6)
    assert [m.payload for m in await box.lease("s", 5)] == ["new"]
    assert [d.reason for d in await box.dead_letters()] == ["expired"]


async def test_idempotency_key_returns_first_id(box):
    """A repeated key returns the first id and stores nothing, also after delivery (retention)."""
    a = await box.put("s", "one", key="k1")
    assert await box.put("s", "two", key="k1") == a
    [m] = await box.lease("s", 5)
    assert m.payload == "one" and m.key == "k1"
    await box.ack([m.id])
    assert await box.put("s", "three", key="k1") == a
    assert await box.depth("s") == 0


async def test_ack_ignores_unknown_and_foreign_ids(box):
    """ack() of unknown, repeated or foreign ids changes nothing and does not raise."""
    mid = await box.put("s", "x")
    await box.ack(["nope", "s/1-1", "other/99-0"])
    assert await box.depth("s") == 1
    await box.ack([mid])
    await box.ack([mid])
    assert await box.depth("s") == 0


async def test_takeover_claims_a_dead_consumers_entries(redis_server, prefix, clock):
    """A new owner XAUTOCLAIMs the dead consumer's pending entries and leases them at once, in order."""
    dead = RedisOutbox(redis_server.url, prefix=prefix, clock=clock, consumer="dead")
    new = RedisOutbox(redis_server.url, prefix=prefix, clock=clock, consumer="new")
    try:
        for p in "xyz":
            await dead.put("s", p)
        await dead.lease("s", 2, lease_for=300)
        assert await new.lease("s", 5) == []  # still leased by the dead one
        assert await new.release_leases("s") == 2
        got = await new.lease("s", 5)
        assert [m.payload for m in got] == ["x", "y", "z"] and [m.attempts for m in got] == [0, 0, 0]
        r = aioredis.Redis.from_url(redis_server.url)
        pending = await r.xpending_range(f"{prefix}:ob:{{s}}", "g", "-", "+", 10)
        await r.aclose()
        assert {p["consumer"] for p in pending} == {b"new"}
    finally:
        await dead.close()
        await new.close()


async def test_fenced_writes_fail_after_the_lease_moved(box, redis_server, prefix):
    """With a fence set, a write after another node took the lease raises LeaseLost and changes nothing."""
    r = aioredis.Redis.from_url(redis_server.url)
    own = f"{prefix}:own:{{s}}"
    await r.set(own, "n1:1")
    box.fence("s", "n1:1")
    mid = await box.put("s", "m")
    [m] = await box.lease("s", 1)
    await r.set(own, "n2:2")  # another node took over
    with pytest.raises(LeaseLost):
        await box.ack([m.id])
    with pytest.raises(LeaseLost):
        await box.lease("s", 1)
    assert await box.depth("s") == 1
    await box.put("s", "queued by a non-owner")  # queueing is never fenced: any node accepts sends
    assert await box.depth("s") == 2
    box.fence("s", None)
    await box.ack([mid])
    await box.ack([(await box.lease("s", 1))[0].id])
    assert await box.depth("s") == 0
    await r.aclose()


async def test_bad_arguments_are_typed_errors(box):
    """Wrong types raise StoreTypeError and bad values ConfigError, before touching Redis."""
    with pytest.raises(StoreTypeError):
        await box.put("s", {"a": 1})  # type: ignore[arg-type]
    with pytest.raises(StoreTypeError):
        await box.ack("s/1-0")
    with pytest.raises(ConfigError):
        await box.lease("s", 0)
    with pytest.raises(ConfigError):
        RedisOutbox("http://nope")


async def test_unreachable_redis_is_store_unavailable_without_password(clock):
    """A dead Redis is StoreUnavailable naming the URL with the password masked."""
    port = __import__("tests.conftest", fromlist=["free_port"]).free_port()
    b = RedisOutbox(f"redis://:hunter2@127.0.0.1:{port}/0", clock=clock)
    with pytest.raises(StoreUnavailable) as ei:
        await b.put("s", "x")
    assert "hunter2" not in str(ei.value) and "***" in str(ei.value)
    await b.close()


async def test_nack_without_count_and_dead_letter_now(box, clock):
    """nack(count=False) keeps attempts (a server-mandated wait); dead_letter() moves a message at once."""
    await box.put("s", "a")
    await box.put("s", "b")
    for _ in range(5):
        [m, _b] = await box.lease("s", 2)
        await box.nack([m.id], 1.0, reason="429", count=False)
        await clock.advance(1.5)
    [m, b] = await box.lease("s", 2)
    assert m.attempts == 0
    assert await box.dead_letter([m.id], reason="undeliverable: 400") == 1
    assert [d.reason for d in await box.dead_letters("s")] == ["undeliverable: 400"]
    assert [x.payload for x in await box.lease("s", 2)] == [] and b.payload == "b"
    await box.ack([b.id])
    assert await box.depth("s") == 0


async def test_dead_letter_session_buries_every_undelivered_message(box):
    """dead_letter_session() moves pending and leased messages of one session (only) to the dead letters."""
    for i in range(3):
        await box.put("gone", f"g{i}")
    await box.put("kept", "k")
    await box.lease("gone", 1)
    assert await box.dead_letter_session("gone", reason="session deleted") == 3
    assert await box.depth("gone") == 0 and await box.depth("kept") == 1
    assert [(d.payload, d.reason) for d in await box.dead_letters("gone")] == \
        [("g0", "session deleted"), ("g1", "session deleted"), ("g2", "session deleted")]
    with pytest.raises(StoreTypeError):
        await box.dead_letter_session("gone", reason="")

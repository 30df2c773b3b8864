"""Inbox de-duplication windows, Cursors persistence, and mark+cursor atomicity."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

import tether
from tether.store import Cursor, CursorStore, Cursors, Inbox, InboxStore, Outbox


@pytest.fixture
async def inbox(tmp_path, clock):
    box = Inbox(tmp_path / "in.db", window_count=3, window_age=60, clock=clock)
    yield box
    await box.close()


async def test_mark_returns_false_for_duplicates(inbox):
    """The first mark is True, a repeat is False; sessions are separate."""
    assert isinstance(inbox, InboxStore) and isinstance(inbox.cursors, CursorStore)
    assert await inbox.mark("s", "1") is True
    assert await inbox.mark("s", "1") is False
    assert await inbox.seen("s", "1") is True
    assert await inbox.seen("s", "2") is False
    assert await inbox.mark("other", "1") is True


async def test_window_by_count_forgets_oldest(inbox):
    """Only the last window_count ids of a session are remembered."""
    for i in range(3):
        assert await inbox.mark("s", str(i))
    assert await inbox.seen("s", "0")
    assert await inbox.mark("s", "3")
    assert not await inbox.seen("s", "0")  # pushed out by the 4th id
    assert await inbox.seen("s", "1")
    assert await inbox.mark("s", "0") is True  # outside the window it is new again


async def test_window_by_age_forgets_old_ids(inbox, clock):
    """Ids older than window_age are forgotten, on the injected clock."""
    await inbox.mark("s", "a")
    await clock.advance(59)
    assert await inbox.mark("s", "a") is False
    await clock.advance(2)
    assert not await inbox.seen("s", "a")
    assert await inbox.mark("s", "a") is True


async def test_old_rows_are_deleted_in_bulk(tmp_path, clock):
    """Forgotten ids are physically deleted now and then, so the table stays bounded."""
    box = Inbox(tmp_path / "in.db", window_count=10, clock=clock)
    try:
        for i in range(100):
            await box.mark("s", str(i))
        con = sqlite3.connect(tmp_path / "in.db")
        rows = con.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
        con.close()
        assert rows <= 20
    finally:
        await box.close()


async def test_concurrent_marks_of_one_id_admit_exactly_one(inbox):
    """Racing marks of the same id (one batch) admit it exactly once."""
    res = await asyncio.gather(*(inbox.mark("s", "dup") for _ in range(10)))
    assert res.count(True) == 1


async def test_mark_writes_cursor_and_duplicate_does_not_move_it(inbox):
    """mark(cursor=) stores the cursor; a duplicate with an older cursor leaves it alone."""
    assert await inbox.mark("s", "10", cursor=Cursor(offset=11))
    assert await inbox.cursors.get("s") == Cursor(offset=11)
    assert not await inbox.mark("s", "10", cursor=Cursor(offset=3))
    assert await inbox.cursors.get("s") == Cursor(offset=11)


async def test_mark_and_cursor_are_atomic(tmp_path, clock, monkeypatch):
    """If the cursor write fails, the mark is not stored either (one transaction)."""
    from tether.store import _inbox

    box = Inbox(tmp_path / "in.db", clock=clock)
    try:
        assert await box.mark("s", "1", cursor=Cursor(offset=2))

        def broken(conn, session, cursor, now):
            raise sqlite3.OperationalError("simulated failure writing the cursor")

        monkeypatch.setattr(_inbox, "write_cursor", broken)
        with pytest.raises(tether.StoreError):
            await box.mark("s", "2", cursor=Cursor(offset=3))
        monkeypatch.undo()
        assert not await box.seen("s", "2")
        assert await box.cursors.get("s") == Cursor(offset=2)
        assert await box.mark("s", "2", cursor=Cursor(offset=3))  # retry works: nothing half-done
        assert await box.cursors.get("s") == Cursor(offset=3)
    finally:
        await box.close()


async def test_cursors_persist_across_reopen(tmp_path):
    """A set cursor is on disk: a new Cursors on the file reads it back."""
    cur = Cursors(tmp_path / "c.db")
    assert await cur.get("s") is None
    await cur.set("s", Cursor(offset=5, seq=7, epoch="e1"))
    await cur.set("s", Cursor(seq=8, epoch="e2"))
    await cur.close()
    cur = Cursors(tmp_path / "c.db")
    try:
        assert await cur.get("s") == Cursor(offset=None, seq=8, epoch="e2")
    finally:
        await cur.close()


async def test_stores_share_one_file_and_writer(tmp_path):
    """Outbox, Inbox and Cursors on one path share one writer thread; closing one keeps the others."""
    path = tmp_path / "all.db"
    out, inbox, cur = Outbox(path), Inbox(path), Cursors(path)
    try:
        assert out._db is inbox._db is cur._db
        await out.put("s", "x")
        await out.close()
        assert await inbox.mark("s", "1", cursor=Cursor(offset=1))
        assert await cur.get("s") == Cursor(offset=1)
    finally:
        await inbox.close()
        await cur.close()


def test_cursor_is_frozen_and_typed():
    """Cursor is a frozen dataclass that rejects wrong field types."""
    c = Cursor(offset=1)
    with pytest.raises(AttributeError):
        c.offset = 2  # type: ignore[misc]
    with pytest.raises(TypeError, match="offset must be an int"):
        Cursor(offset="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="epoch must be a str"):
        Cursor(epoch=1)  # type: ignore[arg-type]
    assert tether.Cursor is Cursor


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda b: b.mark("s", 5), TypeError, "message_id must be a str"),
        (lambda b: b.mark("s", ""), tether.ConfigError, "message_id"),
        (lambda b: b.mark("s", "1", cursor={"offset": 1}), TypeError, "cursor must be a tether.Cursor"),
        (lambda b: b.cursors.set("s", None), TypeError, "cursor must be"),
        (lambda b: b.seen(None, "1"), TypeError, "session must be a str"),
    ],
)
async def test_bad_arguments(inbox, call, exc, match):
    """Bad arguments raise typed errors that say what to pass."""
    with pytest.raises(exc, match=match):
        await call(inbox)


def test_bad_window_options(tmp_path):
    """Invalid windows raise ConfigError."""
    with pytest.raises(tether.ConfigError, match="window_count"):
        Inbox(tmp_path / "i.db", window_count=0)
    with pytest.raises(tether.ConfigError, match="window_age"):
        Inbox(tmp_path / "i.db", window_age=0)


async def test_closing_the_last_store_ends_the_writer_thread(tmp_path):
    """The writer thread lives while any store on the file is open and ends with the last close."""
    import threading

    path = tmp_path / "t.db"
    out, inbox = Outbox(path), Inbox(path)
    await out.put("s", "x")
    thread = out._db._thread
    await out.close()
    assert thread.is_alive()
    assert await inbox.mark("s", "1")
    await inbox.close()
    thread.join(5)
    assert not thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name == "tether-store:t.db"]

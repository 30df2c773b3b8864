"""A corrupt or locked database gives StoreUnavailable naming the file; nothing committed is lost."""

from __future__ import annotations

import sqlite3

import pytest

import tether
from tether.store import Cursor, Cursors, Inbox, Outbox


async def test_corrupt_file_names_the_file_and_the_fix(tmp_path):
    """A file that is not SQLite gives StoreUnavailable with the path and what to do."""
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not a database, just garbage " * 200)
    box = Outbox(path)
    try:
        with pytest.raises(tether.StoreUnavailable) as info:
            await box.put("s", "x")
        text = str(info.value)
        assert str(path) in text and "corrupt" in text and "move the file" in text
        assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
        with pytest.raises(tether.StoreUnavailable):  # every later call too, not a hang
            await box.depth()
    finally:
        await box.close()
    assert path.read_bytes().startswith(b"this is not")  # we never overwrite the user's file


async def test_corrupted_pages_give_store_unavailable(tmp_path):
    """Damage inside a real database file surfaces as StoreUnavailable, not sqlite3 errors."""
    path = tmp_path / "o.db"
    box = Outbox(path)
    for i in range(300):
        await box.put("s", "x" * 500)
    await box.close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(path.read_bytes())
    data[4096 * 2: 4096 * 6] = b"\xff" * (4096 * 4)  # smash table/index pages
    path.write_bytes(bytes(data))
    box = Outbox(path)
    try:
        with pytest.raises(tether.StoreUnavailable, match=str(path)):
            for _ in range(3):
                await box.lease("s", 300)
                await box.depth("s")
                await box.messages("s", limit=300)
    finally:
        await box.close()


async def test_locked_file_names_the_file_and_recovers_after_unlock(tmp_path):
    """A lock held by another process gives StoreUnavailable; once released, work resumes, nothing lost."""
    path = tmp_path / "o.db"
    box = Outbox(path, busy_timeout=0.1)
    committed = [await box.put("s", f"m{i}") for i in range(3)]
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(tether.StoreUnavailable) as info:
            await box.put("s", "blocked")
        assert str(path) in str(info.value) and "locked" in str(info.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    try:
        later = await box.put("s", "after")
        assert [m.id for m in await box.messages("s")] == committed + [later]
    finally:
        await box.close()


async def test_locked_at_open_then_usable(tmp_path):
    """A file locked when the store opens fails the first call, and opens on a later one."""
    path = tmp_path / "o.db"
    sqlite3.connect(path).close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    box = Outbox(path, busy_timeout=0.05)
    try:
        with pytest.raises(tether.StoreUnavailable, match="locked"):
            await box.open()
        other.execute("ROLLBACK")
        await box.open()
        assert await box.put("s", "x")
    finally:
        other.close()
        await box.close()


async def test_missing_directory_says_so(tmp_path):
    """A path in a directory that does not exist gives StoreUnavailable saying to check it."""
    path = tmp_path / "nope" / "o.db"
    cur = Cursors(path)
    try:
        with pytest.raises(tether.StoreUnavailable, match="directory exists"):
            await cur.set("s", Cursor(offset=1))
    finally:
        await cur.close()


async def test_newer_schema_is_refused(tmp_path):
    """A file written by a newer tether is not touched."""
    path = tmp_path / "o.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version=99")
    con.close()
    inbox = Inbox(path)
    try:
        with pytest.raises(tether.StoreUnavailable, match="newer tether"):
            await inbox.mark("s", "1")
    finally:
        await inbox.close()


async def test_a_failing_op_does_not_fail_its_batch(tmp_path, monkeypatch):
    """One op that crashes mid-batch is retried alone; the other ops of its batch still commit."""
    import asyncio

    from tether.store import _outbox

    real = _outbox._put

    def flaky(conn, state, session, payload, *rest):
        if payload == "boom":
            conn.execute("INSERT INTO outbox(session) VALUES ('x')")  # NOT NULL violation mid-write
        return real(conn, state, session, payload, *rest)

    monkeypatch.setattr(_outbox, "_put", flaky)
    box = Outbox(tmp_path / "o.db")
    try:
        res = await asyncio.gather(*(box.put("s", p) for p in ["a", "boom", "b"]), return_exceptions=True)
        assert isinstance(res[0], str) and isinstance(res[2], str)
        assert isinstance(res[1], tether.StoreError)
        assert [m.payload for m in await box.messages("s")] == ["a", "b"]
    finally:
        await box.close()

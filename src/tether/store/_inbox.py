"""Inbox (received-id de-duplication) and Cursors (resume positions) on SQLite.

Both live in the same file as the Outbox if given the same path, and share its writer thread.
``Inbox.mark(session, id, cursor=c)`` writes the mark and the cursor in one transaction, so after
any crash the stored cursor never points past a message that is not marked, nor the other way.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from .._clock import Clock, SYSTEM_CLOCK
from .._errors import ConfigError, StoreError, StoreTypeError
from . import _db
from ._outbox import _check_seconds, check_session
from ._types import Cursor

__all__ = ["Inbox", "Cursors"]


def _check_id(message_id: object) -> str:
    if not isinstance(message_id, str):
        raise StoreTypeError(f"message_id must be a str, got {type(message_id).__name__}; "
                        f"convert upstream ids with str()")
    if not message_id:
        raise ConfigError("message_id must be a non-empty string")
    return message_id


def _check_cursor(cursor: object, *, allow_none: bool) -> Cursor | None:
    if cursor is None and allow_none:
        return None
    if not isinstance(cursor, Cursor):
        raise StoreTypeError(f"cursor must be a tether.Cursor, got {type(cursor).__name__}")
    return cursor


def write_cursor(conn: sqlite3.Connection, session: str, cursor: Cursor, now: float) -> None:
    conn.execute('INSERT OR REPLACE INTO cursors(session, "offset", seq, epoch, updated_at) '
                 "VALUES (?, ?, ?, ?, ?)", (session, cursor.offset, cursor.seq, cursor.epoch, now))


def _get_cursor(conn: sqlite3.Connection, state: dict[str, Any], session: str) -> Cursor | None:
    row = conn.execute('SELECT "offset", seq, epoch FROM cursors WHERE session = ?',
                       (session,)).fetchone()
    return None if row is None else Cursor(*row)


def _set_cursor(conn: sqlite3.Connection, state: dict[str, Any], session: str, cursor: Cursor,
                now: float) -> None:
    write_cursor(conn, session, cursor, now)


def _seen(conn: sqlite3.Connection, state: dict[str, Any], session: str, message_id: str, now: float,
          window_count: int, window_age: float) -> bool:
    row = conn.execute("SELECT n, seen_at FROM inbox WHERE session = ? AND message_id = ?",
                       (session, message_id)).fetchone()
    if row is None:
        return False
    top = conn.execute("SELECT MAX(n) FROM inbox WHERE session = ?", (session,)).fetchone()[0]
    # Remembered = among the last window_count marks of the session AND younger than window_age.
    return row[0] > top - window_count and row[1] > now - window_age


def _mark(conn: sqlite3.Connection, state: dict[str, Any], session: str, message_id: str,
          cursor: Cursor | None, now: float, window_count: int, window_age: float) -> bool:
    if _seen(conn, state, session, message_id, now, window_count, window_age):
        # A duplicate (e.g. a replay after resume) may carry an older cursor: never move back.
        return False
    top = conn.execute("SELECT MAX(n) FROM inbox WHERE session = ?", (session,)).fetchone()[0] or 0
    n = top + 1
    conn.execute("INSERT OR REPLACE INTO inbox(session, message_id, n, seen_at) VALUES (?, ?, ?, ?)",
                 (session, message_id, n, now))
    if cursor is not None:
        write_cursor(conn, session, cursor, now)
    # Forgotten rows are invisible already (see _seen); delete them in bulk now and then.
    if n % max(1, min(window_count, 1000)) == 0:
        conn.execute("DELETE FROM inbox WHERE session = ? AND (n <= ? OR seen_at <= ?)",
                     (session, n - window_count, now - window_age))
    return True


def _noop(conn: sqlite3.Connection, state: dict[str, Any]) -> None:
    return None


class _Base:
    def __init__(self, path: str | os.PathLike[str], *, synchronous: str, busy_timeout: float,
                 batch_max: int, clock: Clock | None) -> None:
        self._db = _db.acquire(path, synchronous=synchronous, busy_timeout=busy_timeout,
                               batch_max=batch_max)
        self.path = self._db.path
        self.synchronous = self._db.synchronous
        self._clock = clock or SYSTEM_CLOCK
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, synchronous={self.synchronous!r})"

    async def __aenter__(self) -> Any:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._closed:
            raise StoreError(f"store {self.path} is closed; create a new one to use the file again")
        return await self._db.submit(fn, *args)

    async def open(self) -> None:
        """Open the file now (it is otherwise opened by the first call), surfacing errors early."""
        await self._run(_noop)

    async def close(self) -> None:
        """Finish queued operations and release the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await _db.release(self._db)


class Cursors(_Base):
    """Persisted resume positions per session (:class:`Cursor`: offset, seq, epoch).

    ``set()`` returns once the cursor is committed (see :class:`Outbox` for ``synchronous``).

    Args:
        path: the SQLite file; may be shared with an Outbox and an Inbox.
        synchronous: ``"FULL"`` (survives power loss) or ``"NORMAL"`` (survives a process crash).
        busy_timeout: seconds to wait for another connection's lock.
        batch_max: most operations per transaction.
        clock: time source for ``updated_at``.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL",
                 busy_timeout: float = 5.0, batch_max: int = 1000, clock: Clock | None = None) -> None:
        super().__init__(path, synchronous=synchronous, busy_timeout=busy_timeout,
                         batch_max=batch_max, clock=clock)

    async def get(self, session: str) -> Cursor | None:
        """The stored cursor of ``session``, or None."""
        return await self._run(_get_cursor, check_session(session))

    async def set(self, session: str, cursor: Cursor) -> None:
        """Store ``cursor`` for ``session`` durably, replacing the previous one."""
        check_session(session)
        _check_cursor(cursor, allow_none=False)
        await self._run(_set_cursor, session, cursor, self._clock.wall())


class Inbox(_Base):
    """Remembers received message ids per session, so at-least-once becomes exactly-once.

    An id is remembered while it is among the last ``window_count`` ids marked for its session
    AND younger than ``window_age`` seconds; outside that window it counts as new again. Pick a
    window longer than the upstream's redelivery horizon.

    ``mark(session, id, cursor=c)`` records the id and the session's cursor in ONE transaction.
    For a duplicate it returns False and writes nothing (a replayed message can carry an older
    cursor, which must not move the resume position back).

    Args:
        path: the SQLite file; may be shared with an Outbox and Cursors.
        window_count: ids remembered per session.
        window_age: seconds an id is remembered.
        synchronous: ``"FULL"`` (survives power loss) or ``"NORMAL"`` (survives a process crash).
        busy_timeout: seconds to wait for another connection's lock.
        batch_max: most operations per transaction.
        clock: time source for the age window.
    """

    def __init__(self, path: str | os.PathLike[str], *, window_count: int = 10_000,
                 window_age: float = 86_400.0, synchronous: str = "FULL", busy_timeout: float = 5.0,
                 batch_max: int = 1000, clock: Clock | None = None) -> None:
        if not isinstance(window_count, int) or isinstance(window_count, bool) or window_count < 1:
            raise ConfigError(f"window_count must be an int >= 1, got {window_count!r}")
        self._window_count = window_count
        self._window_age = _check_seconds("window_age", window_age, positive=True)
        super().__init__(path, synchronous=synchronous, busy_timeout=busy_timeout,
                         batch_max=batch_max, clock=clock)
        self.cursors = Cursors(path, synchronous=synchronous, busy_timeout=busy_timeout,
                               batch_max=batch_max, clock=clock)
        """Cursors on the same file (the ones ``mark(cursor=...)`` writes)."""

    async def seen(self, session: str, message_id: str) -> bool:
        """True if ``message_id`` was marked for ``session`` within the window."""
        return await self._run(_seen, check_session(session), _check_id(message_id),
                               self._clock.wall(), self._window_count, self._window_age)

    async def mark(self, session: str, message_id: str, *, cursor: Cursor | None = None) -> bool:
        """Record ``message_id`` (and ``cursor``, atomically). Returns False for a duplicate."""
        check_session(session)
        _check_id(message_id)
        _check_cursor(cursor, allow_none=True)
        return await self._run(_mark, session, message_id, cursor, self._clock.wall(),
                               self._window_count, self._window_age)

    async def close(self) -> None:
        """Finish queued operations and release the file (and ``cursors``). Idempotent."""
        await self.cursors.close()
        await super().close()

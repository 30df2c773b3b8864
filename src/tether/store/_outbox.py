"""Outbox: durable, ordered, per-session outgoing messages on SQLite (WAL, group commit)."""

from __future__ import annotations

import math
import os
import sqlite3
from typing import Any, Iterable

from .._clock import Clock, SYSTEM_CLOCK
from .._errors import ConfigError, OutboxFull, StoreError, StoreTypeError, TetherError
from . import _db
from ._types import STATUSES, DeadLetter, OutboxMessage

__all__ = ["Outbox"]

ON_FULL = ("raise", "drop_oldest", "reject_new")
_COLS = "seq, session, payload, key, status, attempts, created_at, expires_at, available_at, last_error"
_OPEN = "status != 'delivered'"


# ---------------------------------------------------------------------------------------------
# Validation (event-loop side, before anything is queued)


def check_session(session: object) -> str:
    if not isinstance(session, str):
        raise StoreTypeError(f"session must be a str, got {type(session).__name__}")
    if not session:
        raise ConfigError("session must be a non-empty string")
    return session


def _check_seconds(name: str, value: object, *, allow_none: bool = False, positive: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise StoreTypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if math.isnan(value) or value < 0 or (positive and value == 0) or math.isinf(value):
        raise ConfigError(f"{name} must be a finite number of seconds {'> 0' if positive else '>= 0'}, "
                          f"got {value!r}")
    return float(value)


def _check_ids(ids: Iterable[str]) -> list[int]:
    if isinstance(ids, (str, bytes)):
        raise StoreTypeError("ids must be an iterable of ids (e.g. a list), not a single string")
    seqs = []
    for i in ids:
        if not isinstance(i, str):
            raise StoreTypeError(f"each id must be a str (as returned by put()), got {type(i).__name__}")
        if i.isdecimal():  # ids are opaque; anything else cannot be ours and is ignored
            seqs.append(int(i))
    return seqs


def _limit(limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ConfigError(f"limit must be an int >= 1, got {limit!r}")
    return limit


# ---------------------------------------------------------------------------------------------
# Operations: run on the writer thread inside a batch transaction (see _db's op contract)


def _open_count(conn: sqlite3.Connection, state: dict[str, Any]) -> int:
    n = state.get("open")
    if n is None:
        n = state["open"] = conn.execute(f"SELECT COUNT(*) FROM outbox WHERE {_OPEN}").fetchone()[0]
    return n


def _bury(conn: sqlite3.Connection, state: dict[str, Any], seq: int, reason: str, now: float,
          attempts: int | None = None) -> None:
    """Move one message to the dead letters (same transaction), never deleting it silently."""
    conn.execute(
        "INSERT INTO dead_letters(seq, session, payload, key, reason, attempts, created_at, died_at) "
        "SELECT seq, session, payload, key, ?, COALESCE(?, attempts), created_at, ? FROM outbox WHERE seq = ?",
        (reason, attempts, now, seq))
    conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
    if "open" in state:
        state["open"] -= 1


def _put(conn: sqlite3.Connection, state: dict[str, Any], session: str, payload: str | bytes,
         key: str | None, now: float, expires: float | None, max_messages: int | None,
         on_full: str) -> str:
    if key is not None:
        row = conn.execute("SELECT seq FROM outbox_keys WHERE session = ? AND key = ?",
                           (session, key)).fetchone()
        if row is not None:
            return str(row[0])
    reject = False
    if max_messages is not None and _open_count(conn, state) >= max_messages:
        if on_full == "raise":
            raise OutboxFull(
                f"outbox holds max_messages={max_messages} undelivered messages; deliver or ack "
                f"some, raise max_messages, or set on_full='drop_oldest' or 'reject_new'")
        if on_full == "drop_oldest":
            row = conn.execute(f"SELECT seq FROM outbox WHERE status = 'pending' ORDER BY seq LIMIT 1"
                               ).fetchone()
            if row is None:
                raise OutboxFull(f"outbox holds max_messages={max_messages} messages and all of them "
                                 f"are leased, so none can be dropped; ack or nack some first")
            _bury(conn, state, row[0], f"dropped: outbox full (max_messages={max_messages}, "
                  f"on_full='drop_oldest')", now)
        else:
            reject = True
    cur = conn.execute(
        "INSERT INTO outbox(session, payload, key, status, attempts, created_at, expires_at, available_at) "
        "VALUES (?, ?, ?, 'pending', 0, ?, ?, 0)", (session, payload, key, now, expires))
    seq = cur.lastrowid
    assert seq is not None
    if "open" in state:
        state["open"] += 1
    if key is not None:
        conn.execute("INSERT INTO outbox_keys(session, key, seq, created_at) VALUES (?, ?, ?, ?)",
                     (session, key, seq, now))
    if reject:
        _bury(conn, state, seq, f"rejected: outbox full (max_messages={max_messages}, "
              f"on_full='reject_new')", now)
    return str(seq)


_INSERT = ("INSERT INTO outbox(session, payload, key, status, attempts, created_at, expires_at, "
           "available_at) VALUES (?, ?, NULL, 'pending', 0, ?, ?, 0)")


def _put_many(conn: sqlite3.Connection, state: dict[str, Any], arglist: list[tuple[Any, ...]]
              ) -> list[tuple[bool, Any]]:
    """Bulk form of _put: plain puts (no key, no limit) go in with one executemany."""
    out: list[tuple[bool, Any]] = []
    plain: list[tuple[Any, ...]] = []

    def flush() -> None:
        if not plain:
            return
        conn.executemany(_INSERT, [(a[0], a[1], a[3], a[4]) for a in plain])
        # One writer inside one transaction: AUTOINCREMENT hands out consecutive seqs.
        last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        first = last - len(plain) + 1
        out.extend((True, str(first + k)) for k in range(len(plain)))
        if "open" in state:
            state["open"] += len(plain)
        plain.clear()

    for args in arglist:
        if args[2] is None and args[5] is None:
            plain.append(args)
            continue
        flush()
        try:
            out.append((True, _put(conn, state, *args)))
        except TetherError as e:  # a clean refusal (OutboxFull): wrote nothing
            out.append((False, e))
    flush()
    return out


_put.many = _put_many  # type: ignore[attr-defined]


def _message(row: tuple[Any, ...], now: float, status: str | None = None) -> OutboxMessage:
    seq, session, payload, key, st, attempts, created, expires, available, last_error = row
    if status is None:
        status = "leased" if st == "leased" and available > now else ("delivered" if st == "delivered"
                                                                         else "pending")
    return OutboxMessage(str(seq), session, payload, key, status, attempts, created, expires, last_error)


def _lease(conn: sqlite3.Connection, state: dict[str, Any], session: str, n: int, now: float,
           lease_until: float, ordered: bool, max_attempts: int | None) -> list[OutboxMessage]:
    taken: list[tuple[Any, ...]] = []
    after = -1
    chunk = n + 16
    done = False
    while not done and len(taken) < n:
        rows = conn.execute(f"SELECT {_COLS} FROM outbox WHERE session = ? AND {_OPEN} AND seq > ? "
                            f"ORDER BY seq LIMIT ?", (session, after, chunk)).fetchall()
        if not rows:
            break
        for row in rows:
            seq, _, _, _, status, attempts, _, expires, available, _ = row
            after = seq
            if expires is not None and expires <= now and (status == "pending" or available <= now):
                _bury(conn, state, seq, "expired", now)  # a running lease wins: it may be acked
                continue
            if available > now:  # leased and the lease runs, or nacked with a delay still running
                if ordered:
                    done = True  # head-of-line: nothing later may overtake it
                    break
                continue
            if status == "leased":  # its lease ran out without ack or nack: a failed attempt
                attempts += 1
                if max_attempts is not None and attempts >= max_attempts:
                    _bury(conn, state, seq, f"gave up after {attempts} attempts: lease expired",
                          now, attempts)
                    continue
                conn.execute("UPDATE outbox SET attempts = ? WHERE seq = ?", (attempts, seq))
                row = row[:5] + (attempts,) + row[6:]
            taken.append(row)
            if len(taken) >= n:
                break
    if taken and ordered:
        # Ordered leases are a run of consecutive open rows of the session: one range update.
        conn.execute(f"UPDATE outbox SET status = 'leased', available_at = ? WHERE session = ? "
                     f"AND {_OPEN} AND seq BETWEEN ? AND ?", (lease_until, session, taken[0][0], taken[-1][0]))
    elif taken:
        conn.executemany("UPDATE outbox SET status = 'leased', available_at = ? WHERE seq = ?",
                         [(lease_until, r[0]) for r in taken])
    return [_message(r, now, "leased") for r in taken]


def _ack(conn: sqlite3.Connection, state: dict[str, Any], seqs: list[int], now: float) -> None:
    changed = 0
    for i in range(0, len(seqs), 500):  # one statement per 500 ids, well under SQLite's 32766 limit
        chunk = seqs[i:i + 500]
        changed += conn.execute(
            f"UPDATE outbox SET status = 'delivered', delivered_at = ? WHERE {_OPEN} AND seq IN "
            f"({','.join('?' * len(chunk))})", (now, *chunk)).rowcount
    if "open" in state:
        state["open"] -= changed


def _nack(conn: sqlite3.Connection, state: dict[str, Any], seqs: list[int], now: float, delay: float,
          reason: str | None, ordered: bool, max_attempts: int | None) -> None:
    heads: dict[str, int] = {}
    for seq in seqs:
        row = conn.execute("SELECT session, attempts FROM outbox WHERE seq = ? AND status = 'leased'",
                           (seq,)).fetchone()
        if row is None:  # not leased (acked, dead, unknown, or already nacked): nothing to give back
            continue
        session, attempts = row
        attempts += 1
        if max_attempts is not None and attempts >= max_attempts:
            _bury(conn, state, seq, f"gave up after {attempts} attempts: {reason or 'nacked'}", now,
                  attempts)
        else:
            conn.execute("UPDATE outbox SET status = 'pending', attempts = ?, available_at = ?, "
                         "last_error = ? WHERE seq = ?", (attempts, now + delay, reason, seq))
        heads[session] = min(heads.get(session, seq), seq)
    if ordered:
        # Later messages of the session may not overtake the nacked one: give them back too,
        # without counting an attempt (they were not the ones that failed).
        for session, head in heads.items():
            conn.execute("UPDATE outbox SET status = 'pending', available_at = MAX(?, ?) "
                         "WHERE session = ? AND status = 'leased' AND seq > ?",
                         (now + delay, now, session, head))


def _release(conn: sqlite3.Connection, state: dict[str, Any], session: str | None) -> int:
    where, args = ("", ()) if session is None else (" AND session = ?", (session,))
    return conn.execute(f"UPDATE outbox SET status = 'pending', available_at = 0 "
                        f"WHERE status = 'leased'{where}", args).rowcount


def _requeue(conn: sqlite3.Connection, state: dict[str, Any], seqs: list[int]) -> int:
    count = 0
    for seq in seqs:
        # Same seq as before: the message takes its original place (the head of its session).
        cur = conn.execute(
            "INSERT INTO outbox(seq, session, payload, key, status, attempts, created_at, expires_at, "
            "available_at) SELECT seq, session, payload, key, 'pending', 0, created_at, NULL, 0 "
            "FROM dead_letters WHERE seq = ?", (seq,))
        if cur.rowcount:
            conn.execute("DELETE FROM dead_letters WHERE seq = ?", (seq,))
            count += 1
            if "open" in state:
                state["open"] += 1
    return count


def _sweep(conn: sqlite3.Connection, state: dict[str, Any], now: float, retention: float) -> int:
    rows = conn.execute(f"SELECT seq FROM outbox WHERE expires_at IS NOT NULL AND expires_at <= ? "
                        f"AND (status = 'pending' OR available_at <= ?)", (now, now)).fetchall()
    for (seq,) in rows:
        _bury(conn, state, seq, "expired", now)
    cutoff = now - retention
    conn.execute("DELETE FROM outbox WHERE status = 'delivered' AND delivered_at < ?", (cutoff,))
    conn.execute("DELETE FROM outbox_keys WHERE created_at < ? AND seq NOT IN "
                 f"(SELECT seq FROM outbox WHERE {_OPEN})", (cutoff,))
    return len(rows)


def _depth(conn: sqlite3.Connection, state: dict[str, Any], session: str | None) -> int:
    if session is None:
        return _open_count(conn, state)
    return conn.execute(f"SELECT COUNT(*) FROM outbox WHERE session = ? AND {_OPEN}",
                        (session,)).fetchone()[0]


def _dead_row(row: tuple[Any, ...]) -> DeadLetter:
    seq, session, payload, key, reason, attempts, created, died = row
    return DeadLetter(str(seq), session, payload, key, reason, attempts, created, died)


_DEAD_COLS = "seq, session, payload, key, reason, attempts, created_at, died_at"


def _messages(conn: sqlite3.Connection, state: dict[str, Any], session: str, status: str | None,
              limit: int, now: float) -> list[OutboxMessage]:
    out: list[OutboxMessage] = []
    if status != "dead":
        where = {
            None: "1",
            "pending": "(status = 'pending' OR (status = 'leased' AND available_at <= :now))",
            "leased": "status = 'leased' AND available_at > :now",
            "delivered": "status = 'delivered'",
        }[status]
        rows = conn.execute(f"SELECT {_COLS} FROM outbox WHERE session = :s AND {where} "
                            f"ORDER BY seq LIMIT :limit", {"s": session, "now": now, "limit": limit})
        out = [_message(r, now) for r in rows]
    if status in (None, "dead"):
        rows = conn.execute(f"SELECT {_DEAD_COLS} FROM dead_letters WHERE session = ? ORDER BY seq "
                            f"LIMIT ?", (session, limit)).fetchall()
        out += [OutboxMessage(d.id, d.session, d.payload, d.key, "dead", d.attempts, d.created_at, None,
                              d.reason) for d in map(_dead_row, rows)]
        out.sort(key=lambda m: int(m.id))
        del out[limit:]
    return out


def _dead_letters(conn: sqlite3.Connection, state: dict[str, Any], session: str | None,
                  limit: int) -> list[DeadLetter]:
    if session is None:
        rows = conn.execute(f"SELECT {_DEAD_COLS} FROM dead_letters ORDER BY n LIMIT ?", (limit,))
    else:
        rows = conn.execute(f"SELECT {_DEAD_COLS} FROM dead_letters WHERE session = ? ORDER BY n "
                            f"LIMIT ?", (session, limit))
    return [_dead_row(r) for r in rows]


def _noop(conn: sqlite3.Connection, state: dict[str, Any]) -> None:
    return None


# ---------------------------------------------------------------------------------------------


class Outbox:
    """Durable outgoing messages on SQLite, ordered per session, with leases and dead letters.

    ``await put()`` returns only after the message is committed to disk. One writer thread per
    file runs every queued operation of all callers in one transaction (group commit), so the
    cost of an fsync is shared by everything that arrived meanwhile; the event loop itself never
    calls SQLite.

    Durability (``synchronous``):
        * ``"FULL"`` (default): a returned ``put()`` survives a process crash AND a power loss or
          kernel panic (the WAL is fsynced at every commit).
        * ``"NORMAL"``: in WAL mode a returned ``put()`` survives a process crash (``kill -9``),
          but the last commits before a power loss can be lost; the file is never corrupted.

    Delivery semantics:
        * Order: messages of a session are handed out in the order their ``put()`` calls were
          made. With ``ordered=True`` (default) delivery is strict head-of-line: while the
          oldest undelivered message of a session is leased or waiting out a nack delay, no
          later message of that session is leased. ``lease(session, n)`` may hand out a run of
          up to ``n`` consecutive messages at once. Nacking one of them gives back it and every
          later leased message of the session (those do not count an attempt). With
          ``ordered=False``, unavailable messages are skipped instead.
        * At-least-once: a leased message that is neither acked nor nacked within ``lease_for``
          seconds is handed out again (counted as a failed attempt).
        * Attempts: each nack and each expired lease counts one; at ``max_attempts`` the message
          moves to the dead letters with the reason.
        * ``ttl``: a message not delivered within ``ttl`` seconds moves to the dead letters with
          reason ``"expired"`` (checked when a lease reaches it and by ``sweep()``).
        * Idempotency: ``put(..., key=k)`` returns the first put's id again for the same
          ``(session, k)`` and stores nothing new (the first payload wins), for as long as the
          message is undelivered and for ``retention`` seconds after.
        * Size limit: ``max_messages`` bounds the undelivered messages (all sessions). When it is
          reached, ``on_full="raise"`` raises :class:`~tether.OutboxFull`; ``"drop_oldest"``
          moves the oldest pending message to the dead letters; ``"reject_new"`` records the new
          message straight in the dead letters and returns its id.
        * Cancelling an awaiting ``put()`` does not withdraw it; retry with the same ``key``.

    Args:
        path: the SQLite file (created if missing). Outbox, Inbox and Cursors on one file share
            one writer thread and commit together.
        synchronous: ``"FULL"`` or ``"NORMAL"`` (see above).
        max_messages: limit of undelivered messages, or None for no limit.
        on_full: ``"raise"``, ``"drop_oldest"`` or ``"reject_new"``.
        max_attempts: failed attempts before a message is dead-lettered (None: retry forever).
        ordered: strict head-of-line order per session (see above).
        retention: seconds to keep delivered messages and idempotency keys.
        batch_max: most operations committed in one transaction.
        busy_timeout: seconds to wait for a lock held by another connection before
            :class:`~tether.StoreUnavailable`.
        sweep_interval: seconds (on ``clock``) between automatic ``sweep()`` runs triggered by
            puts and leases; None turns the automatic sweep off.
        clock: the time source for timestamps, leases, delays and ttl.

    Raises:
        StoreUnavailable: from any call, when the file is corrupt, locked or cannot be written;
            the message names the file and what to do. Nothing committed is lost.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        max_messages: int | None = None,
        on_full: str = "raise",
        max_attempts: int | None = 10,
        ordered: bool = True,
        retention: float = 86_400.0,
        batch_max: int = 1000,
        busy_timeout: float = 5.0,
        sweep_interval: float | None = 60.0,
        clock: Clock | None = None,
    ) -> None:
        if max_messages is not None and (not isinstance(max_messages, int) or isinstance(
                max_messages, bool) or max_messages < 1):
            raise ConfigError(f"max_messages must be an int >= 1 or None, got {max_messages!r}")
        if on_full not in ON_FULL:
            raise ConfigError(f"on_full must be one of {', '.join(map(repr, ON_FULL))}, got {on_full!r}")
        if max_attempts is not None and (not isinstance(max_attempts, int) or isinstance(
                max_attempts, bool) or max_attempts < 1):
            raise ConfigError(f"max_attempts must be an int >= 1 or None, got {max_attempts!r}")
        self._retention = _check_seconds("retention", retention)
        self._sweep_interval = _check_seconds("sweep_interval", sweep_interval, allow_none=True,
                                              positive=True)
        self._db = _db.acquire(path, synchronous=synchronous, busy_timeout=busy_timeout,
                               batch_max=batch_max)
        self.path = self._db.path
        self.synchronous = self._db.synchronous
        self._max_messages = max_messages
        self._on_full = on_full
        self._max_attempts = max_attempts
        self._ordered = bool(ordered)
        self._clock = clock or SYSTEM_CLOCK
        self._next_sweep = self._clock.monotonic() + (self._sweep_interval or 0.0)
        self._closed = False

    def __repr__(self) -> str:
        return f"Outbox({self.path!r}, synchronous={self.synchronous!r})"

    async def __aenter__(self) -> "Outbox":
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the file now (it is otherwise opened by the first call), surfacing errors early."""
        await self._run(_noop)

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._closed:
            raise _closed_error(self.path)
        return await self._db.submit(fn, *args)

    def _maybe_sweep(self) -> None:
        if self._sweep_interval is None or self._closed:
            return
        mono = self._clock.monotonic()
        if mono >= self._next_sweep:
            self._next_sweep = mono + self._sweep_interval
            fut = self._db.submit(_sweep, self._clock.wall(), self._retention)
            fut.add_done_callback(_swallow)  # best effort; errors show on the caller's own ops

    async def put(self, session: str, payload: str | bytes, *, key: str | None = None,
                  ttl: float | None = None) -> str:
        """Store ``payload`` for ``session`` and return its id once it is committed to disk.

        Args:
            session: the session the message belongs to (non-empty str).
            payload: ``str`` or ``bytes``; returned unchanged by ``lease()``.
            key: idempotency key: a repeated put with the same ``(session, key)`` returns the
                first put's id and stores nothing.
            ttl: seconds after which an undelivered message is dead-lettered as "expired".

        Raises:
            TypeError: payload is not str or bytes, or key is not a str.
            OutboxFull: ``max_messages`` reached and ``on_full="raise"``.
            StoreUnavailable: the database file cannot be used.
        """
        check_session(session)
        if not isinstance(payload, (str, bytes)):
            raise StoreTypeError(f"payload must be str or bytes, got {type(payload).__name__}; "
                            f"encode it first (e.g. json.dumps(obj))")
        if key is not None and not isinstance(key, str):
            raise StoreTypeError(f"key must be a str or None, got {type(key).__name__}")
        ttl = _check_seconds("ttl", ttl, allow_none=True, positive=True)
        now = self._clock.wall()
        self._maybe_sweep()
        return await self._run(_put, session, payload, key, now, None if ttl is None else now + ttl,
                               self._max_messages, self._on_full)

    async def lease(self, session: str, n: int, *, lease_for: float = 30.0) -> list[OutboxMessage]:
        """Hand out up to ``n`` of the session's oldest deliverable messages, in order.

        A leased message is not handed out again until ``lease_for`` seconds pass without an
        ``ack()`` or ``nack()``. See the class docstring for ordering.
        """
        check_session(session)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"n must be an int >= 1, got {n!r}")
        lease_for = _check_seconds("lease_for", lease_for, positive=True)
        now = self._clock.wall()
        self._maybe_sweep()
        return await self._run(_lease, session, n, now, now + lease_for, self._ordered,
                               self._max_attempts)

    async def ack(self, ids: Iterable[str]) -> None:
        """Mark messages delivered. Unknown, dead or already delivered ids are ignored."""
        seqs = _check_ids(ids)
        if seqs:
            await self._run(_ack, seqs, self._clock.wall())

    async def nack(self, ids: Iterable[str], delay: float = 0.0, *, reason: str | None = None) -> None:
        """Give leased messages back; they are handed out again after ``delay`` seconds.

        Counts one failed attempt per message; at ``max_attempts`` the message moves to the
        dead letters with ``reason``. Ids that are not leased are ignored.
        """
        seqs = _check_ids(ids)
        delay = _check_seconds("delay", delay)
        if reason is not None and not isinstance(reason, str):
            raise StoreTypeError(f"reason must be a str or None, got {type(reason).__name__}")
        if seqs:
            await self._run(_nack, seqs, self._clock.wall(), delay, reason, self._ordered,
                            self._max_attempts)

    async def depth(self, session: str | None = None) -> int:
        """Undelivered (pending or leased) messages, of one session or of all."""
        if session is not None:
            check_session(session)
        return await self._run(_depth, session)

    async def messages(self, session: str, *, status: str | None = None,
                       limit: int = 100) -> list[OutboxMessage]:
        """The session's messages, oldest first; ``status`` filters (dead ones included)."""
        check_session(session)
        if status is not None and status not in STATUSES:
            raise ConfigError(f"status must be one of {', '.join(STATUSES)} or None, got {status!r}")
        return await self._run(_messages, session, status, _limit(limit), self._clock.wall())

    async def dead_letters(self, session: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        """Dead letters in the order they died, oldest first."""
        if session is not None:
            check_session(session)
        return await self._run(_dead_letters, session, _limit(limit))

    async def release_leases(self, session: str | None = None) -> int:
        """Give back every lease now (of one session or all), without counting an attempt.

        Call it when a process starts on a file whose previous owner died: the dead process's
        leases would otherwise block their sessions (head-of-line) until ``lease_for`` passes.
        Messages it may have sent before dying are sent again (at-least-once). Returns the count.
        """
        if session is not None:
            check_session(session)
        return await self._run(_release, session)

    async def requeue(self, ids: Iterable[str]) -> int:
        """Move dead letters back to the outbox for another round of attempts (attempts reset, no ttl).

        A requeued message keeps its id and its original place in its session's order, so with
        ``ordered=True`` it goes out before the messages that were put after it. Ids that are
        not dead letters are ignored. Returns how many were requeued.
        """
        seqs = _check_ids(ids)
        return await self._run(_requeue, seqs) if seqs else 0

    async def sweep(self) -> int:
        """Dead-letter every expired message now and forget delivered messages past retention.

        Returns how many messages expired.
        """
        return await self._run(_sweep, self._clock.wall(), self._retention)

    async def close(self) -> None:
        """Finish queued operations and release the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await _db.release(self._db)


def _closed_error(path: str) -> Exception:
    return StoreError(f"store {path} is closed; create a new one to use the file again")


def _swallow(fut: Any) -> None:
    if not fut.cancelled():
        fut.exception()

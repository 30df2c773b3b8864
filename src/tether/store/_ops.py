"""Outbox operations: run on the store's writer thread inside a batch transaction.

See :mod:`tether.store._db` for the op contract: refuse (raise a TetherError) before writing
anything; ``state`` holds caches that are dropped on rollback.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .._errors import OutboxFull, TetherError
from ._types import DeadLetter, DeadLettered, OutboxMessage

_COLS = "seq, session, payload, key, status, attempts, created_at, expires_at, available_at, last_error"
_OPEN = "status != 'delivered'"


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
    if state.get("listen"):
        row = conn.execute(f"SELECT {_DEAD_COLS} FROM dead_letters WHERE seq = ?", (seq,)).fetchone()
        if row is not None:
            state.setdefault("events", []).append(DeadLettered(_dead_row(row)))
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
          reason: str | None, ordered: bool, max_attempts: int | None, count: bool = True) -> None:
    heads: dict[str, int] = {}
    for seq in seqs:
        row = conn.execute("SELECT session, attempts FROM outbox WHERE seq = ? AND status = 'leased'",
                           (seq,)).fetchone()
        if row is None:  # not leased (acked, dead, unknown, or already nacked): nothing to give back
            continue
        session, attempts = row
        attempts += 1 if count else 0
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


def _dead_letter(conn: sqlite3.Connection, state: dict[str, Any], seqs: list[int], reason: str,
                 now: float) -> int:
    """Move undelivered messages (pending or leased) to the dead letters now, with ``reason``."""
    count = 0
    for seq in seqs:
        if conn.execute(f"SELECT 1 FROM outbox WHERE seq = ? AND {_OPEN}", (seq,)).fetchone() is not None:
            _bury(conn, state, seq, reason, now)
            count += 1
    return count


def _dead_letter_session(conn: sqlite3.Connection, state: dict[str, Any], session: str, reason: str,
                         now: float) -> int:
    seqs = [r[0] for r in conn.execute(f"SELECT seq FROM outbox WHERE session = ? AND {_OPEN} ORDER BY seq",
                                       (session,))]
    for seq in seqs:
        _bury(conn, state, seq, reason, now)
    return len(seqs)


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


def _dead_count(conn: sqlite3.Connection, state: dict[str, Any], session: str | None) -> int:
    if session is None:
        return conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    return conn.execute("SELECT COUNT(*) FROM dead_letters WHERE session = ?", (session,)).fetchone()[0]


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



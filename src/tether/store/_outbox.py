"""Outbox: durable, ordered, per-session outgoing messages on SQLite (WAL, group commit)."""

from __future__ import annotations

import asyncio
import math
import os
from typing import Any, Callable, Iterable

from .._clock import Clock, SYSTEM_CLOCK
from .._errors import ConfigError, StoreError, StoreTypeError
from . import _db
from ._ops import (
    _ack,
    _dead_count,
    _dead_letter,
    _dead_letter_session,
    _dead_letters,
    _depth,
    _lease,
    _messages,
    _nack,
    _noop,
    _put,
    _release,
    _requeue,
    _sweep,
)
from ._types import STATUSES, DeadLetter, OutboxMessage

__all__ = ["Outbox"]

ON_FULL = ("raise", "drop_oldest", "reject_new")

# ---------------------------------------------------------------------------------------------
# Validation (event-loop side, before anything is queued)


def check_session(session: object) -> str:
    if not isinstance(session, str):
        raise StoreTypeError(f"session must be a str, got {type(session).__name__}")
    if not session:
        raise ConfigError("session must be a non-empty string")
    return session


def check_payload(payload: object, key: object) -> None:
    """What every outbox (SQLite or Redis) accepts to put: str or bytes, and a str key or None."""
    if not isinstance(payload, (str, bytes)):
        raise StoreTypeError(f"payload must be str or bytes, got {type(payload).__name__}; "
                             f"encode it first (e.g. json.dumps(obj))")
    if key is not None and not isinstance(key, str):
        raise StoreTypeError(f"key must be a str or None, got {type(key).__name__}")


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
        * After a restart, ``release_leases()`` hands back the dead process's leases at once.
        * Dead letters: ``dead_letters()``, ``dead_count()``, ``requeue(ids)``; ``subscribe(cb)``
          reports each one as a :class:`~tether.store.DeadLettered` event after it is committed.

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
        self._subscriptions: list[Any] = []

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
        check_payload(payload, key)
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

    async def nack(self, ids: Iterable[str], delay: float = 0.0, *, reason: str | None = None,
                   count: bool = True) -> None:
        """Give leased messages back; they are handed out again after ``delay`` seconds.

        Counts one failed attempt per message; at ``max_attempts`` the message moves to the
        dead letters with ``reason``. ``count=False`` counts nothing: for a wait the server
        mandated (a 429 ``retry_after``), which is not a failure of the message. Ids that are
        not leased are ignored.
        """
        seqs = _check_ids(ids)
        delay = _check_seconds("delay", delay)
        if reason is not None and not isinstance(reason, str):
            raise StoreTypeError(f"reason must be a str or None, got {type(reason).__name__}")
        if seqs:
            await self._run(_nack, seqs, self._clock.wall(), delay, reason, self._ordered,
                            self._max_attempts, bool(count))

    async def dead_letter(self, ids: Iterable[str], *, reason: str) -> int:
        """Move undelivered messages (pending or leased) to the dead letters now, with ``reason``.

        For a message that can never be delivered (a payload the upstream always refuses), so it
        does not use up ``max_attempts`` retries first. Delivered, dead and unknown ids are ignored.
        Returns how many moved.
        """
        seqs = _check_ids(ids)
        if not isinstance(reason, str) or not reason:
            raise StoreTypeError("reason must be a non-empty str saying why the message is dead")
        return await self._run(_dead_letter, seqs, reason, self._clock.wall()) if seqs else 0

    async def dead_letter_session(self, session: str, *, reason: str) -> int:
        """Move every undelivered message of ``session`` to the dead letters now, with ``reason``
        (e.g. the session was deleted: they must not go out if the id is used again). Returns the count."""
        check_session(session)
        if not isinstance(reason, str) or not reason:
            raise StoreTypeError("reason must be a non-empty str saying why the messages are dead")
        return await self._run(_dead_letter_session, session, reason, self._clock.wall())

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

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Call ``callback(event)`` on this event loop for every store event; returns unsubscribe.

        Events: :class:`DeadLettered` (after the move is committed), for metrics, logs and alerts.
        A callback that raises is logged and otherwise ignored. Call from async code.
        """
        if not callable(callback):
            raise StoreTypeError(f"callback must be callable, got {type(callback).__name__}")
        entry = (asyncio.get_running_loop(), callback)
        self._db.listeners.append(entry)
        self._subscriptions.append(entry)

        def unsubscribe() -> None:
            for lst in (self._db.listeners, self._subscriptions):
                if entry in lst:
                    lst.remove(entry)

        return unsubscribe

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

    async def dead_count(self, session: str | None = None) -> int:
        """How many dead letters there are (of one session or all), without loading them."""
        if session is not None:
            check_session(session)
        return await self._run(_dead_count, session)

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
        for entry in self._subscriptions:
            if entry in self._db.listeners:
                self._db.listeners.remove(entry)
        self._subscriptions.clear()
        await _db.release(self._db)


def _closed_error(path: str) -> Exception:
    return StoreError(f"store {path} is closed; create a new one to use the file again")


def _swallow(fut: Any) -> None:
    if not fut.cancelled():
        fut.exception()

"""Store records (frozen dataclasses) and the store Protocols a backend implements.

SQLite implements them now (:mod:`tether.store._outbox`, :mod:`tether.store._inbox`); a Redis
backend implements the same Protocols later, so the Link and the service depend only on these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Protocol, runtime_checkable

from .._errors import StoreTypeError

__all__ = [
    "Status",
    "STATUSES",
    "OutboxMessage",
    "DeadLetter",
    "DeadLettered",
    "Cursor",
    "OutboxStore",
    "InboxStore",
    "CursorStore",
]

Status = Literal["pending", "leased", "delivered", "dead"]
STATUSES: tuple[str, ...] = ("pending", "leased", "delivered", "dead")


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One message in the outbox.

    Attributes:
        id: opaque id returned by ``put()``; stable for the life of the message.
        session: the session (conversation, bot, upstream) the message belongs to.
        payload: exactly what was put (``str`` stays ``str``, ``bytes`` stays ``bytes``).
        key: the idempotency key given to ``put()``, if any.
        status: ``pending``, ``leased``, ``delivered`` or ``dead``.
        attempts: failed delivery attempts so far (nacks and expired leases).
        created_at: wall-clock time of the put (seconds since the epoch).
        expires_at: wall-clock time after which the message is dead-lettered as "expired", or None.
        last_error: the reason given to the last ``nack()``, or None.
    """

    id: str
    session: str
    payload: str | bytes
    key: str | None
    status: str
    attempts: int
    created_at: float
    expires_at: float | None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the outbox gave up on. Never deleted silently; the reason says why.

    ``reason`` is ``"expired"`` for a passed ttl, ``"gave up after N attempts: ..."`` after
    ``max_attempts``, or ``"dropped: ..."`` / ``"rejected: ..."`` for an ``on_full`` policy.
    """

    id: str
    session: str
    payload: str | bytes
    key: str | None
    reason: str
    attempts: int
    created_at: float
    died_at: float


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """Event: the outbox gave up on a message (expired, max_attempts, or an on_full policy).

    Sent to ``Outbox.subscribe()`` callbacks after the move is committed.
    """

    letter: DeadLetter


@dataclass(frozen=True, slots=True)
class Cursor:
    """A resume position for one session: any of an offset, a sequence number and an epoch.

    Telegram uses ``offset`` (the next update_id), Discord ``seq`` (plus the session id as
    ``epoch``), Centrifugo ``offset`` + ``epoch``. Unused fields stay None.
    """

    offset: int | None = None
    seq: int | None = None
    epoch: str | None = None

    def __post_init__(self) -> None:
        for name in ("offset", "seq"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise StoreTypeError(f"Cursor.{name} must be an int or None, got {type(v).__name__}")
        if self.epoch is not None and not isinstance(self.epoch, str):
            raise StoreTypeError(f"Cursor.epoch must be a str or None, got {type(self.epoch).__name__}")


@runtime_checkable
class OutboxStore(Protocol):
    """Durable, ordered, per-session outgoing messages with leases and dead letters."""

    async def put(
        self, session: str, payload: str | bytes, *, key: str | None = None, ttl: float | None = None
    ) -> str:
        """Store a message durably and return its id (the same id again for a repeated ``key``)."""
        ...

    async def lease(self, session: str, n: int, *, lease_for: float = 30.0) -> list[OutboxMessage]:
        """Hand out up to ``n`` of the session's oldest deliverable messages, in order."""
        ...

    async def ack(self, ids: Iterable[str]) -> None:
        """Mark messages delivered; unknown or already delivered ids are ignored."""
        ...

    async def nack(self, ids: Iterable[str], delay: float = 0.0, *, reason: str | None = None) -> None:
        """Give leased messages back for another attempt after ``delay`` seconds."""
        ...

    async def depth(self, session: str | None = None) -> int:
        """Messages not yet delivered (pending or leased), for one session or all."""
        ...

    async def messages(
        self, session: str, *, status: str | None = None, limit: int = 100
    ) -> list[OutboxMessage]:
        """The session's messages in order, optionally only those with ``status``."""
        ...

    async def dead_letters(self, session: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        ...

    async def close(self) -> None:
        """Finish queued writes and release the store."""
        ...


@runtime_checkable
class InboxStore(Protocol):
    """Remembers received message ids per session, so redeliveries are dropped."""

    async def seen(self, session: str, message_id: str) -> bool:
        """True if ``message_id`` was marked within the window."""
        ...

    async def mark(self, session: str, message_id: str, *, cursor: Cursor | None = None) -> bool:
        """Record ``message_id`` (and the cursor, atomically); False if it is a duplicate."""
        ...


@runtime_checkable
class CursorStore(Protocol):
    """Persisted resume positions per session."""

    async def get(self, session: str) -> Cursor | None:
        """The stored cursor, or None."""
        ...

    async def set(self, session: str, cursor: Cursor) -> None:
        """Store the cursor durably (replaces the previous one)."""
        ...

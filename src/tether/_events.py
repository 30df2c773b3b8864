"""Typed, frozen events. Links and the service emit them; users ``match`` on them.

``at`` (the wall-clock time the event happened) is excluded from equality so tests can compare
events by content.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Event",
    "Connecting",
    "Connected",
    "Disconnected",
    "BackingOff",
    "GaveUp",
    "Closed",
    "HeartbeatAck",
    "HeartbeatMissed",
    "Dropped",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event."""

    at: float = field(default=0.0, compare=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Connecting(Event):
    """An attempt to connect started (attempt counts from 1 since the last stable connection)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class Connected(Event):
    """The connection is up; ``downtime`` is seconds since the previous one dropped (0.0 the first time)."""

    attempt: int
    downtime: float = 0.0


@dataclass(frozen=True, slots=True)
class Disconnected(Event):
    """The connection dropped or an attempt failed. ``code`` is the close code when there was one."""

    code: int | None
    reason: str
    cause: BaseException | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class BackingOff(Event):
    """The link waits ``delay`` seconds before attempt ``attempt``."""

    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class GaveUp(Event):
    """The link stopped for good: auth refused, budget used up, or the classifier said FAIL."""

    error: BaseException = field(compare=False)


@dataclass(frozen=True, slots=True)
class Closed(Event):
    """The link was closed on purpose and will never reconnect."""


@dataclass(frozen=True, slots=True)
class HeartbeatAck(Event):
    """A heartbeat was answered after ``rtt`` seconds."""

    rtt: float


@dataclass(frozen=True, slots=True)
class HeartbeatMissed(Event):
    """No answer to a heartbeat within the timeout: the connection is treated as dead."""

    waited: float


@dataclass(frozen=True, slots=True)
class Dropped(Event):
    """A buffered message was dropped because the buffer was full (on_overflow="drop_oldest")."""

    count: int = 1

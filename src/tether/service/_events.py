"""Service events: frozen records of what the service did, for logs, SSE and the dashboard.

Link events (``tether.events``) reported by a session's connector are wrapped in
:class:`SessionLinkEvent` so every event carries its session id.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ServiceEvent",
    "SessionCreated",
    "SessionUpdated",
    "SessionDeleted",
    "SessionStarted",
    "SessionStopped",
    "SessionRestarted",
    "SessionLoggedOut",
    "SessionLinkEvent",
    "MessageQueued",
    "MessageSent",
    "MessageSendFailed",
    "MessageDeadLettered",
    "MessageReceived",
    "WebhookDelivered",
    "WebhookFailed",
    "SweepFinding",
    "SweepCompleted",
    "ServiceStarted",
    "ServiceStopping",
    "event_type",
    "event_data",
]


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """Base of every service event; ``at`` is wall-clock seconds and is not compared."""

    at: float = field(default=0.0, compare=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class SessionCreated(ServiceEvent):
    """A session was created."""

    session: str
    kind: str


@dataclass(frozen=True, slots=True)
class SessionUpdated(ServiceEvent):
    """A session's options, webhooks or enabled flag changed (``fields`` names which)."""

    session: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionDeleted(ServiceEvent):
    """A session was stopped and removed."""

    session: str


@dataclass(frozen=True, slots=True)
class SessionStarted(ServiceEvent):
    """A session's connector was started."""

    session: str


@dataclass(frozen=True, slots=True)
class SessionStopped(ServiceEvent):
    """A session's connector was stopped on purpose (``reason``: api, shutdown, delete, logout)."""

    session: str
    reason: str


@dataclass(frozen=True, slots=True)
class SessionRestarted(ServiceEvent):
    """A session was closed and reconnected (``reason``: api, sweep: ...)."""

    session: str
    reason: str


@dataclass(frozen=True, slots=True)
class SessionLoggedOut(ServiceEvent):
    """A session was closed and its credentials cleared; it never reconnects."""

    session: str


@dataclass(frozen=True, slots=True)
class SessionLinkEvent(ServiceEvent):
    """A ``tether.events`` event reported by a session's connector; ``state`` is the session's
    state right after it (for dashboards)."""

    session: str
    event: Any = field(compare=True)
    state: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class MessageQueued(ServiceEvent):
    """An outbound message is on disk and will be delivered."""

    session: str
    message_id: str


@dataclass(frozen=True, slots=True)
class MessageSent(ServiceEvent):
    """An outbound message was sent upstream and acknowledged in the outbox."""

    session: str
    message_id: str


@dataclass(frozen=True, slots=True)
class MessageSendFailed(ServiceEvent):
    """Sending failed; the message goes back to the outbox and is retried after ``retry_in`` s."""

    session: str
    message_id: str
    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class MessageDeadLettered(ServiceEvent):
    """An outbound message can never be delivered (a payload the upstream always refuses, a chat
    that blocked the bot): it went to the dead letters at once with ``reason``; the session goes on."""

    session: str
    message_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class MessageReceived(ServiceEvent):
    """A new (de-duplicated) inbound message, stored and queued for webhooks."""

    session: str
    message_id: str
    payload: Any = None


@dataclass(frozen=True, slots=True)
class WebhookDelivered(ServiceEvent):
    """A webhook accepted an inbound message."""

    session: str
    message_id: str
    url: str
    status: int
    attempts: int


@dataclass(frozen=True, slots=True)
class WebhookFailed(ServiceEvent):
    """A webhook delivery attempt failed; ``final`` when no more attempts follow."""

    session: str
    message_id: str
    url: str
    reason: str
    attempts: int
    final: bool


@dataclass(frozen=True, slots=True)
class SweepFinding:
    """What the health sweep found about one session and what it did."""

    session: str
    problem: str
    action: str  # "restart" | "report"


@dataclass(frozen=True, slots=True)
class SweepCompleted(ServiceEvent):
    """The health sweep checked ``checked`` sessions; ``findings`` lists problems and actions."""

    checked: int
    findings: tuple[SweepFinding, ...] = ()
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class ServiceStarted(ServiceEvent):
    """The service is up and accepting requests."""

    sessions: int


@dataclass(frozen=True, slots=True)
class ServiceStopping(ServiceEvent):
    """The service stopped accepting work and is draining."""

    reason: str


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def event_type(event: Any) -> str:
    """A stable dotted name: ``session.created``, ``link.connected``, ``sweep.completed``."""
    if isinstance(event, SessionLinkEvent):
        return "link." + _snake(type(event.event).__name__)
    name = _snake(type(event).__name__)
    for prefix in ("session", "message", "webhook", "sweep", "service"):
        if name.startswith(prefix + "_"):
            return prefix + "." + name[len(prefix) + 1 :]
    return name


def _plain(value: Any) -> Any:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def event_data(event: Any) -> dict[str, Any]:
    """The JSON-ready fields of an event (link events flattened next to ``session``)."""
    if isinstance(event, SessionLinkEvent):
        data = _plain(event.event) if dataclasses.is_dataclass(event.event) else {"event": str(event.event)}
        data.pop("at", None)
        return {"session": event.session, **data, "state": event.state}
    data = _plain(event)
    data.pop("at", None)
    return data

"""The connector plugin protocol: one session, one upstream, self-healing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, ClassVar, Mapping, Protocol, runtime_checkable

from .._clock import Clock
from .._state import State

__all__ = [
    "InboundMessage",
    "ConnectorContext",
    "Connector",
    "CONNECTORS",
    "CONNECTOR_OPTIONS",
    "CONNECTOR_SECRETS",
    "register_connector",
]


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message received from an upstream.

    ``id`` is stable across redeliveries (the upstream's id, or a hash of cursor and payload), so
    the inbox can drop duplicates and webhooks can be de-duplicated by receivers.
    """

    session: str
    id: str
    payload: Any
    received_at: float
    cursor: Mapping[str, Any] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ConnectorContext:
    """What the service hands a connector.

    Attributes:
        session: the session id (use it as the log prefix: ``[session] ...``).
        options: the session's connector options (already validated).
        clock: the clock to use for every wait.
        deliver: await it for every received message; it returns once the message is stored (durable).
        emit: report a typed event (tether.events or service events) to observers.
        load_cursor / save_cursor: the persisted resume position of this session.
        defaults: the service's session defaults (``Settings.sessions``: heartbeat, backoff,
            max_attempts, ...); a connector uses them for every option the session leaves out.
        admission: a ``tether.Admission`` shared by every session of the service: await
            ``admission.acquire()`` before each connection attempt (``tether.connect(admission=...)``).
    """

    session: str
    options: Mapping[str, Any]
    clock: Clock
    deliver: Callable[[InboundMessage], Awaitable[None]]
    emit: Callable[[Any], None]
    load_cursor: Callable[[], Awaitable[Mapping[str, Any] | None]]
    save_cursor: Callable[[Mapping[str, Any]], Awaitable[None]]
    defaults: Any = None
    admission: Any = None


@runtime_checkable
class Connector(Protocol):
    """A self-healing connection to one upstream for one session.

    Optional, for upstreams that acknowledge messages (the ``websocket`` connector's ``ack``
    option): an ``acks`` attribute that is True, an ``ack_timeout`` (seconds or None for the
    service's ``send_timeout``) and ``async send_acked(message_id, payload) -> asyncio.Future[bool]``,
    which writes now (raising like ``send``) and returns a receipt resolved True when the upstream
    acknowledges, False when the connection ends first. The delivery loop then acks the outbox on
    the receipt, not on the write, and sends the rest again in order.
    """

    kind: ClassVar[str]

    @property
    def state(self) -> State: ...

    def stats(self) -> Mapping[str, Any]:
        """Counters and facts for the API and health sweep (attempts, last_error, last_close_code,
        last_heartbeat_at, up_since, ...)."""
        ...

    async def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        ...

    async def send(self, payload: Any) -> None:
        """Send one message upstream now; raise a TetherError when it cannot be sent.

        ``payload`` is what the outbox stored: the ``str`` the API client posted, or JSON text when
        it posted an object (a connector that needs structure, like telegram-bot, parses it).
        """
        ...

    async def stop(self) -> None:
        """Intentional close: never reconnects; cancels and awaits every task it started."""
        ...


ConnectorFactory = Callable[[ConnectorContext], Connector]
CONNECTORS: dict[str, ConnectorFactory] = {}
#: Optional pydantic model per kind: the API validates a session's options with it (422 naming the
#: field) before anything starts. ``extra="forbid"`` on the model catches typos.
CONNECTOR_OPTIONS: dict[str, Any] = {}
#: Option names holding credentials per kind: masked in API output and cleared on logout.
CONNECTOR_SECRETS: dict[str, tuple[str, ...]] = {}


def register_connector(
    kind: str, factory: ConnectorFactory, *, options: Any = None, secrets: tuple[str, ...] = ()
) -> None:
    """Make a connector kind available to sessions (``{"kind": "websocket", ...}``).

    Args:
        kind: the name sessions use.
        factory: builds a connector from a :class:`ConnectorContext`.
        options: a pydantic model class validating the session options (recommended).
        secrets: option names that hold credentials (masked in output, cleared on logout).
    """
    CONNECTORS[kind] = factory
    if options is not None:
        CONNECTOR_OPTIONS[kind] = options
    if secrets:
        CONNECTOR_SECRETS[kind] = tuple(secrets)

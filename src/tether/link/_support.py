"""Plumbing of the Link shell: stats snapshot, URL redaction, wake-ups, send items, event streams."""

from __future__ import annotations

import asyncio
import collections
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Coroutine, Generator, Mapping

from .._backoff import Backoff
from .._errors import ConfigError
from .._events import Event
from ._options import AppPing, JsonAck, Message

if TYPE_CHECKING:
    from ._link import Link

__all__ = ["LinkStats", "check_options", "redact_url"]

_EVENT_BACKLOG = 10_000  # per events() consumer; the oldest go first if a consumer stops reading


@dataclass(frozen=True, slots=True)
class LinkStats:
    """A snapshot of a link's counters and facts (times are wall-clock epoch seconds)."""

    connects: int = 0
    disconnects: int = 0
    attempts: int = 0
    sent: int = 0
    received: int = 0
    buffered: int = 0
    dropped: int = 0
    last_error: str | None = None
    up_since: float | None = None
    last_close_code: int | None = None
    last_close_reason: str | None = None
    last_heartbeat_rtt: float | None = None
    last_heartbeat_at: float | None = None


class _Facts:
    """What a Link learns often (heartbeat rtt and time, whether it was up), kept in plain slots:
    a heartbeat writes two fields instead of copying LinkStats; ``Link.stats`` folds them in on read."""

    __slots__ = ("was_up", "heartbeat_rtt", "heartbeat_at")

    def __init__(self) -> None:
        self.was_up = False
        self.heartbeat_rtt: float | None = None
        self.heartbeat_at: float | None = None


def redact_url(url: str) -> str:
    """The URL without credentials or query values (bot tokens live there)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    query = "&".join(f"{k}=***" for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, query, ""))


class _Pulse:
    """A broadcast wake-up: waiters take the current event; ``fire()`` wakes them all.

    The event is made only when someone waits (an idle link has several pulses and nobody waiting;
    an asyncio.Event costs ~0.7 KiB).
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def fire(self) -> None:
        old, self._event = self._event, None
        if old is not None:
            old.set()

    async def wait(self) -> None:
        await self.current.wait()

    @property
    def current(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event


class _Out:
    __slots__ = ("data", "fut")

    def __init__(self, data: Message, fut: asyncio.Future[bool] | None) -> None:
        self.data = data
        self.fut = fut

    def settle(self, written: bool) -> None:
        if self.fut is not None and not self.fut.done():
            self.fut.set_result(written)


class _Resumed:
    """Await the rest of a coroutine that was stepped once by hand and suspended yielding ``pending``.

    Delegates exactly as ``await`` does: what the task sends or throws goes to the coroutine.
    """

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                sent = yield pending
            except BaseException as exc:  # noqa: BLE001 - cancellation included: the coroutine decides
                try:
                    pending = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as done:
                    return done.value


class _EventStream:
    """One consumer's view of a link's events; registered when created so nothing is missed."""

    def __init__(self, link: "Link") -> None:
        self._link = link
        self._items: collections.deque[Event] = collections.deque(maxlen=_EVENT_BACKLOG)
        self._pulse = _Pulse()
        self._ended = False

    def _push(self, event: Event) -> None:
        self._items.append(event)
        self._pulse.fire()

    def _end(self) -> None:
        self._ended = True
        self._pulse.fire()

    def __aiter__(self) -> "_EventStream":
        return self

    async def __anext__(self) -> Event:
        while True:
            waiter = self._pulse.current
            if self._items:
                return self._items.popleft()
            if self._ended:
                raise StopAsyncIteration
            await waiter.wait()

    async def aclose(self) -> None:
        self._link._streams.discard(self)
        self._end()


def _number(name: str, value: Any, *, minimum: float = 0.0, strict: bool = True, hint: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or (value <= minimum if strict else value < minimum):
        raise ConfigError(f"{name} must be a number {'>' if strict else '>='} {minimum:g}, got {value!r}; {hint}")
    return float(value)


def check_options(
    *,
    backoff: Any,
    buffer_limit: Any,
    on_overflow: Any,
    admission: Any,
    classifier: Any,
    headers: Any,
    subprotocols: Any,
    heartbeat: Any,
    outbox: Any,
    session: Any,
    ack: Any,
    auth_codes: Any,
) -> frozenset[int]:
    """Validate the Link's options (the core checks its own); returns the auth codes as a frozenset.

    Raises:
        ConfigError: naming the option and saying what to use.
    """
    if backoff is not None and not isinstance(backoff, Backoff):
        raise ConfigError(f"backoff must be a tether.Backoff(...) or None, got {type(backoff).__name__}")
    if isinstance(buffer_limit, bool) or not isinstance(buffer_limit, int) or buffer_limit < 1:
        raise ConfigError(f"buffer_limit must be an int >= 1 (e.g. 10_000), got {buffer_limit!r}")
    if on_overflow not in ("raise", "drop_oldest"):
        raise ConfigError(f'on_overflow must be "raise" or "drop_oldest", got {on_overflow!r}')
    if admission is not None and not callable(getattr(admission, "acquire", None)):
        raise ConfigError("admission must be a tether.Admission(rate=..., burst=...) shared by the links it caps")
    if classifier is not None and not callable(classifier):
        raise ConfigError("classifier must be a callable exc -> tether.Decision, or None for the default")
    if headers is not None and not (callable(headers) or isinstance(headers, Mapping)):
        raise ConfigError("headers must be a dict, or a (async) callable returning one before every attempt")
    if subprotocols is not None and (isinstance(subprotocols, str) or not all(isinstance(p, str) for p in subprotocols)):
        raise ConfigError(f"subprotocols must be a list of strings, e.g. ['v1.chat'], got {subprotocols!r}")
    if heartbeat is not None and not isinstance(heartbeat, AppPing):
        raise ConfigError("heartbeat must be tether.AppPing(make=..., is_pong=...) or None for WebSocket pings")
    if ack is not None and not isinstance(ack, JsonAck):
        raise ConfigError("ack must be tether.JsonAck(...) or None")
    if (outbox is None) != (session is None):
        raise ConfigError("outbox= and session= go together: durable mode needs both (or neither)")
    if ack is not None and outbox is None:
        raise ConfigError("ack= needs durable mode: pass outbox= and session= too")
    try:
        codes = frozenset(int(c) for c in auth_codes)
    except (TypeError, ValueError):
        raise ConfigError(f"auth_codes must be close codes (ints), e.g. {{4001, 4003}}; got {auth_codes!r}") from None
    return codes

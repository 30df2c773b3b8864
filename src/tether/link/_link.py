"""The Link's asyncio shell: performs what the sans-I/O core decides, over ``websockets``."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import inspect
import logging
import urllib.parse
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from .._backoff import Backoff
from .._classify import DEFAULT_AUTH_CODES
from .._clock import SYSTEM_CLOCK, Clock, SystemClock, wait_for
from .._decision import Action, Decision, ErrorClass
from .._errors import BufferFullError, ConfigError, LinkClosedError, LinkError, MessageTypeError, NotConnectedError
from .._events import Connected, Disconnected, Dropped, Event, GaveUp, HeartbeatAck
from .._state import State
from ._admission import Admission
from ._deflate import check_compression, websockets_options
from ._core import _SHARED_RNG, Abort, Connect, CoreAction, CoreConfig, Emit, GiveUp, LinkCore, SendPing, Sleep
from ._options import AppPing, JsonAck, Message
from ._support import LinkStats, _EventStream, _Facts, _number, _Out, _Pulse, _Resumed, check_options, redact_url

__all__ = ["Link", "LinkStats", "connect"]


def _shared_link_classifier(
    codes: frozenset[int], reconnect_on_normal_close: bool, wall: Callable[[], float]
) -> Callable[[BaseException], Decision]:
    """The default classifier: ``tether.recovery.link_classifier`` with packs built once per code set."""
    from ..recovery._packs import default_packs
    from ..recovery._rules import link_classifier

    packs = _PACKS.get(codes)
    if packs is None:
        packs = _PACKS[codes] = tuple(tuple(p) for p in default_packs(auth_codes=codes))
    return link_classifier(packs=packs, reconnect_on_normal_close=reconnect_on_normal_close, now=wall)


_PACKS: dict[frozenset[int], tuple[tuple[object, ...], ...]] = {}

log = logging.getLogger("tether.link")

#: How long a closing handshake may take before the socket is aborted. websockets waits 10 s for a
#: close frame from a dead peer; a dead peer never sends one, so we give it one second.
CLOSE_TIMEOUT = 1.0


class _Settings:
    """The options a Link reads but never changes (slotted: see Link.__init__)."""

    __slots__ = ("connect_timeout", "buffer_limit", "on_overflow", "admission", "headers", "subprotocols", "app_ping", "ws_options")

    def __init__(self, connect_timeout: float, buffer_limit: int, on_overflow: str, admission: Admission | None,
                 headers: Any, subprotocols: list[str] | None, app_ping: AppPing | None, ws_options: dict[str, Any]) -> None:
        self.connect_timeout = connect_timeout
        self.buffer_limit = buffer_limit
        self.on_overflow = on_overflow
        self.admission = admission
        self.headers = headers
        self.subprotocols = subprotocols
        self.app_ping = app_ping
        self.ws_options = ws_options


class _Pulses:
    """A Link's wake-ups: more buffered, all written, received, room in the receive queue, state, closed."""

    __slots__ = ("buffer", "drained", "recv", "room", "state", "closed")

    def __init__(self) -> None:
        self.buffer, self.drained, self.recv = _Pulse(), _Pulse(), _Pulse()
        self.room, self.state, self.closed = _Pulse(), _Pulse(), _Pulse()


class Link:
    """A WebSocket connection that heals itself. Make one with :func:`tether.connect`.

    See ``docs/link.md`` for the defaults and why they are what they are.
    """

    def __init__(
        self,
        url: str,
        *,
        heartbeat_interval: float | None = 20.0,
        heartbeat_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        stable_after: float = 30.0,
        buffer_limit: int = 10_000,
        on_overflow: str = "raise",
        admission: Admission | None = None,
        clock: Clock | None = None,
        classifier: Callable[[BaseException], Decision] | None = None,
        headers: Mapping[str, str] | Callable[[], Any] | None = None,
        subprotocols: Sequence[str] | None = None,
        heartbeat: AppPing | None = None,
        auth_codes: Iterable[int] = DEFAULT_AUTH_CODES,
        reconnect_on_normal_close: bool = True,
        outbox: Any = None,
        session: str | None = None,
        ack: JsonAck | None = None,
        name: str | None = None,
        compression: Any = "lean",
    ) -> None:
        # Everything is validated before the first attribute is set: on CPython 3.11 a first Link
        # whose __init__ raised half-way stops every later Link from sharing dict keys (+1.3 KiB each).
        if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("ws", "wss"):
            raise ConfigError(f"url must be a ws:// or wss:// URL string, got {redact_url(str(url))!r}")
        clock = clock or SYSTEM_CLOCK
        connect_timeout = _number("connect_timeout", connect_timeout, hint="e.g. connect_timeout=10.0")
        codes = check_options(
            backoff=backoff, buffer_limit=buffer_limit, on_overflow=on_overflow, admission=admission,
            classifier=classifier, headers=headers, subprotocols=subprotocols, heartbeat=heartbeat,
            outbox=outbox, session=session, ack=ack, auth_codes=auth_codes,
        )
        ws_options = websockets_options(check_compression(compression))
        core = LinkCore(
            CoreConfig(
                heartbeat_interval=heartbeat_interval,
                heartbeat_timeout=heartbeat_timeout,
                stable_after=stable_after,
                max_attempts=max_attempts,
                # each link owns its backoff state; the default one shares a generator (memory per link)
                backoff=backoff.clone() if backoff is not None else Backoff(rng=_SHARED_RNG),
            )
        )
        durable = None
        if outbox is not None:
            from ._durable import DurableSender

            durable = DurableSender(self, outbox, str(session), ack)
        if classifier is None:
            # One classification serves both: the recovery engine's rule packs decide for the Link too.
            classifier = _shared_link_classifier(frozenset(codes), reconnect_on_normal_close, clock.wall)

        self.url = url
        self.name = name or redact_url(url)
        self._clock: Clock = clock
        self._core = core
        # Settings and wake-ups live in two slotted holders: CPython shares an instance dict's keys
        # only up to 29 attributes, and past that every idle link pays ~1.3 KiB more for its dict.
        self._opt = _Settings(
            connect_timeout, buffer_limit, on_overflow, admission, headers,
            list(subprotocols) if subprotocols is not None else None, heartbeat, ws_options,
        )
        self._pulse = _Pulses()
        self._classifier = classifier
        self._durable = durable
        self._stats = LinkStats()
        self._sent = 0
        self._received = 0
        self._facts = _Facts()  # heartbeat facts in slots, not a LinkStats copy per heartbeat
        self._ws: ClientConnection | None = None
        self._ws_conn = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conn_tasks: set[asyncio.Task[Any]] = set()
        self._connect_task: asyncio.Task[Any] | None = None
        self._buffer: collections.deque[_Out] = collections.deque()
        self._inflight: _Out | None = None
        self._recvq: collections.deque[Message] = collections.deque()
        # The real clock's timer is a loop handle (no task); only a test clock's timer task uses _wakeup.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._wakeup: asyncio.Event | None = None
        self._writer_task: asyncio.Task[Any] | None = None  # exists only while something is queued
        self._subscribers: list[Callable[[Event], None]] = []
        self._streams: set[_EventStream] = set()
        self._started = False
        self._closing = False
        self._closed = False

    # -- public surface ----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """Where the link is: IDLE, CONNECTING, CONNECTED, BACKING_OFF, CLOSING, CLOSED or FAILED."""
        return self._core.state

    @property
    def stats(self) -> LinkStats:
        """A snapshot of the counters (see :class:`LinkStats`)."""
        facts = self._facts
        return dataclasses.replace(
            self._stats, attempts=self._core.total_attempts, buffered=self.buffered, sent=self._sent, received=self._received,
            last_heartbeat_rtt=facts.heartbeat_rtt, last_heartbeat_at=facts.heartbeat_at,
        )

    @property
    def buffered(self) -> int:
        """Messages waiting to be written (buffered while down, or queued behind the writer).

        In durable mode: messages this link put in the outbox that are not acknowledged yet.
        """
        if self._durable is not None:
            return self._durable.pending
        return self._unwritten()

    async def start(self) -> None:
        """Begin connecting in the background; returns at once. ``async with`` calls it for you."""
        if self._closing:
            raise LinkClosedError(f"[{self.name}] link is closed")
        if self._started:
            return
        self._started = True
        if not isinstance(self._clock, SystemClock):
            self._wakeup = asyncio.Event()
            self._spawn(self._timer_loop(), "timer")
        if self._durable is not None:
            await self._durable.start()
        self._feed(self._core.start(self._clock.monotonic()))

    async def __aenter__(self) -> "Link":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the link is CONNECTED.

        Raises:
            NotConnectedError: ``timeout`` seconds passed first.
            AuthError / GaveUpError: the link failed for good.
            LinkClosedError: the link was closed.
        """
        try:
            await wait_for(self._until_connected(), timeout, self._clock)
        except TimeoutError:
            raise NotConnectedError(f"[{self.name}] not connected after {timeout}s (state {self.state})") from None

    async def _until_connected(self) -> None:
        while True:
            waiter = self._pulse.state.current
            state = self._core.state
            if state is State.CONNECTED:
                return
            if state is State.FAILED and self._core.error is not None:
                raise self._core.error
            if state in (State.CLOSING, State.CLOSED):
                raise LinkClosedError(f"[{self.name}] link is closed")
            await waiter.wait()

    async def send(self, data: Message, *, buffer: bool = True) -> None:
        """Send one message (str: text frame, bytes: binary frame), in order.

        While connected it returns once the message is written to the socket; while disconnected it
        returns once buffered (up to ``buffer_limit``), and buffered messages go out first after the
        reconnect. In durable mode (``outbox=``) it returns once the message is on disk.

        ``buffer=False`` is for callers that keep their own durable copy (the service's outbox): the
        message is written now or not at all, never kept in memory to go out ahead of their resends.

        Raises:
            NotConnectedError: with ``buffer=False``, the link is not connected, other messages are
                queued ahead, or the connection was lost during the write (nothing is kept).
            MessageTypeError: ``data`` is neither str nor bytes.
            BufferFullError: the buffer holds ``buffer_limit`` messages and ``on_overflow="raise"``.
            AuthError / GaveUpError: the link failed; call ``reconnect()`` first.
            LinkClosedError: the link was closed.
        """
        ws = self._ws
        kind = type(data)
        if (
            ws is not None and self._inflight is None and not self._buffer and (kind is str or kind is bytes)
            and self._durable is None and not self._closing and self._core.state is State.CONNECTED
        ):
            # Fast path (nothing queued, connected): _write inlined, one coroutine less per message.
            item = _Out(data, None)
            self._inflight = item
            try:
                await ws.send(data)
            except asyncio.CancelledError as exc:
                self._write_failed(ws, item, exc, requeue=buffer)
                raise
            except Exception as exc:  # noqa: BLE001 - any failed write ends this connection
                self._write_failed(ws, item, exc, requeue=buffer)
                if not buffer:
                    raise NotConnectedError(f"[{self.name}] connection lost during the write; nothing kept") from exc
                return
            self._inflight = None
            self._sent += 1
            if self._buffer:
                self._pulse.buffer.fire()  # senders queued behind this write: the writer takes over
                self._kick_writer()
            else:
                self._pulse.drained.fire()
            return
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, (str, bytes)):
            raise MessageTypeError(f"send() takes str or bytes, got {type(data).__name__}; json.dumps() objects first")
        if self._closing:
            raise LinkClosedError(f"[{self.name}] link is closed; no more sends")
        if self._core.state is State.FAILED and self._core.error is not None:
            raise self._core.error
        if self._durable is not None:
            await self._durable.send(data)
            return
        connected = self._core.state is State.CONNECTED
        ws = self._ws
        if connected and ws is not None and not self._buffer and self._inflight is None:
            # fast path: nothing queued, write from here
            if not await self._write(ws, _Out(data, None), requeue=buffer) and not buffer:
                raise NotConnectedError(f"[{self.name}] connection lost during the write; nothing kept")
            return
        if not buffer:
            raise NotConnectedError(f"[{self.name}] not connected ({self._core.state}) or busy; nothing kept")
        if len(self._buffer) >= self._opt.buffer_limit:
            if self._opt.on_overflow == "raise":
                raise BufferFullError(
                    f"[{self.name}] send buffer holds buffer_limit={self._opt.buffer_limit} messages; "
                    'raise buffer_limit or use on_overflow="drop_oldest"'
                )
            self._buffer.popleft().settle(False)
            self._stats = dataclasses.replace(self._stats, dropped=self._stats.dropped + 1)
            self._emit(Dropped(1))
        item = _Out(data, asyncio.get_running_loop().create_future() if connected else None)
        self._buffer.append(item)
        self._pulse.buffer.fire()
        self._kick_writer()
        if item.fut is not None:
            await item.fut

    async def recv(self) -> Message:
        """The next received message (str or bytes).

        Raises:
            LinkClosedError: the link was closed and every received message was read.
            AuthError / GaveUpError: the link failed and every received message was read.
        """
        while True:
            waiter = self._pulse.recv.current
            if self._recvq:
                message = self._recvq.popleft()
                if len(self._recvq) < self._opt.buffer_limit:
                    self._pulse.room.fire()
                return message
            if self._closing:
                raise LinkClosedError(f"[{self.name}] link is closed")
            if self._core.state is State.FAILED and self._core.error is not None:
                raise self._core.error
            await waiter.wait()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.recv()
        except LinkClosedError:
            raise StopAsyncIteration from None

    def events(self) -> AsyncIterator[Event]:
        """An async iterator of this link's events from now on; it ends after ``Closed``. Many may run at once."""
        stream = _EventStream(self)
        if self._core.state is State.CLOSED:
            stream._end()
        else:
            self._streams.add(stream)
        return stream

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` synchronously for every event; returns a function that unsubscribes.

        A callback that raises is logged and otherwise ignored: observers never break the link.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    async def reconnect(self) -> None:
        """Manual reconnect: retry a FAILED link from scratch, end a backoff now, or replace a live connection."""
        if self._closing:
            raise LinkClosedError(f"[{self.name}] link is closed")
        if not self._started:
            await self.start()
            return
        self._feed(self._core.reconnect_requested(self._clock.monotonic()))

    def configure(
        self, *, heartbeat_interval: float | None | object = ..., heartbeat_timeout: float | object = ..., backoff: Backoff | object = ...
    ) -> None:
        """Change heartbeat and backoff settings while running; they apply from the next cycle, no reconnect.

        Raises:
            ConfigError: a value is invalid (nothing is changed then).
        """
        self._core.configure(heartbeat_interval=heartbeat_interval, heartbeat_timeout=heartbeat_timeout, backoff=backoff)
        self._rearm()

    async def close(self, *, flush_timeout: float = 2.0) -> None:
        """Close on purpose: never reconnects. Flushes buffered messages for up to ``flush_timeout`` seconds
        while connected, sends close 1000, then cancels and awaits every task the link started.
        """
        if self._closing:
            while not self._closed:
                await self._pulse.closed.wait()
            return
        if self._core.state is State.CONNECTED and self._unwritten() and flush_timeout > 0:
            try:
                await wait_for(self._flushed(), flush_timeout, self._clock)
            except (TimeoutError, LinkError):
                pass
        self._closing = True
        now = self._clock.monotonic()
        self._feed([a for a in self._core.close_requested(now) if isinstance(a, Emit)])
        ws, self._ws = self._ws, None
        for task in list(self._tasks):
            task.cancel()
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(1000, "bye"), CLOSE_TIMEOUT)
            except BaseException:  # noqa: BLE001 - whatever happens, the socket goes
                pass
            if ws.transport is not None:
                ws.transport.abort()
        await self._reap(list(self._tasks))
        # Senders still waiting for a write return; what is unwritten stays counted in stats.buffered.
        for item in [*self._buffer, *([self._inflight] if self._inflight else [])]:
            item.settle(False)
        if self._durable is not None:
            await self._durable.stop()
        self._feed(self._core.closed(self._clock.monotonic()))
        for stream in list(self._streams):
            stream._end()
        self._streams.clear()
        self._pulse.recv.fire()
        self._closed = True
        self._pulse.closed.fire()

    def _unwritten(self) -> int:
        return len(self._buffer) + (1 if self._inflight is not None else 0)

    async def _flushed(self) -> None:
        while self._unwritten():
            waiter = self._pulse.drained.current
            if self._core.state is not State.CONNECTED:
                return
            await waiter.wait()

    # -- the engine ----------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any], what: str, *, conn_scoped: bool = False) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"tether.link[{self.name}].{what}")  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        if conn_scoped:
            self._conn_tasks.add(task)
            task.add_done_callback(self._conn_tasks.discard)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task is self._connect_task:
            self._connect_task = None  # a finished task kept for nothing costs ~0.5 KiB per link
        if not task.cancelled() and task.exception() is not None:
            log.error("[%s] internal task %s failed", self.name, task.get_name(), exc_info=task.exception())

    async def _reap(self, tasks: list[asyncio.Task[Any]]) -> None:
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=5.0)
        if pending:  # pragma: no cover - a task that ignores cancellation is a bug; say which
            log.error("[%s] tasks did not stop within 5 s: %s", self.name, [t.get_name() for t in pending])

    def _feed(self, actions: list[CoreAction]) -> None:
        for action in actions:
            if isinstance(action, Emit):
                self._emit(action.event)
            elif isinstance(action, Connect):
                self._connect_task = self._spawn(self._attempt(action.conn), f"connect#{action.conn}")
            elif isinstance(action, SendPing):
                if self._ws is not None and self._ws_conn == action.conn:
                    self._ping(action.conn, self._ws)
            elif isinstance(action, Abort):
                self._teardown(action.conn)
            elif isinstance(action, GiveUp):
                log.warning("[%s] gave up: %s", self.name, action.error)
                self._pulse.recv.fire()
            elif isinstance(action, Sleep):
                pass  # the core's deadline ends the backoff; the timer wakes for it
        self._pulse.state.fire()
        self._rearm()

    def _rearm(self) -> None:
        """Point the timer at the core's next deadline (a loop handle: an idle link keeps no timer task)."""
        if not self._started:
            return
        if self._wakeup is not None:
            self._wakeup.set()  # a test clock: its timer task recomputes
            return
        deadline = None if self._closing else self._core.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + (deadline - self._clock.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._core.awaiting_pong:
            # One more loop pass first: if the loop was blocked, a pong that arrived meanwhile is
            # processed before the deadline is judged (a busy loop is not a dead peer).
            asyncio.get_running_loop().call_soon(self._tick)
        else:
            self._tick()  # a ping or a reconnect is due: nothing to wait for (one handle less per heartbeat)

    def _tick(self) -> None:
        if self._timer is not None or self._closing:
            return  # re-armed meanwhile (a pong moved the deadline), or closed
        self._timer_at = None
        self._feed(self._core.tick(self._clock.monotonic()))

    def _emit(self, event: Event) -> None:
        # The event is fresh from the core and not yet published: stamp it in place (a
        # dataclasses.replace per heartbeat costs more than the rest of the bookkeeping).
        at = self._clock.wall()
        object.__setattr__(event, "at", at)
        if isinstance(event, HeartbeatAck):
            facts = self._facts
            facts.heartbeat_rtt = event.rtt
            facts.heartbeat_at = at
        else:
            self._update_stats(event)
        log.debug("[%s] %s", self.name, event)
        if self._subscribers:
            for callback in list(self._subscribers):
                try:
                    callback(event)
                except Exception:  # noqa: BLE001 - observers never break the link
                    log.exception("[%s] event subscriber %r failed", self.name, callback)
        if self._streams:
            for stream in list(self._streams):
                stream._push(event)

    def _update_stats(self, event: Event) -> None:
        s = self._stats
        if isinstance(event, Connected):
            self._facts.was_up = True
            s = dataclasses.replace(s, connects=s.connects + 1, up_since=event.at)
        elif isinstance(event, Disconnected):
            lost = self._facts.was_up
            self._facts.was_up = False
            s = dataclasses.replace(
                s,
                disconnects=s.disconnects + (1 if lost else 0),
                up_since=None,
                last_error=event.reason,
                last_close_code=event.code if event.code is not None else s.last_close_code,
                last_close_reason=event.reason if event.code is not None else s.last_close_reason,
            )
        elif isinstance(event, GaveUp):
            s = dataclasses.replace(s, last_error=str(event.error))
        else:
            return
        self._stats = s

    async def _timer_loop(self) -> None:
        """The timer on a test clock (FakeClock), which sleeps by hand; the real clock uses a loop handle."""
        # Not asyncio.wait_for: on 3.11 it can swallow a cancel that races with the wake-up.
        loop = asyncio.get_running_loop()
        wakeup = self._wakeup
        assert wakeup is not None
        while not self._closing:
            wakeup.clear()
            deadline = self._core.next_deadline()
            delay = None if deadline is None else deadline - self._clock.monotonic()
            if delay is None:
                await wakeup.wait()
            elif delay > 0:
                sleeper = loop.create_task(self._clock.sleep(delay))
                waiter = loop.create_task(wakeup.wait())
                try:
                    await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
                    waiter.cancel()
                    await asyncio.gather(sleeper, waiter, return_exceptions=True)
            self._feed(self._core.tick(self._clock.monotonic()))

    def _classify(self, exc: BaseException) -> Decision:
        try:
            decision = self._classifier(exc)
            if isinstance(decision, Decision):
                return decision
            log.error("[%s] classifier returned %r, not a Decision; reconnecting", self.name, decision)
        except Exception:  # noqa: BLE001 - a broken classifier must not stop the link
            log.exception("[%s] classifier failed on %r; reconnecting with backoff", self.name, exc)
        return Decision(Action.RECONNECT, 0.0, f"{type(exc).__name__}: {exc}", ErrorClass.UNKNOWN)

    async def _resolve_headers(self) -> dict[str, str] | None:
        headers = self._opt.headers
        if headers is None:
            return None
        if callable(headers):
            headers = headers()
            if inspect.isawaitable(headers):
                headers = await headers
        return dict(headers) if headers else None

    async def _attempt(self, conn: int) -> None:
        try:
            if self._opt.admission is not None:
                await self._opt.admission.acquire()
            headers = await self._resolve_headers()

            async def open_() -> ClientConnection:
                return await ws_connect(
                    self.url,
                    additional_headers=headers,
                    subprotocols=self._opt.subprotocols,  # type: ignore[arg-type]
                    open_timeout=None,  # connect_timeout runs on our clock instead
                    ping_interval=None,  # the Link runs its own heartbeat
                    close_timeout=CLOSE_TIMEOUT,
                    **self._opt.ws_options,  # compression=
                )

            ws = await wait_for(open_(), self._opt.connect_timeout, self._clock)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes
            if isinstance(exc, TimeoutError) and not str(exc):
                exc = TimeoutError(f"no handshake within connect_timeout={self._opt.connect_timeout}s")
            self._feed(self._core.attempt_failed(conn, self._classify(exc), exc, self._clock.monotonic()))
            return
        if conn != self._core.conn or self._core.state is not State.CONNECTING:
            ws.transport.abort()
            return
        self._ws, self._ws_conn = ws, conn
        self._spawn(self._reader(conn, ws), "reader", conn_scoped=True)
        if self._durable is not None:
            self._spawn(self._durable.writer(conn, ws), "writer", conn_scoped=True)
        self._feed(self._core.attempt_succeeded(conn, self._clock.monotonic()))
        self._kick_writer()  # what was buffered while down goes out first

    def _teardown(self, conn: int) -> None:
        """Abort connection ``conn`` and stop its tasks; unwritten messages stay buffered, in order."""
        current = asyncio.current_task()
        if self._connect_task is not None and self._connect_task is not current and self._core.conn == conn:
            if not self._connect_task.done():
                self._connect_task.cancel()
        if self._ws is not None and self._ws_conn == conn:
            if self._ws.transport is not None:
                self._ws.transport.abort()
            self._ws = None
            for task in list(self._conn_tasks):
                if task is not current:
                    task.cancel()
            self._writer_task = None
            # Senders waiting for their write return now: their messages are safely buffered.
            for item in self._buffer:
                item.settle(False)

    async def _reader(self, conn: int, ws: ClientConnection) -> None:
        error: BaseException | None = None
        try:
            while True:
                message = await ws.recv()
                if self._opt.app_ping is not None and self._is_pong(message):
                    self._feed(self._core.pong_received(conn, self._clock.monotonic()))
                    continue
                if self._durable is not None and await self._durable.consume(message):
                    continue
                if len(self._recvq) >= self._opt.buffer_limit:
                    # Backpressure: we stop reading, so pongs cannot be seen; suspend the heartbeat
                    # judgement instead of killing a healthy connection of a slow application.
                    self._feed(self._core.reader_paused(conn, self._clock.monotonic()))
                    while len(self._recvq) >= self._opt.buffer_limit:
                        await self._pulse.room.wait()
                    self._feed(self._core.reader_resumed(conn, self._clock.monotonic()))
                self._recvq.append(message)
                self._received += 1
                self._pulse.recv.fire()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - ConnectionClosed or anything else ends this connection
            error = exc
        code: int | None = None
        if isinstance(error, ConnectionClosed):
            code = error.rcvd.code if error.rcvd is not None else 1006
            reason = error.rcvd.reason if error.rcvd is not None else ""
            self._stats = dataclasses.replace(self._stats, last_close_code=code, last_close_reason=reason)
        decision = self._classify(error) if error is not None else Decision(Action.RECONNECT, 0.0, "connection lost", ErrorClass.CONNECTION)
        self._teardown(conn)
        self._feed(self._core.connection_lost(conn, decision, error, self._clock.monotonic(), code=code))

    def _is_pong(self, message: Message) -> bool:
        try:
            return bool(self._opt.app_ping.is_pong(message))  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - a faulty is_pong treats the message as data
            return False

    def _kick_writer(self) -> None:
        """Start a writer task when messages wait on a live connection and none runs (durable mode has its own)."""
        ws = self._ws
        if self._writer_task is None and self._buffer and ws is not None and self._durable is None and not self._closing:
            self._writer_task = self._spawn(self._writer(self._ws_conn, ws), "writer", conn_scoped=True)

    async def _writer(self, conn: int, ws: ClientConnection) -> None:
        """Drain the buffer on connection ``conn`` (messages queued while down or behind a write), then
        end: an idle link keeps no writer task."""
        try:
            while self._buffer:
                if self._inflight is not None:
                    await self._pulse.buffer.wait()  # a write from send() goes first
                elif not await self._write(ws, self._buffer.popleft()):
                    return
        finally:
            if self._writer_task is asyncio.current_task():
                self._writer_task = None

    async def _write(self, ws: ClientConnection, item: _Out, *, requeue: bool = True) -> bool:
        """Write ``item`` as the only writer; True when written. A failed write goes back to the
        front (unless ``requeue`` is False: the caller resends it from its own copy)."""
        self._inflight = item
        try:
            await ws.send(item.data)
        except asyncio.CancelledError as exc:
            self._write_failed(ws, item, exc, requeue=requeue)
            raise
        except Exception as exc:  # noqa: BLE001 - any failed write ends this connection
            self._write_failed(ws, item, exc, requeue=requeue)
            return False
        self._wrote(item, written=True)
        return True

    def _write_failed(self, ws: ClientConnection, item: _Out, exc: BaseException, *, requeue: bool) -> None:
        if isinstance(exc, asyncio.CancelledError):
            # websockets writes an unfragmented frame before its first await, so a cancel means
            # "written, drain interrupted": count it while the connection lives (re-sending would
            # duplicate it), requeue it when the connection is being torn down (likely lost).
            self._wrote(item, written=self._ws is ws and not self._closing, requeue=requeue)
            return
        self._wrote(item, written=False, requeue=requeue)
        if not isinstance(exc, ConnectionClosed) and ws.transport is not None:
            ws.transport.abort()  # the reader sees the loss and the core decides

    def _wrote(self, item: _Out, *, written: bool, requeue: bool = True) -> None:
        if self._inflight is item:
            self._inflight = None
        if written:
            self._count_sent()
            item.settle(True)
        elif requeue:
            # Back to the front, so order holds and it goes out once after the reconnect.
            self._buffer.appendleft(item)
        if self._buffer:
            self._pulse.buffer.fire()  # the writer takes over what queued up behind this write
            if written:
                self._kick_writer()
        elif self._inflight is None:
            self._pulse.drained.fire()  # close() waits for this

    def _count_sent(self) -> None:
        self._sent += 1  # plain ints on the hot path; stats builds the snapshot

    def _ping(self, conn: int, ws: ClientConnection) -> None:
        """Send one heartbeat. ``ws.ping()`` (and ``ws.send()``) write without suspending unless the
        socket is paused or closing, so the coroutine is run here, and only one that suspends gets a
        task to finish in: a task per heartbeat cost more than the rest of the heartbeat."""
        app_ping = self._opt.app_ping
        try:
            coro = ws.ping() if app_ping is None else ws.send(app_ping.make())
            pending = coro.send(None)
        except StopIteration as done:
            if app_ping is None:
                self._await_pong(conn, done.value)
            return  # an app ping's answer is recognised by the reader
        except Exception:  # noqa: BLE001 - a failed ping is a dead connection; the reader or the timeout says so
            return
        self._spawn(self._finish_ping(conn, _Resumed(coro, pending), app_ping is None), "ping", conn_scoped=True)

    async def _finish_ping(self, conn: int, rest: "_Resumed", pong_expected: bool) -> None:
        try:
            pong = await rest
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - as in _ping
            return
        if pong_expected:
            self._await_pong(conn, pong)

    def _await_pong(self, conn: int, pong: asyncio.Future[float]) -> None:
        # The answer is awaited by a callback: no task waits for it.
        pong.add_done_callback(functools.partial(self._pong, conn))

    def _pong(self, conn: int, pong: asyncio.Future[float]) -> None:
        if pong.cancelled() or pong.exception() is not None:
            return  # the connection ended; the reader reports it
        self._feed(self._core.pong_received(conn, self._clock.monotonic()))

    def __repr__(self) -> str:
        return f"<tether.Link {self.name} {self.state}>"


def connect(url: str, **options: Any) -> Link:
    """Make a self-healing :class:`Link` to ``url``; use ``async with`` (or ``await link.start()``).

    Example::

        async with tether.connect("wss://example.org/ws", heartbeat_interval=20) as link:
            await link.send("hello")
            async for message in link:
                ...

    Options are keyword-only; see :class:`Link` and ``docs/link.md``. Invalid values raise
    :class:`tether.ConfigError` naming the option.
    """
    return Link(url, **options)

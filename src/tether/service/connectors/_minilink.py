"""A minimal reconnect loop with the subset of the ``tether.Link`` API the websocket connector uses.

It stands in only while ``tether.link`` is not installed; the real Link (sans-I/O core, heartbeat
RTT, classification, Retry-After) replaces it as soon as it is importable.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import websockets
from websockets.asyncio.client import connect as ws_connect

from ..._backoff import Backoff
from ..._clock import SYSTEM_CLOCK, Clock
from ..._errors import AuthError, GaveUpError, LinkClosedError, NotConnectedError
from ..._events import BackingOff, Closed, Connected, Connecting, Disconnected, GaveUp
from ..._state import State

log = logging.getLogger("tether.service")


@dataclass
class MiniStats:
    connects: int = 0
    disconnects: int = 0
    attempts: int = 0
    sent: int = 0
    received: int = 0
    buffered: int = 0
    last_error: str | None = None
    up_since: float | None = None
    last_close_code: int | None = None
    last_close_reason: str | None = None
    last_heartbeat_rtt: float | None = None
    last_heartbeat_at: float | None = None


class MiniLink:
    def __init__(self, url: str, *, heartbeat_interval: float = 20.0, heartbeat_timeout: float = 10.0,
                 connect_timeout: float = 10.0, backoff: Backoff | None = None, max_attempts: int | None = None,
                 clock: Clock | None = None, headers: dict[str, str] | None = None, name: str | None = None,
                 **_: Any) -> None:
        self.url = url
        self._hb = (heartbeat_interval, heartbeat_timeout)
        self._connect_timeout = connect_timeout
        self._backoff = backoff or Backoff()
        self._max_attempts = max_attempts
        self._clock = clock or SYSTEM_CLOCK
        self._headers = headers
        self.state = State.IDLE
        self.stats = MiniStats()
        self._subs: list[Callable[[Any], None]] = []
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._ws: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._kick = asyncio.Event()

    def subscribe(self, cb: Callable[[Any], None]) -> Callable[[], None]:
        self._subs.append(cb)
        return lambda: self._subs.remove(cb) if cb in self._subs else None

    def _emit(self, ev: Any) -> None:
        for cb in list(self._subs):
            try:
                cb(ev)
            except Exception:
                log.exception("link subscriber failed")

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def reconnect(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        elif self._ws is not None:
            await self._ws.close(1012, "reconnect")

    async def _run(self) -> None:
        attempt = 0
        down_at: float | None = None
        while not self._closing:
            attempt += 1
            self.stats.attempts += 1
            self.state = State.CONNECTING
            self._emit(Connecting(attempt, at=self._clock.wall()))
            code, reason = None, ""
            try:
                async with ws_connect(self.url, additional_headers=self._headers, open_timeout=self._connect_timeout,
                                      ping_interval=self._hb[0], ping_timeout=self._hb[1], close_timeout=1.0,
                                      proxy=None) as ws:
                    self._ws = ws
                    self.state = State.CONNECTED
                    self.stats.connects += 1
                    self.stats.up_since = self._clock.wall()
                    self.stats.last_heartbeat_at = self._clock.wall()
                    downtime = 0.0 if down_at is None else self._clock.monotonic() - down_at
                    self._emit(Connected(attempt, downtime, at=self._clock.wall()))
                    attempt = 0
                    self._backoff.reset()
                    async for msg in ws:
                        self.stats.received += 1
                        self.stats.last_heartbeat_at = self._clock.wall()
                        self._inbox.put_nowait(msg)
                code, reason = ws.close_code, ws.close_reason or ""
            except websockets.InvalidStatus as exc:
                status = exc.response.status_code
                reason = f"HTTP {status}"
                if status in (401, 403):
                    self._fail(AuthError(f"upstream refused credentials (HTTP {status})", status=status))
                    return
            except websockets.ConnectionClosed as exc:
                code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "connection lost")
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self._ws = None
                self.stats.up_since = None
            if self._closing:
                break
            down_at = self._clock.monotonic()
            self.stats.disconnects += 1
            self.stats.last_error = reason
            self.stats.last_close_code, self.stats.last_close_reason = code, reason
            self._emit(Disconnected(code, reason, at=self._clock.wall()))
            if code in (1008, 4001, 4003, 4401, 4403):
                self._fail(AuthError(f"upstream closed with auth code {code}", code=code))
                return
            if self._max_attempts is not None and attempt >= self._max_attempts:
                self._fail(GaveUpError(f"gave up after {attempt} attempts", attempts=attempt))
                return
            delay = next(self._backoff, self._backoff.cap)
            self.state = State.BACKING_OFF
            self._emit(BackingOff(attempt + 1, delay, reason, at=self._clock.wall()))
            await self._clock.sleep(delay)

    def _fail(self, err: Exception) -> None:
        self.state = State.FAILED
        self.stats.last_error = str(err)
        self._emit(GaveUp(err, at=self._clock.wall()))

    async def send(self, data: str | bytes) -> None:
        ws = self._ws
        if ws is None or self.state is not State.CONNECTED:
            raise NotConnectedError("not connected")
        try:
            await ws.send(data)
        except websockets.ConnectionClosed as exc:
            raise NotConnectedError(f"connection closed while sending: {exc}") from exc
        self.stats.sent += 1

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Any]:
        while True:
            msg = await self._inbox.get()
            if msg is _CLOSED:
                raise LinkClosedError("link closed")
            yield msg

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.state = State.CLOSING
        if self._ws is not None:
            try:
                await asyncio.wait_for(self._ws.close(1000, "closed"), 2.0)
            except (TimeoutError, OSError, websockets.WebSocketException):
                pass
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.state = State.CLOSED
        self._inbox.put_nowait(_CLOSED)
        self._emit(Closed(at=self._clock.wall()))


_CLOSED = object()


def connect(url: str, **kwargs: Any) -> MiniLink:
    return MiniLink(url, **kwargs)

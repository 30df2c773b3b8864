"""The clients under test, each written the way its users write it (defaults unless stated).

Every function is bounded: it returns or raises within its ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

# websockets' documented defaults, spelled out so the table says what was measured
WS_PING_INTERVAL = 20.0
WS_PING_TIMEOUT = 20.0


class Probe:
    """What a client saw: when it connected and when it first noticed the connection was gone."""

    def __init__(self, system: str) -> None:
        self.system = system
        self.connected_at: float | None = None
        self.detected_at: float | None = None
        self.connected = asyncio.Event()
        self.detected = asyncio.Event()
        self.error: str | None = None

    def mark_connected(self) -> None:
        self.connected_at = time.monotonic()
        self.connected.set()

    def mark_detected(self) -> None:
        if self.detected_at is None:
            self.detected_at = time.monotonic()
            self.detected.set()


async def _abort_ws(ws: Any) -> None:
    with contextlib.suppress(Exception):
        ws.transport.abort()


async def websockets_defaults(url: str, probe: Probe, timeout: float) -> None:
    """Plain ``websockets.connect`` (ping 20 s / timeout 20 s): the app notices when ``recv`` raises."""
    ws = await ws_connect(url, proxy=None)
    probe.mark_connected()
    try:
        async with asyncio.timeout(timeout):
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass
            probe.mark_detected()
    except TimeoutError:
        pass
    finally:
        await _abort_ws(ws)


async def seed003(url: str, probe: Probe, timeout: float, poll: float = 5.0, phase: float = 0.0) -> None:
    """Seed 003: websockets defaults plus a monitor task that polls ``close_code`` every 5 s.

    ``phase`` delays the monitor's start after the connection (in the seed it starts after the
    session setup), so several clients sample the polling delay instead of all landing on one phase.
    """
    ws = await ws_connect(url, proxy=None, ping_interval=WS_PING_INTERVAL, ping_timeout=WS_PING_TIMEOUT)
    probe.mark_connected()
    try:
        async with asyncio.timeout(timeout):
            await asyncio.sleep(phase)
            for _ in range(int(timeout / poll) + 2):
                await asyncio.sleep(poll)
                if ws.close_code is not None:
                    probe.mark_detected()
                    break
    except TimeoutError:
        pass
    finally:
        await _abort_ws(ws)


async def aiohttp_defaults(url: str, probe: Probe, timeout: float) -> None:
    """``aiohttp`` ``ws_connect`` with its defaults (heartbeat off): waits on ``receive()``."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(url)
        probe.mark_connected()
        try:
            async with asyncio.timeout(timeout):
                for _ in range(1_000_000):
                    msg = await ws.receive()
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        probe.mark_detected()
                        break
        except TimeoutError:
            pass
        finally:
            with contextlib.suppress(Exception):
                ws._response.connection.transport.abort()  # type: ignore[union-attr]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 0.5)


async def socketio_defaults(url: str, probe: Probe, timeout: float) -> None:
    """``socketio.AsyncClient`` over the websocket transport; ping interval/timeout come from the server."""
    import socketio

    sio = socketio.AsyncClient(reconnection=False)

    async def on_disconnect(*_args: Any) -> None:
        probe.mark_detected()

    sio.on("disconnect", on_disconnect)
    await sio.connect(url, transports=["websocket"], wait_timeout=10)
    probe.mark_connected()
    try:
        await asyncio.wait_for(probe.detected.wait(), timeout)
    except TimeoutError:
        pass
    finally:
        with contextlib.suppress(Exception):
            ws = sio.eio.ws
            if ws is not None:
                ws._response.connection.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sio.disconnect(), 1.0)


async def tether_link(url: str, probe: Probe, timeout: float, **options: Any) -> None:
    """``tether.connect(url, **options)``: the app notices at the first ``Disconnected`` event."""
    from ._common import tether_api
    from tether import events

    link = tether_api().connect(url, **options)

    def on_event(ev: object) -> None:
        if isinstance(ev, events.Disconnected) and probe.connected_at is not None:
            probe.mark_detected()

    unsubscribe = link.subscribe(on_event)
    try:
        await link.start()
        await link.wait_connected(timeout=10)
        probe.mark_connected()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(probe.detected.wait(), timeout)
    finally:
        unsubscribe()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(link.close(), 15)


def versions() -> dict[str, str]:
    from ._common import lib_version

    return {
        "websockets": websockets.__version__,
        "python-socketio": lib_version("python-socketio"),
        "python-engineio": lib_version("python-engineio"),
        "aiohttp": lib_version("aiohttp"),
    }

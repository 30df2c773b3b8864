"""Detection: how long until a client notices a half-open (blackholed) peer.

Every client connects through a :class:`~bench._proxy.BlackholeProxy`; 0.5 s after the last one is up
(just after the last traffic: the worst phase for every heartbeat) both proxies stop forwarding in
both directions without closing anything. Each client records when the *application* would first
know: ``recv`` raising, a monitor seeing ``close_code``, a ``disconnect`` callback, a ``Disconnected``
event. All clients run concurrently, so the whole scenario takes about as long as the slowest one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from typing import Any, Awaitable, Callable

from ._clients import (
    Probe,
    aiohttp_defaults,
    seed003,
    socketio_defaults,
    tether_link,
    websockets_defaults,
)
from ._common import HOST, Child, Row, Scenario, free_port, na_row, print_scenario, tether_link_available
from ._proxy import BlackholeProxy

TUNED = {"heartbeat_interval": 2.0, "heartbeat_timeout": 1.0}


async def _socketio_server(port: int) -> tuple[Any, Any]:
    """A python-socketio server on aiohttp with the library's default ping settings."""
    import socketio
    from aiohttp import web

    sio = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    return sio, runner


async def run_async(per_system: int = 3, window: float = 75.0, include_tether: bool | None = None) -> Scenario:
    sc = Scenario(
        name="detection",
        title="Detection of a half-open peer (blackholed by a TCP proxy)",
        primary="median s",
        lower_is_better=True,
    )
    if include_tether is None:
        include_tether = tether_link_available()
    t_start = time.monotonic()
    ws_port, sio_port = free_port(), free_port()
    server = Child("bench._wsserver", "--port", str(ws_port))
    await server.start()
    sio, runner = await _socketio_server(sio_port)
    ping_interval, ping_timeout = sio.eio.ping_interval, sio.eio.ping_timeout
    ws_proxy = await BlackholeProxy(ws_port).start()
    sio_proxy = await BlackholeProxy(sio_port).start()
    ws_url = f"ws://{HOST}:{ws_proxy.port}/"
    sio_url = f"http://{HOST}:{sio_proxy.port}"

    # seed 003's monitors start at spread phases within its 5 s poll period
    phases = iter([5.0 * i / per_system for i in range(per_system)] + [0.0] * 100)
    Spec = tuple[str, str, Callable[[Probe], Awaitable[None]], bool]
    specs: list[Spec] = []
    if include_tether:
        specs.append(("tether (defaults 20 s + 10 s)", "≤ 30 s", lambda p: tether_link(ws_url, p, window), True))
        specs.append((
            f"tether (tuned {TUNED['heartbeat_interval']:g} s + {TUNED['heartbeat_timeout']:g} s)",
            "≤ 3 s",
            lambda p: tether_link(ws_url, p, window, **TUNED),
            False,
        ))
    specs += [
        ("websockets defaults (ping 20 s / timeout 20 s)", "20 + 20 + close_timeout 10", lambda p: websockets_defaults(ws_url, p, window), False),
        ("seed 003 (websockets + close_code poll 5 s)", "websockets + ≤ 5",
         lambda p: seed003(ws_url, p, window, phase=next(phases)), False),
        (
            f"python-socketio (server ping {ping_interval:g} s / timeout {ping_timeout:g} s)",
            f"{ping_interval:g} + {ping_timeout:g}",
            lambda p: socketio_defaults(sio_url, p, window),
            False,
        ),
        ("aiohttp defaults (heartbeat off)", "never", lambda p: aiohttp_defaults(ws_url, p, window), False),
    ]
    probes: list[tuple[Spec, Probe]] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for spec in specs:
            for _ in range(per_system):
                probe = Probe(spec[0])
                probes.append((spec, probe))
                tasks.append(asyncio.create_task(spec[2](probe)))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.gather(*(p.connected.wait() for _, p in probes))
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        ws_proxy.blackhole()
        sio_proxy.blackhole()
        # everyone runs concurrently; the slowest bounds the scenario
        await asyncio.wait(tasks, timeout=window + 20)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ws_proxy.close()
        await sio_proxy.close()
        await runner.cleanup()
        await server.close()

    if not include_tether:
        sc.rows.append(na_row("tether (defaults 20 s + 10 s)", "tether.connect has not landed", baseline=True))
    for spec in specs:
        mine = [p for s, p in probes if s is spec]
        errors = [p for p in mine if p.connected_at is None]
        times = [p.detected_at - t0 for p in mine if p.detected_at is not None]
        missed = len(mine) - len(times) - len(errors)
        figs: dict[str, Any] = {
            "median s": statistics.median(times) if times else float("nan"),
            "max s": max(times) if times else float("nan"),
            "noticed": f"{len(times)}/{len(mine)}",
            "expected": spec[1],
        }
        if missed:
            figs["median s"] = f"> {window:g} (not noticed)" if not times else figs["median s"]
        if errors:
            figs["noticed"] += f" ({len(errors)} failed to connect)"
        sc.rows.append(Row(spec[0], figs, baseline=spec[3]))
    sc.notes += [
        f"{per_system} clients per system, all concurrent; blackhole 0.5 s after the last client connected.",
        "\"Noticed\" means the application is told: recv() raises (websockets), the 5 s monitor sees close_code "
        "(seed 003), the disconnect handler runs (python-socketio), the first Disconnected event (tether).",
        f"python-socketio: server defaults ping_interval={ping_interval:g} s, ping_timeout={ping_timeout:g} s "
        "(engine.io v4: the server pings, the client gives up after interval + timeout without one); websocket transport.",
    ]
    sc.seconds = time.monotonic() - t_start
    return sc


def run(**kw: Any) -> Scenario:
    return asyncio.run(run_async(**kw))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-system", type=int, default=3)
    ap.add_argument("--window", type=float, default=75.0)
    a = ap.parse_args()
    print_scenario(run(per_system=a.per_system, window=a.window))

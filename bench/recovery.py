"""Recovery: N sessions, the upstream is killed and is back 0.5 s later; how fast and how gently do they return?

The server runs in its own process (``bench._wsserver``); a replacement is started ahead of time and
binds the port exactly 0.5 s after the old one is SIGKILLed. We measure, from the kill:
- the time until all N sessions are connected again (client side count);
- the peak handshakes per second the new server sees (sliding 1 s window) and the total it sees.

Systems: tether links sharing one ``tether.Admission`` (attempts per second capped across all links),
websockets' documented reconnect loop ``async for ws in connect(...)``, and a fixed 1 s delay loop
(the pattern of seed 003 and of many bots: no jitter, so every client retries at the same instant).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import time
from typing import Any, Callable, Coroutine

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from ._common import (
    HOST,
    Child,
    Row,
    Scenario,
    free_port,
    na_row,
    peak_per_second,
    print_scenario,
    raise_nofile,
    tether_api,
    tether_link_available,
)

DOWN = 0.5
FIXED_DELAY = 1.0
ADMISSION_RATE = 400.0  # attempts/s across all links: under the 450/s peak websockets' loop reaches (PEERS.md)
ADMISSION_BURST = 40
FAST_RATE = 2000.0  # a variant row: the same fleet with a gate sized for an upstream that takes more


class Fleet:
    """Counts how many of N clients are connected, and when each came back after the restart."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.up = 0
        self.stop = asyncio.Event()
        self.kill_at: float | None = None
        self.back: list[float] = []
        self.all_up = asyncio.Event()

    def connected(self) -> None:
        self.up += 1
        if self.kill_at is not None:
            self.back.append(time.monotonic() - self.kill_at)
        if self.up >= self.n:
            self.all_up.set()

    def disconnected(self) -> None:
        self.up -= 1
        self.all_up.clear()


async def _hold(ws: Any, fleet: Fleet) -> None:
    """Stay connected until the connection dies or the scenario stops."""
    recv = asyncio.ensure_future(_drain(ws))
    halt = asyncio.ensure_future(fleet.stop.wait())
    try:
        await asyncio.wait({recv, halt}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        recv.cancel()
        halt.cancel()


async def _drain(ws: Any) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


async def websockets_client(url: str, fleet: Fleet) -> None:
    rounds = 0
    async for ws in ws_connect(url, proxy=None):
        rounds += 1
        fleet.connected()
        try:
            await _hold(ws, fleet)
        finally:
            fleet.disconnected()
        if fleet.stop.is_set() or rounds >= 1_000:  # bounded: one restart needs one round
            ws.transport.abort()
            return


async def fixed_delay_client(url: str, fleet: Fleet) -> None:
    for _ in range(100_000):
        if fleet.stop.is_set():
            return
        try:
            ws = await ws_connect(url, proxy=None)
        except (OSError, asyncio.TimeoutError, Exception):
            await asyncio.sleep(FIXED_DELAY)
            continue
        fleet.connected()
        try:
            await _hold(ws, fleet)
        finally:
            fleet.disconnected()
            ws.transport.abort()


def _tether_factory(admission: Any) -> Callable[[str, Fleet], Coroutine[Any, Any, None]]:
    async def tether_client(url: str, fleet: Fleet) -> None:
        import tether
        from tether import events

        link = tether_api().connect(url, admission=admission)
        up = [False]

        def on_event(ev: object) -> None:
            if isinstance(ev, events.Connected) and not up[0]:
                up[0] = True
                fleet.connected()
            elif isinstance(ev, events.Disconnected) and up[0]:
                up[0] = False
                fleet.disconnected()

        unsub = link.subscribe(on_event)
        try:
            await link.start()
            await fleet.stop.wait()
        finally:
            unsub()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(link.close(), 10)

    return tether_client


async def measure(system: str, client: Callable[[str, Fleet], Coroutine[Any, Any, None]], n: int,
                  settle: float = 30.0) -> dict[str, Any]:
    port = free_port()
    server = Child("bench._wsserver", "--port", str(port))
    await server.start()
    url = f"ws://{HOST}:{port}/"
    fleet = Fleet(n)
    tasks: list[asyncio.Task[None]] = []
    replacement: Child | None = None
    try:
        # ramp up in batches so the initial connect is not itself the storm we measure
        for i in range(0, n, 250):
            for _ in range(min(250, n - i)):
                tasks.append(asyncio.create_task(client(url, fleet)))
            for _ in range(600):
                if fleet.up >= len(tasks):
                    break
                await asyncio.sleep(0.05)
        if fleet.up < n:
            return {"status": f"only {fleet.up}/{n} connected initially"}
        await asyncio.sleep(1.0)
        replacement = Child("bench._wsserver", "--port", str(port), "--defer")
        await replacement.start()
        fleet.kill_at = time.monotonic()
        server.kill()
        await asyncio.sleep(DOWN)
        await replacement.send({"cmd": "listen"})
        await replacement.read(10)
        try:
            await asyncio.wait_for(fleet.all_up.wait(), settle)
            all_back = time.monotonic() - fleet.kill_at
        except asyncio.TimeoutError:
            all_back = float("nan")
        stats = await replacement.ask({"cmd": "stats", "stamps": True})
        stamps = stats["stamps"]
        back = sorted(fleet.back)
        figs: dict[str, Any] = {
            "all back s": all_back if all_back == all_back else f"> {settle:g} ({fleet.up}/{n} back)",
            "median back s": statistics.median(back) if back else float("nan"),
            "peak handshakes/s": peak_per_second(stamps),
            "handshakes seen": stats["handshakes"],
        }
        return figs
    finally:
        # kill the servers first: every client sees its connection die, then stop makes them exit
        if replacement is not None:
            replacement.kill()
        server.kill()
        fleet.stop.set()
        await asyncio.wait(tasks, timeout=20) if tasks else None
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if replacement is not None:
            await replacement.close()
        await server.close()
        gc.collect()


async def run_async(sizes: tuple[int, ...] = (1000, 5000), include_tether: bool | None = None,
                    rate: float = ADMISSION_RATE, burst: int = ADMISSION_BURST, only: str = "",
                    fast_rate: float = FAST_RATE) -> Scenario:
    sc = Scenario(
        name="recovery",
        title=f"Recovery after an upstream restart (down {DOWN:g} s)",
        primary="all back s",
        lower_is_better=True,
    )
    raise_nofile()
    if include_tether is None:
        include_tether = tether_link_available()
    t_start = time.monotonic()
    for n in sizes:
        group = f"N = {n:,}"
        systems: list[tuple[str, Any, bool]] = []
        if include_tether:
            gate = tether_api().Admission(rate=rate, burst=burst)
            systems.append((f"tether + Admission(rate={rate:g}/s, burst={burst})", _tether_factory(gate), True))
            if fast_rate and n >= 5000:  # where the gate, not the backoff tail, sets the time
                fast = tether_api().Admission(rate=fast_rate, burst=int(fast_rate / 10))
                systems.append((f"tether + Admission(rate={fast_rate:g}/s, burst={int(fast_rate / 10)})",
                                _tether_factory(fast), False))
        else:
            sc.rows.append(na_row("tether + Admission", "tether.connect has not landed", group, True))
        systems += [
            ("websockets `async for ws in connect()`", websockets_client, False),
            (f"fixed {FIXED_DELAY:g} s delay loop", fixed_delay_client, False),
        ]
        for name, client, base in systems:
            if only and only not in name:
                continue
            figs = await measure(name, client, n)
            sc.rows.append(Row(name, figs, group=group, baseline=base))
    sc.notes += [
        "Times are from the SIGKILL of the server; the replacement process binds the same port 0.5 s later.",
        "Handshakes are counted by the new server's process_request (every HTTP upgrade it sees, accepted or not).",
        "websockets' loop: reconnects at once after a drop, then waits random 0–5 s, then 3.1·1.618ⁿ s (its defaults); "
        "the fixed loop waits 1 s between attempts with no jitter.",
        f"tether's Admission caps attempts across all links at {rate:g}/s (burst {burst}); links keep their default "
        f"full-jitter backoff (base 1 s). The {FAST_RATE:g}/s row is the same fleet with the gate opened wider: "
        "the rate is the operator's knob between 'back sooner' and 'gentler on the upstream'.",
        "Server in its own process; clients (all N) in the harness process; every client with its library defaults "
        "(websockets: permessage-deflate on). The gate releases at most rate + burst attempts in any second "
        "(checked again on the real release time, so a stalled client loop does not turn into a spike), but "
        "the server counts handshakes when its own loop gets to them: with 2 cores shared by both processes "
        "they arrive in small bunches, so the server-side peak reads up to ~10 % over rate + burst at N = 1,000 "
        "and more at N = 5,000, where the client process is the bottleneck.",
    ]
    for group in {r.group for r in sc.rows}:
        rows = [r for r in sc.rows if r.group == group and "all back s" in r.figures]
        t = next((r for r in rows if r.baseline), None)
        for r in rows:
            if t is None or r is t or r.system.startswith("tether") or not isinstance(r.figures["all back s"], float) \
                    or not isinstance(t.figures["all back s"], float):
                continue
            if r.figures["all back s"] < t.figures["all back s"]:
                sc.notes.append(
                    f"{group}: {r.system} is back sooner than tether ({r.figures['all back s']:.1f} s vs "
                    f"{t.figures['all back s']:.1f} s) by hitting the server with {r.figures['peak handshakes/s']:.0f} "
                    f"handshakes/s vs tether's {t.figures['peak handshakes/s']:.0f}: the Admission trades time for a "
                    "bounded rate; raise `rate` if the upstream can take more.")
    sc.seconds = time.monotonic() - t_start
    return sc


def run(**kw: Any) -> Scenario:
    return asyncio.run(run_async(**kw))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1000,5000")
    ap.add_argument("--rate", type=float, default=ADMISSION_RATE)
    ap.add_argument("--burst", type=int, default=ADMISSION_BURST)
    ap.add_argument("--only", default="", help="run only the systems whose name contains this")
    a = ap.parse_args()
    print_scenario(run(sizes=tuple(int(x) for x in a.sizes.split(",")), rate=a.rate, burst=a.burst, only=a.only))

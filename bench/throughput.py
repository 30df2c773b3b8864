"""Throughput: 100-byte messages per second through one Link vs one raw websockets connection.

One producer awaits each ``send`` (how applications write it). The server, in its own process, is a
sink that declines compression so it is never the bottleneck; the figure is messages divided by the
time from the first send until the server confirms it received them all. Runs alternate between the
systems and the median is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from typing import Any

from websockets.asyncio.client import connect as ws_connect

from ._common import HOST, Child, Row, Scenario, free_port, na_row, print_scenario, tether_api, tether_link_available

SIZE = 100
TARGET = 0.90


def _payload(i: int) -> str:
    head = f"{i:010d}"
    return head + "x" * (SIZE - len(head))


async def _raw(url: str, n: int) -> float:
    ws = await ws_connect(url, proxy=None)
    try:
        msgs = [_payload(i) for i in range(n)]
        t0 = time.perf_counter()
        for m in msgs:
            await ws.send(m)
        await ws.send("__count__")
        got = int(await asyncio.wait_for(ws.recv(), 120))
        dt = time.perf_counter() - t0
        assert got == n, f"server counted {got}, sent {n}"
        return n / dt
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 2)


async def _link(url: str, n: int) -> float:
    import tether

    async with tether_api().connect(url) as link:
        await link.wait_connected(timeout=10)
        msgs = [_payload(i) for i in range(n)]
        t0 = time.perf_counter()
        for m in msgs:
            await link.send(m)
        await link.send("__count__")
        got = int(await asyncio.wait_for(link.recv(), 120))
        dt = time.perf_counter() - t0
        assert got == n, f"server counted {got}, sent {n}"
        return n / dt


async def run_async(messages: int = 100_000, repeats: int = 7, include_tether: bool | None = None) -> Scenario:
    sc = Scenario(
        name="throughput",
        title=f"Throughput: {SIZE} B messages on one connection",
        primary="msg/s",
        lower_is_better=False,
    )
    if include_tether is None:
        include_tether = tether_link_available()
    t_start = time.monotonic()
    port = free_port()
    server = Child("bench._wsserver", "--port", str(port), "--no-compression")
    await server.start()
    url = f"ws://{HOST}:{port}/"
    results: dict[str, list[float]] = {"raw": [], "link": []}
    try:
        await _raw(url, min(5000, messages))  # warm-up
        for _ in range(repeats):
            if include_tether:
                results["link"].append(await _link(url, messages))
            results["raw"].append(await _raw(url, messages))
    finally:
        await server.close()
    raw = statistics.median(results["raw"])
    if include_tether:
        link = statistics.median(results["link"])
        verdict = "meets" if link >= TARGET * raw else "misses"
        sc.rows.append(Row("tether Link (await link.send)", {
            "msg/s": link,
            "runs": ", ".join(f"{x:,.0f}" for x in results["link"]),
            "% of raw": 100.0 * link / raw,
        }, baseline=True, note=f"{verdict} the ≥ {TARGET:.0%} target"))
    else:
        sc.rows.append(na_row("tether Link", "tether.connect has not landed", baseline=True))
    sc.rows.append(Row("raw websockets (await ws.send)", {
        "msg/s": raw,
        "runs": ", ".join(f"{x:,.0f}" for x in results["raw"]),
        "% of raw": 100.0,
    }))
    if include_tether and link < TARGET * raw:
        sc.notes.append(
            "Why the Link is slower: with nothing queued `send()` writes in the caller's task as websockets does, "
            "but each message still passes the link's own checks (state, buffer limit, the optional outbox and ack "
            "hooks) and counters before the same `ws.send()`; in a run where the machine is busy the gap widens "
            "(3-run medians have ranged from 79 % to 106 % of raw; a paired 10-round test gave 91 %).")
    sc.notes += [
        f"{messages:,} messages per run, {repeats} runs per system alternating, median shown; the clock stops when "
        "the server (its own process, compression declined) confirms the count.",
    ]
    sc.seconds = time.monotonic() - t_start
    return sc


def run(**kw: Any) -> Scenario:
    return asyncio.run(run_async(**kw))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    print_scenario(run(messages=a.messages, repeats=a.repeats))

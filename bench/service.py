"""Service scale (issue 6): 1,000 websocket sessions in one ``tether serve`` against one local upstream.

We start a websockets upstream (its own process) and ``tether serve`` (its own process, temp data dir,
loopback port, a bearer token), create N sessions through the API, wait until all are connected,
then measure ``GET /api/sessions`` latency (sequential requests, every session in each answer), the
duration of a health sweep (``POST /health/sweep``, as reported by the service and as seen by the
client), and the service's RSS and CPU while the sessions idle.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from ._common import HOST, Child, Row, Scenario, free_port, print_scenario, raise_nofile
from ._serve import ServeProcess


async def run_async(sessions: int = 1000, requests: int = 30, settle: float = 120.0) -> Scenario:
    sc = Scenario(
        name="service",
        title=f"Service scale: {sessions:,} sessions in one `tether serve` (issue 6)",
        primary="GET /api/sessions p50 ms",
        lower_is_better=True,
    )
    try:
        import httpx  # noqa: F401
        import tether.service  # noqa: F401
    except ImportError as exc:
        sc.error = f"TODO: the service has not landed ({exc})"
        return sc
    raise_nofile()
    t_start = time.monotonic()
    up_port = free_port()
    upstream = Child("bench._wsserver", "--port", str(up_port))
    await upstream.start()
    tmp = tempfile.TemporaryDirectory(prefix="bench-service-")
    svc = ServeProcess(Path(tmp.name))
    figs: dict[str, Any] = {}
    try:
        await svc.start()
        client = svc.client
        t0 = time.monotonic()
        sem = asyncio.Semaphore(16)

        async def create(i: int) -> None:
            async with sem:
                r = await client.post("/api/sessions", json={
                    "id": f"bench_{i:05d}", "kind": "websocket",
                    "options": {"url": f"ws://{HOST}:{up_port}/s/{i}"}})
                if r.status_code != 201:
                    raise RuntimeError(f"create session: {r.status_code} {r.text[:200]}")

        await asyncio.gather(*(create(i) for i in range(sessions)))
        figs["create all s"] = time.monotonic() - t0
        connected = 0
        for _ in range(int(settle * 2)):
            r = await client.get("/api/sessions", params={"state": "connected"})
            connected = r.json()["total"]
            if connected >= sessions:
                break
            await asyncio.sleep(0.5)
        figs["all connected s"] = time.monotonic() - t0 if connected >= sessions else f"> {settle:g} ({connected})"
        lat = []
        for _ in range(requests):
            a = time.perf_counter()
            r = await client.get("/api/sessions")
            lat.append((time.perf_counter() - a) * 1000)
            assert r.json()["total"] == sessions
        lat.sort()
        figs["GET /api/sessions p50 ms"] = statistics.median(lat)
        figs["p95 ms"] = lat[int(0.95 * (len(lat) - 1))]
        a = time.perf_counter()
        r = await client.post("/health/sweep")
        client_s = time.perf_counter() - a
        body = r.json()
        figs["sweep s (service)"] = float(body.get("duration", float("nan")))
        figs["sweep s (client)"] = client_s
        figs["sweep checked"] = body.get("checked")
        ps = psutil.Process(svc.pid)
        c0 = ps.cpu_times()
        await asyncio.sleep(10)
        c1 = ps.cpu_times()
        figs["service RSS MiB"] = ps.memory_info().rss / 2**20
        figs["idle CPU %"] = 100 * ((c1.user - c0.user) + (c1.system - c0.system)) / 10
    finally:
        code = await svc.close()
        await upstream.close()
        tmp.cleanup()
    figs["exit code on SIGTERM"] = code
    sc.rows.append(Row(f"tether serve ({sessions:,} websocket sessions)", figs, baseline=True))
    sc.notes += [
        "No peer row: none of the peers is a multi-session gateway; the figure to meet is issue 6's "
        "\"the sweep completes and GET /api/sessions stays fast\".",
        f"{requests} sequential GET /api/sessions (each returns all {sessions:,} sessions); idle CPU over 10 s "
        "with the service's default 20 s heartbeat; service and upstream each in their own process.",
    ]
    sc.seconds = time.monotonic() - t_start
    return sc


def run(**kw: Any) -> Scenario:
    return asyncio.run(run_async(**kw))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=30)
    a = ap.parse_args()
    print_scenario(run(sessions=a.sessions, requests=a.requests))

"""Chaos soak: N sessions, random faults, numbered messages; pass only with nothing lost or duplicated.

``python -m bench.chaos --seconds 120`` (``make chaos``). Everything stays on 127.0.0.1.

Topology (``--mode direct``): N durable tether Links (one SQLite Outbox, ``JsonAck``)
-> a fault-injecting TCP proxy (:class:`bench._proxy.BlackholeProxy`) -> an upstream websockets server
in its own process (``bench._wsserver --log``). The upstream writes every message it applies to a log
file *before* acking it, and de-duplicates by message id the way an idempotent receiver does (it
re-reads the log after a restart), so its log is the ground truth of what was delivered.

Faults, one at a time at random (seeded) moments: upstream SIGKILL and restart, blackhole (nothing
forwarded, nothing closed; half of them end with the old flows reset and their bytes in flight
dropped), TCP resets, close 1013 with "retry after 1" plus 503 Retry-After
rejections, and the token turning invalid (401 on handshakes, 4401 on open connections) then valid
again (the session owner calls ``link.reconnect()``, as an application does after refreshing a
token).

Producers send numbered messages ``{"s": session, "n": k}``; after the run the faults stop, the
outbox drains, every link is closed and we report:
- lost: numbered messages accepted by ``send()`` that the upstream never applied (dead letters count);
- duplicated: numbered messages the upstream applied more than once (under different ids, which no
  id-based receiver could catch); redeliveries of the same id are counted separately (at-least-once
  on the wire is expected; the receiver's dedupe makes the effect exactly-once);
- leaked tasks: asyncio tasks still alive after every link, the outbox and the proxy were closed;
- memory slope of the process holding the sessions (KiB/min, least squares over the second half;
  in direct mode each sample follows a ``gc.collect()``, so cyclic garbage does not count as growth;
  the service's RSS is sampled from outside, without a collection, and keeps rising for about two
  minutes while the allocator reaches its high-water mark: a 240 s run shows it flat after that);
- Retry-After violations: a session reconnecting sooner than a 1013 close told it to.

Exit status 0 only with zero lost, zero duplicated, zero leaked tasks, and everything delivered
within ``--drain-timeout`` seconds of calm after the faults stop (a message still queued then is
reported as "still queued", not as lost).

``--mode service``: the same sessions inside one ``tether serve`` process (:class:`ServiceFleet`),
messages posted to its HTTP API with an ``Idempotency-Key``; faults, producers and accounting are
the same. The sessions use the websocket connector's ``ack`` option (a message counts as delivered
when the upstream acknowledges its id, and is sent again otherwise); ``--no-ack`` creates them
without it, to show what socket-write delivery loses in the same chaos. Leaked tasks there are the harness's; the service's own cleanup shows as its exit code on
SIGTERM (its shutdown cancels and awaits every task it owns).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ._common import HOST, Child, free_port, raise_nofile, tether_api
from ._proxy import BlackholeProxy

FAULTS = ("kill", "blackhole", "reset", "close_1013", "auth")
RETRY_AFTER = 1.0


@dataclass
class Report:
    sessions: int
    seconds: float
    produced: int = 0
    applied: int = 0
    lost: int = 0
    duplicated: int = 0
    redelivered: int = 0
    dead_letters: int = 0
    leaked_tasks: int = 0
    leaked_task_names: list[str] = field(default_factory=list)
    leaked_threads: int = 0
    memory_slope_kib_per_min: float = 0.0
    rss_start_mib: float = 0.0
    rss_end_mib: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    retry_after_violations: int = 0
    drained: bool = False
    drain_s: float = 0.0
    undelivered_at_end: int = 0
    states_at_end: dict[str, int] = field(default_factory=dict)
    send_errors: int = 0
    send_error_kinds: dict[str, int] = field(default_factory=dict)
    lost_examples: list[str] = field(default_factory=list)
    mode: str = "direct"
    durable: bool = True
    ack: bool = True
    service_exit_code: int | None = None

    @property
    def passed(self) -> bool:
        # a message still queued after the calm drain period is not lost, but the run did not heal
        return self.lost == 0 and self.duplicated == 0 and self.leaked_tasks == 0 and self.drained

    def lines(self) -> list[str]:
        return [
            f"chaos ({self.mode}{'' if self.durable else ', NOT durable: tether.link._durable missing'}"
            f"{'' if self.ack else ', no ack: delivered = written to the socket'}): {self.sessions} sessions, {self.seconds:g} s, faults {dict(self.faults)}",
            f"  produced {self.produced}, applied {self.applied}, lost {self.lost}, still queued {self.undelivered_at_end}, "
            f"duplicated {self.duplicated}, "
            f"redelivered (same id, deduped) {self.redelivered}, dead letters {self.dead_letters}",
            f"  leaked tasks {self.leaked_tasks} {self.leaked_task_names[:5]}, leaked threads {self.leaked_threads}",
            f"  memory slope {self.memory_slope_kib_per_min:+.0f} KiB/min (RSS {self.rss_start_mib:.0f} -> "
            f"{self.rss_end_mib:.0f} MiB), reconnects {self.reconnects}, Retry-After violations "
            f"{self.retry_after_violations}, drained {self.drained} in {self.drain_s:.1f} s (states {self.states_at_end}), send errors {self.send_errors} {self.send_error_kinds or ''}",
            *([f"  service exit code on SIGTERM: {self.service_exit_code}"] if self.mode == "service" else []),
            f"  {'PASS' if self.passed else 'FAIL'}",
        ]


class Upstream:
    """The upstream server process; ``kill_and_restart`` keeps the port and the delivery log."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.child: Child | None = None
        self.violations = 0  # Retry-After violations counted by servers that were since killed

    async def start(self) -> None:
        self.child = Child("bench._wsserver", "--port", str(self.port), "--log", str(self.log))
        await self.child.start()

    async def kill_and_restart(self, down: float) -> None:
        with contextlib.suppress(Exception):
            self.violations += int((await self.ask({"cmd": "stats"})).get("retry_after_violations", 0))
        replacement = Child("bench._wsserver", "--port", str(self.port), "--log", str(self.log), "--defer")
        await replacement.start()
        assert self.child is not None
        self.child.kill()
        await self.child.close()
        self.child = replacement  # from here on, whatever happens, the replacement is the upstream
        await asyncio.sleep(down)
        await replacement.send({"cmd": "listen"})
        await replacement.read(10)

    async def ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.child is not None
        return await self.child.ask(cmd, timeout=20)

    async def close(self) -> None:
        if self.child is not None:
            await self.child.close()


class DirectFleet:
    """N durable Links through the proxy. The session owner re-arms a link after an auth failure."""

    def __init__(self, url: str, n: int, outbox_path: Path) -> None:
        self.url = url
        self.n = n
        self.outbox_path = outbox_path
        self.links: list[Any] = []
        self.names = [f"s{i:04d}" for i in range(n)]
        self.outbox: Any = None
        self._rearm: set[asyncio.Task[None]] = set()
        self.closing = False
        self.durable = durable_link_available()
        self._readers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        api = tether_api()
        import tether
        from tether.store import Outbox

        # max_attempts=None: a soak with a fault every few seconds must not dead-letter on purpose
        self.outbox = Outbox(str(self.outbox_path), synchronous="NORMAL", max_attempts=None)
        await self.outbox.open()
        admission = api.Admission(rate=200, burst=20)
        durable: dict[str, Any] = {"outbox": self.outbox, "ack": api.JsonAck()} if self.durable else {}
        for name in self.names:
            link = api.connect(
                f"{self.url}s/{name}",
                heartbeat_interval=0.5,
                heartbeat_timeout=0.5,
                connect_timeout=2.0,
                stable_after=2.0,
                backoff=tether.Backoff(base=0.1, factor=2.0, cap=2.0),
                admission=admission,
                session=name if self.durable else None,
                name=name,
                **durable,
            )
            link.subscribe(self._watch(link))
            self.links.append(link)
        for link in self.links:
            await link.start()
            if not self.durable:
                # without durable mode the acks reach recv(); an application reads them
                self._readers.add(asyncio.create_task(self._read(link)))

    async def _read(self, link: Any) -> None:
        for _ in range(100_000_000):
            await link.recv()

    def _watch(self, link: Any) -> Any:
        from tether import events

        def on_event(ev: object) -> None:
            if isinstance(ev, events.GaveUp) and not self.closing:
                task = asyncio.get_running_loop().create_task(self._reconnect_later(link))
                self._rearm.add(task)
                task.add_done_callback(self._rearm.discard)

        return on_event

    async def _reconnect_later(self, link: Any) -> None:
        # what an application does after its token was refused: refresh it, then reconnect by hand
        await asyncio.sleep(0.3 + random.random() * 0.3)
        if not self.closing:
            with contextlib.suppress(Exception):
                await link.reconnect()

    async def send(self, i: int, name: str, k: int) -> None:
        body: dict[str, Any] = {"s": name, "n": k}
        if not self.durable:
            body["id"] = f"{name}:{k}"  # durable mode stamps the outbox id instead
        await self.links[i].send(json.dumps(body))

    async def undelivered(self) -> int:
        if not self.durable:
            return sum(link.stats.buffered for link in self.links)
        return int(await self.outbox.depth())

    async def dead_letters(self) -> int:
        return len(await self.outbox.dead_letters(limit=100_000))

    async def still_queued(self) -> set[tuple[str, int]]:
        """(session, n) of messages still waiting in the outbox: undelivered, not lost."""
        out: set[tuple[str, int]] = set()
        if not self.durable:
            return out
        for name in self.names:
            for status in ("pending", "leased"):
                for m in await self.outbox.messages(name, status=status, limit=100_000):
                    out.add(_numbered(m.payload))
        return out

    async def states(self) -> dict[str, int]:
        return dict(Counter(str(link.state) for link in self.links))

    async def reconnects(self) -> int:
        return sum(max(0, link.stats.connects - 1) for link in self.links)

    async def close(self) -> None:
        self.closing = True
        for t in [*self._rearm, *self._readers]:
            t.cancel()
        await asyncio.gather(*self._rearm, *self._readers, return_exceptions=True)
        await asyncio.gather(*(asyncio.wait_for(link.close(), 15) for link in self.links), return_exceptions=True)
        if self.outbox is not None:
            await self.outbox.close()


class ServiceFleet:
    """N websocket sessions inside one ``tether serve`` (its own process), driven through its HTTP API.

    Messages go in with ``POST /api/sessions/{id}/messages`` (durable: 202 once on disk) and an
    ``Idempotency-Key``; the payload carries the id the upstream de-duplicates on. A session left
    FAILED by the token outage is restarted through the API, as an operator's script would.
    """

    def __init__(self, url: str, n: int, data_dir: Path, *, ack: bool = True) -> None:
        from ._serve import ServeProcess

        self.ack = ack
        self.url = url
        self.n = n
        self.names = [f"s{i:04d}" for i in range(n)]
        self.svc = ServeProcess(data_dir)
        self.closing = False
        self._watch: asyncio.Task[None] | None = None
        self.exit_code: int | None = None
        self.durable = True

    async def start(self) -> None:
        await self.svc.start()
        sem = asyncio.Semaphore(8)

        async def create(name: str) -> None:
            async with sem:
                r = await self.svc.client.post("/api/sessions", json={
                    "id": name, "kind": "websocket",
                    "options": {"url": f"{self.url}s/{name}", "token": "chaos-token",
                                "heartbeat_interval": 0.5, "heartbeat_timeout": 0.5, "connect_timeout": 2.0,
                                "backoff_base": 0.1, "backoff_cap": 2.0,
                                # the upstream acks {"type": "ack", "id": ...} (JsonAck's defaults)
                                **({"ack": True} if self.ack else {})}})
                if r.status_code != 201:
                    raise RuntimeError(f"create {name}: {r.status_code} {r.text[:300]}")

        await asyncio.gather(*(create(n) for n in self.names))
        self._watch = asyncio.create_task(self._restart_failed())

    async def _restart_failed(self) -> None:
        async def restart(sid: str) -> None:
            # POST /restart waits out the service's restart_delay: restart the failed ones concurrently
            rr = await self.svc.client.post(f"/api/sessions/{sid}/restart")
            if os.environ.get("BENCH_CHAOS_DEBUG"):
                print(f"[chaos restart] {sid} -> {rr.status_code} {rr.text[:120]}", file=sys.stderr)

        for _ in range(1_000_000):
            await asyncio.sleep(0.5)
            with contextlib.suppress(Exception):
                r = await self.svc.client.get("/api/sessions", params={"state": "failed"})
                ids = [item["id"] for item in r.json()["sessions"]]
                await asyncio.gather(*(restart(i) for i in ids), return_exceptions=True)

    async def send(self, i: int, name: str, k: int) -> None:
        mid = f"{name}:{k}"
        r = await self.svc.client.post(f"/api/sessions/{name}/messages",
                                       json={"payload": {"s": name, "n": k, "id": mid}},
                                       headers={"Idempotency-Key": mid})
        if r.status_code != 202:
            raise RuntimeError(f"send {mid}: {r.status_code} {r.text[:200]}")

    async def _each(self) -> list[dict[str, Any]]:
        out = []
        for name in self.names:
            r = await self.svc.client.get(f"/api/sessions/{name}")
            out.append(r.json())
        return out

    async def undelivered(self) -> int:
        return sum(int(s.get("queue_depth") or 0) for s in await self._each())

    async def dead_letters(self) -> int:
        total = 0
        for name in self.names:
            r = await self.svc.client.get(f"/api/sessions/{name}/messages", params={"status": "dead", "limit": 1000})
            total += len(r.json().get("messages", []))
        return total

    async def still_queued(self) -> set[tuple[str, int]]:
        out: set[tuple[str, int]] = set()
        for name in self.names:
            for status in ("pending", "leased"):
                r = await self.svc.client.get(f"/api/sessions/{name}/messages", params={"status": status, "limit": 1000})
                for m in r.json().get("messages", []):
                    out.add(_numbered(m["payload"]))
        return out

    async def states(self) -> dict[str, int]:
        r = await self.svc.client.get("/api/sessions")
        return dict(Counter(str(s["state"]) for s in r.json()["sessions"]))

    async def reconnects(self) -> int:
        r = await self.svc.client.get("/api/sessions")
        # a restart (after the token outage) starts a new connector whose counters begin at zero
        return sum(max(0, int((s.get("stats") or {}).get("connects", 0)) - 1) + int((s.get("stats") or {}).get("restarts", 0))
                   for s in r.json()["sessions"])

    async def close(self) -> None:
        self.closing = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        self.exit_code = await self.svc.close()


def _numbered(payload: str | bytes) -> tuple[str, int]:
    obj = json.loads(payload)
    return str(obj["s"]), int(obj["n"])


def default_mode() -> str:
    try:
        importlib.import_module("tether.service")
    except ImportError:
        return "direct"
    return "service"


def durable_link_available() -> bool:
    """Durable mode (``outbox=``, ``session=``, ``ack=``) needs ``tether.link._durable``."""
    try:
        importlib.import_module("tether.link._durable")
    except ImportError:
        return False
    return True


def _slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, rss bytes) in KiB/min."""
    if len(samples) < 3:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    if den == 0:
        return 0.0
    return sum((t - mt) * (r - mr) for t, r in samples) / den / 1024 * 60


async def run_async(seconds: float = 120.0, sessions: int = 50, rate: float = 2.0, fault_every: float = 4.0,
                    seed: int | None = None, drain_timeout: float = 60.0, mode: str = "direct",
                    verbose: bool = False, faults_enabled: tuple[str, ...] = FAULTS, ack: bool = True) -> Report:
    raise_nofile()
    rng = random.Random(seed)
    rep = Report(sessions=sessions, seconds=seconds, mode=mode)
    tmp = tempfile.TemporaryDirectory(prefix="bench-chaos-")
    log = Path(tmp.name) / "delivered.jsonl"
    log.touch()
    threads0 = threading.active_count()
    tasks0 = set(asyncio.all_tasks())
    upstream = Upstream(log)
    await upstream.start()
    proxy = await BlackholeProxy(upstream.port).start()
    url = f"ws://{HOST}:{proxy.port}/"
    fleet: Any
    if mode == "service":
        fleet = ServiceFleet(url, sessions, Path(tmp.name) / "service", ack=ack)
    else:
        fleet = DirectFleet(url, sessions, Path(tmp.name) / "outbox.db")
    produced: list[set[int]] = [set() for _ in range(sessions)]
    stop_producing = asyncio.Event()
    faults: Counter[str] = Counter()
    proc = psutil.Process()
    rss: list[tuple[float, float]] = []

    def say(msg: str) -> None:
        if verbose:
            print(f"[chaos {time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    async def producer(i: int) -> None:
        name = fleet.names[i]
        k = 0
        period = 1.0 / rate
        await asyncio.sleep(rng.random() * period)
        for _ in range(int(seconds * rate) + 10):
            if stop_producing.is_set():
                return
            try:
                await asyncio.wait_for(fleet.send(i, name, k), 10)
                produced[i].add(k)
                k += 1
            except Exception as exc:  # noqa: BLE001 - not accepted: the same number is tried again next tick
                rep.send_errors += 1
                kind = type(exc).__name__
                rep.send_error_kinds[kind] = rep.send_error_kinds.get(kind, 0) + 1
            await asyncio.sleep(period)

    async def sampler() -> None:
        # the sessions live in this process (direct) or in the service's (service mode)
        target = psutil.Process(fleet.svc.pid) if mode == "service" else proc
        for _ in range(int(seconds) + 600):
            if target is proc:
                # connections are reference cycles: without a collection the slope shows garbage that the
                # next full GC frees, not a leak
                gc.collect()
            with contextlib.suppress(psutil.Error):
                rss.append((time.monotonic(), float(target.memory_info().rss)))
            await asyncio.sleep(1.0)

    async def injector() -> None:
        for _ in range(int(seconds / max(fault_every, 0.5)) + 1):
            # wait for the next fault, or for the end of the run; a fault in progress always completes
            # (cancelling one halfway would leave, e.g., the upstream killed and never restarted)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop_producing.wait(), fault_every * (0.5 + rng.random()))
            if stop_producing.is_set():
                return
            kind = rng.choice(faults_enabled)
            faults[kind] += 1
            say(f"fault {kind}")
            if kind == "kill":
                await upstream.kill_and_restart(0.2 + rng.random() * 1.0)
            elif kind == "blackhole":
                proxy.blackhole()
                await asyncio.sleep(1.0 + rng.random() * 2.0)
                # half the partitions end with the old flows gone and their bytes in flight lost
                proxy.heal(drop=rng.random() < 0.5)
            elif kind == "reset":
                proxy.reset_all()
            elif kind == "close_1013":
                await upstream.ask({"cmd": "reject", "status": 503, "retry_after": RETRY_AFTER, "seconds": RETRY_AFTER})
                await upstream.ask({"cmd": "close_all", "code": 1013, "reason": f"retry after {RETRY_AFTER:g}",
                                    "retry_after": RETRY_AFTER})
            elif kind == "auth":
                await upstream.ask({"cmd": "auth", "valid": False})
                await asyncio.sleep(0.5 + rng.random() * 1.0)
                await upstream.ask({"cmd": "auth", "valid": True})
            await asyncio.sleep(0.5)  # at least a moment of calm between faults

    t0 = time.monotonic()
    rss_start = proc.memory_info().rss
    helpers: list[asyncio.Task[Any]] = []
    try:
        await fleet.start()
        helpers = [asyncio.create_task(producer(i)) for i in range(sessions)]
        inj = asyncio.create_task(injector())
        samp = asyncio.create_task(sampler())
        if os.environ.get("BENCH_CHAOS_TRACEMALLOC"):
            # diagnosis of a positive memory slope: what grew between a third of the run and its end
            import tracemalloc

            tracemalloc.start(10)
            await asyncio.sleep(seconds / 3)
            gc.collect()
            snap = tracemalloc.take_snapshot()
            await asyncio.sleep(seconds * 2 / 3)
            gc.collect()
            for stat in tracemalloc.take_snapshot().compare_to(snap, "traceback")[:8]:
                print(f"[chaos grew] {stat.size_diff / 1024:+.0f} KiB {stat.count_diff:+d} blocks", file=sys.stderr)
                for line in stat.traceback.format()[-6:]:
                    print(f"    {line}", file=sys.stderr)
            tracemalloc.stop()
        else:
            await asyncio.sleep(seconds)
        stop_producing.set()
        await asyncio.gather(*helpers, return_exceptions=True)
        try:
            await asyncio.wait_for(inj, 30)  # finishes the fault in progress, then returns
        except asyncio.TimeoutError:
            say("fault injector did not finish within 30 s")
        proxy.heal()
        await upstream.ask({"cmd": "auth", "valid": True})
        say("faults stopped; draining")
        d0 = time.monotonic()
        for _ in range(int(drain_timeout * 10)):
            rep.undelivered_at_end = await fleet.undelivered()
            if rep.undelivered_at_end == 0:
                rep.drained = True
                break
            if time.monotonic() - d0 > drain_timeout:
                break
            await asyncio.sleep(0.1)
        rep.drain_s = time.monotonic() - d0
        samp.cancel()
        await asyncio.gather(samp, return_exceptions=True)
        rep.dead_letters = await fleet.dead_letters()
        rep.reconnects = await fleet.reconnects()
        queued = await fleet.still_queued() if not rep.drained else set()
        rep.states_at_end = await fleet.states()
        rep.retry_after_violations = upstream.violations + int(
            (await upstream.ask({"cmd": "stats"})).get("retry_after_violations", 0))
    finally:
        stop_producing.set()
        for t in helpers:
            t.cancel()
        await fleet.close()
        await proxy.close()
        await upstream.close()

    # leaked tasks: anything started during the run and still alive now
    gc.collect()
    await asyncio.sleep(0.2)
    leaked = [t for t in asyncio.all_tasks() if t not in tasks0 and t is not asyncio.current_task() and not t.done()]
    rep.leaked_tasks = len(leaked)
    rep.leaked_task_names = sorted({(t.get_coro().__qualname__ if t.get_coro() else t.get_name()) for t in leaked})
    for _ in range(20):
        if threading.active_count() <= threads0:
            break
        await asyncio.sleep(0.1)
    rep.leaked_threads = max(0, threading.active_count() - threads0)
    rep.rss_start_mib = (rss[0][1] if rss else rss_start) / 2**20
    rep.rss_end_mib = (rss[-1][1] if rss else proc.memory_info().rss) / 2**20
    half = [s for s in rss if s[0] >= t0 + seconds / 2]
    rep.memory_slope_kib_per_min = _slope(half)
    rep.faults = dict(faults)
    rep.durable = bool(getattr(fleet, "durable", False))
    rep.ack = bool(getattr(fleet, "ack", True))
    rep.service_exit_code = getattr(fleet, "exit_code", None)

    # ground truth: the upstream's log
    applied: dict[tuple[str, int], set[str]] = defaultdict(set)
    with open(log) as f:
        for line in f:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("dup"):
                rep.redelivered += 1
                continue
            applied[(obj["s"], int(obj["n"]))].add(str(obj["id"]))
    rep.produced = sum(len(p) for p in produced)
    rep.applied = len(applied)
    lost = [(fleet.names[i], k) for i in range(sessions) for k in sorted(produced[i])
            if (fleet.names[i], k) not in applied and (fleet.names[i], k) not in queued]
    rep.undelivered_at_end = len(queued) if not rep.drained else 0
    rep.lost = len(lost)
    rep.lost_examples = [f"{s}#{k}" for s, k in lost[:10]]
    rep.duplicated = sum(1 for ids in applied.values() if len(ids) > 1)
    tmp.cleanup()
    return rep


def run(**kw: Any) -> Report:
    return asyncio.run(run_async(**kw))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--rate", type=float, default=2.0, help="messages per second per session")
    ap.add_argument("--fault-every", type=float, default=4.0, help="mean seconds between faults")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--drain-timeout", type=float, default=60.0)
    ap.add_argument("--mode", choices=["service", "direct", "both"], default=default_mode(),
                    help="service: sessions inside `tether serve` (default once the service exists); "
                         "direct: durable Links in this process; both: direct, then service (`make chaos`)")
    ap.add_argument("--no-ack", action="store_true",
                    help="service mode: sessions without the ack option (delivered = written to the socket)")
    ap.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated subset of {','.join(FAULTS)}")
    ap.add_argument("--json", action="store_true", help="print the report as one JSON line at the end")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    bad = [f for f in a.faults.split(",") if f and f not in FAULTS]
    if bad:
        ap.error(f"unknown fault(s) {bad}; choose from {', '.join(FAULTS)}")
    passed = True
    for mode in (["direct", "service"] if a.mode == "both" else [a.mode]):
        rep = run(seconds=a.seconds, sessions=a.sessions, rate=a.rate, fault_every=a.fault_every, seed=a.seed,
                  drain_timeout=a.drain_timeout, mode=mode, verbose=a.verbose,
                  faults_enabled=tuple(f for f in a.faults.split(",") if f), ack=not a.no_ack)
        print("\n".join(rep.lines()), flush=True)
        if a.json:
            print(json.dumps({**rep.__dict__, "passed": rep.passed}), flush=True)
        passed = passed and rep.passed
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

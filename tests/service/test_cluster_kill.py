"""Issue 12 done-when: three ``tether serve`` nodes on one redis-server, 300 sessions, one node SIGKILLed.

Pins: every session is owned and connected again within lease TTL + one sweep (+ slack, see
``SLACK``); no session ever has two concurrent upstream connections; every accepted message reaches
the upstream, and none is applied twice; afterwards each survivor lists all 300 sessions, connected,
with their new owner.

Delivery is at-least-once on the wire: a message the killed node wrote but had not yet
acknowledged in the outbox goes out again from the new owner. The upstream therefore applies by
message id (as any idempotent consumer does) and counts wire copies apart, and the test checks that
wire copies happen only on sessions the killed node owned, at most one delivery batch per session.
Every third session uses the connector's ``ack`` option and the upstream acknowledges its messages
after ``ACK_DELAY``, so at the kill some are written but unacknowledged: those are the copies.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.store.redis.conftest import redis_server  # noqa: F401  (module-scoped fixture)

# Typically 30-50 s; the ceiling covers a loaded CI machine (every wait inside has its own timeout).
pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(150)]

SESSIONS = 300
ROUNDS_BEFORE, ROUNDS_DURING, ROUNDS_AFTER = 2, 1, 2
TTL = 3.0  # lease_ttl of the nodes; the lease sweep runs every TTL / 3
SWEEP = TTL / 3
# The bound of the issue is TTL + one sweep. On top of it: the connect rate of the new owner
# (connect_rate 100/s: ~100 sessions take ~1 s) and a machine shared by other work (2 cores, other
# test runs). The slack is generous so the assertion stays a correctness bound, not a speed test;
# the measured figures are printed (docs/scaleout.md quotes them).
SLACK = 12.0
SEND_BATCH = 32
ACK_DELAY = 0.3  # the upstream acknowledges an ack-session's message this long after applying it


def uses_ack(sid: str) -> bool:
    return int(sid[1:]) % 3 == 0


class CountingUpstream:
    """Upstream for every session (path ``/<session>``): concurrent connections and every message."""

    def __init__(self) -> None:
        self.open: collections.Counter[str] = collections.Counter()
        self.max_open: collections.Counter[str] = collections.Counter()
        self.overlaps: list[str] = []
        self.connected_at: dict[str, list[float]] = collections.defaultdict(list)
        self.wire: collections.Counter[str] = collections.Counter()  # copies on the wire per message id
        self.applied: list[str] = []  # message ids in the order first applied (dedupe by id)
        self._applied: set[str] = set()
        self.server: Any = None
        self.port = 0
        self._acks: set[asyncio.Task[None]] = set()

    async def handler(self, ws: Any) -> None:
        sid = ws.request.path.strip("/")
        self.open[sid] += 1
        self.connected_at[sid].append(time.monotonic())
        if self.open[sid] > 1:
            self.overlaps.append(f"{sid}: {self.open[sid]} connections at once")
        self.max_open[sid] = max(self.max_open[sid], self.open[sid])
        try:
            async for msg in ws:
                mid = msg if isinstance(msg, str) else msg.decode()
                if mid.startswith("{"):  # an ack session: {"id": "<session>:<n>"}, acked a little later
                    mid = json.loads(mid)["id"]
                    task = asyncio.create_task(self._ack(ws, mid))
                    self._acks.add(task)
                    task.add_done_callback(self._acks.discard)
                self.wire[mid] += 1
                if mid not in self._applied:  # the application step is idempotent by id
                    self._applied.add(mid)
                    self.applied.append(mid)
        except Exception:  # a killed peer: the connection just ends
            pass
        finally:
            self.open[sid] -= 1

    @staticmethod
    async def _ack(ws: Any, mid: str) -> None:
        await asyncio.sleep(ACK_DELAY)
        try:
            await ws.send(json.dumps({"type": "ack", "id": mid}))
        except Exception:  # the connection is gone: the sender never learns, and sends it again
            pass

    async def start(self) -> "CountingUpstream":
        from websockets.asyncio.server import serve

        self.server = await serve(self.handler, "127.0.0.1", 0, max_queue=None)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for t in list(self._acks):
            t.cancel()
        self.server.close()
        await asyncio.wait_for(self.server.wait_closed(), 10)


class NodeProc:
    """One ``tether serve --store redis://...`` subprocess with its own port and data dir."""

    def __init__(self, name: str, redis_url: str, root: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
        env.update(TETHER_STORE=redis_url, TETHER_NODE_ID=name, TETHER_LEASE_TTL=str(TTL),
                   TETHER_PORT=str(self.port), TETHER_DATA_DIR=str(root / name), TETHER_PUBLIC_URL=self.url,
                   TETHER_SWEEP_INTERVAL="3600", TETHER_SHUTDOWN_TIMEOUT="3", TETHER_LOG_LEVEL="info",
                   TETHER_SESSIONS__BACKOFF_BASE="0.2", TETHER_SESSIONS__BACKOFF_CAP="1.0",
                   TETHER_SESSIONS__MAX_ATTEMPTS="1000", TETHER_SESSIONS__SEND_BATCH=str(SEND_BATCH))
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "tether.cli", "serve"], env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT)
        self.client = httpx.AsyncClient(base_url=self.url, timeout=15.0, trust_env=False,
                                        limits=httpx.Limits(max_connections=16))

    async def ready(self, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"node {self.name} exited {self.proc.returncode}: {self.tail()}")
            try:
                if (await self.client.get("/health")).status_code in (200, 503):
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"node {self.name} not ready in {timeout}s: {self.tail()}")

    def tail(self, n: int = 3000) -> str:
        self._out.flush()
        return self.log.read_bytes()[-n:].decode(errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    async def stop(self) -> None:
        await self.client.aclose()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


async def until(check: Any, timeout: float, what: str, every: float = 0.1) -> float:
    """Poll ``check`` (sync or async) until truthy; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return time.monotonic()
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def test_three_nodes_300_sessions_survive_a_sigkill(tmp_path, redis_server):  # noqa: F811
    """SIGKILL one of three nodes: takeover within TTL + sweep (+slack), never two connections, nothing lost or applied twice."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await r.flushdb()
    up = await CountingUpstream().start()
    nodes = [NodeProc(n, redis_server.url, tmp_path) for n in ("n1", "n2", "n3")]
    sids = [f"s{i:03d}" for i in range(SESSIONS)]
    sem = asyncio.Semaphore(24)
    accepted: dict[str, str] = {}  # message text -> outbox id from the 202
    try:
        await asyncio.gather(*(n.ready() for n in nodes))
        # All three in the live-node set before any session exists: each takes its fair share.
        await until(lambda: r.zcard("tether:nodes"), 20, "three live nodes", every=0.1)
        await until(lambda: _eq(r.zcard("tether:nodes"), 3), 20, "three live nodes")

        async def create(i: int, sid: str) -> None:
            async with sem:
                options: dict[str, Any] = {"url": f"ws://127.0.0.1:{up.port}/{sid}"}
                if uses_ack(sid):
                    options["ack"] = True
                resp = await nodes[i % 3].client.post("/api/sessions", json={"id": sid, "kind": "websocket",
                                                                             "options": options})
                assert resp.status_code == 201, resp.text

        await asyncio.gather(*(create(i, s) for i, s in enumerate(sids)))
        await until(lambda: all(up.open[s] == 1 for s in sids), 60, "all 300 sessions connected")
        owners = await _owners(r, sids)
        by_node = collections.Counter(owners.values())
        assert set(by_node) == {"n1", "n2", "n3"}, by_node

        async def send(sid: str, n: int, live: list[NodeProc]) -> None:
            text = f"{sid}:{n}"
            payload: Any = {"id": text} if uses_ack(sid) else text
            async with sem:
                for attempt in range(20):  # bounded: a POST to the node being killed is retried elsewhere
                    node = live[(hash(text) + attempt) % len(live)]
                    try:
                        resp = await node.client.post(f"/api/sessions/{sid}/messages", json={"payload": payload},
                                                      headers={"Idempotency-Key": text})
                    except httpx.HTTPError:
                        await asyncio.sleep(0.05)
                        continue
                    if resp.status_code == 202:
                        mid = resp.json()["id"]
                        assert accepted.setdefault(text, mid) == mid, "the same key must give the same id"
                        return
                    assert resp.status_code == 503, resp.text
                    await asyncio.sleep(0.05)
                raise AssertionError(f"{text} not accepted by any node")

        n = 0
        for _ in range(ROUNDS_BEFORE):
            await asyncio.gather(*(send(s, n, nodes) for s in sids))
            n += 1

        victim = nodes[2]
        victim_sids = [s for s in sids if owners[s] == victim.name]
        bound = TTL + SWEEP + SLACK

        async def all_owned_by_survivors() -> bool:
            now = await _owners(r, sids)
            return all(now[s] in ("n1", "n2") for s in sids)

        def victims_reconnected() -> bool:
            return all(up.open[s] == 1 and up.connected_at[s][-1] > killed_at for s in victim_sids)

        # Kill while a round is in flight: some POSTs to the victim fail and go to another node.
        during = [asyncio.create_task(send(s, n + k, nodes)) for k in range(ROUNDS_DURING) for s in sids]
        await asyncio.sleep(0.3)
        victim.kill()
        killed_at = time.monotonic()
        # Watch the takeover while the sends go on; a watcher that times out (bound) fails the test.
        owned = asyncio.create_task(until(all_owned_by_survivors, bound, "every session owned by a survivor"))
        reconnected = asyncio.create_task(until(victims_reconnected, bound, "the victim's sessions connected again"))
        survivors = nodes[:2]
        await asyncio.gather(*during)
        n += ROUNDS_DURING
        for _ in range(ROUNDS_AFTER):
            await asyncio.gather(*(send(s, n, survivors) for s in sids))
            n += 1
        owned_at, reconnected_at = await owned, await reconnected
        assert all(up.open[s] == 1 for s in sids)
        per_session = sorted(min(t for t in up.connected_at[s] if t > killed_at) - killed_at for s in victim_sids)

        async def listed_right(node: NodeProc) -> bool:  # any node lists every session with its new owner
            items = (await node.client.get("/api/sessions")).json()["sessions"]
            return len(items) == SESSIONS and all(i["node"] in ("n1", "n2") and i["state"] == "connected"
                                                  for i in items)

        for node in survivors:
            await until(lambda: listed_right(node), 20, f"{node.name} lists every session with its owner", every=0.5)
        await until(lambda: len(up.applied) >= len(accepted), 60, "every accepted message delivered")
        await until(lambda: _depth_zero(r, sids), 30, "every outbox drained")

        # --- the verdict -----------------------------------------------------------------------
        assert up.overlaps == [] and max(up.max_open.values()) == 1, up.overlaps[:10]
        lost = set(accepted) - set(up.applied)
        unknown = set(up.applied) - set(accepted)
        assert not lost, f"{len(lost)} accepted messages never reached the upstream: {sorted(lost)[:10]}"
        assert not unknown, f"upstream got messages nobody sent: {sorted(unknown)[:10]}"
        assert len(up.applied) == len(accepted) == SESSIONS * n  # applied exactly once each
        wire_dupes = {m: c for m, c in up.wire.items() if c > 1}
        dup_sessions = collections.Counter(m.rsplit(":", 1)[0] for m in wire_dupes)
        assert set(dup_sessions) <= set(victim_sids), f"duplicates outside the takeover: {dup_sessions}"
        assert max(dup_sessions.values(), default=0) <= SEND_BATCH
        assert await r.xlen("tether:dead") == 0
        print(f"\nSCALEOUT sessions={SESSIONS} nodes=3 killed={victim.name} owned_by_victim={len(victim_sids)} "
              f"messages={len(accepted)} wire_duplicates={sum(c - 1 for c in wire_dupes.values())} "
              f"(on {len(dup_sessions)} sessions, {sum(uses_ack(x) for x in dup_sessions)} with ack) "
              f"owned_after={owned_at - killed_at:.2f}s reconnected_after={reconnected_at - killed_at:.2f}s "
              f"per_session_p50={per_session[len(per_session) // 2]:.2f}s max={per_session[-1]:.2f}s "
              f"bound={bound:.1f}s (ttl {TTL} + sweep {SWEEP} + slack {SLACK})")
    finally:
        await asyncio.gather(*(nd.stop() for nd in nodes), return_exceptions=True)
        await up.stop()
        await r.aclose()


async def _eq(aw: Any, want: Any) -> bool:
    return (await aw) == want


async def _owners(r: Any, sids: list[str]) -> dict[str, str | None]:
    vals = await r.mget([f"tether:own:{{{s}}}" for s in sids])
    return {s: (v.rsplit(":", 1)[0] if v else None) for s, v in zip(sids, vals)}


async def _depth_zero(r: Any, sids: list[str]) -> bool:
    pipe = r.pipeline(transaction=False)
    for s in sids:
        pipe.xlen(f"tether:ob:{{{s}}}")
    return sum(await pipe.execute()) == 0

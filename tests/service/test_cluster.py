"""Two in-process service nodes on one real redis-server: shared registry, single ownership, takeover."""

from __future__ import annotations

import asyncio
import collections

import pytest

from tests.conftest import free_port
from tests.service.conftest import eventually, fast_settings, start_service, stop_service
from tests.store.redis.conftest import redis_server  # noqa: F401  (module-scoped fixture)

pytestmark = pytest.mark.system


class CountingUpstream:
    """A WebSocket upstream counting concurrent connections per path (one path per session)."""

    def __init__(self) -> None:
        self.open: collections.Counter[str] = collections.Counter()
        self.max_open: collections.Counter[str] = collections.Counter()
        self.received: dict[str, list[str]] = collections.defaultdict(list)
        self.server = None

    async def handler(self, ws) -> None:
        path = ws.request.path.strip("/")
        self.open[path] += 1
        self.max_open[path] = max(self.max_open[path], self.open[path])
        try:
            async for msg in ws:
                self.received[path].append(msg)
        except Exception:
            pass
        finally:
            self.open[path] -= 1

    async def start(self) -> "CountingUpstream":
        from websockets.asyncio.server import serve

        self.server = await serve(self.handler, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def node_settings(tmp_path, url: str, name: str):
    port = free_port()
    return fast_settings(tmp_path / name, port=port, store=url, node_id=name, lease_ttl=1.0,
                         public_url=f"http://127.0.0.1:{port}")


async def test_two_nodes_share_sessions_and_take_over(tmp_path, redis_server):  # noqa: F811
    """Sessions created on one node run once across two nodes; when one stops the other runs all."""
    up = await CountingUpstream().start()
    a = await start_service(node_settings(tmp_path, redis_server.url, "a"))
    b = await start_service(node_settings(tmp_path, redis_server.url, "b"))
    try:
        ids = [f"s{i}" for i in range(8)]
        for sid in ids:
            r = await a.client.post("/api/sessions", json={"id": sid, "kind": "websocket",
                                                           "options": {"url": f"ws://127.0.0.1:{up.port}/{sid}"}})
            assert r.status_code in (200, 201), r.text
        await eventually(lambda: all(up.open[s] == 1 for s in ids), what="every session connected once")
        owned_a = {s for s in ids if a.service.manager.owns(s)}
        owned_b = {s for s in ids if b.service.manager.owns(s)}
        assert owned_a | owned_b == set(ids) and not owned_a & owned_b and owned_a and owned_b
        for sid in ids:
            r = await a.client.post(f"/api/sessions/{sid}/messages", json={"payload": f"m-{sid}"})
            assert r.status_code < 300, r.text
        await eventually(lambda: all(up.received[s] == [f"m-{s}"] for s in ids), what="messages delivered once")
        await stop_service(b)
        await eventually(lambda: all(a.service.manager.owns(s) for s in ids) and all(up.open[s] == 1 for s in ids),
                         what="a runs everything")
        assert max(up.max_open.values()) == 1
    finally:
        await stop_service(a)
        await up.stop()

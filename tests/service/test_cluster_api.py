"""Two in-process nodes on a real redis-server: any node lists, streams and steers every session."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.service.conftest import eventually, start_service, stop_service
from tests.service.test_cluster import CountingUpstream, node_settings
from tests.store.redis.conftest import redis_server  # noqa: F401  (module-scoped fixture)

pytestmark = pytest.mark.system

IDS = [f"c{i}" for i in range(6)]


@pytest.fixture
async def cluster(tmp_path, redis_server):  # noqa: F811
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    await r.aclose()
    up = await CountingUpstream().start()
    a = await start_service(node_settings(tmp_path, redis_server.url, "a"))
    b = await start_service(node_settings(tmp_path, redis_server.url, "b"))
    await eventually(lambda: set(a.service.manager.keeper.live_nodes) == {"a", "b"}
                     and set(b.service.manager.keeper.live_nodes) == {"a", "b"}, what="both nodes live")
    for sid in IDS:
        r = await a.client.post("/api/sessions", json={"id": sid, "kind": "websocket",
                                                       "options": {"url": f"ws://127.0.0.1:{up.port}/{sid}"}})
        assert r.status_code == 201, r.text
    await eventually(lambda: all(up.open[s] == 1 for s in IDS), what="every session connected")
    yield a, b, up
    for node in (a, b):
        if not node.task.done():
            await stop_service(node)
    await up.stop()


def owned_by(node, ids=IDS):
    return [s for s in ids if node.service.manager.owns(s)]


async def test_every_node_lists_every_session_with_its_owner(cluster):
    """GET /api/sessions on either node lists all sessions, each connected and naming the node that runs it."""
    a, b, _ = cluster
    await eventually(lambda: owned_by(a) and owned_by(b) and len(owned_by(a)) + len(owned_by(b)) == len(IDS),
                     what="a split")
    want = {s: ("a" if s in owned_by(a) else "b") for s in IDS}

    async def listing_right(node) -> bool:
        items = (await node.client.get("/api/sessions")).json()["sessions"]
        return {i["id"]: (i["node"], i["state"]) for i in items} == {s: (n, "connected") for s, n in want.items()}

    for node in (a, b):
        await eventually(lambda: listing_right(node), what=f"node {node.service.manager.node} lists all")


async def test_sse_on_one_node_shows_events_of_the_other_nodes_sessions(cluster):
    """/api/events on node a streams the events of sessions node b runs (restart there), tagged node=b."""
    a, b, _ = cluster
    await eventually(lambda: owned_by(b), what="b runs a session")
    sid = owned_by(b)[0]
    seen: list[dict] = []

    async def read_stream() -> None:
        async with a.client.stream("GET", "/api/events", params={"session": sid}) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    ev = json.loads(line[6:])
                    seen.append(ev)
                    types = [e["type"] for e in seen]
                    if "session.restarted" in types and "link.connected" in types[types.index("session.restarted"):]:
                        return

    reader = asyncio.create_task(read_stream())
    await asyncio.sleep(0.2)  # the stream is subscribed before the restart happens
    r = await b.client.post(f"/api/sessions/{sid}/restart")
    assert r.status_code == 200, r.text
    await asyncio.wait_for(reader, 10)
    assert {"session.stopped", "link.connected", "session.restarted"} <= {e["type"] for e in seen}
    assert all(e["data"].get("node") == "b" for e in seen)


async def test_calls_on_a_non_owner_act_on_the_owner(cluster):
    """restart, PATCH, logout and delete sent to the node that does not run the session reach its owner."""
    a, b, up = cluster
    await eventually(lambda: len(owned_by(b)) >= 2, what="b runs two sessions")
    s1, s2 = owned_by(b)[:2]

    r = await a.client.post(f"/api/sessions/{s1}/restart")
    assert r.status_code == 200, r.text
    assert r.json()["node"] == "b" and r.headers["x-tether-node"] == "b"
    assert b.service.manager.get(s1).restarts == 1 and a.service.manager.get(s1).restarts == 0
    await eventually(lambda: up.open[s1] == 1, what="s1 reconnected")

    r = await a.client.get(f"/api/sessions/{s1}")
    assert r.status_code == 200 and r.json()["stats"]["restarts"] == 1  # the owner's live stats

    r = await a.client.patch(f"/api/sessions/{s1}", json={"options": {"heartbeat_interval": 7.0}})
    assert r.status_code == 200, r.text
    assert b.service.manager.get(s1).connector is not None  # restarted on b with the new options
    assert b.service.manager.get(s1).row.options["heartbeat_interval"] == 7.0

    r = await a.client.post(f"/api/sessions/{s2}/logout")
    assert r.status_code == 200 and r.json()["desired"] == "logged_out"
    await eventually(lambda: up.open[s2] == 0, what="s2 closed")

    r = await a.client.delete(f"/api/sessions/{s1}")
    assert r.status_code == 204, r.text
    await eventually(lambda: up.open[s1] == 0, what="s1 closed")
    for node in (a, b):
        await eventually(lambda: _status(node, f"/api/sessions/{s1}", 404), what=f"s1 gone on {node.url}")
    await asyncio.sleep(1.5)  # a few lease sweeps: nobody brings them back
    assert up.open[s1] == 0 and up.open[s2] == 0
    assert max(up.max_open.values()) == 1


async def test_owner_gone_is_a_503_with_retry_after(cluster, tmp_path):
    """A call for a session whose owner does not answer is a 503 naming the node, with Retry-After."""
    a, b, _ = cluster
    await eventually(lambda: owned_by(b), what="b runs a session")
    sid = owned_by(b)[0]
    redis = a.service.manager.keeper.redis
    await b.service.manager.keeper.stop()  # b keeps its leases for a moment but stops renewing
    await redis.hset("tether:urls", "b", "http://127.0.0.1:9")  # and is unreachable
    r = await a.client.post(f"/api/sessions/{sid}/restart")
    assert r.status_code == 503, r.text
    assert "node 'b'" in r.json()["error"]["message"] and r.headers["retry-after"] == "1"


async def test_forwarding_keeps_auth(tmp_path, redis_server):  # noqa: F811
    """With a token, an unauthenticated call is answered 401 locally and never forwarded."""
    import pydantic
    import redis.asyncio as aioredis

    from tests.service.conftest import TOKEN

    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    await r.aclose()
    up = await CountingUpstream().start()
    a = await start_service(node_settings(tmp_path, redis_server.url, "ta").model_copy(
        update={"token": pydantic.SecretStr(TOKEN)}), token=TOKEN)
    try:
        r = await a.client.post("/api/sessions", json={"id": "auth1", "kind": "websocket",
                                                       "options": {"url": f"ws://127.0.0.1:{up.port}/auth1"}})
        assert r.status_code == 201, r.text
        async with httpx.AsyncClient(base_url=a.url, trust_env=False) as anon:
            r = await anon.post("/api/sessions/auth1/restart")
            assert r.status_code == 401 and "x-tether-node" not in r.headers
    finally:
        await stop_service(a)
        await up.stop()


async def _status(node, path: str, code: int) -> bool:
    return (await node.client.get(path)).status_code == code


async def test_health_sweep_checks_only_the_sessions_this_node_runs(cluster):
    """POST /health/sweep on a node checks (and would restart) only its own sessions, never another node's."""
    a, b, _ = cluster
    await eventually(lambda: len(owned_by(a)) + len(owned_by(b)) == len(IDS), what="every session owned")
    for node in (a, b):
        r = await node.client.post("/health/sweep")
        assert r.status_code == 200, r.text
        assert r.json()["checked"] == len(owned_by(node)) and r.json()["findings"] == []


async def test_cli_list_shows_the_node_of_each_session(cluster):
    """`tether sessions list` against one node shows every session with the node that runs it."""
    from typer.testing import CliRunner

    from tether.cli import app

    a, b, _ = cluster
    await eventually(lambda: owned_by(a) and owned_by(b) and len(owned_by(a)) + len(owned_by(b)) == len(IDS),
                     what="a split")
    await eventually(lambda: _listed_with_nodes(a), what="a's listing has every owner")
    res = await asyncio.to_thread(CliRunner().invoke, app, ["sessions", "list", "--url", a.url],
                                  env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    lines = {ln.split()[1]: ln for ln in res.output.splitlines() if ln.split()[1:2] and ln.split()[1] in IDS}
    assert "node" in res.output and set(lines) == set(IDS)
    for sid in IDS:
        assert (" a " if sid in owned_by(a) else " b ") in lines[sid]


async def _listed_with_nodes(node) -> bool:
    items = (await node.client.get("/api/sessions")).json()["sessions"]
    return len(items) == len(IDS) and all(i["node"] for i in items)


async def test_session_deleted_from_the_registry_elsewhere_stops_where_it_runs(cluster):
    """A registry row removed behind the owner's back (a race with a takeover) stops the session there."""
    a, b, up = cluster
    await eventually(lambda: owned_by(b), what="b runs a session")
    sid = owned_by(b)[0]
    a.service.db.delete_session(sid)  # what a non-owner's delete does to the shared registry
    await eventually(lambda: up.open[sid] == 0 and not b.service.manager.owns(sid), what="stopped on b")
    await eventually(lambda: _status(b, f"/api/sessions/{sid}", 404), what="forgotten on b")


async def test_a_session_created_on_one_node_is_usable_on_another_at_once(cluster):
    """Create on node a, then at once send to and read it on node b: no 404 while b's registry catches up."""
    a, b, up = cluster
    r = await a.client.post("/api/sessions", json={"id": "fresh", "kind": "websocket",
                                                   "options": {"url": f"ws://127.0.0.1:{up.port}/fresh"}})
    assert r.status_code == 201, r.text
    r = await b.client.post("/api/sessions/fresh/messages", json={"payload": "hello"})
    assert r.status_code == 202, r.text
    await eventually(lambda: up.received["fresh"] == ["hello"], what="delivered once")
    assert (await b.client.get("/api/sessions/nope")).status_code == 404

"""The SSE event stream: typed events with ids, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.service.conftest import Running, Upstream


async def read_events(client: httpx.AsyncClient, n: int, headers: dict[str, str] | None = None,
                      params: dict[str, str] | None = None) -> list[dict]:
    """Read ``n`` SSE events (id, event, data) from /api/events."""
    events: list[dict] = []
    current: dict = {}
    async with client.stream("GET", "/api/events", headers=headers or {}, params=params or {}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for line in resp.aiter_lines():
            if line == "":
                if "data" in current:
                    events.append(current)
                    if len(events) == n:
                        return events
                current = {}
            elif line.startswith(("id:", "event:", "data:")):
                k, v = line.split(":", 1)
                current[k] = v.strip()
    return events


async def test_sse_live_then_resume_with_last_event_id(running: Running, upstream: Upstream) -> None:
    """A client that disconnects resumes exactly after its Last-Event-ID: nothing missed, nothing twice."""
    c = running.client
    reader = asyncio.create_task(read_events(c, 1))
    await asyncio.sleep(0.2)
    await c.post("/api/sessions", json={"id": "a", "kind": "websocket", "enabled": False,
                                        "options": {"url": upstream.url}})
    first = (await asyncio.wait_for(reader, 10))[0]
    assert first["event"] == "session.created"
    assert json.loads(first["data"])["session"] == "a"
    # while "disconnected", more happens
    for sid in ("b", "c"):
        await c.post("/api/sessions", json={"id": sid, "kind": "websocket", "enabled": False,
                                            "options": {"url": upstream.url}})
    resumed = await asyncio.wait_for(read_events(c, 2, headers={"Last-Event-ID": first["id"]}), 10)
    assert [json.loads(e["data"])["session"] for e in resumed] == ["b", "c"]
    assert [int(e["id"]) for e in resumed] == sorted(int(e["id"]) for e in resumed)
    assert int(resumed[0]["id"]) > int(first["id"])
    history = (await c.get("/api/events/history", params={"since": first["id"]})).json()
    assert [e["id"] for e in history["events"]] == [int(e["id"]) for e in resumed]


async def test_sse_link_events_carry_session(running: Running, upstream: Upstream) -> None:
    """Link events (connecting, connected) stream with their session id and typed names."""
    c = running.client
    await c.post("/api/sessions", json={"id": "a", "kind": "websocket", "options": {"url": upstream.url}})
    await running.wait_state("a", "connected")
    streamed = await asyncio.wait_for(read_events(c, 3, params={"since": "0", "session": "a"}), 10)
    assert streamed[0]["event"] == "session.created"
    assert all(json.loads(e["data"])["session"] == "a" for e in streamed)
    hist = (await c.get("/api/events/history", params={"session": "a"})).json()["events"]
    types = [e["type"] for e in hist]
    assert "link.connecting" in types and "link.connected" in types
    assert all(e["session"] == "a" for e in hist)


async def test_live_websocket_channel_replays_and_streams(running: Running, upstream: Upstream) -> None:
    """/api/live (the dashboard's channel): hello with last_event_id replays what followed, then streams live."""
    import websockets

    c = running.client
    await c.post("/api/sessions", json={"id": "a", "kind": "websocket", "options": {"url": upstream.url}})
    await running.wait_state("a", "connected")
    ws_url = running.url.replace("http://", "ws://") + "/api/live"
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "hello", "token": None, "last_event_id": 0}))
        seen = []
        while not any(m["event"]["type"] == "connected" for m in seen):
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        connected = next(m for m in seen if m["event"]["type"] == "connected")
        assert connected["type"] == "event" and connected["event"]["session"] == "a"
        assert connected["event"]["state"] == "connected"
        assert [m["id"] for m in seen] == sorted(m["id"] for m in seen)
        await c.post("/api/sessions/a/restart")
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if m["event"]["name"] == "session.restarted":
                break
        await ws.send(json.dumps({"type": "ping", "t": 5}))
        while (m := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "pong":
            pass
        assert m["t"] == 5

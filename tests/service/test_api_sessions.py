"""Session lifecycle, restart, logout, durable sends and inbound delivery against a real uvicorn server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

from tests.service.conftest import Running, Upstream, WebhookReceiver, eventually


async def create_ws(r: Running, upstream: Upstream, sid: str = "sess_1", **extra: object) -> dict:
    body = {"id": sid, "kind": "websocket", "options": {"url": upstream.url, **extra.pop("options", {})}, **extra}
    resp = await r.client.post("/api/sessions", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def test_lifecycle_create_send_patch_delete(running: Running, upstream: Upstream) -> None:
    """A session connects, delivers a queued message once, shows up in lists, and is gone after DELETE."""
    s = await create_ws(running, upstream)
    assert s["log_prefix"] == "[sess_1]"
    await running.wait_state("sess_1", "connected")
    resp = await running.client.post("/api/sessions/sess_1/messages", json={"payload": "hello"})
    assert resp.status_code == 202
    mid = resp.json()["id"]
    await eventually(lambda: upstream.received == ["hello"], what="upstream got hello")
    delivered = await eventually(
        lambda: running.client.get("/api/sessions/sess_1/messages", params={"status": "delivered"}),
        what="delivered list")
    assert [m["id"] for m in delivered.json()["messages"]] == [mid]
    listed = (await running.client.get("/api/sessions")).json()
    assert [x["id"] for x in listed["sessions"]] == ["sess_1"] and listed["total"] == 1
    patched = await running.client.patch("/api/sessions/sess_1", json={"webhooks": ["http://127.0.0.1:9/x"]})
    assert patched.status_code == 200 and patched.json()["webhooks"] == ["http://127.0.0.1:9/x"]
    assert (await running.client.delete("/api/sessions/sess_1")).status_code == 204
    assert (await running.client.get("/api/sessions/sess_1")).status_code == 404


async def test_restart_reconnects_and_flushes(running: Running, upstream: Upstream) -> None:
    """Restart closes, reconnects (a second upstream connection) and still delivers what was queued."""
    await create_ws(running, upstream)
    await running.wait_state("sess_1", "connected")
    resp = await running.client.post("/api/sessions/sess_1/restart")
    assert resp.status_code == 200
    await running.wait_state("sess_1", "connected")
    assert upstream.connections == 2
    await running.client.post("/api/sessions/sess_1/messages", json={"payload": {"n": 1}})
    await eventually(lambda: upstream.received == ['{"n":1}'], what="delivery after restart")
    types = [e["type"] for e in (await running.client.get("/api/events/history")).json()["events"]]
    assert "session.restarted" in types


async def test_outbox_flushes_after_reconnect(running: Running, upstream: Upstream) -> None:
    """Messages accepted while the upstream is down are delivered in order once it is back."""
    await create_ws(running, upstream)
    await running.wait_state("sess_1", "connected")
    port = upstream.port
    await upstream.stop()  # closes the server and its connections

    async def down() -> bool:
        return (await running.client.get("/api/sessions/sess_1")).json()["state"] != "connected"

    await eventually(down, what="session down")
    for i in range(5):
        assert (await running.client.post("/api/sessions/sess_1/messages", json={"payload": f"m{i}"})).status_code == 202
    await upstream.start(port)
    await eventually(lambda: upstream.received == [f"m{i}" for i in range(5)], what="flush after reconnect")


async def test_logout_never_reconnects(running: Running, upstream: Upstream) -> None:
    """Logout closes the session, clears its token, and no later event makes it reconnect."""
    await create_ws(running, upstream, options={"token": "upstream-secret-1"})
    await running.wait_state("sess_1", "connected")
    assert upstream.handshake_headers[0]["authorization"] == "Bearer upstream-secret-1"
    shown = (await running.client.get("/api/sessions/sess_1")).json()
    assert shown["options"]["token"] == "***" and "upstream-secret-1" not in json.dumps(shown)
    out = (await running.client.post("/api/sessions/sess_1/logout")).json()
    assert out["state"] == "closed" and out["desired"] == "logged_out" and "token" not in out["options"]
    await running.client.post("/health/sweep")
    await asyncio.sleep(0.5)  # several backoff periods: a reconnect would have happened by now
    assert upstream.connections == 1
    assert (await running.client.post("/api/sessions/sess_1/restart")).status_code == 409
    assert (await running.client.post("/api/sessions/sess_1/messages", json={"payload": "x"})).status_code == 409


async def test_idempotency_key_same_id(running: Running, upstream: Upstream) -> None:
    """The same Idempotency-Key returns the same message id and the upstream gets it once."""
    await create_ws(running, upstream)
    ids = set()
    for _ in range(3):
        r = await running.client.post("/api/sessions/sess_1/messages", json={"payload": "once"},
                                      headers={"Idempotency-Key": "k-1"})
        assert r.status_code == 202
        ids.add(r.json()["id"])
    assert len(ids) == 1
    await eventually(lambda: upstream.received == ["once"], what="one delivery")
    await asyncio.sleep(0.2)
    assert upstream.received == ["once"]


async def test_inbound_to_webhook_signed_and_deduplicated(running: Running, upstream: Upstream,
                                                          webhook: WebhookReceiver) -> None:
    """An inbound message reaches the webhook with a valid HMAC signature, once, despite a 503 and a replay."""
    webhook.fail_first = 1
    await create_ws(running, upstream, webhooks=[webhook.url])
    await running.wait_state("sess_1", "connected")
    await upstream.push(json.dumps({"id": "u-42", "text": "hi"}))
    await upstream.push(json.dumps({"id": "u-42", "text": "hi"}))  # the upstream replays it
    await eventually(lambda: webhook.requests, what="webhook call")
    await asyncio.sleep(0.3)
    assert len(webhook.requests) == 1
    headers, body = webhook.requests[0]
    assert headers["x-tether-message-id"] == "u-42"
    secret = (running.service.settings.data_dir / "webhook_secret").read_text().strip().encode()
    t, v1 = (p.split("=", 1)[1] for p in headers["x-tether-signature"].split(","))
    assert hmac.compare_digest(v1, hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest())
    assert json.loads(body)["payload"] == '{"id": "u-42", "text": "hi"}'


async def test_inbox_dedup_is_per_session(running: Running, upstream: Upstream) -> None:
    """The same upstream message id arriving on two sessions is new for each of them."""
    for sid in ("a", "b"):
        await create_ws(running, upstream, sid)
        await running.wait_state(sid, "connected")
    await eventually(lambda: len(upstream.clients) == 2, what="two upstream clients")
    for n in range(3):
        await upstream.push(json.dumps({"id": f"same-{n}"}))

    async def both() -> bool:
        got = [(await running.client.get(f"/api/sessions/{sid}")).json()["stats"]["received_total"] for sid in "ab"]
        return got == [3, 3]

    await eventually(both, what="3 new messages on each session")


async def test_shutdown_leaves_no_task_behind(tmp_path, upstream: Upstream) -> None:
    """After the service stops, none of its tasks (delivery loops, sweep, webhooks, links) is still alive."""
    import asyncio

    from tests.service.conftest import fast_settings, start_service, stop_service

    r = await start_service(fast_settings(tmp_path))
    for sid in ("a", "b"):
        await create_ws(r, upstream, sid)
        await r.wait_state(sid, "connected")
    await r.client.post("/api/sessions/a/messages", json={"payload": "x"})
    before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert any(t.get_name().startswith("tether-") for t in before)
    await stop_service(r)
    await asyncio.sleep(0.05)
    left = [t.get_name() for t in asyncio.all_tasks() - {asyncio.current_task()} if not t.done()
            and t in before]
    assert left == []

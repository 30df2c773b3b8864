"""Bad input gets a JSON 4xx that names the problem; auth is enforced; never a 500."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tether.service._settings import load_settings
from tests.service.conftest import TOKEN, Running, fast_settings, free_port, start_service, stop_service


def error_of(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return body["error"]


async def test_unknown_session_is_404_json(running: Running) -> None:
    """Every per-session endpoint answers 404 JSON for an unknown id."""
    c = running.client
    for method, path in [("GET", "/api/sessions/nope"), ("PATCH", "/api/sessions/nope"),
                         ("DELETE", "/api/sessions/nope"), ("POST", "/api/sessions/nope/restart"),
                         ("POST", "/api/sessions/nope/logout"), ("GET", "/api/sessions/nope/messages")]:
        resp = await c.request(method, path, json={} if method == "PATCH" else None)
        assert resp.status_code == 404, (method, path, resp.text)
        assert error_of(resp)["code"] == "not_found"
    resp = await c.post("/api/sessions/nope/messages", json={"payload": "x"})
    assert resp.status_code == 404


async def test_validation_errors_name_the_field(running: Running) -> None:
    """Malformed JSON, wrong types, bad options and unknown kinds are 422 naming the field."""
    c = running.client
    resp = await c.post("/api/sessions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 422 and "malformed JSON" in error_of(resp)["message"]
    resp = await c.post("/api/sessions", json={"kind": 5})
    assert resp.status_code == 422 and "kind" in error_of(resp)["message"]
    resp = await c.post("/api/sessions", json={"kind": "websocket", "options": {"url": "http://x"}})
    assert resp.status_code == 422 and "options.url" in error_of(resp)["message"]
    resp = await c.post("/api/sessions", json={"kind": "websocket", "options": {"url": "ws://x", "urll": 1}})
    assert resp.status_code == 422 and "options.urll" in error_of(resp)["message"]
    resp = await c.post("/api/sessions", json={"kind": "carrier-pigeon"})
    assert resp.status_code == 422 and "kind" in error_of(resp)["message"]
    resp = await c.post("/api/sessions", json={"id": "bad id!", "kind": "websocket", "options": {"url": "ws://x"}})
    assert resp.status_code == 422 and "id" in error_of(resp)["message"]
    await c.post("/api/sessions", json={"id": "s", "kind": "websocket", "options": {"url": "ws://127.0.0.1:9/"}})
    resp = await c.post("/api/sessions/s/messages", json={"payload": 12})
    assert resp.status_code == 422 and "payload" in error_of(resp)["message"]
    resp = await c.get("/api/sessions/s/messages", params={"status": "lost"})
    assert resp.status_code == 422 and "status" in error_of(resp)["message"]
    resp = await c.post("/api/sessions", json={"id": "s", "kind": "websocket", "options": {"url": "ws://x"}})
    assert resp.status_code == 409 and error_of(resp)["code"] == "conflict"


async def test_oversized_body_is_413(running: Running) -> None:
    """Too large by Content-Length, by streamed (chunked) size, and by payload size: 413 JSON."""
    c = running.client
    await c.post("/api/sessions", json={"id": "s", "kind": "websocket", "options": {"url": "ws://127.0.0.1:9/"}})
    big = "x" * (running.service.settings.max_message_bytes + 20_000)
    resp = await c.post("/api/sessions/s/messages", json={"payload": big})
    assert resp.status_code == 413 and error_of(resp)["code"] == "payload_too_large"

    async def chunks():
        yield b'{"payload": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}'

    resp = await c.post("/api/sessions/s/messages", content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    just_over = "z" * (running.service.settings.max_message_bytes + 1)
    resp = await c.post("/api/sessions/s/messages", json={"payload": just_over})
    assert resp.status_code == 413
    assert (await c.get("/api/sessions/s/messages")).json()["messages"] == []


async def test_token_required_and_checked(tmp_path: Path) -> None:
    """With a token, a missing or wrong bearer is 401 JSON; the right one works; /health stays open."""
    r = await start_service(fast_settings(tmp_path, host="0.0.0.0", token=TOKEN), token=TOKEN)
    try:
        assert r.url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=r.url, trust_env=False) as anon:
            resp = await anon.get("/api/sessions")
            assert resp.status_code == 401 and error_of(resp)["code"] == "unauthorized"
            assert resp.headers["www-authenticate"] == "Bearer"
            resp = await anon.get("/api/sessions", headers={"Authorization": "Bearer wrong-token-123"})
            assert resp.status_code == 401
            assert (await anon.get("/health/metrics")).status_code == 401
            assert (await anon.get("/health")).status_code == 200
        assert (await r.client.get("/api/sessions")).status_code == 200
        import json

        import websockets

        async with websockets.connect(r.url.replace("http://", "ws://") + "/api/live") as ws:
            await ws.send(json.dumps({"type": "hello", "token": "wrong-token-123", "last_event_id": None}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    finally:
        await stop_service(r)


def test_refuses_beyond_loopback_without_token(tmp_path: Path) -> None:
    """`tether serve --host 0.0.0.0` without TETHER_TOKEN exits non-zero with a clear message."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    proc = subprocess.run([sys.executable, "-m", "tether.cli", "serve", "--host", "0.0.0.0", "--port",
                           str(free_port()), "--data-dir", str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=30)
    assert proc.returncode == 2
    assert "TETHER_TOKEN" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(Exception, match="TETHER_TOKEN"):
        load_settings(None, host="0.0.0.0").check_can_serve()


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    """A port in use gives a message naming it and --port, not a traceback."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "tether.cli", "serve", "--port", str(port), "--data-dir",
                               str(tmp_path)], capture_output=True, text=True, timeout=30,
                              env={k: v for k, v in os.environ.items() if not k.startswith("TETHER_")})
    assert proc.returncode == 2
    assert f"127.0.0.1:{port}" in proc.stderr and "--port" in proc.stderr and "Traceback" not in proc.stderr


async def test_secrets_never_in_output(running: Running) -> None:
    """Tokens in options, headers and URLs are masked in every session response."""
    body = {"id": "s", "kind": "websocket", "enabled": False,
            "options": {"url": "ws://127.0.0.1:9/?token=url-secret-9", "token": "opt-secret-9",
                        "headers": {"Authorization": "Bearer hdr-secret-9", "X-Plain": "visible"}}}
    created = await running.client.post("/api/sessions", json=body)
    assert created.status_code == 201
    for resp in (created, await running.client.get("/api/sessions/s"), await running.client.get("/api/sessions")):
        text = resp.text
        assert "secret-9" not in text and "visible" in text



def test_unusable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    """A data_dir that is a file gives a message naming it, not a traceback."""
    bad = tmp_path / "a-file"
    bad.write_text("")
    proc = subprocess.run([sys.executable, "-m", "tether.cli", "serve", "--port", str(free_port()), "--data-dir",
                           str(bad)], capture_output=True, text=True, timeout=30,
                          env={k: v for k, v in os.environ.items() if not k.startswith("TETHER_")})
    assert proc.returncode == 2
    assert "a-file" in proc.stderr and "--data-dir" in proc.stderr and "Traceback" not in proc.stderr

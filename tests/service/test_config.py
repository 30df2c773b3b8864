"""/api/config on a real uvicorn: validation, live apply to running links, versions, rollback, 409, secrets."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from tether.observe import service_observability
from tether.service._config_model import alert_actions
from tether.service._server import serve
from tether.service._settings import Settings
from tests.service.conftest import TOKEN, Running, Upstream, eventually, fast_settings, start_service, stop_service

BOT_TOKEN = "123456789:AAF-very-secret-bot-token-value"
SMTP_PASSWORD = "smtp-pa55word-do-not-show"
HOOK_KEY = "hook-path-key-5b1c9e"
HOOK_SECRET = "hmac-secret-for-alerts-77"
NEW_BOT_TOKEN = "987654321:BBG-another-secret-token-value"
SECRETS = (TOKEN, BOT_TOKEN, SMTP_PASSWORD, HOOK_KEY, HOOK_SECRET, NEW_BOT_TOKEN)


def secret_settings(tmp_path: Path) -> Settings:
    return fast_settings(tmp_path, token=TOKEN, alerts=dict(
        webhooks=[dict(name="ops", url=f"http://127.0.0.1:9/hooks/{HOOK_KEY}", secret=HOOK_SECRET)],
        email=dict(host="127.0.0.1", port=2525, username="ops", password=SMTP_PASSWORD, to=["ops@localhost"]),
        telegram=dict(api_base="http://127.0.0.1:9", bot_token=BOT_TOKEN, chat_id=42)))


async def start_observed(settings: Settings, token: str | None = None) -> Running:
    """Like conftest.start_service, with tether.observe wired the way `tether serve` does (log files, alerts)."""
    ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    obs = service_observability(settings, actions=alert_actions(settings.alerts))
    task = asyncio.create_task(serve(settings, observability=obs, on_ready=lambda s, u: ready.set_result((s, u)),
                                     handle_signals=False, stop=stop))
    done, _ = await asyncio.wait({task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    service, url = ready.result()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Running(url, service, httpx.AsyncClient(base_url=url, headers=headers, timeout=10.0, trust_env=False),
                   stop, task)


async def test_invalid_patch_changes_nothing(running: Running) -> None:
    """A patch with one bad field is 422 naming it; no field of it is applied and no version is stored."""
    before = (await running.client.get("/api/config")).json()
    r = await running.client.patch("/api/config?user=ann&reason=tune",
                                   json={"sessions": {"heartbeat_interval": -1, "backoff_base": 9}, "sweep_interval": 7})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["fields"][0]["field"] == "sessions.heartbeat_interval"
    assert "sessions.heartbeat_interval" in r.json()["error"]["message"]
    r = await running.client.patch("/api/config", json={"sessions": {"heartbaet_interval": 3}})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "sessions.heartbaet_interval"
    assert "unknown setting" in r.json()["error"]["message"]
    r = await running.client.patch("/api/config", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "body"
    r = await running.client.patch("/api/config", json=[1, 2])
    assert r.status_code == 422
    after = (await running.client.get("/api/config")).json()
    assert after == before
    assert len((await running.client.get("/api/config/history")).json()["versions"]) == 1
    assert running.service.settings.sessions.backoff_base == 0.05


async def test_patch_changes_a_running_links_heartbeat_without_reconnecting(running: Running, upstream: Upstream) -> None:
    """A valid patch reaches the running link (new heartbeat interval, pings at that pace) with no new handshake."""
    r = await running.client.post("/api/sessions", json={"id": "ws-1", "kind": "websocket", "options": {"url": upstream.url}})
    assert r.status_code == 201, r.text
    await running.wait_state("ws-1", "connected")
    link = running.service.manager.get("ws-1").connector._link
    assert link._core.config.heartbeat_interval == 5.0
    handshakes = upstream.connections
    first_ping = link.stats.last_heartbeat_at
    r = await running.client.patch("/api/config?user=ann&reason=faster+heartbeats",
                                   json={"sessions": {"heartbeat_interval": 0.05, "backoff_cap": 0.5}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 2 and r.headers["etag"] == '"2"'
    assert {c["path"] for c in body["changes"]} == {"sessions.heartbeat_interval", "sessions.backoff_cap"}
    assert body["restart_required"] == []
    assert link._core.config.heartbeat_interval == 0.05
    seen: set[float] = set()

    def pinged() -> bool:  # several heartbeats answered: the new interval is in use (5 s would give none)
        if link.stats.last_heartbeat_at not in (None, first_ping):
            seen.add(link.stats.last_heartbeat_at)
        return len(seen) >= 3

    await eventually(pinged, what="heartbeats at the new interval")
    assert upstream.connections == handshakes
    assert link.stats.connects == 1
    # New sessions start from the new defaults too.
    assert running.service.manager.settings.sessions.heartbeat_interval == 0.05


async def test_history_and_rollback_restore_the_exact_document(tmp_path: Path) -> None:
    """Rollback makes an earlier version's full document (secrets included) current again, as a new version."""
    r = await start_observed(secret_settings(tmp_path), token=TOKEN)
    try:
        c = r.client
        assert (await c.patch("/api/config?user=ann&reason=a", json={"sessions": {"heartbeat_interval": 7}})).status_code == 200
        v2 = r.service.config.get(2).document
        r2 = await c.patch("/api/config?user=bob&reason=b", json={"sessions": {"heartbeat_interval": 9},
                                                                  "alerts": {"telegram": {"bot_token": NEW_BOT_TOKEN}}})
        assert r2.status_code == 200 and r2.json()["version"] == 3
        assert r.service.settings.alerts.telegram.bot_token.get_secret_value() == NEW_BOT_TOKEN
        rb = await c.post("/api/config/rollback", json={"version": 2, "user": "carol", "reason": "undo b"})
        assert rb.status_code == 200, rb.text
        assert rb.json()["version"] == 4
        assert r.service.config.current.document == v2
        assert r.service.settings.alerts.telegram.bot_token.get_secret_value() == BOT_TOKEN
        assert (await c.get("/api/config")).json()["config"]["sessions"]["heartbeat_interval"] == 7
        hist = (await c.get("/api/config/history")).json()["versions"]
        assert [(v["version"], v["user"]) for v in hist] == [(4, "carol"), (3, "bob"), (2, "ann"), (1, "startup")]
        assert hist[0]["source"] == "rollback:2" and hist[0]["reason"] == "undo b"
        assert (await c.post("/api/config/rollback", json={"version": 99})).status_code == 422
    finally:
        await stop_service(r)


async def test_two_concurrent_patches_on_one_version_give_one_409(running: Running) -> None:
    """If-Match: two patches against the same version: exactly one applies, the other gets 409 with the ETag."""
    got = await running.client.get("/api/config")
    etag = got.headers["etag"]
    results = await asyncio.gather(*(
        running.client.patch(f"/api/config?user=u{i}", json={"sessions": {"heartbeat_interval": 3 + i}},
                             headers={"If-Match": etag}) for i in range(2)))
    assert sorted(x.status_code for x in results) == [200, 409]
    conflict = next(x for x in results if x.status_code == 409)
    assert conflict.headers["etag"] == '"2"' and "version 2" in conflict.json()["error"]["message"]
    r = await running.client.patch("/api/config", json={"sweep_interval": 60}, headers={"If-Match": "banana"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "If-Match"


async def test_restart_only_settings_are_stored_and_reported(running: Running) -> None:
    """port / data_dir changes are stored as a version but reported as applying after a restart."""
    r = await running.client.patch("/api/config?user=ann", json={"port": 9999, "sessions": {"send_batch": 8}})
    assert r.status_code == 200
    assert r.json()["restart_required"] == ["port"]
    got = (await running.client.get("/api/config")).json()
    assert got["config"]["port"] == 9999 and got["pending_restart"] == ["port"]
    assert running.service.manager.settings.sessions.send_batch == 8


async def test_schema_is_served(running: Running) -> None:
    """GET /api/config/schema is the JSON Schema of the whole tree, alerts destinations included."""
    schema = (await running.client.get("/api/config/schema")).json()
    assert {"sessions", "recovery", "alerts", "supervisor", "webhook"} <= set(schema["properties"])
    assert "TelegramAlertSettings" in schema["$defs"] and "EmailSettings" in schema["$defs"]


async def test_secrets_never_appear_in_responses_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Token, bot token, SMTP password, webhook key and HMAC secret: masked in every answer, absent from logs."""
    caplog.set_level(logging.DEBUG)
    settings = secret_settings(tmp_path)
    r = await start_observed(settings, token=TOKEN)
    try:
        c = r.client
        texts = []
        got = await c.get("/api/config")
        texts.append(got.text)
        cfg = got.json()["config"]
        assert cfg["token"] == "**********" and cfg["alerts"]["telegram"]["bot_token"] == "**********"
        assert cfg["alerts"]["email"]["password"] == "**********"
        assert cfg["alerts"]["webhooks"][0]["url"] == "**********"
        # Sending the masked document back changes nothing (masked secrets keep their stored values).
        same = await c.patch("/api/config?user=ann", json=cfg)
        texts.append(same.text)
        assert same.status_code == 200 and same.json()["version"] == 1
        p = await c.patch("/api/config?user=ann&reason=rotate", json={"alerts": {"telegram": {"bot_token": NEW_BOT_TOKEN},
                                                                               "interval": 5}})
        texts.append(p.text)
        assert p.status_code == 200
        assert {"path": "alerts.telegram.bot_token", "old": "**********", "new": "**********", "secret": True} in p.json()["changes"]
        bad = await c.patch("/api/config", json={"token": "short"})
        texts.append(bad.text)
        assert bad.status_code == 422 and "short" not in bad.text
        texts.append((await c.post("/api/config/rollback", json={"version": 1, "user": "ann"})).text)
        texts.append((await c.get("/api/config/history")).text)
        texts.append((await c.get("/api/config/schema")).text)
        assert (await httpx.AsyncClient(base_url=r.url, trust_env=False).get("/api/config")).status_code == 401
    finally:
        await stop_service(r)
    logs = [caplog.text] + [f.read_text() for f in (settings.data_dir / "logs").glob("*.log*")]
    assert any("config version 2" in t for t in logs)
    for secret in SECRETS:
        for text in texts + logs:
            assert secret not in text
    mode = stat.S_IMODE(os.stat(settings.data_dir / "config.db").st_mode)
    assert mode == 0o600


async def test_api_changes_survive_a_restart(tmp_path: Path) -> None:
    """A restart with the same bootstrap keeps the latest stored version (and applies pending restart-only values)."""
    settings = fast_settings(tmp_path)
    r = await start_service(settings)
    assert (await r.client.patch("/api/config?user=ann", json={"sessions": {"heartbeat_interval": 4}})).status_code == 200
    await stop_service(r)
    r = await start_service(fast_settings(tmp_path))
    try:
        got = (await r.client.get("/api/config")).json()
        assert got["version"] == 2 and got["config"]["sessions"]["heartbeat_interval"] == 4
    finally:
        await stop_service(r)

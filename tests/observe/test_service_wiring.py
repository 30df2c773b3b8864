"""The running gateway service with observe wired in: real sessions, real alerts to SMTP and a webhook."""

from __future__ import annotations

import asyncio
import json

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.server import serve as ws_serve

from tether import Backoff
from tether.observe import AlertRule, EmailAction, Observer, WebhookAction, service_observability
from tether.service._server import serve
from tether.service._settings import load_settings

from tests.conftest import eventually

from .conftest import Receiver, free_port


def _value(text: str, name: str, **labels: str) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


async def test_service_session_down_alerts_smtp_and_webhook_then_resolves(tmp_path, smtp) -> None:
    """A service session whose upstream dies fires SessionDown to SMTP and a webhook, and resolves when it returns."""
    async def handler(ws) -> None:
        async for _ in ws:
            pass

    ws_port = free_port()
    upstream = await ws_serve(handler, "127.0.0.1", ws_port)
    settings = load_settings(None, port=0, data_dir=tmp_path / "data", restart_delay=0.05, sweep_interval=3600.0,
                             shutdown_timeout=3.0, sessions=dict(backoff_base=0.05, backoff_cap=0.2, heartbeat_interval=5.0,
                                                                 heartbeat_timeout=5.0, connect_timeout=2.0, max_attempts=None))
    rule = AlertRule("SessionDown", "tether_session_up", "==", 0, for_=0.3, group_wait=0, group_interval=0.05,
                     severity="critical", summary="session {labels[session]} is down")
    fast = Backoff(base=0.01, cap=0.02, jitter="none")
    with Receiver() as hook:
        observer = Observer(settings.data_dir, rules=[rule], alert_interval=0.05, perf_interval=0.1, actions=[
            WebhookAction(hook.url, backoff=fast), EmailAction("127.0.0.1", smtp.port, sender="t@localhost", to=["o@localhost"])])
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, observability=service_observability(settings, observer=observer),
                                         on_ready=lambda svc, url: ready.set_result(url), handle_signals=False, stop=stop))
        url = await asyncio.wait_for(ready, 15)
        try:
            async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as client:
                r = await client.post("/api/sessions", json={"id": "sess_1", "kind": "websocket",
                                                             "options": {"url": f"ws://127.0.0.1:{ws_port}/"}})
                assert r.status_code == 201, r.text

                async def up() -> float | None:
                    return _value((await client.get("/health/metrics")).text, "tether_session_up", session="sess_1") == 1

                await eventually(up, what="sess_1 up in /health/metrics", timeout=15.0)
                upstream.close()  # the upstream dies and stays dead
                await upstream.wait_closed()
                await hook.wait(1)
                await smtp.wait(1)
                fired = json.loads(hook.requests[0]["body"])
                assert fired["status"] == "firing" and fired["alerts"][0]["labels"]["session"] == "sess_1"

                upstream = await ws_serve(handler, "127.0.0.1", ws_port)  # it comes back
                await hook.wait(2, timeout=20)
                await smtp.wait(2)
                assert json.loads(hook.requests[1]["body"])["status"] == "resolved"

                text = (await client.get("/health/metrics")).text
                assert _value(text, "tether_connects_total", session="sess_1") >= 2
                assert _value(text, "tether_time_to_recover_seconds_count") >= 1
                assert _value(text, "tether_outbox_depth", session="sess_1") == 0
                alerts = (await client.get("/api/alerts")).json()
                assert [d["ok"] for d in alerts["deliveries"]].count(True) >= 4
                errors = (await client.get("/health/errors")).json()
                assert errors["total"] >= 1 and all(e["component"] for e in errors["errors"])
                filtered = (await client.get("/api/errors", params={"component": "link", "session": "sess_1"})).json()
                assert filtered["count"] >= 1
                # The service's own /health/errors takes the same filters as the tracker's.
                same = (await client.get("/health/errors", params={"component": "link", "session": "sess_1"})).json()
                assert same["total"] == filtered["count"]
                assert (await client.get("/health/errors", params={"session": "nobody"})).json()["total"] == 0
                assert (await client.get("/health/errors", params={"until": "2000-01-01T00:00:00Z"})).json()["total"] == 0
                severities = {e["severity"] for e in errors["errors"]}
                one = sorted(severities)[0]
                by_sev = (await client.get("/health/errors", params={"severity": one})).json()
                assert by_sev["total"] >= 1 and {e["severity"] for e in by_sev["errors"]} == {one}
                bad = await client.get("/health/errors", params={"severity": "urgent"})
                assert bad.status_code == 422 and "severity must be one of" in bad.json()["error"]["message"]
                bad = await client.get("/health/errors", params={"since": "yesterday"})
                assert bad.status_code == 422 and "since" in bad.json()["error"]["message"]
                report = (await client.get("/api/reports/performance", params={"window": "1h"})).json()
                assert 0 < report["sessions"]["sess_1"]["uptime_pct"] < 100
                missing = await client.delete("/api/alerts/rules/Nope")
                assert missing.status_code == 404 and "Nope" in missing.text
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 20) == 0
            upstream.close()
    logs = (settings.data_dir / "logs" / "tether.log").read_text()
    assert "[sess_1] connected" in logs and "[sess_1] disconnected" in logs

"""End to end: an Observer served by uvicorn alerts to real SMTP and webhook servers and never leaks a token."""

from __future__ import annotations

import logging

import httpx

from tether import Backoff, SystemClock
from tether import events as ev
from tether.observe import AlertRule, EmailAction, Observer, TelegramAction, WebhookAction

from .conftest import Receiver, Served, free_port

TOKEN = "424242424:AAFsecretPartOfTheBotTokenXYZ0123456"
SECRET = TOKEN.split(":")[1]


async def test_alerts_reach_smtp_and_webhook_and_no_token_leaks(tmp_path, smtp) -> None:
    """A session going down notifies a real SMTP server and webhook, resolves, and the token appears nowhere."""
    from fastapi import FastAPI

    fast = Backoff(base=0.01, cap=0.02, jitter="none")
    rule = AlertRule("SessionDown", "tether_session_up", "==", 0, group_wait=0, group_interval=0.05,
                     severity="critical", summary="session {labels[session]} is down")
    config = {"telegram": {"bot_token": TOKEN, "chat_id": 1}}  # what the service would load from its config
    with Receiver(statuses=[500]) as hook:
        dead_api = f"http://127.0.0.1:{free_port()}"  # nothing listens: Telegram delivery fails with the URL
        obs = Observer(
            tmp_path, clock=SystemClock(), rules=[rule], secrets=[config["telegram"]["bot_token"]],
            actions=[
                WebhookAction(hook.url + "/alerts", backoff=fast),
                EmailAction("127.0.0.1", smtp.port, sender="tether@localhost", to=["ops@localhost"]),
                TelegramAction(TOKEN, 1, api_base=dead_api, backoff=fast, attempts=2),
            ],
            alert_interval=0.02, perf_interval=0.05, log_level="DEBUG",
        )
        app = FastAPI()
        app.include_router(obs.router())
        await obs.start()
        try:
            async with Served(app) as served, httpx.AsyncClient(base_url=served.url, timeout=10) as client:
                logging.getLogger("tether.service").info("loaded config %s", config)
                obs.observe_link_event("sess_1", ev.Connecting(1))
                obs.observe_link_event("sess_1", ev.Connected(1))
                cause = ConnectionError(f"GET https://api.telegram.org/bot{TOKEN}/getUpdates: connection reset")
                obs.observe_link_event("sess_1", ev.Disconnected(1006, "abnormal closure", cause))
                try:  # a real failing request whose URL holds the token
                    async with httpx.AsyncClient() as raw:
                        await raw.get(f"{dead_api}/bot{TOKEN}/getMe")
                except httpx.HTTPError as exc:
                    obs.record_error(exc, "high", "telegram", "sess_1", {"url": f"{dead_api}/bot{TOKEN}/getMe"})
                    logging.getLogger("tether.telegram").exception("getMe failed", extra={"session": "sess_1"})
                obs.observe_link_event("sess_1", ev.GaveUp(RuntimeError(f"401 for bot{TOKEN}")))

                await hook.wait(1)
                await smtp.wait(1)
                obs.observe_link_event("sess_1", ev.Connected(1, downtime=0.5))
                await hook.wait(2)
                await smtp.wait(2)
                await obs.alerts.drain()

                statuses = [__import__("json").loads(r["body"])["status"] for r in hook.requests if r["status"] == 200]
                assert statuses == ["firing", "resolved"]
                assert hook.requests[0]["status"] == 500  # the first POST failed and was retried
                subjects = [m.content.decode() for m in smtp.messages]
                assert "FIRING" in subjects[0] and "RESOLVED" in subjects[1]
                failed = [d for d in obs.alerts.deliveries if not d["ok"]]
                assert failed and all(d["action"] == "telegram" for d in failed)

                responses = [await client.get(p) for p in (
                    "/health/errors?limit=1000", "/api/alerts", "/api/alerts/rules", "/health/metrics",
                    "/api/reports/performance?window=1h")]
                assert all(r.status_code == 200 for r in responses)
                errors = responses[0].json()["errors"]
                assert {e["component"] for e in errors} >= {"link", "telegram", "alerts"}
                api_text = "\n".join(r.text for r in responses)
        finally:
            await obs.close()

    records = "\n".join(repr(r.to_dict()) for r in _reopen(tmp_path))
    logs = {p.name: p.read_text() for p in (tmp_path / "logs").iterdir()}
    assert "[sess_1] disconnected: abnormal closure (code 1006)" in logs["tether.log"]
    assert "SessionDown" in logs["alerts.log"] and "sample" in logs["performance.log"]
    assert "[REDACTED]" in records and "[REDACTED]" in logs["errors.log"]
    outbound = "\n".join([r["body"].decode() for r in hook.requests] + [m.content.decode() for m in smtp.messages])
    for where, text in {"records": records, "api": api_text, "outbound": outbound, **logs}.items():
        assert SECRET not in text, f"token leaked into {where}"
        assert TOKEN not in text, f"token leaked into {where}"


def _reopen(tmp_path):
    from tether.observe import ErrorTracker

    with ErrorTracker(tmp_path / "errors.db", log=False) as t:
        return t.query(limit=10_000)

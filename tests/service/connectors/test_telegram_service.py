"""A telegram-bot session end to end: real service over HTTP, real FakeBotAPI, real webhook receiver."""

from __future__ import annotations

import asyncio
import json

from tests.service.conftest import Running, WebhookReceiver, eventually
from tether.testing import FakeBotAPI

TOKEN = "987654321:AAE-service-test-secret-token_value"


async def test_telegram_session_receives_sends_and_hides_the_token(running: Running, webhook: WebhookReceiver) -> None:
    """Updates reach the webhook as tg:{id}; API messages become sendMessage; the token never shows."""
    async with FakeBotAPI(TOKEN) as api:
        api.push_message("hello bot", chat_id=42)
        body = {"id": "tg_1", "kind": "telegram-bot", "webhooks": [webhook.url],
                "options": {"token": TOKEN, "api_base": api.url, "poll_timeout": 0.2}}
        resp = await running.client.post("/api/sessions", json=body)
        assert resp.status_code == 201, resp.text
        await running.wait_state("tg_1", "connected")
        await eventually(lambda: webhook.requests, what="webhook call")
        delivered = json.loads(webhook.requests[0][1])
        assert delivered["id"] == "tg:1" and delivered["payload"]["message"]["text"] == "hello bot"

        resp = await running.client.post("/api/sessions/tg_1/messages", json={"payload": {"chat_id": 42, "text": "hi!"}})
        assert resp.status_code == 202
        await api.wait_for_sent(1)
        assert (api.sent[0]["chat"]["id"], api.sent[0]["text"]) == (42, "hi!")

        shown = (await running.client.get("/api/sessions/tg_1")).text
        assert TOKEN not in shown and TOKEN.split(":")[1] not in shown

        assert (await running.client.post("/api/sessions/tg_1/logout")).status_code == 200
        await running.wait_state("tg_1", "closed")
        before = len(api.requests)
        await asyncio.sleep(0.5)  # longer than a poll_timeout: a live poller would have asked again
        assert len(api.requests) == before  # logged out: it never polls again
        assert len(webhook.requests) == 1


async def test_a_chat_that_blocked_the_bot_dead_letters_that_message_only(running: Running) -> None:
    """Telegram 403 "blocked by the user" on sendMessage: that message is dead-lettered with the reason; others go out."""
    async with FakeBotAPI(TOKEN) as api:
        api.block(42)
        body = {"id": "tg_b", "kind": "telegram-bot", "options": {"token": TOKEN, "api_base": api.url, "poll_timeout": 0.2}}
        assert (await running.client.post("/api/sessions", json=body)).status_code == 201
        await running.wait_state("tg_b", "connected")
        blocked = (await running.client.post("/api/sessions/tg_b/messages",
                                             json={"payload": {"chat_id": 42, "text": "to a blocker"}})).json()["id"]
        await running.client.post("/api/sessions/tg_b/messages", json={"payload": {"chat_id": 43, "text": "hi"}})
        await api.wait_for_sent(1)
        assert [m["chat"]["id"] for m in api.sent] == [43]
        dead = (await running.client.get("/api/sessions/tg_b/messages?status=dead")).json()
        rows = dead["messages"] if isinstance(dead, dict) else dead
        assert [m["id"] for m in rows] == [blocked]
        assert "blocked by the user" in json.dumps(rows[0])
        session = (await running.client.get("/api/sessions/tg_b")).json()
        assert session["state"] == "connected"

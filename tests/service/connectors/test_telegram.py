"""The telegram-bot connector against a real FakeBotAPI: ordered, durable, honest about failures."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from tests.conftest import eventually

from tether import AuthError, ConfigError, LinkClosedError, State, StoreError, SystemClock
from tether import events as ev
from tether._classify import classify_exception
from tether._decision import ErrorClass
from tether.service._connector import CONNECTORS, ConnectorContext, InboundMessage
from tether.service.connectors.telegram import (
    BotAPIClient,
    BotAPIConnectionError,
    BotAPIRateLimited,
    BotAPIServerError,
    BotAPIUnauthorized,
    InvalidBotPayload,
    TelegramBotConnector,
)
from tether.testing import FakeBotAPI, FakeClock

TOKEN = "123456789:AAH-very-secret-token-value_0123456789"


class Harness:
    """A hand-built ConnectorContext: delivered messages in a list, the cursor in a dict."""

    def __init__(self, api: FakeBotAPI, clock: Any = None, store: dict | None = None, **options: Any) -> None:
        self.delivered: list[InboundMessage] = []
        self.events: list[Any] = []
        self.store = store if store is not None else {}
        self.fail_saves = 0
        self.fail_delivers = 0
        opts = {"token": api.token, "api_base": api.url, "poll_timeout": 0.2, "backoff_base": 0.01,
                "backoff_cap": 0.05, **options}
        self.ctx = ConnectorContext(session="tg1", options=opts, clock=clock or SystemClock(), deliver=self.deliver,
                                    emit=self.events.append, load_cursor=self.load, save_cursor=self.save)
        self.conn = TelegramBotConnector(self.ctx)

    async def deliver(self, msg: InboundMessage) -> None:
        if self.fail_delivers:
            self.fail_delivers -= 1
            raise StoreError("inbox unavailable")
        self.delivered.append(msg)

    async def load(self):
        return self.store.get("cursor")

    async def save(self, cursor) -> None:
        if self.fail_saves:
            self.fail_saves -= 1
            raise StoreError("disk full")
        self.store["cursor"] = dict(cursor)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
async def api():
    async with FakeBotAPI(TOKEN) as server:
        yield server


async def test_registered_as_telegram_bot():
    """The module registers its kind with the service."""
    assert CONNECTORS["telegram-bot"] is TelegramBotConnector


async def test_updates_delivered_in_order_and_offset_persisted(api):
    """Updates arrive in order with ids tg:{update_id}; the next offset is saved and confirmed."""
    for text in ("one", "two", "three"):
        api.push_message(text, chat_id=5)
    h = Harness(api)
    await h.conn.start()
    await eventually(lambda: len(h.delivered) == 3)
    assert [m.id for m in h.delivered] == ["tg:1", "tg:2", "tg:3"]
    assert [m.payload["message"]["text"] for m in h.delivered] == ["one", "two", "three"]
    assert h.delivered[0].session == "tg1" and h.delivered[0].meta["chat_id"] == 5
    await eventually(lambda: h.store.get("cursor", {}).get("offset") == 4)
    assert h.store["cursor"]["epoch"] == "bot:123456789"
    await eventually(lambda: api.pending() == [])  # confirmed to Telegram only after it was stored
    api.push_message("four")
    await eventually(lambda: len(h.delivered) == 4 and h.store["cursor"]["offset"] == 5)
    assert h.conn.state is State.CONNECTED
    stats = h.conn.stats()
    assert stats["updates_received"] == 4 and stats["last_poll_at"] is not None and stats["offset"] == 5
    assert h.of(ev.Connecting)[0] == ev.Connecting(1) and h.of(ev.Connected)[0] == ev.Connected(1)
    await h.conn.stop()


async def test_restart_resumes_from_cursor_without_loss_or_duplicate(api):
    """A new connector on the same cursor asks Telegram from the saved offset: nothing lost, nothing twice."""
    store: dict = {}
    first = Harness(api, store=store)
    api.push_message("a")
    api.push_message("b")
    await first.conn.start()
    await eventually(lambda: store.get("cursor", {}).get("offset") == 3)
    await first.conn.stop()
    api.push_message("c")  # arrives while the bot is down
    api.push_message("d")
    second = Harness(api, store=store)
    second.delivered = first.delivered  # one inbox across the restart
    polls_before = api.counts["getUpdates"]
    await second.conn.start()
    await eventually(lambda: store["cursor"]["offset"] == 5)
    assert [m.id for m in first.delivered] == ["tg:1", "tg:2", "tg:3", "tg:4"]
    assert api.calls("getUpdates")[polls_before].params["offset"] == 3  # resumed from the saved cursor
    await second.conn.stop()


async def test_failed_cursor_save_redelivers_instead_of_losing(api):
    """If the cursor cannot be saved, Telegram is not told the new offset and the update comes again."""
    api.push_message("once")
    h = Harness(api)
    h.fail_saves = 1
    await h.conn.start()
    await eventually(lambda: h.store.get("cursor", {}).get("offset") == 2)
    assert [m.id for m in h.delivered] == ["tg:1", "tg:1"]  # same id: the inbox drops the second
    assert "disk full" in h.conn.stats()["last_error"]
    assert all(c.params.get("offset") is None for c in api.calls("getUpdates")[:2])
    await h.conn.stop()


async def test_429_retry_after_is_honoured_exactly():
    """After 429 retry_after=3 no request is made before 3 s, and one is made once 3 s + jitter passed."""
    clock = FakeClock()
    api = await FakeBotAPI(TOKEN, clock=clock).start()  # request timestamps on the test's clock
    api.fail_next(1, status=429, retry_after=3, method="getMe")
    h = Harness(api, clock=clock, retry_after_jitter=0.5)
    await h.conn.start()
    await eventually(lambda: h.of(ev.BackingOff))
    backing = h.of(ev.BackingOff)[0]
    assert 3.0 <= backing.delay <= 3.5
    assert h.conn.state is State.BACKING_OFF and h.conn.stats()["retry_after"] == 3
    await clock.advance(2.999)
    await asyncio.sleep(0.05)
    assert len(api.requests) == 1
    await clock.advance(0.6)
    await eventually(lambda: h.conn.state is State.CONNECTED)
    assert api.times("getMe")[1] >= 3.0
    await h.conn.stop()
    await api.close()


async def test_401_fails_with_exactly_one_request(api):
    """A refused token puts the session in FAILED after one request and never retries."""
    api.revoke(TOKEN)
    h = Harness(api)
    await h.conn.start()
    await eventually(lambda: h.conn.state is State.FAILED)
    await asyncio.sleep(0.1)
    assert len(api.requests) == 1
    gave_up = h.of(ev.GaveUp)
    assert len(gave_up) == 1 and isinstance(gave_up[0].error, AuthError)
    assert h.of(ev.BackingOff) == []
    assert "401" in h.conn.stats()["last_error"] and "@BotFather" in h.conn.stats()["last_error"]
    with pytest.raises(AuthError):
        await h.conn.send({"chat_id": 1, "text": "x"})
    assert len(api.requests) == 1
    await h.conn.stop()
    assert h.conn.state is State.CLOSED


async def test_reconnect_after_a_new_token_leaves_failed(api):
    """reconnect() from FAILED polls again once the token is accepted (the API's restart button)."""
    api.revoke(TOKEN)
    h = Harness(api)
    await h.conn.start()
    await eventually(lambda: h.conn.state is State.FAILED)
    api.add_token(TOKEN)
    api.push_message("back")
    await h.conn.reconnect()
    await eventually(lambda: [m.id for m in h.delivered] == ["tg:1"])
    assert h.conn.state is State.CONNECTED
    await h.conn.stop()


async def test_5xx_retries_with_backoff(api):
    """502s back off 1 s then 2 s (no jitter configured), then connect; a good poll resets attempts."""
    clock = FakeClock()
    api.fail_next(2, status=502, method="getMe")
    h = Harness(api, clock=clock, backoff_base=1.0, backoff_cap=60.0, backoff_jitter="none")
    await h.conn.start()
    await eventually(lambda: len(h.of(ev.BackingOff)) == 1)
    assert h.of(ev.BackingOff)[0] == ev.BackingOff(2, 1.0, h.of(ev.BackingOff)[0].reason)
    assert "502" in h.of(ev.BackingOff)[0].reason
    await clock.advance(0.99)
    await asyncio.sleep(0.05)
    assert api.counts["getMe"] == 1
    await clock.advance(0.01)
    await eventually(lambda: len(h.of(ev.BackingOff)) == 2)
    assert h.of(ev.BackingOff)[1].delay == 2.0 and api.counts["getMe"] == 2
    await clock.advance(2.0)
    await eventually(lambda: h.conn.stats()["polls"] >= 1)
    assert h.of(ev.Connected) == [ev.Connected(3, 3.0)]
    assert h.conn.stats()["attempts"] == 0
    api.fail_next(1, status=500, method="getUpdates")  # a later outage starts from the first step again
    await eventually(lambda: len(h.of(ev.BackingOff)) == 3)
    assert (h.of(ev.BackingOff)[2].attempt, h.of(ev.BackingOff)[2].delay) == (1, 1.0)
    await h.conn.stop()


async def test_dropped_connection_and_html_502_heal(api):
    """A dropped long poll and an nginx HTML 502 are retried; updates still arrive after."""
    h = Harness(api)
    await h.conn.start()
    await eventually(lambda: h.conn.state is State.CONNECTED and api.counts["getUpdates"] >= 1)
    api.fail_next(1, status=502, body="<html>bad gateway</html>", method="getMe")
    api.drop_connections()
    await eventually(lambda: h.conn.stats()["connects"] == 2)
    api.push_message("after")
    await eventually(lambda: [m.id for m in h.delivered] == ["tg:1"])
    disconnects = h.of(ev.Disconnected)
    assert len(disconnects) == 2 and disconnects[1].code == 502
    await h.conn.stop()


async def test_409_conflict_backs_off_with_a_clear_error(api):
    """409 from getUpdates says another consumer or a webhook is the cause, and waits conflict_delay."""
    clock = FakeClock()
    api.fail_next(1, status=409, method="getUpdates")
    h = Harness(api, clock=clock, conflict_delay=5.0)
    await h.conn.start()
    await eventually(lambda: h.of(ev.BackingOff))
    assert h.of(ev.BackingOff)[0].delay >= 5.0
    assert "another process polls this bot" in h.conn.stats()["last_error"]
    assert api.counts["deleteWebhook"] == 1  # before the first poll; pending updates kept
    await clock.advance(5.1)
    await eventually(lambda: h.conn.stats()["polls"] >= 1)
    await h.conn.stop()


async def test_stop_cancels_and_awaits_everything(api):
    """stop() ends the pending long poll, leaves no task, emits Closed and never reconnects."""
    h = Harness(api, poll_timeout=30)
    await h.conn.start()
    await api.wait_for_requests("getUpdates")
    await h.conn.stop()
    assert h.conn.state is State.CLOSED and h.of(ev.Closed) == [ev.Closed()]
    assert [t for t in asyncio.all_tasks() if "tether-telegram" in t.get_name()] == []
    before = len(api.requests)
    await asyncio.sleep(0.1)
    assert len(api.requests) == before
    with pytest.raises(LinkClosedError):
        await h.conn.send({"chat_id": 1, "text": "x"})
    await h.conn.stop()  # idempotent


async def test_send_payloads_and_errors(api):
    """send() takes a dict or JSON text; a bad payload fails before any request; 429 carries retry_after."""
    h = Harness(api)
    await h.conn.start()
    await h.conn.send({"chat_id": 7, "text": "hi", "parse_mode": "HTML"})
    await h.conn.send(json.dumps({"chat_id": "@news", "text": "json"}))
    assert [(m["chat"]["id"], m["text"]) for m in api.sent] == [(7, "hi"), ("@news", "json")]
    before = api.counts["sendMessage"]
    for bad in ("not json", {"text": "no chat"}, {"chat_id": 1, "text": " "}, [1, 2]):
        with pytest.raises(InvalidBotPayload) as info:
            await h.conn.send(bad)
        assert classify_exception(info.value, now=0).error_class is ErrorClass.PERMANENT
    assert api.counts["sendMessage"] == before
    api.fail_next(1, status=429, retry_after=7, method="sendMessage")
    with pytest.raises(BotAPIRateLimited) as info:
        await h.conn.send({"chat_id": 7, "text": "later"})
    assert info.value.retry_after == 7
    assert h.conn.stats()["sent"] == 2 and h.conn.stats()["send_errors"] == 1
    await h.conn.stop()


async def test_send_429_holds_that_chat_until_retry_after_passed(api):
    """After a 429 on sendMessage, sends to that chat fail without a request until retry_after passed."""
    clock = FakeClock()
    h = Harness(api, clock=clock)
    await h.conn.start()
    api.fail_next(1, status=429, retry_after=7, method="sendMessage")
    with pytest.raises(BotAPIRateLimited):
        await h.conn.send({"chat_id": 7, "text": "first"})
    await clock.advance(6.5)
    with pytest.raises(BotAPIRateLimited) as held:
        await h.conn.send({"chat_id": 7, "text": "early"})
    assert held.value.retry_after == pytest.approx(0.5)
    assert api.counts["sendMessage"] == 1
    await h.conn.send({"chat_id": 8, "text": "other chat"})  # the hold is per chat
    await clock.advance(0.5)
    await h.conn.send({"chat_id": 7, "text": "on time"})
    assert [m["text"] for m in api.sent] == ["other chat", "on time"]
    await h.conn.stop()


async def test_send_401_fails_the_session(api):
    """A send refused with 401 stops the poller and puts the session in FAILED."""
    h = Harness(api)
    await h.conn.start()
    await eventually(lambda: h.conn.state is State.CONNECTED)
    api.revoke(TOKEN)
    with pytest.raises(BotAPIUnauthorized):
        await h.conn.send({"chat_id": 1, "text": "x"})
    assert h.conn.state is State.FAILED and len(h.of(ev.GaveUp)) == 1
    await h.conn.stop()


async def test_client_errors_classify_like_http_failures(api):
    """BotAPIClient errors carry status_code/retry_after so tether's classifier reads them right."""
    async with BotAPIClient(api.url, TOKEN) as client:
        api.fail_next(1, status=429, retry_after=3)
        with pytest.raises(BotAPIRateLimited) as rate:
            await client.get_me()
        c = classify_exception(rate.value, now=0)
        assert (c.error_class, c.retry_after, rate.value.status_code) == (ErrorClass.RATE_LIMIT, 3.0, 429)
        api.fail_next(1, status=503)
        with pytest.raises(BotAPIServerError) as server:
            await client.get_me()
        assert classify_exception(server.value, now=0).error_class is ErrorClass.TEMPORARY
        api.revoke(TOKEN)
        with pytest.raises(BotAPIUnauthorized) as auth:
            await client.get_me()
        assert isinstance(auth.value, AuthError) and classify_exception(auth.value, now=0).error_class is ErrorClass.AUTH
    closed = await FakeBotAPI().start()
    url = closed.url
    await closed.close()
    async with BotAPIClient(url, TOKEN) as client:
        with pytest.raises(BotAPIConnectionError) as net:
            await client.get_me()
    assert classify_exception(net.value, now=0).error_class is ErrorClass.CONNECTION


async def test_options_errors_name_the_field_and_hide_the_token():
    """Bad options raise ConfigError naming the field, never echoing the token."""
    ctx = dict(session="s", clock=SystemClock(), deliver=None, emit=print, load_cursor=None, save_cursor=None)
    for options, field in (({}, "token"), ({"token": TOKEN, "api_base": "ftp://x"}, "api_base"),
                           ({"token": TOKEN, "poll_timout": 3}, "poll_timout"), ({"token": "a/b"}, "token")):
        with pytest.raises(ConfigError) as info:
            TelegramBotConnector(ConnectorContext(options=options, **ctx))
        assert field in str(info.value) and "secret" not in str(info.value)


async def test_token_never_in_logs_errors_reprs_stats_or_events(api, caplog):
    """The token (it is in every URL) never shows in logs, errors, reprs, stats or events: bot*** instead."""
    caplog.set_level(logging.DEBUG)
    api.fail_next(1, status=502, method="getMe")
    h = Harness(api)
    await h.conn.start()
    await eventually(lambda: h.conn.state is State.CONNECTED and api.counts["getUpdates"] >= 1)
    api.drop_connections()
    await eventually(lambda: h.conn.stats()["connects"] == 2)
    errors: list[BaseException] = []
    try:
        await h.conn.send({"chat_id": 1, "text": ""})
    except InvalidBotPayload as exc:
        errors.append(exc)
    api.revoke(TOKEN)
    try:
        await h.conn.send({"chat_id": 1, "text": "x"})
    except BotAPIUnauthorized as exc:
        errors.append(exc)
    await eventually(lambda: h.conn.state is State.FAILED)
    await h.conn.stop()
    secret = TOKEN.split(":", 1)[1]
    texts = [caplog.text, repr(h.conn), repr(h.conn._client), repr(h.conn.stats()), repr(h.events)]
    texts += [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [repr(e.cause) + str(e.cause) for e in h.of(ev.Disconnected)]
    for text in texts:
        assert secret not in text and TOKEN not in text
    assert "bot***" in caplog.text  # httpx's request log line is there, masked
    assert "bot***" in repr(h.conn)


async def test_chaos_loses_nothing_and_keeps_order(api):
    """Under random 502s, 429s, drops, delays and failed cursor saves every update arrives, in order."""
    import random

    rng = random.Random(20261123)
    h = Harness(api, retry_after_jitter=0.0)
    await h.conn.start()
    total = 40
    for i in range(total):
        api.push_message(f"m{i}", chat_id=1 + i % 3)
        roll = rng.random()
        if roll < 0.15:
            api.fail_next(1, status=rng.choice([500, 502, 503]), method=rng.choice(["getMe", "getUpdates"]))
        elif roll < 0.25:
            api.fail_next(1, status=429, retry_after=0.02, method="getUpdates")
        elif roll < 0.35:
            api.drop_connections()
        elif roll < 0.42:
            api.delay_next(0.02)
        elif roll < 0.5:
            h.fail_saves += 1
        elif roll < 0.58:
            h.fail_delivers += 1
        await asyncio.sleep(rng.uniform(0, 0.02))
    await eventually(lambda: h.store.get("cursor", {}).get("offset") == total + 1, timeout=20)
    first_seen: list[str] = []
    for m in h.delivered:  # what the inbox keeps: the first copy of each id
        if m.id not in first_seen:
            first_seen.append(m.id)
    assert first_seen == [f"tg:{i}" for i in range(1, total + 1)]
    assert h.conn.state is State.CONNECTED
    await h.conn.stop()

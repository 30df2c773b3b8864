"""Alert actions against real local servers: webhook (retry, HMAC), SMTP (aiosmtpd), Telegram, restart."""

from __future__ import annotations

import email
import hashlib
import hmac
import json

import pytest

from tether import Backoff, DeliveryError
from tether.observe import (
    AlertManager, EmailAction, Notification, RestartAction, TelegramAction, WebhookAction,
)
from tether.testing import FakeClock

from .conftest import Receiver, Recorder, Source, down_rule

FAST = Backoff(base=0.01, cap=0.02, jitter="none")
TOKEN = "555666777:AAxxTcvCH1vGWJxfSeofSAs0K5PALDsQQQ"


def note(status: str = "firing", session: str = "s1") -> Notification:
    alert = {"rule": "SessionDown", "labels": {"alertname": "SessionDown", "session": session}, "state": status,
             "value": 0.0, "summary": f"session {session} down", "active_since": 1.0, "fired_at": 2.0,
             "resolved_at": None, "silenced": False}
    return Notification("SessionDown", status, "critical", (alert,), at=3.0)


async def test_webhook_retries_500_then_succeeds_with_hmac() -> None:
    """A 500 is retried with backoff until the receiver accepts; the body carries a valid HMAC."""
    with Receiver(statuses=[500, 503]) as rx:
        action = WebhookAction(rx.url + "/hook", secret="hmac-key-1", backoff=FAST, attempts=5)
        await action.send(note())
        assert [r["status"] for r in rx.requests] == [500, 503, 200]
        req = rx.requests[-1]
        body = json.loads(req["body"])
        assert body["rule"] == "SessionDown" and body["status"] == "firing" and body["alerts"][0]["labels"]["session"] == "s1"
        want = "sha256=" + hmac.new(b"hmac-key-1", req["body"], hashlib.sha256).hexdigest()
        assert req["headers"]["x-tether-signature"] == want


async def test_webhook_gives_up_with_delivery_error() -> None:
    """A 4xx fails at once; persistent 5xx fail after `attempts` tries; both raise DeliveryError."""
    with Receiver(statuses=[404]) as rx:
        with pytest.raises(DeliveryError, match="HTTP 404"):
            await WebhookAction(rx.url, backoff=FAST).send(note())
        assert len(rx.requests) == 1
    with Receiver(statuses=[500] * 10) as rx:
        with pytest.raises(DeliveryError, match="after 3 attempts"):
            await WebhookAction(rx.url, backoff=FAST, attempts=3).send(note())
        assert len(rx.requests) == 3


async def test_email_reaches_a_real_smtp_server(smtp) -> None:
    """EmailAction delivers to an aiosmtpd server on 127.0.0.1 with the alert in subject and body."""
    action = EmailAction("127.0.0.1", smtp.port, sender="tether@localhost", to=["ops@localhost"])
    await action.send(note())
    await smtp.wait(1)
    env = smtp.messages[0]
    assert env.rcpt_tos == ["ops@localhost"]
    msg = email.message_from_bytes(env.content)
    assert msg["Subject"] == "[tether] [FIRING:1] SessionDown (critical)"
    assert "session s1 down" in msg.get_payload()


async def test_email_failure_is_a_delivery_error() -> None:
    """A closed SMTP port raises DeliveryError, not OSError."""
    from .conftest import free_port

    with pytest.raises(DeliveryError, match="email"):
        await EmailAction("127.0.0.1", free_port(), sender="a@b", to=["c@d"], timeout=2).send(note())


async def test_telegram_posts_send_message_and_never_shows_the_token() -> None:
    """TelegramAction POSTs to {api_base}/bot{token}/sendMessage; failures name no token."""
    with Receiver() as rx:
        action = TelegramAction(TOKEN, 4242, api_base=rx.url, backoff=FAST)
        await action.send(note())
        req = rx.requests[0]
        assert req["path"] == f"/bot{TOKEN}/sendMessage"
        body = json.loads(req["body"])
        assert body["chat_id"] == 4242 and "SessionDown" in body["text"]
        assert TOKEN not in repr(action)
    with Receiver(statuses=[500] * 5) as rx:
        with pytest.raises(DeliveryError) as err:
            await TelegramAction(TOKEN, 1, api_base=rx.url, backoff=FAST, attempts=2).send(note())
        assert TOKEN.split(":")[1] not in str(err.value)
    with pytest.raises(DeliveryError) as err:  # connection refused: httpx's message holds the URL
        from .conftest import free_port

        await TelegramAction(TOKEN, 1, api_base=f"http://127.0.0.1:{free_port()}", backoff=FAST, attempts=1).send(note())
    assert TOKEN.split(":")[1] not in str(err.value)


async def test_restart_only_when_named_and_only_on_firing(clock: FakeClock, source: Source, recorder: Recorder) -> None:
    """The restart action runs for rules that name it, once per firing notification, never on resolution."""
    restarted: list[str] = []

    async def restart(session: str) -> None:
        restarted.append(session)

    m = AlertManager(source, rules=[down_rule(for_=0, group_interval=10),
                                    down_rule(name="DownRestart", for_=30, actions=("restart", "rec"), group_interval=10)],
                     actions=[recorder, RestartAction(restart)], clock=clock, interval=1)
    m.start()
    try:
        source.set("tether_session_up", 0, session="s7")
        await clock.advance(5)
        assert restarted == [] and [n.rule for n in recorder.got] == ["SessionDown"]
        await clock.advance(30)
        assert restarted == ["s7"]
        source.set("tether_session_up", 1, session="s7")
        await clock.advance(60)
        await m.drain()
        assert restarted == ["s7"]
        assert sorted((n.rule, n.status) for n in recorder.got) == [
            ("DownRestart", "firing"), ("DownRestart", "resolved"), ("SessionDown", "firing"), ("SessionDown", "resolved")]
    finally:
        await m.close()


async def test_failed_delivery_is_recorded_not_raised(tmp_path, clock: FakeClock, source: Source) -> None:
    """A failing action is logged, kept in deliveries and recorded in the tracker; evaluation goes on."""
    from tether.observe import ErrorTracker

    class Broken:
        name = "broken"

        async def send(self, n: Notification) -> None:
            raise DeliveryError("receiver down", action="broken")

    tracker = ErrorTracker(tmp_path / "e.db", clock=clock, log=False)
    m = AlertManager(source, rules=[down_rule(for_=0)], actions=[Broken()], clock=clock, interval=1, tracker=tracker)
    source.set("tether_session_up", 0, session="s1")
    await m.tick()
    await m.drain()
    assert [(d["action"], d["ok"]) for d in m.deliveries] == [("broken", False)]
    assert tracker.query(component="alerts")[0].error_class == "DeliveryError"
    tracker.close()


async def test_telegram_against_fake_bot_api_honours_flood_wait_and_revocation() -> None:
    """Through tether.testing.FakeBotAPI: a 429 is retried after its retry_after; a revoked token fails cleanly."""
    from tether.testing import FakeBotAPI

    async with FakeBotAPI() as api:
        action = TelegramAction(api.token, 42, api_base=api.url, backoff=FAST, attempts=3)
        api.fail_next(1, status=429, retry_after=0.05)
        await action.send(note())
        await api.wait_for_sent(1)
        assert api.sent[0]["chat"]["id"] == 42 and "SessionDown" in api.sent[0]["text"]
        api.revoke(api.token)
        with pytest.raises(DeliveryError, match="401") as err:
            await action.send(note())
        assert api.token not in str(err.value) and api.token.split(":")[1] not in str(err.value)

"""SessionManager's delivery loop with a scripted connector: failures are retried, never lost, never fatal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar, Mapping

import httpx

from tether import State, TetherError
from tether.service._connector import ConnectorContext, register_connector
from tether.service._manager import send_retry_delay
from tether.service._service import Service
from tests.service.conftest import eventually, fast_settings


class ScriptedConnector:
    """Connected at once; ``fail`` holds exceptions raised by the next sends, in order."""

    kind: ClassVar[str] = "scripted"
    fail: ClassVar[list[BaseException]] = []
    sent: ClassVar[list[Any]] = []

    def __init__(self, ctx: ConnectorContext) -> None:
        self._state = State.IDLE

    @property
    def state(self) -> State:
        return self._state

    def stats(self) -> Mapping[str, Any]:
        return {}

    async def start(self) -> None:
        self._state = State.CONNECTED

    async def send(self, payload: Any) -> None:
        if ScriptedConnector.fail:
            raise ScriptedConnector.fail.pop(0)
        ScriptedConnector.sent.append(payload)

    async def stop(self) -> None:
        self._state = State.CLOSED


register_connector("scripted", ScriptedConnector)


async def test_failed_sends_are_retried_in_order_and_a_bug_does_not_kill_the_loop(tmp_path: Path) -> None:
    """A TetherError and a connector bug (RuntimeError) each cost a retry; all messages arrive once, in order."""
    ScriptedConnector.fail[:] = [TetherError("upstream hiccup"), RuntimeError("connector bug")]
    ScriptedConnector.sent[:] = []
    service = Service(fast_settings(tmp_path))
    await service.start()
    try:
        mgr = service.manager
        await mgr.create(session_id="x", kind="scripted", options={})
        ids = [await mgr.send("x", f"m{i}") for i in range(3)]
        await eventually(lambda: ScriptedConnector.sent == ["m0", "m1", "m2"], timeout=20, what="all delivered")
        msgs = {m.id: m for m in await mgr.messages("x")}
        assert all(msgs[i].status == "delivered" for i in ids)
        assert msgs[ids[0]].attempts == 2  # two failed attempts on the head of the line
        assert mgr.get("x").stats()["send_failures"] == 2
        types = [r.type for r in service.events.since(0, session="x")]
        assert types.count("message.send_failed") == 2 and types.count("message.sent") == 3
    finally:
        await service.close()
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("tether-delivery") and not t.done()]


def test_retry_delay_honours_the_server_wait() -> None:
    """A 429 with Retry-After is never retried sooner than asked; plain failures back off and grow."""
    req = httpx.Request("POST", "http://127.0.0.1/")
    flood = httpx.HTTPStatusError("429", request=req, response=httpx.Response(429, headers={"Retry-After": "9"}, request=req))
    assert send_retry_delay(flood, 1, 0.0) >= 9.0
    assert send_retry_delay(TimeoutError("t"), 4, 0.0) > send_retry_delay(TimeoutError("t"), 1, 0.0)
    assert send_retry_delay(RuntimeError("bug"), 50, 0.0) <= 60.0


class _Waits(TetherError):
    """A connector error that names a wait only through its own ``retry_after`` attribute."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"upstream says wait {retry_after}s")
        self.retry_after = retry_after


def test_a_named_wait_is_a_hold_of_at_least_that_long() -> None:
    """An error's own ``retry_after`` (and a Telegram 429's) is waited in full and marked a hold, not a failure."""
    from tether.service._manager import send_verdict
    from tether.service.connectors.telegram import BotAPIRateLimited

    v = send_verdict(_Waits(9.0), 1, 0.0)
    assert v.action == "hold" and v.delay >= 9.0
    tg = BotAPIRateLimited("429", method="sendMessage", status_code=429, error_code=429, retry_after=7.5)
    v = send_verdict(tg, 3, 0.0)
    assert v.action == "hold" and v.delay >= 7.5
    assert send_verdict(RuntimeError("bug"), 1, 0.0).action == "retry"


def test_send_verdict_follows_the_recovery_settings() -> None:
    """[recovery] reaches delivery: class overrides set the step, cap bounds it, a wait over max_wait dead-letters."""
    from tether.service._config_model import RecoverySettings
    from tether.service._manager import send_verdict

    base = send_verdict(ConnectionResetError("reset"), 1, 0.0)
    tuned = RecoverySettings(classes={"connection": {"action": "reconnect", "max_retries": 3, "delay": 7.0}})
    assert send_verdict(ConnectionResetError("reset"), 1, 0.0, tuned).delay >= 7.0 > base.delay
    capped = RecoverySettings(cap=2.0)
    assert send_verdict(ConnectionResetError("reset"), 12, 0.0, capped).delay <= 2.0 + 1e-9
    strict = RecoverySettings(max_wait=5.0)
    v = send_verdict(_Waits(9.0), 1, 0.0, strict)
    assert v.action == "dead" and "9 s" in v.reason and "recovery.max_wait" in v.reason
    assert send_verdict(_Waits(4.0), 1, 0.0, strict).action == "hold"


async def test_rate_limit_holds_do_not_count_toward_dead_letters(tmp_path: Path) -> None:
    """Three 429 holds on a message with outbox_max_attempts=2: it is still delivered, with no attempt counted."""
    from tether.service.connectors.telegram import BotAPIRateLimited

    ScriptedConnector.fail[:] = [BotAPIRateLimited("429", method="sendMessage", status_code=429, error_code=429,
                                                   retry_after=0.05) for _ in range(3)]
    ScriptedConnector.sent[:] = []
    settings = fast_settings(tmp_path, sessions=dict(backoff_base=0.05, backoff_cap=0.2, max_attempts=None,
                                                     outbox_max_attempts=2))
    service = Service(settings)
    await service.start()
    try:
        mgr = service.manager
        await mgr.create(session_id="x", kind="scripted", options={})
        mid = await mgr.send("x", "m0")
        await eventually(lambda: ScriptedConnector.sent == ["m0"], timeout=10, what="delivered after the holds")
        msg = {m.id: m for m in await mgr.messages("x")}[mid]
        assert msg.status == "delivered" and msg.attempts == 0
        assert await service.stores.outbox.dead_letters("x") == []
    finally:
        await service.close()


async def test_a_payload_that_can_never_be_sent_is_dead_lettered_at_once(tmp_path: Path) -> None:
    """InvalidBotPayload (PERMANENT) goes to the dead letters with its reason at once; the next message still goes out."""
    from tether.service.connectors.telegram import InvalidBotPayload

    ScriptedConnector.fail[:] = [InvalidBotPayload("telegram-bot payload needs a non-empty 'text'")]
    ScriptedConnector.sent[:] = []
    service = Service(fast_settings(tmp_path))
    await service.start()
    try:
        mgr = service.manager
        await mgr.create(session_id="x", kind="scripted", options={})
        bad = await mgr.send("x", '{"chat_id": 1}')
        await mgr.send("x", "m1")
        await eventually(lambda: ScriptedConnector.sent == ["m1"], timeout=10, what="the next message delivered")
        dead = await service.stores.outbox.dead_letters("x")
        assert [d.id for d in dead] == [bad]
        assert "non-empty 'text'" in dead[0].reason and dead[0].attempts == 0
        types = [r.type for r in service.events.since(0, session="x")]
        assert types.count("message.dead_lettered") == 1 and "message.send_failed" not in types
    finally:
        await service.close()


async def test_deleting_a_session_dead_letters_its_undelivered_messages(tmp_path: Path) -> None:
    """DELETE moves undelivered messages to the dead letters ("session deleted"); a new session with the id never sends them."""
    ScriptedConnector.fail[:] = [_Waits(30.0)]  # the first message is held, so it is still undelivered
    ScriptedConnector.sent[:] = []
    service = Service(fast_settings(tmp_path))
    await service.start()
    try:
        mgr = service.manager
        await mgr.create(session_id="x", kind="scripted", options={})
        old = [await mgr.send("x", "old-1"), await mgr.send("x", "old-2")]
        await eventually(lambda: service.events.since(0, session="x") and any(
            r.type == "message.send_failed" for r in service.events.since(0, session="x")), what="the hold")
        await mgr.delete("x")
        dead = await service.stores.outbox.dead_letters("x")
        assert sorted(d.id for d in dead) == sorted(old) and {d.reason for d in dead} == {"session deleted"}
        assert await mgr.depth("x") == 0

        await mgr.create(session_id="x", kind="scripted", options={})
        await mgr.send("x", "new")
        await eventually(lambda: ScriptedConnector.sent == ["new"], timeout=10, what="only the new message")
    finally:
        await service.close()

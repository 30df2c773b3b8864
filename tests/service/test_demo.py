"""tether demo: every telegram-bot session polls its own FakeBotAPI bot, so no two pollers fight with 409."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.service import _demo
from tether.service._service import Service
from tether.testing import FakeBotAPI
from tests.service.conftest import eventually, fast_settings


def test_each_telegram_session_gets_its_own_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two demo telegram-bot sessions never share a token."""
    monkeypatch.setattr(_demo, "TG_SESSIONS", ("tg-1", "tg-2"))
    tg = [o for _sid, kind, o in _demo.demo_sessions("ws://127.0.0.1:1/", "http://127.0.0.1:2") if kind == "telegram-bot"]
    assert len(tg) == 2 and tg[0]["token"] != tg[1]["token"]


async def test_two_demo_bots_poll_side_by_side_without_conflict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the demo's tokens, two telegram-bot sessions both receive their updates and never see a 409."""
    monkeypatch.setattr(_demo, "TG_SESSIONS", ("tg-1", "tg-2"))
    tokens = [_demo.demo_token(sid) for sid in _demo.TG_SESSIONS]
    async with FakeBotAPI(*tokens) as api:
        service = Service(fast_settings(tmp_path))
        await service.start()
        try:
            mgr = service.manager
            for sid, kind, options in _demo.demo_sessions("ws://127.0.0.1:1/", api.url):
                if kind == "telegram-bot":
                    await mgr.create(session_id=sid, kind=kind, options=options)
            for sid in _demo.TG_SESSIONS:
                api.push_message(f"to {sid}", chat_id=42, token=_demo.demo_token(sid))
            await eventually(lambda: all(mgr.get(sid).received == 1 for sid in _demo.TG_SESSIONS),
                             what="each bot's update")
            assert all(mgr.get(sid).stats()["disconnects"] == 0 for sid in _demo.TG_SESSIONS)
        finally:
            await service.close()

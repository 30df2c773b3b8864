"""Live apply of /api/config patches: a real Link on a real websockets server, and the alert engine."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tether import events as ev
from tests.service.conftest import Running, Upstream, eventually, fast_settings, stop_service
from tests.service.test_config import start_observed


async def test_heartbeat_and_backoff_reach_a_running_link_without_reconnecting(tmp_path: Path, upstream: Upstream) -> None:
    """heartbeat_interval applies to the connected link at its next cycle (no new handshake); backoff at its next drop."""
    settings = fast_settings(tmp_path, sessions=dict(heartbeat_interval=3600.0, heartbeat_timeout=5.0, backoff_base=0.05,
                                                     backoff_cap=0.2, connect_timeout=2.0, max_attempts=None))
    r = await start_observed(settings)
    try:
        created = await r.client.post("/api/sessions", json={"id": "ws-1", "kind": "websocket", "options": {"url": upstream.url}})
        assert created.status_code == 201, created.text
        await r.wait_state("ws-1", "connected")
        link = r.service.manager.get("ws-1").connector._link
        acks: list[ev.HeartbeatAck] = []
        backoffs: list[ev.BackingOff] = []
        link.subscribe(lambda e: acks.append(e) if isinstance(e, ev.HeartbeatAck)
                       else backoffs.append(e) if isinstance(e, ev.BackingOff) else None)
        await asyncio.sleep(0.3)
        assert acks == []  # one heartbeat an hour: none yet
        p = await r.client.patch("/api/config?user=ann&reason=tune", json={"sessions": {"heartbeat_interval": 0.05}})
        assert p.status_code == 200, p.text
        # The link was sleeping toward a heartbeat an hour away; it wakes and pings at the new pace.
        await eventually(lambda: len(acks) >= 3, what="heartbeats at the new 50 ms interval")
        assert upstream.connections == 1 and link.stats.connects == 1 and backoffs == []

        # Backoff: base and cap 1 s (equal jitter: 0.5-1 s) where the start-up cap was 0.2 s.
        p = await r.client.patch("/api/config?user=ann&reason=slower", json={"sessions": {"backoff_base": 1.0, "backoff_cap": 1.0}})
        assert p.status_code == 200 and upstream.connections == 1 and link.stats.connects == 1
        await upstream.drop_all()
        await eventually(lambda: backoffs, what="a backoff after the drop")
        assert 0.5 <= backoffs[0].delay <= 1.0, backoffs[0]
        await eventually(lambda: link.stats.connects == 2, what="the reconnect")
        assert upstream.connections == 2
    finally:
        await stop_service(r)


def _memory_high(r: Running) -> Any:
    observer = r.service.observability.extra["observer"]
    return [a for a in observer.alerts.alerts() if a.rule == "MemoryHigh"]


async def test_alert_threshold_change_changes_the_firing_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rules are re-evaluated at once after a patch: MemoryHigh fires at threshold 1 byte and resolves at 1 PB."""
    # TETHER_* names arrive lower-cased; the rule is still found (MemoryHigh).
    monkeypatch.setenv("TETHER_ALERTS__RULES__MEMORYHIGH__SEVERITY", "critical")
    r = await start_observed(fast_settings(tmp_path))
    try:
        observer = r.service.observability.extra["observer"]
        assert observer.alerts.engine.rule("MemoryHigh").severity == "critical"
        assert not any(a.state == "firing" for a in _memory_high(r))
        p = await r.client.patch("/api/config?user=ann&reason=test",
                                 json={"alerts": {"rules": {"MemoryHigh": {"threshold": 1, "for": 0}}}})
        assert p.status_code == 200, p.text
        assert [a.state for a in _memory_high(r)] == ["firing"]  # no wait for the 15 s evaluation interval
        shown = (await r.client.get("/api/alerts")).json()["alerts"]
        assert any(a["rule"] == "MemoryHigh" and a["state"] == "firing" for a in shown)
        p = await r.client.patch("/api/config?user=ann&reason=test", json={"alerts": {"rules": {"MemoryHigh": {"threshold": 1e15}}}})
        assert p.status_code == 200
        assert [a.state for a in _memory_high(r)] != ["firing"]
        # Removing the tuning (null) restores the rule's own threshold.
        p = await r.client.patch("/api/config?user=ann", json={"alerts": {"rules": {"MemoryHigh": None}}})
        assert p.status_code == 200 and observer.alerts.engine.rule("MemoryHigh").threshold == 1024**3
    finally:
        await stop_service(r)

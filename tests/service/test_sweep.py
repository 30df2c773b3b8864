"""Health sweep: pure rules per session, and the loop on a FakeClock (no real sleeps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tether import State
from tether.service._db import SessionRow
from tether.service._settings import SessionDefaults, load_settings
from tether.service._sweep import HealthSweep, SessionHealth, assess
from tether.testing import FakeClock

P = SessionDefaults()


def h(state: State, *, desired: str = "running", age: float = 0.0, hb: float | None = None, depth: int = 0,
      error: str | None = None) -> SessionHealth:
    return SessionHealth("s", desired, state, age, hb, depth, error)


def test_healthy_connected_session_is_left_alone() -> None:
    """Connected with a fresh heartbeat and a small queue: no finding."""
    assert assess(h(State.CONNECTED, hb=5.0, depth=3), P) is None


def test_stuck_reconnecting_is_restarted_only_after_stuck_after() -> None:
    """Backing off briefly is normal; longer than stuck_after gets a restart."""
    assert assess(h(State.BACKING_OFF, age=P.stuck_after - 1), P) is None
    f = assess(h(State.BACKING_OFF, age=P.stuck_after + 1), P)
    assert f is not None and f.action == "restart" and "backing_off" in f.problem


def test_gave_up_is_restarted_but_auth_failure_only_reported() -> None:
    """FAILED after giving up gets a fresh try; refused credentials are never retried by the sweep."""
    assert assess(h(State.FAILED, error="gave up after 10 attempts"), P).action == "restart"
    assert assess(h(State.FAILED, error="AuthError: upstream refused credentials (HTTP 401)"), P).action == "report"


def test_stale_heartbeat_is_restarted() -> None:
    """A connected session whose heartbeat is older than heartbeat_stale_after is restarted."""
    assert assess(h(State.CONNECTED, hb=P.heartbeat_stale_after + 1), P).action == "restart"


def test_stopped_and_logged_out_are_never_touched() -> None:
    """Sessions that are down on purpose stay down."""
    for desired in ("stopped", "logged_out"):
        assert assess(h(State.CLOSED, desired=desired), P) is None
        assert assess(h(State.FAILED, desired=desired, error="gave up"), P) is None


def test_backlog_is_reported() -> None:
    """A queue at max_queue_depth is reported (a restart would not drain it faster)."""
    f = assess(h(State.CONNECTED, depth=P.max_queue_depth), P)
    assert f is not None and f.action == "report"


@dataclass
class FakeSession:
    id: str
    state: State
    state_since: float = 0.0
    row: Any = None
    error: str | None = None

    def stats(self) -> dict[str, Any]:
        return {"last_error": self.error, "last_heartbeat_at": None}


@dataclass
class FakeManager:
    sessions: list[FakeSession]
    settings: Any = field(default_factory=lambda: load_settings(None))
    restarted: list[tuple[str, str]] = field(default_factory=list)
    emitted: list[Any] = field(default_factory=list)

    def list(self) -> list[FakeSession]:
        return self.sessions

    async def depth(self, sid: str | None = None) -> int:
        return 0

    async def restart(self, sid: str, *, reason: str) -> None:
        self.restarted.append((sid, reason))
        for s in self.sessions:
            if s.id == sid:
                s.state = State.CONNECTED

    def emit(self, event: Any) -> None:
        self.emitted.append(event)


def fake(sid: str, state: State, **kw: Any) -> FakeSession:
    return FakeSession(sid, state, row=SessionRow(sid, "websocket", {}, [], "running", 0.0, 0.0), **kw)


@pytest.mark.parametrize("interval", [300.0, 30.0])
async def test_sweep_runs_every_interval_and_records(clock: FakeClock, interval: float) -> None:
    """The sweep fires once per interval on the injected clock, restarts the stuck session, records a report."""
    mgr = FakeManager([fake("ok", State.CONNECTED), fake("stuck", State.CONNECTING),
                       fake("dead", State.FAILED, error="gave up after 10 attempts")])
    sweep = HealthSweep(mgr, interval=interval, clock=clock)
    sweep.start()
    try:
        await clock.advance(interval - 1)
        assert mgr.emitted == []
        await clock.advance(1)
        assert len(mgr.emitted) == 1
        # "stuck" has been connecting for `interval` s: restarted only once that exceeds stuck_after
        expect = {"dead"} | ({"stuck"} if interval >= mgr.settings.sessions.stuck_after else set())
        assert {sid for sid, _ in mgr.restarted} == expect
        report = mgr.emitted[0]
        assert report.checked == 3 and {f.session for f in report.findings} == expect
        assert all(reason.startswith("sweep: ") for _, reason in mgr.restarted)
        await clock.advance(interval)
        assert len(mgr.emitted) == 2 and len(sweep.reports) == 2
    finally:
        await sweep.close()


async def test_sweep_heals_a_session_that_gave_up(tmp_path) -> None:
    """Through the real service: a session that gave up is restarted by the sweep and the report says so."""
    from tests.service.conftest import Upstream, eventually, free_port, fast_settings, start_service, stop_service

    port = free_port()
    r = await start_service(fast_settings(tmp_path))
    up = Upstream(port=port)
    try:
        await r.client.post("/api/sessions", json={"id": "g", "kind": "websocket",
                                                   "options": {"url": f"ws://127.0.0.1:{port}/", "max_attempts": 1}})
        await r.wait_state("g", "failed")
        await up.start()
        report = (await r.client.post("/health/sweep")).json()
        assert report["checked"] == 1
        assert report["findings"][0]["session"] == "g" and report["findings"][0]["action"] == "restart"
        await r.wait_state("g", "connected")
        sweeps = (await r.client.get("/health/sweeps")).json()["reports"]
        assert sweeps[0]["findings"] == report["findings"]
        events = (await r.client.get("/api/events/history", params={"session": "g"})).json()["events"]
        assert any(e["type"] == "session.restarted" and e["data"]["reason"].startswith("sweep:") for e in events)
        assert any(e["type"] == "link.gave_up" for e in events)
        clean = (await r.client.post("/health/sweep")).json()
        assert clean["findings"] == []
    finally:
        await stop_service(r)
        await up.stop()

"""PerformanceMonitor: recovery percentiles, uptime per session, error rates, clock-driven sampling."""

from __future__ import annotations

import pytest

from tether import ConfigError, State
from tether import events as ev
from tether.observe import ErrorTracker, PerformanceMonitor, percentile
from tether.testing import FakeClock


def test_percentile_interpolates() -> None:
    """percentile() interpolates linearly and returns None for no data."""
    assert percentile([], 50) is None
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 99) == 99


async def test_report_recovery_uptime_and_errors(tmp_path, clock: FakeClock) -> None:
    """The report holds recovery p50/p90/p99, exact uptime % per session and the error rate."""
    tracker = ErrorTracker(tmp_path / "e.db", clock=clock, log=False)
    perf = PerformanceMonitor(clock=clock, tracker=tracker, process=False)
    perf.observe_link_event("a", ev.Connected(1))
    perf.observe_link_event("b", ev.Connected(1))
    for downtime in (1, 2, 3, 4, 10):
        await clock.advance(100)
        perf.observe_link_event("a", ev.Disconnected(1006, "drop"))
        await clock.advance(downtime)
        perf.observe_link_event("a", ev.Connected(1, downtime=downtime))
        tracker.record(ConnectionError("drop"), "medium", "link", "a")
    r = perf.report(3600)
    assert r["recovery"]["count"] == 5 and r["recovery"]["p50"] == 3 and r["recovery"]["max"] == 10
    assert r["recovery"]["p90"] == pytest.approx(7.6)
    a, b = r["sessions"]["a"], r["sessions"]["b"]
    assert a["observed_s"] == pytest.approx(clock.monotonic())
    assert a["uptime_pct"] == pytest.approx(100 * (520 - 20) / 520, abs=0.01)  # down 1+2+3+4+10 s of 520
    assert a["disconnects"] == 5 and a["recoveries"] == 5
    assert b["uptime_pct"] == 100.0
    assert r["errors"]["total"] == 5 and r["errors"]["per_minute"] == pytest.approx(5 / 60, abs=1e-3)
    assert r["errors"]["by_class"] == {"ConnectionError": 5}
    await clock.advance(40)
    narrow = perf.report(30)  # only the last 30 s: no recoveries, full uptime
    assert narrow["recovery"]["count"] == 0 and narrow["sessions"]["a"]["uptime_pct"] == 100.0
    with pytest.raises(ConfigError):
        perf.report(0)
    tracker.close()


async def test_closed_session_is_not_downtime(clock: FakeClock) -> None:
    """Time after a deliberate close does not count against uptime."""
    perf = PerformanceMonitor(clock=clock, process=False)
    perf.observe_link_event("s", ev.Connected(1))
    await clock.advance(50)
    perf.observe_link_event("s", ev.Closed())
    await clock.advance(500)
    s = perf.report(3600)["sessions"]["s"]
    assert s["uptime_pct"] == 100.0 and s["observed_s"] == 50


async def test_samples_on_the_clock_interval(clock: FakeClock) -> None:
    """start() samples every interval of the injected clock; a sessions source feeds uptime."""
    states = {"x": State.CONNECTED}
    perf = PerformanceMonitor(clock=clock, interval=10, sessions=lambda: states, lag=lambda: 0.25)
    perf.start()
    try:
        await clock.advance(95)
        states["x"] = State.BACKING_OFF
        await clock.advance(100)
        r = perf.report(3600)
        assert r["samples"] == 20
        assert r["process"]["rss_bytes"]["max"] > 0 and r["process"]["loop_lag_s"]["max"] == 0.25
        assert r["sessions"]["x"]["uptime_pct"] == pytest.approx(100 * 100 / 195, abs=0.01)
    finally:
        await perf.close()


async def test_event_memory_is_bounded_whatever_the_churn(clock: FakeClock) -> None:
    """A flapping session keeps at most MAX_EVENTS drops and MAX_CHANGES changes; a long-closed session is forgotten."""
    from tether.observe import _perf

    perf = PerformanceMonitor(clock=clock, retention=3600.0, process=False)
    for _ in range(_perf.MAX_CHANGES + 500):
        perf.observe_link_event("flappy", ev.Disconnected(1006, "drop"))
        perf.observe_link_event("flappy", ev.Connected(1, downtime=0.1))
    assert perf._disconnects.maxlen == perf._recoveries.maxlen == _perf.MAX_EVENTS
    assert len(perf._timelines["flappy"].changes) <= _perf.MAX_CHANGES
    perf.observe_link_event("gone", ev.Connected(1))
    perf.observe_link_event("gone", ev.Closed())
    await clock.advance(3601.0)
    perf.sample()
    assert "gone" not in perf._timelines and "flappy" in perf._timelines
    assert perf.report(60)["sessions"]["flappy"]["uptime_pct"] == 100.0

"""The observe router on a real uvicorn: metrics, errors, performance, alerts, rules, silences."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tether import events as ev
from tether.observe import AlertManager, ErrorTracker, Metrics, PerformanceMonitor, build_router, parse_duration
from tether.testing import FakeClock

from .conftest import Served, Source, down_rule


@pytest.fixture
async def api(tmp_path, clock: FakeClock):
    metrics = Metrics()
    tracker = ErrorTracker(tmp_path / "e.db", clock=clock, log=False)
    perf = PerformanceMonitor(clock=clock, tracker=tracker, process=False)
    source = Source()
    alerts = AlertManager(source, rules=[down_rule(for_=0)], clock=clock)
    app = FastAPI()
    app.include_router(build_router(metrics=metrics, tracker=tracker, perf=perf, alerts=alerts))
    async with Served(app) as served, httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        yield client, metrics, tracker, perf, alerts, source
    tracker.close()


async def test_metrics_endpoint_is_prometheus_text(api) -> None:
    """GET /health/metrics serves parseable Prometheus text with the session series."""
    client, metrics, *_ = api
    metrics.observe_link_event("s1", ev.Connected(1))
    r = await client.get("/health/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(r.text)}
    assert {"tether_connects", "tether_session_up", "tether_process_resident_memory_bytes"} <= names


async def test_errors_endpoint_filters(api, clock: FakeClock) -> None:
    """GET /health/errors filters by severity, component, session, since/until and limit; bad input is 422."""
    client, _, tracker, *_ = api
    tracker.record(ValueError("one"), "low", "link", "s1")
    await clock.advance(100)
    tracker.record(KeyError("two"), "high", "store", "s2")
    r = (await client.get("/health/errors", params={"severity": "high"})).json()
    assert [e["message"] for e in r["errors"]] == ["'two'"] and r["stats"]["total"] == 2
    r = (await client.get("/health/errors", params={"component": "link", "session": "s1"})).json()
    assert [e["message"] for e in r["errors"]] == ["one"]
    r = (await client.get("/health/errors", params={"until": str(clock.wall() - 50)})).json()
    assert [e["message"] for e in r["errors"]] == ["one"]
    r = (await client.get("/health/errors", params={"since": "2026-01-01T00:01:00Z"})).json()
    assert [e["message"] for e in r["errors"]] == ["'two'"]
    bad = await client.get("/health/errors", params={"severity": "urgent"})
    assert bad.status_code == 422 and "severity" in bad.text
    bad = await client.get("/health/errors", params={"since": "yesterday"})
    assert bad.status_code == 422 and "since" in bad.json()["detail"]
    assert (await client.get("/health/errors", params={"limit": 0})).status_code == 422


async def test_performance_report_endpoint(api, clock: FakeClock) -> None:
    """GET /api/reports/performance?window=1h returns the report; a bad window is a 422 naming it."""
    client, _, _, perf, *_ = api
    perf.observe_link_event("s1", ev.Connected(1))
    await clock.advance(10)
    perf.observe_link_event("s1", ev.Disconnected(None, "reset"))
    await clock.advance(2)
    perf.observe_link_event("s1", ev.Connected(1, downtime=2.0))
    r = (await client.get("/api/reports/performance", params={"window": "1h"})).json()
    assert r["window_s"] == 3600 and r["recovery"]["p50"] == 2.0
    assert r["sessions"]["s1"]["uptime_pct"] == pytest.approx(100 * 10 / 12, abs=0.01)
    bad = await client.get("/api/reports/performance", params={"window": "soon"})
    assert bad.status_code == 422 and "window" in bad.json()["detail"]
    assert parse_duration("90") == 90 and parse_duration("5m") == 300 and parse_duration("2d") == 172800


async def test_rules_crud_and_validation(api) -> None:
    """Rules can be listed, created, replaced and deleted; bad fields are 422 naming them; unknown is 404 JSON."""
    client, *_, alerts, _ = api
    assert [r["name"] for r in (await client.get("/api/alerts/rules")).json()["rules"]] == ["SessionDown"]
    rule = {"name": "LagHigh", "metric": "tether_event_loop_lag_seconds", "op": ">", "threshold": 0.5, "for": 60,
            "matchers": [{"name": "instance", "value": "a.*", "op": "=~"}], "severity": "critical"}
    r = await client.post("/api/alerts/rules", json=rule)
    assert r.status_code == 201 and r.json()["rule"]["for"] == 60
    assert alerts.engine.rule("LagHigh").for_ == 60
    r = await client.post("/api/alerts/rules", json={**rule, "threshold": 1.0})
    assert r.status_code == 200 and r.json()["replaced"] is True
    assert (await client.get("/api/alerts/rules/LagHigh")).json()["rule"]["threshold"] == 1.0
    for field, value in [("threshold", "high"), ("op", "=>"), ("for", -5), ("severity", "urgent"), ("name", "bad name")]:
        bad = await client.post("/api/alerts/rules", json={**rule, field: value})
        assert bad.status_code == 422, field
        assert field in {str(p) for e in bad.json()["detail"] for p in e["loc"]}, bad.text
    bad = await client.post("/api/alerts/rules", json={**rule, "colour": "red"})
    assert bad.status_code == 422 and "colour" in bad.text
    missing = await client.delete("/api/alerts/rules/Nope")
    assert missing.status_code == 404 and "Nope" in missing.json()["detail"]
    assert (await client.get("/api/alerts/rules/Nope")).status_code == 404
    assert (await client.delete("/api/alerts/rules/LagHigh")).json() == {"deleted": "LagHigh"}
    assert alerts.engine.rule("LagHigh") is None


async def test_alerts_and_silences(api, clock: FakeClock) -> None:
    """GET /api/alerts lists firing alerts; POST /api/alerts/silences mutes them; bad silences are 422."""
    client, *_, alerts, source = api
    source.set("tether_session_up", 0, session="s1")
    await alerts.tick()
    body = (await client.get("/api/alerts")).json()
    assert [(a["labels"]["session"], a["state"]) for a in body["alerts"]] == [("s1", "firing")]
    assert any(h["kind"] == "transition" and h["to"] == "firing" for h in body["history"])
    r = await client.post("/api/alerts/silences", json={"matchers": [{"name": "session", "value": "s1"}],
                                                       "duration": "2h", "comment": "maintenance"})
    assert r.status_code == 201
    sid = r.json()["silence"]["id"]
    assert r.json()["silence"]["ends_at"] == clock.wall() + 7200
    await alerts.tick()
    body = (await client.get("/api/alerts")).json()
    assert body["alerts"][0]["silenced"] is True and body["silences"][0]["id"] == sid
    assert (await client.post("/api/alerts/silences", json={"matchers": []})).status_code == 422
    nodur = await client.post("/api/alerts/silences", json={"matchers": [{"name": "a", "value": "b"}]})
    assert nodur.status_code == 422 and "duration" in nodur.json()["detail"]
    assert (await client.delete(f"/api/alerts/silences/{sid}")).status_code == 200
    assert (await client.delete(f"/api/alerts/silences/{sid}")).status_code == 404


async def test_missing_component_is_503_json() -> None:
    """A router built without a component answers 503 JSON for its routes, never a 500."""
    app = FastAPI()
    app.include_router(build_router())
    async with Served(app) as served, httpx.AsyncClient(base_url=served.url) as client:
        for path in ("/health/metrics", "/health/errors", "/api/reports/performance", "/api/alerts"):
            r = await client.get(path)
            assert r.status_code == 503 and "not configured" in r.json()["detail"]

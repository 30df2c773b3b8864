"""HTTP endpoints of tether.observe as a FastAPI ``APIRouter``.

The router takes its components as arguments and imports nothing from tether.service, so the
service mounts it with ``app.include_router(build_router(...))`` and tests mount it on a bare app.

Routes:
    GET    /health/metrics                 Prometheus text
    GET    /health/errors                  ?severity&component&session&since&until&limit
    GET    /api/errors                     the same (the service keeps its own /health/errors)
    GET    /api/reports/performance        ?window=1h
    GET    /api/alerts                     current alerts, silences, recent history and deliveries
    GET    /api/alerts/rules               every rule
    POST   /api/alerts/rules               create or replace a rule (201 / 200)
    GET    /api/alerts/rules/{name}        one rule (404 JSON when unknown)
    DELETE /api/alerts/rules/{name}        delete a rule (404 JSON when unknown)
    GET    /api/alerts/silences            silences not yet ended
    POST   /api/alerts/silences            add a silence (201)
    DELETE /api/alerts/silences/{id}       expire a silence (404 JSON when unknown)
"""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from .._clock import parse_time
from .._errors import ConfigError, TetherError
from ._alertmanager import AlertManager
from ._metrics import CONTENT_TYPE_LATEST, Metrics
from ._perf import PerformanceMonitor
from ._redact import redact, redact_obj
from ._rules import AlertRule
from ._tracker import SEVERITIES, ErrorTracker

__all__ = ["build_router", "parse_duration", "RuleIn", "SilenceIn", "MatcherIn"]

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NAME = r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,127}$"


def parse_duration(value: str | float) -> float:
    """``"90"``, ``"90s"``, ``"5m"``, ``"1h"``, ``"7d"`` → seconds. Raises ConfigError otherwise."""
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION_RE.match(value)
        if not m:
            raise ConfigError(f"duration must look like 30s, 5m, 1h or 7d; got {value!r}")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not seconds > 0:
        raise ConfigError(f"duration must be > 0, got {value!r}")
    return seconds




def _error(status: int, message: str) -> HTTPException:
    # Raised, not returned: inside the service app its handler wraps it in the service's JSON envelope.
    return HTTPException(status, redact(message))


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(redact_obj(data), status_code=status)


class MatcherIn(BaseModel):
    """A label matcher."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    value: str = Field(max_length=1024)
    op: Literal["=", "!=", "=~", "!~"] = "="


class RuleIn(BaseModel):
    """An alert rule as the API accepts it (``for`` may be spelled ``for_``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(pattern=_NAME)
    metric: str = Field(pattern=_NAME)
    op: Literal[">", ">=", "<", "<=", "==", "!="] = ">"
    threshold: float
    matchers: list[MatcherIn] = Field(default_factory=list, max_length=32)
    function: Literal["value", "rate", "increase"] = "value"
    range: float = Field(300.0, gt=0)
    for_: float = Field(0.0, alias="for", ge=0)
    keep_firing_for: float = Field(0.0, ge=0)
    repeat_interval: float = Field(4 * 3600.0, gt=0)
    group_wait: float = Field(30.0, ge=0)
    group_interval: float = Field(300.0, gt=0)
    severity: Literal["info", "warning", "critical"] = "warning"
    summary: str = Field("", max_length=1000)
    actions: list[str] = Field(default_factory=list, max_length=16)
    labels: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True

    def to_rule(self) -> AlertRule:
        """The engine's AlertRule."""
        data = self.model_dump(by_alias=False)
        data["actions"] = tuple(data["actions"])
        return AlertRule(**data)


class SilenceIn(BaseModel):
    """A silence: matchers plus either ``ends_at`` or ``duration`` (seconds, or "2h")."""

    model_config = ConfigDict(extra="forbid")
    matchers: list[MatcherIn] = Field(min_length=1, max_length=32)
    starts_at: float | None = None
    ends_at: float | None = None
    duration: float | str | None = None
    created_by: str = Field("", max_length=200)
    comment: str = Field("", max_length=1000)


def build_router(*, metrics: Metrics | None = None, tracker: ErrorTracker | None = None,
                 perf: PerformanceMonitor | None = None, alerts: AlertManager | None = None,
                 prefix: str = "") -> APIRouter:
    """Build the observe routes over the given components (a missing one answers 503 JSON).

    Args:
        metrics: serves ``/health/metrics``.
        tracker: serves ``/health/errors``.
        perf: serves ``/api/reports/performance``.
        alerts: serves ``/api/alerts`` and its rules and silences.
        prefix: a path prefix for every route.
    """
    router = APIRouter(prefix=prefix, tags=["observe"])

    def missing(what: str) -> HTTPException:
        return _error(503, f"{what} is not configured on this service")

    @router.get("/health/metrics", response_class=Response)
    def get_metrics() -> Response:
        if metrics is None:
            raise missing("metrics")
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/health/errors")
    @router.get("/api/errors")  # the same, where a host app already owns /health/errors
    def get_errors(
        severity: list[Literal["low", "medium", "high", "critical"]] | None = Query(None, description=f"one of {SEVERITIES}"),
        component: str | None = Query(None, max_length=200),
        session: str | None = Query(None, max_length=200),
        since: str | None = Query(None, description="epoch seconds or ISO 8601"),
        until: str | None = Query(None, description="epoch seconds or ISO 8601"),
        limit: int = Query(100, ge=1, le=1000),
    ) -> JSONResponse:
        if tracker is None:
            raise missing("the error tracker")
        try:
            t0, t1 = parse_time("since", since), parse_time("until", until)
            rows = tracker.query(severity=severity or None, component=component, session=session, since=t0, until=t1, limit=limit)
            stats = tracker.stats(since=t0, until=t1)
        except TetherError as exc:
            raise _error(422, str(exc))
        return _json({"count": len(rows), "errors": [r.to_dict() for r in rows], "stats": stats})

    @router.get("/api/reports/performance")
    def get_performance(window: str = Query("1h", description="30s, 5m, 1h, 7d...")) -> JSONResponse:
        if perf is None:
            raise missing("the performance monitor")
        try:
            seconds = parse_duration(window)
            if seconds > perf.retention:
                raise ConfigError(f"window must be at most the retention of {perf.retention:g}s; got {window!r}")
            return _json(perf.report(seconds))
        except TetherError as exc:
            raise _error(422, f"window: {exc}")

    @router.get("/api/alerts")
    async def get_alerts() -> JSONResponse:
        if alerts is None:
            raise missing("alerting")
        wall = alerts.clock.wall()
        return _json({
            "alerts": [a.to_dict() for a in alerts.alerts()],
            "silences": [s.to_dict() for s in alerts.engine.silences(wall)],
            "history": alerts.history[-100:],
            "deliveries": list(alerts.deliveries)[-100:],
        })

    @router.get("/api/alerts/rules")
    async def list_rules() -> JSONResponse:
        if alerts is None:
            raise missing("alerting")
        return _json({"rules": [r.to_dict() for r in alerts.rules]})

    @router.post("/api/alerts/rules")
    async def put_rule(body: RuleIn) -> JSONResponse:
        if alerts is None:
            raise missing("alerting")
        try:
            rule = body.to_rule()
        except ConfigError as exc:
            raise _error(422, str(exc))
        existed = alerts.engine.rule(rule.name) is not None
        alerts.add_rule(rule)
        return _json({"rule": rule.to_dict(), "replaced": existed}, 200 if existed else 201)

    @router.get("/api/alerts/rules/{name}")
    async def get_rule(name: str) -> JSONResponse:
        if alerts is None:
            raise missing("alerting")
        rule = alerts.engine.rule(name)
        if rule is None:
            raise _error(404, f"no alert rule named {name!r}; GET /api/alerts/rules lists them")
        return _json({"rule": rule.to_dict()})

    @router.delete("/api/alerts/rules/{name}")
    async def delete_rule(name: str) -> JSONResponse:
        if alerts is None:
            raise missing("alerting")
        if not alerts.remove_rule(name):
            raise _error(404, f"no alert rule named {name!r}; GET /api/alerts/rules lists them")
        return _json({"deleted": name})

    @router.get("/api/alerts/silences")
    async def list_silences() -> JSONResponse:
        if alerts is None:
            raise missing("alerting")
        return _json({"silences": [s.to_dict() for s in alerts.engine.silences(alerts.clock.wall())]})

    @router.post("/api/alerts/silences", status_code=201)
    async def add_silence(body: SilenceIn) -> JSONResponse:
        if alerts is None:
            raise missing("alerting")
        try:
            duration = None if body.duration is None else parse_duration(body.duration)
            if body.ends_at is None and duration is None:
                raise ConfigError("give ends_at (epoch seconds) or duration (seconds or 30m, 2h...)")
            s = alerts.add_silence([m.model_dump() for m in body.matchers], starts_at=body.starts_at,
                                   ends_at=body.ends_at, duration=duration, created_by=body.created_by, comment=body.comment)
        except ConfigError as exc:
            raise _error(422, str(exc))
        return _json({"silence": s.to_dict()}, 201)

    @router.delete("/api/alerts/silences/{silence_id}")
    async def delete_silence(silence_id: str) -> JSONResponse:
        if alerts is None:
            raise missing("alerting")
        if not alerts.remove_silence(silence_id):
            raise _error(404, f"no silence with id {silence_id!r}")
        return _json({"deleted": silence_id})

    return router

"""Observer: builds and owns metrics, error tracker, performance monitor, alerting and logs.

The service creates one, feeds it events through hooks, mounts ``observer.router()`` and closes
it on shutdown. Lifecycle: ``await observer.start()`` ... ``await observer.close()`` (reverse order).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Literal, Mapping

from fastapi import APIRouter

from .. import _events as ev
from .._clock import SYSTEM_CLOCK, Clock
from ._actions import AlertAction, RestartAction
from ._alertmanager import AlertManager
from ._api import build_router
from ._logs import LoggingSetup, log_link_event, setup_logging
from ._metrics import Metrics
from ._perf import PerformanceMonitor
from ._redact import register_secret
from ._rules import AlertRule
from ._tracker import ErrorTracker

__all__ = ["Observer"]

_log = logging.getLogger("tether.observe")


class Observer:
    """Everything tether.observe does, for one service instance.

    Args:
        data_dir: logs go to ``<data_dir>/logs/``, the error database to ``<data_dir>/errors.db``,
            alert rules and silences changed at run time to ``<data_dir>/alerts.json``.
        clock: the service clock.
        rules: alert rules (None: :func:`default_rules`).
        actions: alert actions (webhook, email, Telegram...).
        restart: ``async restart(session)``; when given, a ``restart`` action is registered
            (rules opt in by naming it in ``actions``; it is not part of "all actions").
        sessions: ``() -> {session: State}`` read by the performance sampler.
        secrets: values to mask everywhere (bot tokens, passwords from the config).
        log_format / log_max_bytes / log_backups / log_level: see :func:`setup_logging`;
            ``logs=False`` leaves logging alone (embedding apps that configure their own).
        alert_interval / perf_interval: evaluation and sampling periods in seconds.
        error_max_records / error_max_age: error retention.
    """

    def __init__(self, data_dir: str | Path, *, clock: Clock | None = None, rules: Iterable[AlertRule] | None = None,
                 actions: Iterable[AlertAction] = (), restart: Callable[[str], Awaitable[Any]] | None = None,
                 sessions: Callable[[], Mapping[str, Any]] | None = None, secrets: Iterable[str] = (),
                 logs: bool = True, log_format: Literal["human", "json"] = "human",
                 log_max_bytes: int = 10 * 1024 * 1024, log_backups: int = 5, log_level: int | str = logging.INFO,
                 alert_interval: float = 15.0, perf_interval: float = 10.0,
                 error_max_records: int = 10_000, error_max_age: float = 7 * 86400.0, process_metrics: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.clock = clock or SYSTEM_CLOCK
        register_secret(*secrets)
        self.logging: LoggingSetup | None = (
            setup_logging(self.data_dir, fmt=log_format, max_bytes=log_max_bytes, backups=log_backups, level=log_level)
            if logs else None
        )
        self.metrics = Metrics(process=process_metrics)
        self.tracker = ErrorTracker(self.data_dir / "errors.db", max_records=error_max_records, max_age=error_max_age,
                                    clock=self.clock)
        self.perf = PerformanceMonitor(clock=self.clock, interval=perf_interval, tracker=self.tracker, sessions=sessions,
                                       lag=lambda: self.metrics.lag_sampler.lag, process=process_metrics)
        self._collectors: list[Callable[[], Any]] = []
        self.alerts = AlertManager(self._samples, rules=rules, actions=actions, clock=self.clock,
                                   interval=alert_interval, tracker=self.tracker,
                                   state_path=self.data_dir / "alerts.json")
        if restart is not None:
            self.alerts.add_action(RestartAction(restart))
        self._started = False

    # ---- hooks -------------------------------------------------------------------------------
    def observe_link_event(self, session: str, event: ev.Event) -> None:
        """Feed one link event to metrics, the performance monitor, the log and (failures) the tracker."""
        self.metrics.observe_link_event(session, event)
        self.perf.observe_link_event(session, event)
        log_link_event(session, event)
        if isinstance(event, ev.GaveUp):
            self.tracker.record(event.error, "high", "link", session, {"event": "gave_up"})
        elif isinstance(event, ev.Disconnected) and event.cause is not None:
            self.tracker.record(event.cause, "medium", "link", session, {"code": event.code, "reason": event.reason})

    def observe_recovery_event(self, event: Any) -> None:
        """Feed one recovery-engine event (anything with error_class/action, or a Decision).

        A call that stopped for good (an event carrying ``error``) is also recorded in the tracker.
        """
        self.metrics.observe_recovery_event(event)
        error = getattr(event, "error", None)
        if isinstance(error, BaseException):
            self.tracker.record(error, "high", "recovery", None, {
                "key": getattr(event, "key", None), "error_class": str(getattr(event, "error_class", "")),
                "attempts": getattr(event, "attempts", None)})

    def attach(self, session: str, link: Any) -> Callable[[], None]:
        """Subscribe to ``link.subscribe(cb)`` for ``session``; returns unsubscribe."""
        return link.subscribe(lambda event: self.observe_link_event(session, event))

    def attach_policy(self, policy: Any) -> Callable[[], None]:
        """Subscribe to a recovery policy's ``subscribe(cb)``; returns unsubscribe."""
        return policy.subscribe(self.observe_recovery_event)

    def record_error(self, error: BaseException | str, severity: str = "medium", component: str = "service",
                     session: str | None = None, context: Mapping[str, Any] | None = None,
                     metadata: Mapping[str, Any] | None = None) -> int:
        """Record an error in the tracker (redacted)."""
        return self.tracker.record(error, severity, component, session, context, metadata)

    def add_collector(self, collect: Callable[[], Any]) -> None:
        """Run ``collect()`` (sync or async) before every alert evaluation, to refresh gauges that are
        read rather than pushed (outbox depth, dead letters)."""
        self._collectors.append(collect)

    async def _samples(self) -> list[tuple[str, dict[str, str], float]]:
        for collect in self._collectors:
            try:
                result = collect()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - a failed collector must not stop alerting
                _log.warning("metrics collector failed: %s: %s", type(exc).__name__, exc)
        return self.metrics.samples()

    def router(self, prefix: str = "") -> APIRouter:
        """The observe HTTP routes (see :func:`build_router`)."""
        return build_router(metrics=self.metrics, tracker=self.tracker, perf=self.perf, alerts=self.alerts, prefix=prefix)

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the loop-lag sampler, the performance sampler and alert evaluation."""
        self.metrics.start()
        self.perf.start()
        self.alerts.start()
        self._started = True
        _log.info("observability started in %s", self.data_dir)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop everything in reverse order (idempotent); logs are detached last."""
        errors: list[BaseException] = []
        for step in (lambda: self.alerts.close(timeout), self.perf.close, self.metrics.close):
            try:
                await asyncio.wait_for(step(), timeout)
            except Exception as exc:  # noqa: BLE001 - keep tearing down, report below
                errors.append(exc)
        self.tracker.close()
        for exc in errors:
            _log.error("observability close: %s: %s", type(exc).__name__, exc)
        if self.logging is not None:
            self.logging.close()
            self.logging = None
        self._started = False

"""Service: owns every part of a running gateway and opens/closes them in order.

Open: service DB → event log → stores → webhook dispatcher → sessions → sweep.
Close (reverse): sweep → sessions (drain in-flight sends, bounded; cursors are saved by the
connectors as they go) → webhooks → event streams → stores → DB.
"""

from __future__ import annotations

import collections
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .._clock import SYSTEM_CLOCK, Clock
from ._db import ServiceDB
from ._eventlog import EventLog
from ._events import ServiceStarted, ServiceStopping
from ._manager import SessionManager
from ._settings import Settings
from ._stores import Stores, open_stores
from ._sweep import HealthSweep
from ._webhooks import WebhookDispatcher

__all__ = ["Service", "Observability", "ErrorLog"]

log = logging.getLogger("tether.service")

_ERROR_TYPES = {"link.disconnected", "link.gave_up", "message.send_failed", "message.dead_lettered", "webhook.failed",
                "link.heartbeat_missed"}


class ErrorLog:
    """A bounded in-memory list of recent errors (until tether.observe's ErrorTracker is wired)."""

    def __init__(self, size: int = 500) -> None:
        self._items: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self.total = 0

    def record(self, *, component: str, message: str, session: str | None = None, at: float | None = None,
               severity: str = "high", **extra: Any) -> None:
        self.total += 1
        self._items.append({"at": at or time.time(), "component": component, "session": session,
                            "severity": severity, "message": message, **extra})

    def on_event(self, event: Any, row: Any) -> None:
        if row.type in _ERROR_TYPES:
            d = row.data
            msg = d.get("reason") or d.get("error") or row.type
            if row.type == "link.disconnected" and d.get("code") is not None:
                msg = f"close {d['code']}: {msg}"
            self.record(component=row.type.split(".")[0], message=str(msg), session=row.session, at=row.at,
                        severity="critical" if row.type == "link.gave_up" else "medium", type=row.type)

    def query(self, *, session: str | None = None, severity: Iterable[str] | None = None, component: str | None = None,
              since: float | None = None, until: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sev = {severity} if isinstance(severity, str) else set(severity or ())
        items = [i for i in reversed(self._items)
                 if (session is None or i["session"] == session) and (not sev or i["severity"] in sev)
                 and (component is None or i["component"] == component)
                 and (since is None or i["at"] >= since) and (until is None or i["at"] < until)]
        return items[:limit]


@dataclass
class Observability:
    """The seam for ``tether.observe``: everything optional; what is missing falls back to built-ins.

    Attributes:
        router: a FastAPI APIRouter included in the app (alerts API, ...).
        metrics_text: returns Prometheus exposition text for ``GET /health/metrics``.
        errors: ``errors(session=..., limit=...) -> list[dict]`` for ``GET /health/errors``.
        on_event: called with ``(event, row)`` for every service event (metrics, alerts).
        on_start / on_close: awaited with the Service after it opened / before it closes.
    """

    router: Any = None
    metrics_text: Callable[[], bytes | str] | None = None
    errors: Callable[..., list[dict[str, Any]]] | None = None
    on_event: Callable[[Any, Any], None] | None = None
    on_start: Callable[["Service"], Any] | None = None
    on_close: Callable[["Service"], Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _webhook_secret(data_dir: Path, settings: Settings) -> bytes:
    if settings.webhook.secret is not None:
        return settings.webhook.secret.get_secret_value().encode()
    path = data_dir / "webhook_secret"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
        log.info("generated a webhook signing secret in %s", path)
    return path.read_text().strip().encode()


class Service:
    """A running gateway: sessions, stores, event log, webhooks and the health sweep.

    Args:
        settings: validated settings.
        clock: time source (a FakeClock in logic tests).
        observability: optional observe wiring (see :class:`Observability`).
    """

    def __init__(self, settings: Settings, *, clock: Clock = SYSTEM_CLOCK,
                 observability: Observability | None = None, config: Any = None) -> None:
        self.settings = settings
        self.config = config  # a ConfigManager (tether.service._config), opened by serve()
        self.clock = clock
        self.observability = observability or Observability()
        self.errors = ErrorLog()
        self.db: ServiceDB | None = None
        self.events: EventLog | None = None
        self.stores: Stores | None = None
        self.webhooks: WebhookDispatcher | None = None
        self.manager: SessionManager | None = None
        self.sweep: HealthSweep | None = None
        self.started_at: float | None = None
        self.closing = False

    async def start(self) -> None:
        from . import connectors as _connectors  # noqa: F401  (registers the built-in kinds)
        _connectors.load_builtin()

        s = self.settings
        data_dir = Path(s.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        cluster: Any = None
        if s.store:  # scale-out: registry, queues and session ownership in Redis (see _cluster.py)
            from . import _cluster as cluster
        self.db = cluster.service_db(s, data_dir) if cluster else ServiceDB(data_dir / "service.db")
        self.events = EventLog(self.db, size=s.event_log_size, wall=self.clock.wall)
        self.events.subscribe(self.errors.on_event)
        if self.observability.on_event is not None:
            self.events.subscribe(self.observability.on_event)
        self.stores = await cluster.open_stores(s, clock=self.clock) if cluster else await open_stores(
            data_dir, clock=self.clock, outbox_max_attempts=s.sessions.outbox_max_attempts)
        secret = _webhook_secret(data_dir, s)
        self.webhooks = WebhookDispatcher(self.db, emit=self.events.append, secret_for=lambda _s: secret,
                                          settings=s.webhook, clock=self.clock)
        self.webhooks.start()
        self.manager = (cluster.ClusterManager if cluster else SessionManager)(s, db=self.db, events=self.events, stores=self.stores, clock=self.clock,
                                      on_inbound=self.webhooks.kick)
        await self.manager.open()
        self.sweep = HealthSweep(self.manager, interval=s.sweep_interval, clock=self.clock)
        self.sweep.start()
        self.started_at = self.clock.wall()
        self.events.append(ServiceStarted(len(self.manager.list()), at=self.started_at))
        if self.observability.on_start is not None:
            await _maybe_await(self.observability.on_start(self))
        if self.config is not None:  # live config changes reach sessions, sweep and alerts from here on
            from ._config_apply import wire_config

            _, alerts = wire_config(self)
            if alerts is not None:
                await alerts.apply(self.settings, evaluate=False)
            await self.config.start()

    async def close(self, reason: str = "shutdown") -> None:
        """Stop accepting, drain (bounded by ``shutdown_timeout``), close everything in reverse order."""
        if self.closing:
            return
        self.closing = True
        if self.events is not None:
            self.events.append(ServiceStopping(reason, at=self.clock.wall()))
        if self.config is not None:
            await self.config.close()
        if self.observability.on_close is not None:
            try:
                await _maybe_await(self.observability.on_close(self))
            except Exception:
                log.exception("observability close failed")
        if self.sweep is not None:
            await self.sweep.close()
        if self.manager is not None:
            await self.manager.close()
        if self.webhooks is not None:
            await self.webhooks.close()
        if self.events is not None:
            self.events.close()
        if self.stores is not None:
            await self.stores.close()
        if self.db is not None:
            self.db.close()
        log.info("service stopped")


async def _maybe_await(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value

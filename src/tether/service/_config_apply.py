"""Apply a configuration version to the running parts of a :class:`Service` (the config's subscriber).

* ``sessions``: the manager reads the new defaults for every new connection and delivery round;
  running links take heartbeat and backoff at their next cycle, without reconnecting
  (``connector.configure(defaults)`` → ``link.configure``).
* ``sweep_interval``: the next sweep waits the new interval.
* ``alerts``: evaluation interval, rule tuning, destinations (webhook, email, Telegram); then the
  rules are evaluated once at once, so a new threshold shows without waiting a cycle.
* everything in ``RESTART_PATHS`` is stored and reported, and applies after a restart.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ._config_model import AlertSettings, alert_actions
from ._settings import Settings

__all__ = ["wire_config"]

log = logging.getLogger("tether.config")

_TUNABLE = ("threshold", "for_", "keep_firing_for", "repeat_interval", "severity", "enabled")


def apply_sessions(service: Any, new: Settings) -> int:
    """New defaults for the manager and every running connector; returns how many links took them."""
    service.settings = new
    manager = service.manager
    if manager is None:
        return 0
    manager.settings = new
    n = 0
    for s in manager.list():
        configure = getattr(s.connector, "configure", None)
        if configure is None:
            continue
        try:
            configure(new.sessions)
            n += 1
        except Exception as exc:  # noqa: BLE001 - one session's options must not stop the others
            log.warning("[%s] cannot apply the new session defaults: %s", s.id, exc)
    if service.sweep is not None:
        service.sweep.interval = new.sweep_interval
    return n


class _Alerts:
    """Tunes the observer's alert manager from ``[alerts]``; remembers the untuned rules."""

    def __init__(self, observer: Any, settings: Settings) -> None:
        self.alerts = observer.alerts
        self.base = {r.name: r for r in self.alerts.rules}
        # The destinations `tether serve` passed to service_observability(actions=...) come from the same
        # [alerts] section: ours to replace. Actions an embedding program added itself are left alone.
        self.names: set[str] = {a.name for a in alert_actions(settings.alerts)}
        self.interval = AlertSettings.model_fields["interval"].default

    async def apply(self, new: Settings, *, evaluate: bool = True) -> None:
        cfg = new.alerts
        if cfg.interval != self.interval:  # the observer's own interval stands until the config names one
            self.alerts.interval = self.interval = cfg.interval
        for name, rule in self.base.items():
            current = self.alerts.engine.rule(name)
            if current is None:  # deleted through the alerts API: leave it deleted
                continue
            tuning = cfg.rules.get(name, cfg.rules.get(name.lower()))  # TETHER_* variables arrive lower-cased
            values = {f: getattr(tuning, f) for f in _TUNABLE if tuning is not None and getattr(tuning, f) is not None}
            wanted = dataclasses.replace(rule, **values)
            if wanted != current:
                self.alerts.add_rule(wanted)
        unknown = sorted(set(cfg.rules) - set(self.base) - {n.lower() for n in self.base})
        if unknown:
            log.warning("alerts.rules names unknown rule(s) %s; known: %s", ", ".join(unknown), ", ".join(sorted(self.base)))
        actions = alert_actions(cfg)
        for name in self.names - {a.name for a in actions}:
            self.alerts.actions.pop(name, None)
            getattr(self.alerts, "_defaults", set()).discard(name)
        for a in actions:
            self.alerts.add_action(a)
        self.names = {a.name for a in actions}
        if evaluate:
            await self.alerts.tick()  # re-evaluate now under the new rules


def wire_config(service: Any) -> Any:
    """Subscribe the service's parts to ``service.config``; returns the unsubscribe function."""
    config = service.config
    observer = (service.observability.extra or {}).get("observer")
    alerts = _Alerts(observer, service.settings) if observer is not None and getattr(observer, "alerts", None) is not None else None

    async def on_change(old: Settings, new: Settings, version: Any) -> None:
        if old.sessions != new.sessions or old.sweep_interval != new.sweep_interval:
            n = apply_sessions(service, new)
            log.info("config version %d: %d running link(s) take the new session settings at their next cycle",
                     version.version, n)
        else:
            apply_sessions(service, new)
        if alerts is not None and old.alerts != new.alerts:
            await alerts.apply(new)

    return config.subscribe(on_change), alerts

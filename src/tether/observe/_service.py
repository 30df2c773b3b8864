"""Glue between an :class:`Observer` and the gateway service's ``Observability`` seam.

The service defines the seam (``tether.service.Observability``: router, metrics_text, errors,
on_event, on_start, on_close); this module fills it. tether.service is imported lazily inside the
function, so importing tether.observe never pulls in the service.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from .._state import State
from ._actions import AlertAction, RestartAction
from ._observer import Observer
from ._rules import AlertRule

__all__ = ["service_observability"]

_log = logging.getLogger("tether.observe")


def service_observability(settings: Any, *, observer: Observer | None = None, actions: Iterable[AlertAction] = (),
                          rules: Iterable[AlertRule] | None = None, restart_on_alert: bool = True) -> Any:
    """Build the service's ``Observability`` from an Observer (made from ``settings`` when not given).

    What it wires:

    * ``GET /health/metrics`` renders :class:`Metrics`; ``GET /health/errors`` reads the ErrorTracker
      (session and limit filters; ``GET /api/errors`` has every filter);
    * the observe router (alerts, rules, silences, performance report, ``/api/errors``);
    * service events: link events → metrics, performance, logs, error records; messages in/out;
      failed sends and final webhook failures → error records; stopped sessions are not "down";
      deleted sessions drop their series;
    * on start: the performance sampler reads session states, a collector refreshes outbox depth and
      dead letters before each alert evaluation, and a ``restart`` alert action calls
      ``SessionManager.restart(session, reason="alert")``;
    * on close: the Observer closes (alerts, sampler, lag probe, tracker, log files).

    Args:
        settings: the service Settings (``data_dir``, ``log_format``, ``log_level``, ``token`` are read).
        observer: an Observer to use instead of building one.
        actions: alert actions (webhook, email, Telegram).
        rules: alert rules (None: the defaults).
        restart_on_alert: register the ``restart`` action (rules still opt in by naming it).
    """
    from ..service import _events as sev  # lazy: keep observe importable without the service
    from ..service._service import Observability

    secrets = [s.get_secret_value() for s in (getattr(settings, "token", None),
                                               getattr(getattr(settings, "webhook", None), "secret", None)) if s]
    obs = observer or Observer(
        settings.data_dir, rules=rules, actions=actions, secrets=secrets,
        log_format=getattr(settings, "log_format", "human"), log_level=str(getattr(settings, "log_level", "info")).upper(),
    )

    def on_event(event: Any, row: Any) -> None:
        try:
            _dispatch(obs, sev, event)
        except Exception as exc:  # noqa: BLE001 - an observer must never break the event log
            _log.warning("observe hook failed on %s: %s: %s", type(event).__name__, type(exc).__name__, exc)

    async def on_start(service: Any) -> None:
        def sessions() -> dict[str, Any]:
            mgr = service.manager
            return {s.id: s.state for s in mgr.list()} if mgr is not None else {}

        async def collect() -> None:
            if service.manager is None or service.stores is None:
                return
            for s in service.manager.list():
                obs.metrics.set_outbox_depth(s.id, await service.stores.outbox.depth(s.id))
                obs.metrics.set_dead_letters(s.id, len(await service.stores.outbox.dead_letters(s.id, limit=100_000)))

        async def restart(session: str) -> None:
            await service.manager.restart(session, reason="alert")

        obs.perf.sessions_source = sessions
        obs.add_collector(collect)
        if restart_on_alert:
            obs.alerts.add_action(RestartAction(restart))
        await obs.start()

    async def on_close(service: Any) -> None:
        await obs.close()

    def errors(session: str | None = None, limit: int = 100, **filters: Any) -> list[dict[str, Any]]:
        return [r.to_dict() for r in obs.tracker.query(session=session, limit=limit, **filters)]

    return Observability(router=obs.router(), metrics_text=obs.metrics.render, errors=errors, on_event=on_event,
                         on_start=on_start, on_close=on_close, extra={"observer": obs})


def _dispatch(obs: Observer, sev: Any, event: Any) -> None:
    if isinstance(event, sev.SessionLinkEvent):
        obs.observe_link_event(event.session, event.event)
    elif isinstance(event, sev.MessageReceived):
        obs.metrics.message_in(event.session)
    elif isinstance(event, sev.MessageSent):
        obs.metrics.message_out(event.session)
    elif isinstance(event, sev.MessageSendFailed):
        obs.tracker.record(f"send failed: {event.reason}", "medium", "delivery", event.session,
                           {"message_id": event.message_id, "retry_in": event.retry_in})
    elif isinstance(event, sev.MessageDeadLettered):
        obs.tracker.record(f"message dead-lettered: {event.reason}", "high", "delivery", event.session,
                           {"message_id": event.message_id})
    elif isinstance(event, sev.WebhookFailed) and event.final:
        obs.tracker.record(f"webhook gave up: {event.reason}", "high", "webhook", event.session,
                           {"url": event.url, "message_id": event.message_id, "attempts": event.attempts})
    elif isinstance(event, (sev.SessionStopped, sev.SessionLoggedOut)):
        obs.metrics.set_state(event.session, State.CLOSED)  # stopped on purpose: not "down"
    elif isinstance(event, sev.SessionDeleted):
        obs.metrics.forget_session(event.session)

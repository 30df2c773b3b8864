"""A minimal Prometheus exposition of the service, used until ``tether.observe`` is wired in."""

from __future__ import annotations

from typing import Any

from .._state import State

__all__ = ["render_metrics"]


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def render_metrics(service: Any) -> str:
    """Prometheus text: session states, per-session counters, outbox depth, webhook queue."""
    lines: list[str] = []
    mgr = service.manager
    sessions = mgr.list() if mgr else []

    def family(name: str, kind: str, help_: str) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")

    family("tether_sessions", "gauge", "Sessions by state.")
    counts = {st.value: 0 for st in State}
    for s in sessions:
        counts[str(s.state)] = counts.get(str(s.state), 0) + 1
    for st, n in counts.items():
        lines.append(f'tether_sessions{{state="{st}"}} {n}')
    for name, key, help_ in (
        ("tether_messages_sent_total", "sent_total", "Outbound messages sent upstream."),
        ("tether_messages_received_total", "received_total", "New inbound messages."),
        ("tether_send_failures_total", "send_failures", "Failed upstream sends (retried)."),
        ("tether_session_restarts_total", "restarts", "Restarts by API or sweep."),
        ("tether_connects_total", "connects", "Successful connections."),
    ):
        family(name, "counter", help_)
        for s in sessions:
            lines.append(f'{name}{{session="{_esc(s.id)}"}} {int(s.stats().get(key) or 0)}')
    family("tether_session_up", "gauge", "1 when the session is connected.")
    for s in sessions:
        lines.append(f'tether_session_up{{session="{_esc(s.id)}"}} {1 if s.state is State.CONNECTED else 0}')
    family("tether_outbox_depth", "gauge", "Undelivered outbound messages.")
    lines.append(f"tether_outbox_depth {await mgr.depth() if mgr else 0}")
    family("tether_webhook_jobs", "gauge", "Webhook deliveries by status.")
    counts_wh = service.db.webhook_counts() if service.db else {}
    for st in ("pending", "delivered", "dead"):
        lines.append(f'tether_webhook_jobs{{status="{st}"}} {counts_wh.get(st, 0)}')
    family("tether_errors_total", "counter", "Errors recorded for /health/errors.")
    lines.append(f"tether_errors_total {service.errors.total}")
    return "\n".join(lines) + "\n"

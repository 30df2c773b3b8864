"""tether.observe: metrics, error tracking, performance reports, alerting and logs.

Everything here is a subscriber: the core never imports it. Wire it with ``link.subscribe`` and
``policy.subscribe`` (see docs/observe.md), or use :class:`Observer` to build and own them all.
"""

from ._actions import AlertAction, EmailAction, RestartAction, TelegramAction, WebhookAction
from ._alertmanager import AlertManager
from ._engine import Alert, AlertEngine, Notification
from ._metrics import METRIC_NAMES, LoopLagSampler, Metrics
from ._redact import REDACTED, redact, redact_obj, register_secret, unregister_secret
from ._rules import AlertRule, Matcher, Sample, Silence, default_rules
from ._tracker import SEVERITIES, ErrorRecord, ErrorTracker

__all__ = [
    "Metrics", "METRIC_NAMES", "LoopLagSampler",
    "ErrorTracker", "ErrorRecord", "SEVERITIES",
    "AlertRule", "Matcher", "Silence", "Sample", "default_rules",
    "AlertEngine", "Alert", "Notification", "AlertManager",
    "AlertAction", "WebhookAction", "EmailAction", "TelegramAction", "RestartAction",
    "redact", "redact_obj", "register_secret", "unregister_secret", "REDACTED",
]

"""tether.observe: metrics, error tracking, performance reports, alerting and logs.

Everything here is a subscriber: the core never imports it. Wire it with ``link.subscribe`` and
``policy.subscribe`` (see docs/observe.md), or use :class:`Observer` to build and own them all.
"""

from ._actions import AlertAction, EmailAction, RestartAction, TelegramAction, WebhookAction
from ._alertmanager import AlertManager
from ._api import build_router, parse_duration
from ._engine import Alert, AlertEngine, Notification
from ._logs import LOG_FILES, LoggingSetup, log_link_event, session_context, session_logger, setup_logging
from ._metrics import METRIC_NAMES, LoopLagSampler, Metrics
from ._observer import Observer
from ._perf import PerformanceMonitor, percentile
from ._redact import REDACTED, redact, redact_obj, register_secret, unregister_secret
from ._service import service_observability
from ._rules import AlertRule, Matcher, Sample, Silence, default_rules
from ._tracker import SEVERITIES, ErrorRecord, ErrorTracker

__all__ = [
    "Observer", "service_observability",
    "Metrics", "METRIC_NAMES", "LoopLagSampler",
    "PerformanceMonitor", "percentile",
    "setup_logging", "LoggingSetup", "LOG_FILES", "session_context", "session_logger", "log_link_event",
    "build_router", "parse_duration",
    "ErrorTracker", "ErrorRecord", "SEVERITIES",
    "AlertRule", "Matcher", "Silence", "Sample", "default_rules",
    "AlertEngine", "Alert", "Notification", "AlertManager",
    "AlertAction", "WebhookAction", "EmailAction", "TelegramAction", "RestartAction",
    "redact", "redact_obj", "register_secret", "unregister_secret", "REDACTED",
]

"""tether.recovery: classify any failure, pick the action, keep budgets, history and statistics.

* :func:`classify` — ordered rule packs (``TELEGRAM``, ``WEBSOCKETS``, ``HTTP``, ``GENERIC``, ``HINTS``)
  turn any exception into a :class:`tether.Classification`; packs are plain data (:class:`Rule`).
* :class:`RecoveryPolicy` — per-class actions with the seed's defaults, backoff, server waits,
  deadlines, callbacks, history, statistics and events; ``run()``, ``attempts()``, :func:`retry`.
* :class:`CircuitBreaker` and :class:`RetryBudget` — retries never multiply an outage.
* :class:`ProxyPool` — rotating proxies with health and cooldown, persisted in SQLite.
* :func:`link_classifier` — the same engine as a Link classifier.

See docs/recovery.md.
"""

from ._breaker import TRANSITIONS as BREAKER_TRANSITIONS
from ._breaker import BreakerState, CircuitBreaker
from ._budget import RetryBudget
from ._engine import DEFAULT_CLASS_POLICIES, RELOGIN_AUTH, ClassPolicy, Step, Stop, plan
from ._events import (
    ActionStats,
    CallbackFailed,
    CircuitStateChanged,
    ClassStats,
    Recovered,
    RecoveryEvent,
    RecoveryFailed,
    RecoveryRecord,
    RecoveryScheduled,
    RecoveryStats,
)
from ._mask import mask_secrets, mask_url
from ._packs import DEFAULT_PACKS, GENERIC, HINTS, HTTP, TELEGRAM, WEBSOCKETS, default_packs, websockets_pack
from ._policy import BREAKER_CLASSES, Attempt, Failure, RecoveryPolicy, retry
from ._proxy import ProxyPool, ProxyStatus
from ._rules import Rule, RulePack, classify, link_classifier, read_seconds

__all__ = [
    "classify",
    "link_classifier",
    "Rule",
    "RulePack",
    "read_seconds",
    "TELEGRAM",
    "WEBSOCKETS",
    "HTTP",
    "GENERIC",
    "HINTS",
    "DEFAULT_PACKS",
    "default_packs",
    "websockets_pack",
    "RecoveryPolicy",
    "ClassPolicy",
    "DEFAULT_CLASS_POLICIES",
    "RELOGIN_AUTH",
    "Failure",
    "Attempt",
    "retry",
    "plan",
    "Step",
    "Stop",
    "CircuitBreaker",
    "BreakerState",
    "BREAKER_TRANSITIONS",
    "BREAKER_CLASSES",
    "RetryBudget",
    "ProxyPool",
    "ProxyStatus",
    "RecoveryRecord",
    "RecoveryEvent",
    "RecoveryScheduled",
    "CallbackFailed",
    "Recovered",
    "RecoveryFailed",
    "CircuitStateChanged",
    "RecoveryStats",
    "ClassStats",
    "ActionStats",
    "mask_url",
    "mask_secrets",
]

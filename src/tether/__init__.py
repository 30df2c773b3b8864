"""tether: long-lived connections that heal themselves and lose nothing.

The public API is what this module exports; everything in underscore modules is private.
"""

from ._backoff import Backoff
from ._classify import DEFAULT_AUTH_CODES, default_link_classifier, parse_retry_after
from ._clock import Clock, SystemClock
from ._decision import Action, Classification, Decision, ErrorClass
from ._errors import (
    AuthError,
    BudgetExhausted,
    BufferFullError,
    CircuitOpenError,
    ConfigError,
    DeadlineExceeded,
    DeliveryError,
    GaveUpError,
    LinkClosedError,
    LinkError,
    MessageTypeError,
    NoHealthyProxy,
    NotConnectedError,
    OutboxFull,
    RecoveryError,
    StoreError,
    StoreUnavailable,
    StoreTypeError,
    LeaseLost,
    SupervisorError,
    TetherError,
    WaitTooLong,
)
from ._state import State
from .recovery import CircuitBreaker, ClassPolicy, ProxyPool, RecoveryPolicy, RetryBudget, classify, retry
from .link import Admission, AppPing, JsonAck, Link, LinkStats, connect
from .store import Cursor, Cursors, Inbox, Outbox
from . import events

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # time and backoff
    "Clock",
    "SystemClock",
    "Backoff",
    # classification
    "Action",
    "Classification",
    "Decision",
    "ErrorClass",
    "DEFAULT_AUTH_CODES",
    "default_link_classifier",
    "parse_retry_after",
    # link
    "connect",
    "Link",
    "LinkStats",
    "Admission",
    "AppPing",
    "JsonAck",
    # recovery engine
    "RecoveryPolicy",
    "ClassPolicy",
    "retry",
    "classify",
    "CircuitBreaker",
    "RetryBudget",
    "ProxyPool",
    # state and events
    "State",
    "events",
    # errors
    "TetherError",
    "ConfigError",
    "LinkError",
    "AuthError",
    "GaveUpError",
    "LinkClosedError",
    "BufferFullError",
    "NotConnectedError",
    "MessageTypeError",
    "RecoveryError",
    "BudgetExhausted",
    "DeadlineExceeded",
    "WaitTooLong",
    "CircuitOpenError",
    "NoHealthyProxy",
    "StoreError",
    "OutboxFull",
    "StoreUnavailable",
    "StoreTypeError",
    "LeaseLost",
    "SupervisorError",
    # durable delivery
    "Outbox",
    "Inbox",
    "Cursors",
    "Cursor",
]

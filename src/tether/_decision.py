"""The shared vocabulary of failure handling: what went wrong (ErrorClass), what to do (Action),
and the pure answers that classifiers return (Classification, Decision).

One classification serves the Link and the recovery engine alike.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ErrorClass", "Action", "Classification", "Decision"]


class ErrorClass(enum.Enum):
    """What kind of failure happened."""

    FLOOD_WAIT = "flood_wait"  # the server named a wait (Telegram FloodWait, close 1013, 503 + Retry-After)
    RATE_LIMIT = "rate_limit"  # HTTP 429 / RPC 429, with or without a named wait
    PROXY = "proxy"  # the proxy in front of us failed
    CONNECTION = "connection"  # network: reset, refused, timeout, abnormal close, half-open peer
    AUTH = "auth"  # credentials refused: never retried blindly
    TEMPORARY = "temporary"  # server-side transient: 5xx, close 1011/1012/1001
    PERMANENT = "permanent"  # a request that can never succeed: 400, 404, bad payload
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


class Action(enum.Enum):
    """What to do about a failure."""

    WAIT = "wait"  # sleep at least the server-mandated time, then try again
    RETRY = "retry"  # try the same call again after a backoff delay
    RECONNECT = "reconnect"  # rebuild the connection, then try again
    ROTATE_PROXY = "rotate_proxy"  # switch to the next proxy, then try again
    RELOGIN = "relogin"  # obtain fresh credentials, then try again
    FAIL = "fail"  # stop; raise to the caller

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Classification:
    """What a failure is.

    Attributes:
        error_class: the kind of failure.
        reason: a short human text ("close 1013 try again later", "HTTP 503").
        retry_after: seconds the server told us to wait, exactly as it said (None: it said nothing).
        code: the close code or HTTP status, where there was one.
        reset_backoff: the server restarts on purpose (close 1001/1012): start backoff from its first step.
    """

    error_class: ErrorClass
    reason: str
    retry_after: float | None = None
    code: int | None = None
    reset_backoff: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do about a failure.

    Attributes:
        action: the action to take.
        delay: the minimum wait in seconds before the next attempt (a server-mandated wait; the
            caller's jitter may only add to it).
        reason: a short human text for logs and events.
        error_class: the classification behind the decision.
        code: the close code or HTTP status, where there was one.
        reset_backoff: start the backoff from its first step (planned server restart).
    """

    action: Action
    delay: float = 0.0
    reason: str = ""
    error_class: ErrorClass = ErrorClass.UNKNOWN
    code: int | None = None
    reset_backoff: bool = False

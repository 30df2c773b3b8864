"""tether's exception tree. Every error tether raises derives from :class:`TetherError`.

Third-party exceptions (``OSError``, ``websockets`` errors, ``sqlite3`` errors, ...) are
translated where they enter tether and kept as ``__cause__``::

    TetherError
    ├── ConfigError            invalid option or configuration value (also a ValueError)
    ├── InvalidTransition      internal: a state change the transition table forbids
    ├── LinkError              something about a Link
    │   ├── AuthError          the peer refused our credentials: never retried
    │   ├── GaveUpError        max_attempts reached, or the classifier said FAIL
    │   ├── LinkClosedError    the link was closed on purpose; no more I/O
    │   ├── BufferFullError    the send buffer is at buffer_limit (on_overflow="raise")
    │   ├── NotConnectedError  wait_connected() timed out
    │   └── MessageTypeError   send() got something other than str or bytes (also a TypeError)
    ├── RecoveryError          the recovery engine stopped retrying
    │   ├── BudgetExhausted    a class's attempts, or the retry budget, are used up
    │   ├── DeadlineExceeded   the next sleep would cross the call's deadline
    │   ├── WaitTooLong        the server asked us to wait longer than max_wait
    │   ├── CircuitOpenError   the breaker for this key is open
    │   └── NoHealthyProxy     the proxy pool has nothing usable
    ├── StoreError             durable storage
    │   ├── OutboxFull         the outbox is at its size limit
    │   ├── StoreUnavailable   the database file is corrupt, locked or unreadable
    │   ├── StoreTypeError     a store call got an argument of the wrong type (also a TypeError)
    │   └── LeaseLost          a fenced write by a node that no longer owns the session
    ├── SupervisorError        the process supervisor
    └── DeliveryError          an alert notification could not be delivered (webhook, email, Telegram)
"""

from __future__ import annotations

__all__ = [
    "TetherError",
    "ConfigError",
    "InvalidTransition",
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
    "DeliveryError",
]


class TetherError(Exception):
    """Root of every exception tether raises."""


class ConfigError(TetherError, ValueError):
    """An option or configuration value is invalid; the message names it and says what to use."""


class InvalidTransition(TetherError, RuntimeError):
    """Internal error: a component tried a state change its transition table forbids."""


class LinkError(TetherError):
    """Base for errors of a :class:`tether.Link`."""


class AuthError(LinkError):
    """The peer rejected our credentials (HTTP 401/403, close 1008 or an auth close code).

    Retrying cannot help, so a link that sees this makes zero further attempts.
    """

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class GaveUpError(LinkError):
    """The link stopped reconnecting: ``max_attempts`` reached or the classifier said FAIL."""

    def __init__(self, message: str, *, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts


class LinkClosedError(LinkError):
    """The link was closed on purpose; it sends and receives nothing more."""


class BufferFullError(LinkError):
    """The send buffer holds ``buffer_limit`` messages; raise the limit or use on_overflow="drop_oldest"."""


class NotConnectedError(LinkError, TimeoutError):
    """``wait_connected(timeout=...)`` expired before the link was connected."""


class MessageTypeError(LinkError, TypeError):
    """``send()`` takes ``str`` (a text frame) or ``bytes`` (a binary frame); the message names what it got."""


class RecoveryError(TetherError):
    """The recovery engine stopped retrying a call."""

    def __init__(self, message: str, *, error_class: object | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.attempts = attempts


class BudgetExhausted(RecoveryError):
    """A class's attempt budget or the shared retry budget is used up."""


class DeadlineExceeded(RecoveryError, TimeoutError):
    """The next wait would cross the call's overall deadline."""


class WaitTooLong(RecoveryError):
    """The server asked for a wait longer than ``max_wait``; ``wait`` holds the seconds asked."""

    def __init__(self, message: str, *, wait: float, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.wait = wait


class CircuitOpenError(RecoveryError):
    """The circuit breaker for this key is open; calls fail fast until it half-opens."""


class NoHealthyProxy(RecoveryError):
    """Every proxy in the pool is failed or cooling down."""


class StoreError(TetherError):
    """Durable storage failed."""


class OutboxFull(StoreError):
    """The outbox holds its configured maximum of messages."""


class StoreUnavailable(StoreError):
    """The database file is corrupt, locked or unreadable; the message names the file."""


class StoreTypeError(StoreError, TypeError):
    """A store call got an argument of the wrong type (payload not str/bytes, id not str, ...)."""


class LeaseLost(StoreError):
    """This node no longer owns the session (its lease expired or another node holds it now).

    Raised by a fenced store write: the write was refused, nothing changed. Stop acting on the session.
    """


class SupervisorError(TetherError):
    """The process supervisor could not do what was asked."""


class DeliveryError(TetherError):
    """An alert notification could not be delivered; ``action`` names the channel that failed."""

    def __init__(self, message: str, *, action: str = "") -> None:
        super().__init__(message)
        self.action = action


class ServiceError(TetherError):
    """Base for errors of the gateway service (``tether.service``)."""


class SessionNotFound(ServiceError, KeyError):
    """No session has the given id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "session not found"


class SessionConflict(ServiceError):
    """The request conflicts with the session: the id exists, or it is logged out."""


class ServiceClosing(ServiceError):
    """The service is shutting down and accepts no new work; retry against the restarted service."""


class MessageRejected(ServiceError):
    """The upstream refused one outbound message for good (e.g. the chat blocked the bot); the
    session is fine. The delivery loop dead-letters that message with the reason, at once."""

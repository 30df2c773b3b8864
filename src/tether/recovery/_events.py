"""Frozen records and events of the recovery engine, and its statistics.

Observers (metrics, logs, alerts) subscribe with ``policy.subscribe(callback)`` and ``match`` on these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from .._decision import Action, ErrorClass

__all__ = [
    "RecoveryRecord",
    "RecoveryEvent",
    "RecoveryScheduled",
    "CallbackFailed",
    "Recovered",
    "RecoveryFailed",
    "CircuitStateChanged",
    "ClassStats",
    "ActionStats",
    "RecoveryStats",
]


@dataclass(frozen=True, slots=True)
class RecoveryRecord:
    """One entry of ``policy.history``: a failure and what the engine did about it.

    Attributes:
        time: wall-clock epoch seconds (from the policy's clock).
        key: the call's key (breaker and history key).
        error_class: the classification of the failure.
        action: what the engine did (a failed callback is recorded as a second record with RETRY).
        delay: seconds slept before the next attempt (0 when the call stopped).
        message: the failure's description (never contains proxy passwords).
        attempt: the attempt number that failed (1 = first call).
    """

    time: float
    key: str
    error_class: ErrorClass
    action: Action
    delay: float
    message: str
    attempt: int


@dataclass(frozen=True, slots=True)
class RecoveryScheduled:
    """A failed attempt will be followed by another after ``delay`` seconds and ``action``."""

    key: str
    attempt: int
    error_class: ErrorClass
    action: Action
    delay: float
    message: str
    server_wait: float | None = None


@dataclass(frozen=True, slots=True)
class CallbackFailed:
    """The reconnect / rotate_proxy / relogin callback raised; the engine falls back to ``action`` (RETRY)."""

    key: str
    failed_action: Action
    error_class: ErrorClass
    message: str
    action: Action = Action.RETRY


@dataclass(frozen=True, slots=True)
class Recovered:
    """A call succeeded after ``failures`` failed attempts (0: it never failed)."""

    key: str
    attempts: int
    failures: int
    elapsed: float


@dataclass(frozen=True, slots=True)
class RecoveryFailed:
    """A call stopped for good; ``error`` is what the caller receives."""

    key: str
    attempts: int
    error_class: ErrorClass
    reason: str
    error: BaseException = field(compare=False)
    action: Action = Action.FAIL


@dataclass(frozen=True, slots=True)
class CircuitStateChanged:
    """The circuit breaker for ``key`` moved from ``old`` to ``new`` (values of BreakerState)."""

    key: str
    old: str
    new: str


RecoveryEvent = RecoveryScheduled | CallbackFailed | Recovered | RecoveryFailed | CircuitStateChanged


@dataclass(frozen=True, slots=True)
class ClassStats:
    """Per error class: failures seen, calls that recovered after seeing it, calls it ended."""

    seen: int = 0
    recovered: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class ActionStats:
    """Per action: times taken, and whether the next attempt succeeded or failed after it."""

    taken: int = 0
    succeeded: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class RecoveryStats:
    """A snapshot of ``policy.stats()``.

    Attributes:
        calls: calls started.
        successes: calls that returned a value (first try or after recovery).
        failures: calls that raised to the caller.
        recovered: calls that succeeded after at least one failure.
        recovery_rate: recovered / (recovered + failures); 1.0 when nothing ever failed.
        by_class: ClassStats per ErrorClass.
        by_action: ActionStats per Action.
    """

    calls: int
    successes: int
    failures: int
    recovered: int
    recovery_rate: float
    by_class: Mapping[ErrorClass, ClassStats]
    by_action: Mapping[Action, ActionStats]


class _StatsBook:
    """Mutable counters behind ``policy.stats()``."""

    __slots__ = ("calls", "successes", "failures", "recovered", "classes", "actions")

    def __init__(self) -> None:
        self.calls = self.successes = self.failures = self.recovered = 0
        self.classes: dict[ErrorClass, list[int]] = {c: [0, 0, 0] for c in ErrorClass}
        self.actions: dict[Action, list[int]] = {a: [0, 0, 0] for a in Action}

    def snapshot(self) -> RecoveryStats:
        ended = self.recovered + self.failures
        return RecoveryStats(
            calls=self.calls,
            successes=self.successes,
            failures=self.failures,
            recovered=self.recovered,
            recovery_rate=(self.recovered / ended) if ended else 1.0,
            by_class=MappingProxyType({c: ClassStats(*v) for c, v in self.classes.items()}),
            by_action=MappingProxyType({a: ActionStats(*v) for a, v in self.actions.items()}),
        )

"""Frozen events the supervisor emits to its subscribers (logs, alerts, metrics, tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._core import ExitInfo, StopCause

__all__ = [
    "SupervisorEvent",
    "ChildStarted",
    "ChildExited",
    "StopRequested",
    "RestartScheduled",
    "BudgetExhausted",
    "SupervisorStopping",
]


@dataclass(frozen=True, slots=True)
class SupervisorEvent:
    """Base of every supervisor event; ``at`` is wall-clock time, excluded from equality."""

    at: float = field(default=0.0, compare=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class ChildStarted(SupervisorEvent):
    """Instance ``instance`` started as process ``pid`` (its own process group)."""

    instance: int
    pid: int


@dataclass(frozen=True, slots=True)
class ChildExited(SupervisorEvent):
    """Instance ``instance`` ended after ``uptime`` seconds; ``exit`` says how."""

    instance: int
    pid: int
    exit: ExitInfo
    uptime: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class StopRequested(SupervisorEvent):
    """The supervisor is stopping instance ``instance`` on purpose (memory, health, cron, shutdown)."""

    instance: int
    cause: StopCause
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RestartScheduled(SupervisorEvent):
    """Instance ``instance`` starts again in ``delay`` seconds (quick-restart ``attempt``)."""

    instance: int
    delay: float
    attempt: int


@dataclass(frozen=True, slots=True)
class BudgetExhausted(SupervisorEvent):
    """``restarts`` restarts within ``window`` s: an alert. The instance cools down ``cooldown`` s
    (or the supervisor exits with ``exit_code`` when configured so)."""

    instance: int
    restarts: int
    window: float
    cooldown: float | None
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class SupervisorStopping(SupervisorEvent):
    """The supervisor got a stop request (SIGTERM/SIGINT or ``stop()``) and is stopping children."""

    reason: str

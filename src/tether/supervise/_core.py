"""The supervisor's decisions, with no I/O: what an exit means and what to do next.

Everything here takes the current time as an argument and returns a value; the asyncio shell
(``_supervisor.py``) performs the result (sleep, spawn, signal). Tests drive it on a FakeClock.

Why not PM2's or supervisord's rules:

* PM2 counts a restart as "unstable" only if the child died before ``min_uptime`` and gives up
  after ``max_restarts`` of those; a child that crashes just after ``min_uptime`` loops forever with
  no delay growth. Here every restart counts in a sliding-window budget, and the backoff resets
  only after ``min_uptime`` of stable running.
* supervisord's FATAL gives up for good, silently. Here an exhausted budget means a cool-down and
  an alert, then another try (or, if asked, an exit with a distinct code so an outer supervisor
  notices).
"""

from __future__ import annotations

import enum
import random
import signal
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone

from .._backoff import Backoff
from .._errors import ConfigError, InvalidTransition
from ._config import RestartPolicy

__all__ = [
    "ChildState",
    "CHILD_TRANSITIONS",
    "check_child_transition",
    "ExitKind",
    "ExitInfo",
    "StopCause",
    "classify_exit",
    "Restart",
    "CoolDown",
    "ExitSupervisor",
    "StayDown",
    "Decision",
    "RestartCore",
    "MemoryWatch",
    "MemoryVerdict",
    "HealthWatch",
    "CronSchedule",
]


class ChildState(enum.Enum):
    """Where one supervised instance is (shown by ``tether supervise status``)."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"   # the stop signal was sent; waiting for exit, then SIGKILL
    BACKOFF = "backoff"     # waiting out a restart delay
    COOLDOWN = "cooldown"   # the restart budget is used up: waiting out the cool-down
    DOWN = "down"           # the restart policy let it stay down
    STOPPED = "stopped"     # the supervisor stopped it and is exiting

    def __str__(self) -> str:
        return self.value


_C = ChildState
_AFTER_EXIT = frozenset({_C.BACKOFF, _C.COOLDOWN, _C.DOWN, _C.STOPPED})

#: Every allowed transition of an instance, in one place; anything else raises InvalidTransition.
CHILD_TRANSITIONS: dict[ChildState, frozenset[ChildState]] = {
    # A spawn that fails (program missing) is an exit too.
    _C.STARTING: frozenset({_C.RUNNING}) | _AFTER_EXIT,
    _C.RUNNING: frozenset({_C.STOPPING}) | _AFTER_EXIT,
    _C.STOPPING: _AFTER_EXIT,
    _C.BACKOFF: frozenset({_C.STARTING, _C.STOPPED}),
    _C.COOLDOWN: frozenset({_C.STARTING, _C.STOPPED}),
    _C.DOWN: frozenset(),
    _C.STOPPED: frozenset(),
}


def check_child_transition(old: ChildState, new: ChildState) -> None:
    """Raise :class:`~tether._errors.InvalidTransition` (an internal bug) unless ``old -> new`` is in :data:`CHILD_TRANSITIONS`."""
    if new not in CHILD_TRANSITIONS[old]:
        raise InvalidTransition(f"illegal supervised-child transition {old.name} -> {new.name}")


class StopCause(enum.Enum):
    """Why the supervisor itself stopped a child."""

    MEMORY_SOFT = "memory_soft"
    MEMORY_HARD = "memory_hard"
    HEALTH = "health"
    SCHEDULED = "scheduled"
    SHUTDOWN = "shutdown"


class ExitKind(enum.Enum):
    """How a child ended, as shown in the log and by ``tether supervise status``."""

    CLEAN = "clean exit"
    CRASH = "crash"
    SIGNAL = "killed by signal"
    MEMORY = "memory limit"
    HEALTH = "health failure"
    SCHEDULED = "scheduled restart"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """One exit, classified. ``code`` is the exit status, ``signal`` the killing signal's number."""

    kind: ExitKind
    code: int | None = None
    signal: int | None = None
    detail: str = ""

    @property
    def failed(self) -> bool:
        """Whether ``on-failure`` restarts after this (everything but a clean exit)."""
        return self.kind is not ExitKind.CLEAN

    def describe(self) -> str:
        """A one-line human description, e.g. ``crash (exit code 3)``."""
        parts = [self.kind.value]
        if self.code is not None and self.kind is not ExitKind.CLEAN:
            parts.append(f"exit code {self.code}")
        if self.signal is not None:
            try:
                parts.append(signal.Signals(self.signal).name)
            except ValueError:
                parts.append(f"signal {self.signal}")
        if self.detail:
            parts.append(self.detail)
        head, *rest = parts
        return f"{head} ({', '.join(rest)})" if rest else head

    def as_dict(self) -> dict[str, object]:
        return {"reason": self.kind.value, "code": self.code, "signal": self.signal,
                "detail": self.detail, "text": self.describe()}


_CAUSE_KIND = {
    StopCause.MEMORY_SOFT: ExitKind.MEMORY,
    StopCause.MEMORY_HARD: ExitKind.MEMORY,
    StopCause.HEALTH: ExitKind.HEALTH,
    StopCause.SCHEDULED: ExitKind.SCHEDULED,
    StopCause.SHUTDOWN: ExitKind.STOPPED,
}


def classify_exit(returncode: int, cause: StopCause | None = None, detail: str = "") -> ExitInfo:
    """Classify a child's exit from its return code (negative: killed by that signal).

    If the supervisor stopped the child on purpose (``cause``), that cause names the exit whatever
    the code: a memory restart is a memory restart even when the child exits 0 after draining.
    """
    code = returncode if returncode >= 0 else None
    sig = -returncode if returncode < 0 else None
    if cause is not None:
        return ExitInfo(_CAUSE_KIND[cause], code, sig, detail)
    if sig is not None:
        return ExitInfo(ExitKind.SIGNAL, None, sig, detail)
    if returncode == 0:
        return ExitInfo(ExitKind.CLEAN, 0, None, detail)
    return ExitInfo(ExitKind.CRASH, returncode, None, detail)


# --------------------------------------------------------------------------- decisions
@dataclass(frozen=True, slots=True)
class Restart:
    """Start the child again after ``delay`` seconds; ``attempt`` counts quick restarts (from 1)."""

    delay: float
    attempt: int


@dataclass(frozen=True, slots=True)
class CoolDown:
    """The restart budget is used up: alert, wait ``delay`` seconds, then start again."""

    delay: float
    restarts: int
    window: float


@dataclass(frozen=True, slots=True)
class ExitSupervisor:
    """The budget is used up and ``on_exhausted="exit"``: stop everything and exit with ``code``."""

    code: int
    restarts: int
    window: float


@dataclass(frozen=True, slots=True)
class StayDown:
    """The restart policy says this exit is final (``never``, or a clean exit with ``on-failure``)."""

    reason: str


Decision = Restart | CoolDown | ExitSupervisor | StayDown


class RestartCore:
    """Restart policy, backoff with stable-run reset, and the sliding-window budget, for one child.

    Call :meth:`started` when the child starts and :meth:`exited` when it ends; follow the returned
    :data:`Decision`. Times are monotonic seconds.

    Args:
        policy: ``"always"``, ``"on-failure"`` or ``"never"``.
        backoff: the delay sequence; reset after ``min_uptime`` of stable running.
        min_uptime: seconds of running that count as stable.
        max_restarts: restarts allowed in any ``window`` seconds before the cool-down.
        window: the budget's sliding window, seconds.
        cooldown: the wait once the budget is used up.
        on_exhausted: ``"cooldown"`` or ``"exit"``.
        exhausted_exit_code: the supervisor's exit code for ``"exit"``.
    """

    def __init__(
        self,
        *,
        policy: RestartPolicy = "always",
        backoff: Backoff | None = None,
        min_uptime: float = 30.0,
        max_restarts: int = 10,
        window: float = 60.0,
        cooldown: float = 300.0,
        on_exhausted: str = "cooldown",
        exhausted_exit_code: int = 75,
    ) -> None:
        if policy not in ("always", "on-failure", "never"):
            raise ConfigError(f"restart: expected always, on-failure or never, got {policy!r}")
        self.policy = policy
        self.backoff = backoff or Backoff(base=1.0, factor=2.0, cap=60.0, jitter="equal")
        self.min_uptime = min_uptime
        self.max_restarts = max_restarts
        self.window = window
        self.cooldown = cooldown
        self.on_exhausted = on_exhausted
        self.exhausted_exit_code = exhausted_exit_code
        self._restarts_at: deque[float] = deque()
        self._started_at: float | None = None
        self.restarts = 0
        """Total restarts since the supervisor started (shown by ``status``)."""

    def started(self, now: float) -> None:
        """The child is running from ``now``."""
        self._started_at = now

    def uptime(self, now: float) -> float:
        """Seconds the current child has been running (0 when none is)."""
        return 0.0 if self._started_at is None else max(0.0, now - self._started_at)

    def restarts_in_window(self, now: float) -> int:
        """Restarts counted in the sliding window that ends at ``now``."""
        self._expire(now)
        return len(self._restarts_at)

    def _expire(self, now: float) -> None:
        while self._restarts_at and self._restarts_at[0] <= now - self.window:
            self._restarts_at.popleft()

    def exited(self, now: float, info: ExitInfo) -> Decision:
        """The child ended at ``now`` as ``info`` says: decide what happens next."""
        uptime = self.uptime(now)
        self._started_at = None
        if info.kind is ExitKind.STOPPED:
            return StayDown("stopped by the supervisor")
        supervisor_restart = info.kind in (ExitKind.MEMORY, ExitKind.HEALTH, ExitKind.SCHEDULED)
        if not supervisor_restart:
            if self.policy == "never":
                return StayDown(f"restart policy 'never' after {info.describe()}")
            if self.policy == "on-failure" and not info.failed:
                return StayDown("restart policy 'on-failure' after a clean exit")
        if uptime >= self.min_uptime:
            # Stable long enough: this failure is news, not part of a loop.
            self.backoff.reset()
        if info.kind is ExitKind.SCHEDULED:
            # Planned: no delay and no budget, the old process already drained.
            self.restarts += 1
            return Restart(0.0, 0)
        self._expire(now)
        if len(self._restarts_at) >= self.max_restarts:
            count = len(self._restarts_at)
            if self.on_exhausted == "exit":
                return ExitSupervisor(self.exhausted_exit_code, count, self.window)
            # A fresh window after the pause; the backoff keeps its growth so the next burst is slow.
            self._restarts_at.clear()
            self._restarts_at.append(now + self.cooldown)
            self.restarts += 1
            return CoolDown(self.cooldown, count, self.window)
        try:
            delay = next(self.backoff)
        except StopIteration:  # a capped Backoff: keep waiting the cap, never give up
            delay = self.backoff.cap
        self._restarts_at.append(now + delay)
        self.restarts += 1
        return Restart(delay, self.backoff.attempt)


# --------------------------------------------------------------------------- watches
class MemoryVerdict(enum.Enum):
    OK = "ok"
    SOFT = "soft"
    HARD = "hard"


class MemoryWatch:
    """Soft limit: restart gracefully after ``samples`` consecutive readings above it.
    Hard limit: restart at once on one reading above it. (PM2 acts on one sample every 30 s.)"""

    def __init__(self, *, soft: int | None, hard: int | None, samples: int = 3) -> None:
        self.soft = soft
        self.hard = hard
        self.samples = samples
        self.over = 0
        """Consecutive samples above the soft limit."""

    def reset(self) -> None:
        self.over = 0

    def observe(self, rss: int) -> MemoryVerdict:
        """Feed one RSS reading of the whole process tree, in bytes."""
        if self.hard is not None and rss > self.hard:
            return MemoryVerdict.HARD
        if self.soft is not None and rss > self.soft:
            self.over += 1
            if self.over >= self.samples:
                return MemoryVerdict.SOFT
        else:
            self.over = 0
        return MemoryVerdict.OK


class HealthWatch:
    """Consecutive probe failures after a start-up grace period (failures during grace don't count)."""

    def __init__(self, *, failures: int = 3, grace: float = 30.0) -> None:
        self.failures = failures
        self.grace = grace
        self.consecutive = 0
        self._started_at = 0.0

    def started(self, now: float) -> None:
        self._started_at = now
        self.consecutive = 0

    def observe(self, now: float, ok: bool) -> bool:
        """Feed one probe result; True means "restart the child now"."""
        if ok:
            self.consecutive = 0
            return False
        if now - self._started_at < self.grace:
            return False
        self.consecutive += 1
        return self.consecutive >= self.failures


class CronSchedule:
    """When the next scheduled restart is due: a cron expression (local time) plus a random splay.

    The splay spreads the restarts of many hosts or instances so they don't all drop at 03:00:00.
    """

    def __init__(self, expr: str, *, splay: float = 0.0, rng: random.Random | None = None) -> None:
        from croniter import croniter

        if not croniter.is_valid(expr):
            raise ConfigError(f"cron: expected a cron expression like '0 3 * * *', got {expr!r}")
        self.expr = expr
        self.splay = splay
        self._rng = rng or random.Random()

    def next_after(self, wall: float) -> float:
        """The wall-clock timestamp of the next restart strictly after ``wall``, splay included."""
        from croniter import croniter

        base = datetime.fromtimestamp(wall, tz=timezone.utc).astimezone()
        due = croniter(self.expr, base).get_next(float)
        return due + (self._rng.uniform(0.0, self.splay) if self.splay > 0 else 0.0)

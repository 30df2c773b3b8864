"""The sans-I/O heart of RecoveryPolicy: per-class treatment and the pure "what next" decision.

:func:`plan` takes a classification, how many retries that class already used in this call, the
time, the deadline and a backoff delay, and answers :class:`Step` (do this, sleep that long) or
:class:`Stop` (why the call ends). It never sleeps and reads no clock, so every rule is tested
directly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Mapping

from .._backoff import Backoff, Jitter
from .._decision import Action, Classification, ErrorClass
from .._errors import ConfigError

__all__ = ["ClassPolicy", "DEFAULT_CLASS_POLICIES", "RELOGIN_AUTH", "Step", "Stop", "plan", "CallState"]


@dataclass(frozen=True, slots=True)
class ClassPolicy:
    """How one error class is treated.

    Attributes:
        action: what to do (FAIL: stop at once and re-raise the error).
        max_retries: how many times this class may be recovered within one call.
        delay: the first backoff step in seconds (for WAIT: used only when the server named no wait).
        factor: growth per retry (2.0: base·2ⁿ as in the seed; 1.0: a fixed delay).
    """

    action: Action
    max_retries: int = 0
    delay: float = 1.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.action, Action):
            raise ConfigError(f"ClassPolicy action must be a tether.Action, got {self.action!r}")
        if self.max_retries < 0:
            raise ConfigError(f"ClassPolicy max_retries must be >= 0, got {self.max_retries!r}")
        if self.delay < 0:
            raise ConfigError(f"ClassPolicy delay must be >= 0 seconds, got {self.delay!r}")
        if self.factor < 1:
            raise ConfigError(f"ClassPolicy factor must be >= 1, got {self.factor!r}")


#: The seed's defaults (seed 001, "最大重试次数" and the recovery actions), one line per class.
DEFAULT_CLASS_POLICIES: Mapping[ErrorClass, ClassPolicy] = MappingProxyType(
    {
        ErrorClass.FLOOD_WAIT: ClassPolicy(Action.WAIT, max_retries=5, delay=1.0),
        ErrorClass.RATE_LIMIT: ClassPolicy(Action.WAIT, max_retries=5, delay=1.0),
        ErrorClass.PROXY: ClassPolicy(Action.ROTATE_PROXY, max_retries=3, delay=5.0, factor=1.0),
        ErrorClass.CONNECTION: ClassPolicy(Action.RECONNECT, max_retries=3, delay=2.0),
        ErrorClass.AUTH: ClassPolicy(Action.FAIL),
        ErrorClass.TEMPORARY: ClassPolicy(Action.RETRY, max_retries=3, delay=1.0),
        ErrorClass.PERMANENT: ClassPolicy(Action.FAIL),
        ErrorClass.UNKNOWN: ClassPolicy(Action.RETRY, max_retries=2, delay=1.0),
    }
)

#: AUTH when a relogin callback is registered: log in again once, 2 s later (seed: RELOGIN).
RELOGIN_AUTH = ClassPolicy(Action.RELOGIN, max_retries=1, delay=2.0, factor=1.0)


@dataclass(frozen=True, slots=True)
class Step:
    """Continue: sleep ``delay`` seconds, perform ``action``, call again.

    ``server_wait`` is the wait the server mandated (``delay`` is never less than it).
    """

    action: Action
    delay: float
    server_wait: float | None
    retry: int


StopKind = Literal["fail", "budget", "deadline", "wait_too_long"]


@dataclass(frozen=True, slots=True)
class Stop:
    """End the call: ``fail`` re-raises the error; the others raise the matching RecoveryError."""

    kind: StopKind
    message: str
    wait: float | None = None


def plan(
    c: Classification,
    cp: ClassPolicy,
    *,
    used: int,
    now: float,
    deadline_at: float | None,
    max_wait: float,
    backoff: float,
    wait_extra: float = 0.0,
) -> Step | Stop:
    """Decide what follows a failed attempt.

    Args:
        c: the failure's classification.
        cp: the treatment of its class.
        used: retries this class already used in this call.
        now: the current monotonic time.
        deadline_at: the monotonic time no sleep may cross (None: no deadline).
        max_wait: the longest server-mandated wait honoured; longer waits stop at once.
        backoff: the jittered backoff delay for this retry (from the call's backoff for the class).
        wait_extra: jitter added on top of a server-mandated wait (only ever adds).
    """
    name = c.error_class.value
    if cp.action is Action.FAIL:
        return Stop("fail", f"{name}: not retried ({c.reason})")
    if used >= cp.max_retries:
        return Stop("budget", f"{name}: all {cp.max_retries} retries used ({c.reason})")
    server = c.retry_after
    if server is not None and server > max_wait:
        return Stop("wait_too_long", f"{name}: server asked to wait {server:g}s, more than max_wait {max_wait:g}s ({c.reason})", server)
    if server is not None:
        delay = max(server + max(0.0, wait_extra), backoff if cp.action is not Action.WAIT else 0.0)
    else:
        delay = max(0.0, backoff)
    if deadline_at is not None:
        remaining = deadline_at - now
        if server is not None and server > remaining:
            return Stop("deadline", f"{name}: server asked to wait {server:g}s, only {max(0.0, remaining):.3g}s left before the deadline", server)
        if delay > remaining:
            if server is not None:
                delay = remaining  # trim our own jitter, never the server's wait
            else:
                return Stop("deadline", f"{name}: next wait {delay:.3g}s would cross the deadline ({max(0.0, remaining):.3g}s left)")
    return Step(cp.action, delay, server, used + 1)


class CallState:
    """What one call has used so far: retries and a backoff iterator per class."""

    __slots__ = ("used", "_backoffs", "_jitter", "_cap", "_rng", "attempts", "failures")

    def __init__(self, *, jitter: Jitter, cap: float, rng: random.Random) -> None:
        self.used: dict[ErrorClass, int] = {}
        self._backoffs: dict[ErrorClass, Backoff] = {}
        self._jitter: Jitter = jitter
        self._cap = cap
        self._rng = rng
        self.attempts = 0
        self.failures = 0

    def next_backoff(self, error_class: ErrorClass, cp: ClassPolicy) -> float:
        """The next jittered delay of this class's backoff (base·factorⁿ, capped)."""
        if cp.delay <= 0:
            return 0.0
        b = self._backoffs.get(error_class)
        if b is None:
            b = Backoff(base=cp.delay, factor=cp.factor, cap=max(self._cap, cp.delay), jitter=self._jitter, rng=self._rng)
            self._backoffs[error_class] = b
        return next(b)

    def count(self, error_class: ErrorClass) -> int:
        return self.used.get(error_class, 0)

    def use(self, error_class: ErrorClass) -> None:
        self.used[error_class] = self.used.get(error_class, 0) + 1

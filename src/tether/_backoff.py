"""Backoff: a pure iterator of delays. It never sleeps; the caller does."""

from __future__ import annotations

import random
from typing import Iterator, Literal

from ._errors import ConfigError

__all__ = ["Backoff", "Jitter"]

Jitter = Literal["full", "equal", "decorrelated", "none"]
_JITTERS = ("full", "equal", "decorrelated", "none")


class Backoff(Iterator[float]):
    """Exponential backoff with jitter, as an iterator of delays in seconds.

    The n-th delay (n from 0) is built on ``min(cap, base * factor**n)``:

    * ``"full"``: uniform in [0, step] (AWS "full jitter": fewest calls in a storm; the default);
    * ``"equal"``: step/2 + uniform in [0, step/2];
    * ``"decorrelated"``: min(cap, uniform(base, previous * 3));
    * ``"none"``: the step itself; ``Backoff(base=3, cap=60, jitter="none")`` gives 3, 6, 12, 24, 48, 60, 60...

    Every delay lies in [0, cap]. After ``max_attempts`` delays the iterator stops
    (``StopIteration``); ``None`` means it never stops. ``reset()`` starts again from the first step.

    Args:
        base: first step in seconds (> 0).
        factor: growth per attempt (>= 1).
        cap: the largest delay (>= base).
        jitter: one of ``"full"``, ``"equal"``, ``"decorrelated"``, ``"none"``.
        max_attempts: how many delays to give before stopping, or None for unlimited.
        rng: a ``random.Random`` for reproducible tests.
    """

    __slots__ = ("base", "factor", "cap", "jitter", "max_attempts", "_rng", "_attempt", "_prev")

    def __init__(
        self,
        *,
        base: float = 1.0,
        factor: float = 2.0,
        cap: float = 60.0,
        jitter: Jitter = "full",
        max_attempts: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not base > 0:
            raise ConfigError(f"Backoff base must be > 0 seconds, got {base!r}")
        if not factor >= 1:
            raise ConfigError(f"Backoff factor must be >= 1, got {factor!r}")
        if not cap >= base:
            raise ConfigError(f"Backoff cap must be >= base ({base}), got {cap!r}")
        if jitter not in _JITTERS:
            raise ConfigError(f"Backoff jitter must be one of {', '.join(_JITTERS)}; got {jitter!r}")
        if max_attempts is not None and max_attempts < 0:
            raise ConfigError(f"Backoff max_attempts must be >= 0 or None, got {max_attempts!r}")
        self.base = float(base)
        self.factor = float(factor)
        self.cap = float(cap)
        self.jitter: Jitter = jitter
        self.max_attempts = max_attempts
        self._rng = rng or random.Random()
        self._attempt = 0
        self._prev = self.base

    @property
    def attempt(self) -> int:
        """How many delays have been given since the last reset."""
        return self._attempt

    def step(self, n: int) -> float:
        """The un-jittered step for attempt ``n`` (0-based), capped, without overflow."""
        if self.factor == 1.0:
            return min(self.cap, self.base)
        value = self.base
        for _ in range(n):
            value *= self.factor
            if value >= self.cap:
                return self.cap
        return min(self.cap, value)

    def __iter__(self) -> "Backoff":
        return self

    def __next__(self) -> float:
        if self.max_attempts is not None and self._attempt >= self.max_attempts:
            raise StopIteration
        step = self.step(self._attempt)
        self._attempt += 1
        if self.jitter == "none":
            delay = step
        elif self.jitter == "full":
            delay = self._rng.uniform(0.0, step)
        elif self.jitter == "equal":
            delay = step / 2 + self._rng.uniform(0.0, step / 2)
        else:  # decorrelated
            delay = min(self.cap, self._rng.uniform(self.base, max(self.base, self._prev * 3)))
            self._prev = delay
        return min(self.cap, max(0.0, delay))

    def reset(self) -> None:
        """Start again from the first step."""
        self._attempt = 0
        self._prev = self.base

    def clone(self) -> "Backoff":
        """A fresh Backoff with the same settings (each Link owns its own copy)."""
        return Backoff(
            base=self.base,
            factor=self.factor,
            cap=self.cap,
            jitter=self.jitter,
            max_attempts=self.max_attempts,
            rng=random.Random(self._rng.random()),
        )

    def __repr__(self) -> str:
        return (
            f"Backoff(base={self.base}, factor={self.factor}, cap={self.cap}, "
            f"jitter={self.jitter!r}, max_attempts={self.max_attempts})"
        )

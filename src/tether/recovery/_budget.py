"""RetryBudget: retries may be at most a ratio of recent calls, plus a small floor (Finagle, Envoy).

During an outage every call fails; without a budget each of them retries N times and the upstream
sees (N+1)× its normal load just as it tries to come back. With a budget the extra load is bounded
by ``ratio`` of the calls in the last ``ttl`` seconds, plus ``min_per_second · ttl`` so that a
quiet bot making one call a minute can still retry it.

Sans-I/O: methods take ``now`` (monotonic seconds). Counters live in ten buckets per ``ttl``, so
memory stays constant whatever the call rate.
"""

from __future__ import annotations

from collections import deque

from .._errors import ConfigError

__all__ = ["RetryBudget"]

_BUCKETS = 10


class RetryBudget:
    """A shared allowance of retries.

    Args:
        ratio: retries allowed per call made in the window (0.2 = 20 %, Envoy's and Finagle's figure).
        min_per_second: retries always allowed per second of the window, whatever the traffic.
        ttl: the window in seconds.
    """

    def __init__(self, *, ratio: float = 0.2, min_per_second: float = 1.0, ttl: float = 10.0) -> None:
        if ratio < 0 or min_per_second < 0:
            raise ConfigError("RetryBudget ratio and min_per_second must be >= 0")
        if ttl <= 0:
            raise ConfigError(f"RetryBudget ttl must be > 0 seconds, got {ttl!r}")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.ttl = ttl
        self._width = ttl / _BUCKETS
        self._buckets: deque[list[float]] = deque()  # [bucket index, calls, retries]

    def _bucket(self, now: float) -> list[float]:
        index = int(now // self._width)
        while self._buckets and self._buckets[0][0] <= index - _BUCKETS:
            self._buckets.popleft()
        if not self._buckets or self._buckets[-1][0] != index:
            self._buckets.append([index, 0, 0])
        return self._buckets[-1]

    def _totals(self, now: float) -> tuple[float, float]:
        self._bucket(now)
        return sum(b[1] for b in self._buckets), sum(b[2] for b in self._buckets)

    @property
    def floor(self) -> float:
        """Retries always allowed in one window."""
        return self.min_per_second * self.ttl

    def record_call(self, now: float) -> None:
        """A call started (a deposit)."""
        self._bucket(now)[1] += 1

    def try_retry(self, now: float) -> bool:
        """Withdraw one retry if the budget allows it; False means: do not retry."""
        calls, retries = self._totals(now)
        if retries + 1 > self.floor + self.ratio * calls:
            return False
        self._bucket(now)[2] += 1
        return True

    def available(self, now: float) -> float:
        """Retries left in the current window."""
        calls, retries = self._totals(now)
        return max(0.0, self.floor + self.ratio * calls - retries)

    def usage(self, now: float) -> tuple[int, int]:
        """(calls, retries) in the current window."""
        calls, retries = self._totals(now)
        return int(calls), int(retries)

    def __repr__(self) -> str:
        return f"RetryBudget(ratio={self.ratio}, min_per_second={self.min_per_second}, ttl={self.ttl})"

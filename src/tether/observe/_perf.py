"""PerformanceMonitor: periodic samples plus link events, turned into a report for a time window.

* recovery times come from ``Connected.downtime`` (exact, not sampled);
* uptime per session comes from up/down transitions (exact), fed by link events and, when a
  ``sessions`` source is given, by what each sample sees;
* error rates come from the ErrorTracker;
* process numbers (RSS, CPU, event-loop lag) are sampled every ``interval`` seconds on the clock.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import psutil

from .. import _events as ev
from .._clock import SYSTEM_CLOCK, Clock
from .._errors import ConfigError
from .._state import State
from ._tracker import ErrorTracker

__all__ = ["PerformanceMonitor", "percentile"]

_log = logging.getLogger("tether.performance")


def percentile(values: list[float], p: float) -> float | None:
    """The ``p``-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] if lo == hi else xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# Retention is by time (a week), but a flapping fleet makes events faster than a week expires them
# (1,000 sessions dropping once a minute: 10 million tuples). These caps bound the memory whatever
# the churn; a report over a window older than what is kept counts what is kept.
MAX_EVENTS = 100_000  # recoveries, and disconnects (each deque)
MAX_CHANGES = 10_000  # up/down changes per session


@dataclass(frozen=True, slots=True)
class _ProcSample:
    at: float
    rss: float
    cpu: float
    lag: float


class _Timeline:
    """Up/down changes of one session, as (wall time, up) pairs."""

    __slots__ = ("changes", "closed_at")

    def __init__(self) -> None:
        self.changes: list[tuple[float, bool]] = []
        self.closed_at: float | None = None

    def set(self, at: float, up: bool) -> None:
        if not self.changes or self.changes[-1][1] != up:
            self.changes.append((at, up))
            if len(self.changes) > MAX_CHANGES:
                del self.changes[: MAX_CHANGES // 10]  # in chunks: not one O(n) shift per change
        self.closed_at = None

    def uptime(self, start: float, end: float) -> tuple[float, float]:
        """(seconds up, seconds observed) within [start, end)."""
        if not self.changes:
            return 0.0, 0.0
        up = observed = 0.0
        stop = min(end, self.closed_at) if self.closed_at is not None else end
        for i, (t, is_up) in enumerate(self.changes):
            t_next = self.changes[i + 1][0] if i + 1 < len(self.changes) else stop
            a, b = max(t, start), min(t_next, stop)
            if b > a:
                observed += b - a
                if is_up:
                    up += b - a
        return up, observed

    def prune(self, before: float) -> None:
        # keep the last change before the cut: it says what state the window starts in
        i = bisect.bisect_left([t for t, _ in self.changes], before)
        if i > 1:
            del self.changes[: i - 1]


class PerformanceMonitor:
    """Samples on an interval and reports recovery percentiles, uptime % and error rates.

    Args:
        clock: sampling runs on ``clock.sleep``; timestamps are ``clock.wall()``.
        interval: seconds between samples.
        retention: seconds of data kept (the longest report window).
        tracker: error counts for the report.
        sessions: optional ``() -> {session: State | bool}`` read at every sample.
        lag: optional ``() -> float`` event-loop lag source (e.g. ``metrics.lag_sampler.lag``).
        process: sample this process with psutil.
    """

    def __init__(self, *, clock: Clock | None = None, interval: float = 10.0, retention: float = 7 * 86400.0,
                 tracker: ErrorTracker | None = None, sessions: Callable[[], Mapping[str, Any]] | None = None,
                 lag: Callable[[], float] | None = None, process: bool = True) -> None:
        if not interval > 0:
            raise ConfigError(f"PerformanceMonitor interval must be > 0 seconds, got {interval!r}")
        self.clock = clock or SYSTEM_CLOCK
        self.interval = float(interval)
        self.retention = float(retention)
        self.tracker = tracker
        self.sessions_source = sessions
        self.lag_source = lag
        self._proc = psutil.Process(os.getpid()) if process else None
        if self._proc is not None:
            self._proc.cpu_percent(None)
        self._recoveries: collections.deque[tuple[float, str, float]] = collections.deque(maxlen=MAX_EVENTS)
        self._timelines: dict[str, _Timeline] = {}
        self._disconnects: collections.deque[tuple[float, str]] = collections.deque(maxlen=MAX_EVENTS)
        self._samples: collections.deque[_ProcSample] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    # ---- inputs ------------------------------------------------------------------------------
    def observe_link_event(self, session: str, event: ev.Event) -> None:
        """Feed one link event of ``session``."""
        now = self.clock.wall()
        tl = self._timelines.setdefault(session, _Timeline())
        match event:
            case ev.Connected(downtime=d):
                tl.set(now, True)
                if d > 0:
                    self._recoveries.append((now, session, float(d)))
            case ev.Disconnected():
                tl.set(now, False)
                self._disconnects.append((now, session))
            case ev.Connecting() | ev.BackingOff() | ev.GaveUp():
                tl.set(now, False)
            case ev.Closed():
                tl.set(now, False)
                tl.closed_at = now  # on purpose: time after this is not downtime
            case _:
                pass

    def attach(self, session: str, source: Any) -> Callable[[], None]:
        """Subscribe to a Link (``source.subscribe(cb)``); returns unsubscribe."""
        return source.subscribe(lambda event: self.observe_link_event(session, event))

    def sample(self) -> None:
        """Take one sample now (the loop calls this every ``interval``)."""
        now = self.clock.wall()
        if self.sessions_source is not None:
            for session, state in dict(self.sessions_source()).items():
                up = state == State.CONNECTED if isinstance(state, State) else bool(state)
                if isinstance(state, State) and state == State.CLOSED:
                    continue
                self._timelines.setdefault(session, _Timeline()).set(now, up)
        rss = cpu = 0.0
        if self._proc is not None:
            try:
                rss, cpu = float(self._proc.memory_info().rss), float(self._proc.cpu_percent(None))
            except psutil.Error:
                pass
        lag = float(self.lag_source()) if self.lag_source is not None else 0.0
        self._samples.append(_ProcSample(now, rss, cpu, lag))
        self._prune(now)
        up = sum(1 for tl in self._timelines.values() if tl.changes and tl.changes[-1][1] and tl.closed_at is None)
        _log.info("sample rss=%.1fMiB cpu=%.1f%% loop_lag=%.3fs sessions_up=%d/%d",
                  rss / 1048576, cpu, lag, up, len(self._timelines))

    def _prune(self, now: float) -> None:
        cut = now - self.retention
        for dq in (self._recoveries, self._disconnects):
            while dq and dq[0][0] < cut:
                dq.popleft()
        while self._samples and self._samples[0].at < cut:
            self._samples.popleft()
        for tl in self._timelines.values():
            tl.prune(cut)
        # a session closed for longer than the retention (deleted, or stopped for good) is forgotten
        gone = [sid for sid, tl in self._timelines.items() if tl.closed_at is not None and tl.closed_at < cut]
        for sid in gone:
            del self._timelines[sid]

    # ---- report ------------------------------------------------------------------------------
    def report(self, window: float = 3600.0) -> dict[str, Any]:
        """A JSON-ready report of the last ``window`` seconds.

        Keys: ``window_s``, ``from``, ``to``, ``recovery`` (count, p50, p90, p99, max seconds),
        ``sessions`` (per session: uptime_pct, up_s, observed_s, disconnects, recoveries),
        ``errors`` (total, per_minute, by_severity, by_class), ``process`` (rss/cpu/lag stats), ``samples``.
        """
        if not window > 0:
            raise ConfigError(f"report window must be > 0 seconds, got {window!r}")
        end = self.clock.wall()
        start = end - window
        rec = [d for t, _, d in self._recoveries if t >= start]
        sessions: dict[str, Any] = {}
        for sid, tl in sorted(self._timelines.items()):
            up, observed = tl.uptime(start, end)
            if observed <= 0:
                continue
            sessions[sid] = {
                "uptime_pct": round(100.0 * up / observed, 3), "up_s": round(up, 3), "observed_s": round(observed, 3),
                "disconnects": sum(1 for t, s in self._disconnects if s == sid and t >= start),
                "recoveries": sum(1 for t, s, _ in self._recoveries if s == sid and t >= start),
            }
        errors: dict[str, Any] = {"total": 0, "per_minute": 0.0, "by_severity": {}, "by_class": {}}
        if self.tracker is not None:
            st = self.tracker.stats(since=start, until=end + 1e-6)
            errors = {
                "total": st["total"], "per_minute": round(st["total"] / (window / 60.0), 4),
                "by_severity": st["by_severity"], "by_class": {k: v["count"] for k, v in st["by_class"].items()},
            }
        samples = [s for s in self._samples if s.at >= start]

        def stats(xs: list[float]) -> dict[str, float | None]:
            return {"avg": (sum(xs) / len(xs)) if xs else None, "p99": percentile(xs, 99), "max": max(xs, default=None)}

        return {
            "window_s": window, "from": start, "to": end,
            "recovery": {"count": len(rec), "p50": percentile(rec, 50), "p90": percentile(rec, 90),
                         "p99": percentile(rec, 99), "max": max(rec, default=None)},
            "sessions": sessions,
            "errors": errors,
            "process": {"rss_bytes": stats([s.rss for s in samples]), "cpu_percent": stats([s.cpu for s in samples]),
                        "loop_lag_s": stats([s.lag for s in samples])},
            "samples": len(samples),
        }

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start sampling every ``interval`` seconds (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tether-perf")

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 - a failed sample must not stop sampling
                _log.error("performance sample failed: %s: %s", type(exc).__name__, exc)
            await self.clock.sleep(self.interval)

    async def close(self) -> None:
        """Stop sampling."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

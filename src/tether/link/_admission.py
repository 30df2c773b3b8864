"""Admission: one token bucket shared by many links, so a fleet never stampedes a restarted server."""

from __future__ import annotations

from .._clock import SYSTEM_CLOCK, Clock
from .._errors import ConfigError

__all__ = ["Admission"]


class Admission:
    """Caps connection attempts per second across every link that shares it.

    A token bucket of ``burst`` tokens refilled at ``rate`` per second, implemented as a virtual
    schedule (GCRA): each :meth:`acquire` reserves the next free slot and sleeps until it, so callers
    are served first come, first served, and there is no background task to own or leak. In any
    window of ``w`` seconds at most ``burst + rate * w`` acquisitions complete, measured on the times
    they actually complete: when the event loop stalls (a busy process with thousands of links), the
    sleepers that fell due during the stall wake together, and a second check on the real time lets
    at most ``burst`` of them through at once and spaces the rest, so the upstream never sees the
    stall as a spike.

    Example::

        gate = tether.Admission(rate=50, burst=10)
        links = [tether.connect(url, admission=gate) for url in urls]

    Args:
        rate: attempts per second allowed on average (> 0).
        burst: attempts allowed back to back after a quiet period (>= 1).
        clock: the clock to sleep on (defaults to the system clock).
    """

    __slots__ = ("rate", "burst", "_clock", "_interval", "_tat", "_rtat", "_tolerance", "granted")

    def __init__(self, *, rate: float, burst: int = 1, clock: Clock | None = None) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ConfigError(f"Admission rate must be attempts per second > 0 (e.g. rate=50), got {rate!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigError(f"Admission burst must be an int >= 1 (e.g. burst=10), got {burst!r}")
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock or SYSTEM_CLOCK
        self._interval = 1.0 / self.rate
        self._tat: float | None = None  # theoretical arrival time of the next conforming attempt
        self._rtat: float | None = None  # the same, over the times attempts were actually released
        # How early a release may be against _rtat: burst - 1 intervals, plus a tenth of one so a
        # timer that fires a millisecond late does not cost the next caller a second sleep.
        self._tolerance = (burst - 0.9) * self._interval
        self.granted = 0

    def _reserve(self) -> float:
        now = self._clock.monotonic()
        tat = now if self._tat is None else max(self._tat, now)
        start = max(now, tat - (self.burst - 1) * self._interval)
        # start <= tat always; the slot is taken by this caller and the bucket's debt grows by one interval.
        self._tat = tat + self._interval
        return start

    async def acquire(self) -> None:
        """Wait for this caller's turn (FIFO). Cancelling gives the slot back when it was the last one."""
        start = self._reserve()
        mine = self._tat
        delay = start - self._clock.monotonic()
        try:
            if delay > 0:
                await self._clock.sleep(delay)
            await self._release()
        except BaseException:
            if self._tat == mine and self._tat is not None:
                self._tat -= self._interval
            raise
        self.granted += 1

    async def _release(self) -> None:
        # GCRA again, on the time this caller really runs. Without a stall it passes at once (the
        # reservation already spaced the callers); after one it holds back everyone past the burst.
        while True:
            now = self._clock.monotonic()
            rtat = now if self._rtat is None else max(self._rtat, now)
            wait = rtat - self._tolerance - now
            if wait <= 0:
                self._rtat = rtat + self._interval
                return
            await self._clock.sleep(wait)

    def __repr__(self) -> str:
        return f"Admission(rate={self.rate}, burst={self.burst})"

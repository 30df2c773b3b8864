"""FakeClock: time that moves only when a test says so."""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["FakeClock"]


class FakeClock:
    """A :class:`tether.Clock` for tests. ``sleep()`` waits until ``advance()`` moves time past it.

    ``await clock.advance(5)`` moves time forward in steps, one due sleeper at a time in deadline
    order (ties by the order they went to sleep), and lets the event loop run what each wake-up
    causes before the next step, so chains of sleeps resolve deterministically.

    Args:
        start: the initial monotonic time.
        wall_offset: ``wall()`` is ``wall_offset + monotonic()`` (defaults to 2026-01-01 UTC).
    """

    def __init__(self, start: float = 0.0, *, wall_offset: float = 1_767_225_600.0) -> None:
        self._now = float(start)
        self._wall_offset = wall_offset
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._wall_offset + self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many sleeps are pending (cancelled ones excluded)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def next_deadline(self) -> float | None:
        """The monotonic time of the earliest pending sleep, or None."""
        self._prune()
        return self._sleepers[0][0] if self._sleepers else None

    def _prune(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    async def settle(self, rounds: int = 50) -> None:
        """Let the event loop run ready callbacks (woken tasks) without moving time."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper that falls due, in order."""
        if seconds < 0:
            raise ValueError("FakeClock cannot go backwards")
        target = self._now + seconds
        await self.settle()
        while True:
            self._prune()
            if not self._sleepers or self._sleepers[0][0] > target:
                break
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not fut.done():
                fut.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()

    async def stall(self, seconds: float) -> None:
        """Jump ``seconds`` ahead the way a blocked event loop does: nothing wakes during the jump, then
        every sleeper that fell due wakes at once, late, at the end of it (in deadline order)."""
        if seconds < 0:
            raise ValueError("FakeClock cannot go backwards")
        self._now += seconds
        await self.advance(0)

    async def run_until_idle(self, limit: float = 3600.0) -> None:
        """Advance to each next deadline until nothing sleeps or ``limit`` seconds have passed."""
        end = self._now + limit
        while (d := self.next_deadline()) is not None and d <= end:
            await self.advance(d - self._now)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now}, sleepers={self.sleepers})"

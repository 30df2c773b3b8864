"""Fixtures for recovery tests: a recording clock (sleeps advance time at once) and a FakeClock driver."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable

import pytest

from tether.testing import FakeClock


class RecordingClock:
    """A Clock whose sleep() records the delay and moves time forward at once: no real waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_800_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@pytest.fixture
def rclock() -> RecordingClock:
    return RecordingClock()


async def drive(clock: FakeClock, aw: Awaitable[Any], *, steps: int = 10_000) -> Any:
    """Run ``aw`` to completion on a FakeClock, advancing to each next deadline (bounded)."""
    task = asyncio.ensure_future(aw)
    for _ in range(steps):
        await clock.settle(5)
        if task.done():
            return task.result()
        deadline = clock.next_deadline()
        if deadline is None:
            await asyncio.sleep(0.001)  # e.g. a worker thread (SQLite) is finishing
            continue
        await clock.advance(max(0.0, deadline - clock.monotonic()))
    task.cancel()
    raise AssertionError("did not finish within the step bound")


@pytest.fixture
def driver():
    return drive

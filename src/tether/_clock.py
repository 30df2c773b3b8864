"""Injected time. Every tether component takes a :class:`Clock`; tests pass a FakeClock."""

from __future__ import annotations

import asyncio
import datetime as _dt
import time
from typing import Awaitable, Protocol, TypeVar, runtime_checkable

from ._errors import ConfigError

__all__ = ["Clock", "SystemClock", "wait_for"]

T = TypeVar("T")


@runtime_checkable
class Clock(Protocol):
    """Source of time: ``monotonic()`` for intervals, ``wall()`` for timestamps, ``sleep()`` to wait."""

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``asyncio.sleep``."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


async def wait_for(aw: Awaitable[T], timeout: float | None, clock: Clock) -> T:
    """Like :func:`asyncio.wait_for`, but the timeout runs on ``clock``.

    On the real clock this is ``asyncio.wait_for``; on a FakeClock the timeout fires when the test
    advances time past it. Raises :class:`TimeoutError` on expiry and cancels ``aw``.
    """
    if timeout is None:
        return await aw
    if isinstance(clock, SystemClock):
        return await asyncio.wait_for(aw, timeout)
    task = asyncio.ensure_future(aw)
    timer = asyncio.ensure_future(clock.sleep(timeout))
    try:
        done, _ = await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        timer.cancel()
        await asyncio.gather(task, timer, return_exceptions=True)
        raise
    if task in done:
        timer.cancel()
        await asyncio.gather(timer, return_exceptions=True)
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise TimeoutError(f"timed out after {timeout}s")


SYSTEM_CLOCK = SystemClock()


def parse_time(field: str, value: str | None) -> float | None:
    """A wall-clock time given as epoch seconds or ISO 8601 (naive means UTC), as epoch seconds.

    Raises:
        ConfigError: naming ``field`` when ``value`` is neither.
    """
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{field} must be epoch seconds or an ISO 8601 time (2026-01-01T00:00:00Z); got {value!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()

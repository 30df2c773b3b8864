"""Admission: a shared token bucket for connection attempts, on the FakeClock."""

from __future__ import annotations

import asyncio

import pytest

from tether import ConfigError
from tether.link import Admission
from tether.testing import FakeClock


async def test_burst_then_one_per_interval() -> None:
    """burst tokens are granted at once, then one every 1/rate seconds."""
    clock = FakeClock()
    gate = Admission(rate=10, burst=3, clock=clock)
    times: list[float] = []

    async def take() -> None:
        await gate.acquire()
        times.append(clock.monotonic())

    tasks = [asyncio.create_task(take()) for _ in range(6)]
    await clock.advance(1.0)
    await asyncio.gather(*tasks)
    assert times == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2, 0.3])


async def test_fifo_order() -> None:
    """Waiters are served in the order they asked."""
    clock = FakeClock()
    gate = Admission(rate=5, burst=1, clock=clock)
    order: list[int] = []

    async def take(i: int) -> None:
        await gate.acquire()
        order.append(i)

    tasks = []
    for i in range(8):
        tasks.append(asyncio.create_task(take(i)))
        await clock.settle(2)
    await clock.advance(5.0)
    await asyncio.gather(*tasks)
    assert order == list(range(8))


async def test_rate_never_exceeded_in_any_window() -> None:
    """200 acquirers: every 1 s window holds at most burst + rate grants."""
    clock = FakeClock()
    gate = Admission(rate=20, burst=5, clock=clock)
    times: list[float] = []

    async def take() -> None:
        await gate.acquire()
        times.append(clock.monotonic())

    tasks = [asyncio.create_task(take()) for _ in range(200)]
    await clock.advance(20.0)
    await asyncio.gather(*tasks)
    for t in times:
        assert sum(1 for u in times if t <= u < t + 1.0) <= 5 + 20
    assert max(times) == pytest.approx((200 - 5) / 20)


async def test_a_stalled_event_loop_does_not_turn_into_a_spike() -> None:
    """Sleepers that fell due during a 1 s stall wake together; at most burst of them go at once."""
    clock = FakeClock()
    gate = Admission(rate=20, burst=5, clock=clock)
    times: list[float] = []

    async def take() -> None:
        await gate.acquire()
        times.append(clock.monotonic())

    tasks = [asyncio.create_task(take()) for _ in range(200)]
    await clock.advance(2.0)
    await clock.stall(1.0)
    await clock.advance(20.0)
    await asyncio.gather(*tasks)
    at_stall_end = sum(1 for t in times if t == pytest.approx(3.0))
    assert at_stall_end == 5  # the burst, not the ~20 slots that fell due during the stall
    for t in times:
        assert sum(1 for u in times if t <= u < t + 1.0) <= 5 + 20
    assert len(times) == 200


async def test_cancelled_waiter_returns_its_slot() -> None:
    """Cancelling the last waiter gives its slot back: the next caller is not delayed by it."""
    clock = FakeClock()
    gate = Admission(rate=1, burst=1, clock=clock)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await clock.settle()
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    nxt = asyncio.create_task(gate.acquire())
    await clock.advance(1.0)
    assert nxt.done() and gate.granted == 2


@pytest.mark.parametrize(("kw", "name"), [({"rate": 0}, "rate"), ({"rate": 1, "burst": 0}, "burst"), ({"rate": "5"}, "rate")])
def test_bad_values_raise_config_error(kw: dict, name: str) -> None:
    """Admission rejects a non-positive rate or burst with ConfigError naming it."""
    with pytest.raises(ConfigError, match=name):
        Admission(**kw)

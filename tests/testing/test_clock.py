"""FakeClock wakes sleepers in deadline order, only when advanced."""

import asyncio

import pytest

from tether._clock import wait_for
from tether.testing import FakeClock


async def test_sleepers_wake_in_order_only_when_due():
    """advance() wakes due sleepers in deadline order and no others."""
    clock = FakeClock()
    woke = []

    async def sleeper(name, d):
        await clock.sleep(d)
        woke.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(sleeper(n, d)) for n, d in [("c", 3), ("a", 1), ("b", 2)]]
    await clock.advance(0)
    await clock.advance(2.5)
    assert woke == [("a", 1), ("b", 2)]
    await clock.advance(1)
    assert woke[-1] == ("c", 3)
    await asyncio.gather(*tasks)


async def test_chained_sleeps_resolve_within_one_advance():
    """A sleeper that sleeps again is woken again within the same advance."""
    clock = FakeClock()
    ticks = []

    async def loop():
        for _ in range(5):
            await clock.sleep(1)
            ticks.append(clock.monotonic())

    t = asyncio.create_task(loop())
    await clock.advance(5)
    assert ticks == [1, 2, 3, 4, 5]
    await t


async def test_wait_for_times_out_on_fake_clock():
    """wait_for's timeout runs on the injected clock."""
    clock = FakeClock()
    never = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(wait_for(never, 10, clock))
    await clock.advance(9)
    assert not task.done()
    await clock.advance(1)
    with pytest.raises(TimeoutError):
        await task


def test_wall_moves_with_monotonic():
    """wall() is an offset of monotonic()."""
    clock = FakeClock(start=5)
    assert clock.wall() - clock.monotonic() == pytest.approx(1_767_225_600.0)


async def test_stall_wakes_every_overdue_sleeper_together_at_its_end():
    """stall() is a blocked event loop: sleepers due during it all wake at its end, in deadline order."""
    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, s: float) -> None:
        await clock.sleep(s)
        woke.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 0.6), ("a", 0.2), ("c", 5.0))]
    await clock.settle()
    await clock.stall(1.0)
    assert woke == [("a", 1.0), ("b", 1.0)]
    await clock.advance(4.0)
    assert woke[-1] == ("c", 5.0)
    await asyncio.gather(*tasks)
    with pytest.raises(ValueError):
        await clock.stall(-1)

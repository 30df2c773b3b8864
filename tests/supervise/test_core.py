"""The supervisor's sans-I/O decisions, driven on a FakeClock: no processes, no real sleeps."""

from __future__ import annotations

import random
import signal

import pytest

from tether import Backoff, ConfigError
from tether.supervise import (
    CoolDown,
    CronSchedule,
    ExitKind,
    ExitSupervisor,
    HealthWatch,
    MemoryVerdict,
    MemoryWatch,
    Restart,
    RestartCore,
    StayDown,
    StopCause,
    classify_exit,
)
from tether.testing import FakeClock

CRASH = classify_exit(1)


def make_core(**kw) -> RestartCore:
    kw.setdefault("backoff", Backoff(base=1.0, factor=2.0, cap=8.0, jitter="none"))
    kw.setdefault("min_uptime", 10.0)
    kw.setdefault("max_restarts", 5)
    kw.setdefault("window", 60.0)
    kw.setdefault("cooldown", 300.0)
    return RestartCore(**kw)


async def run_child(core: RestartCore, clock: FakeClock, uptime: float, info=CRASH):
    """Start a child now, let it run ``uptime`` seconds of fake time, return the core's decision."""
    core.started(clock.monotonic())
    await clock.advance(uptime)
    return core.exited(clock.monotonic(), info)


async def follow(decision, clock: FakeClock) -> None:
    """Sleep as the decision says (on the fake clock)."""
    if isinstance(decision, (Restart, CoolDown)):
        await clock.advance(decision.delay)


async def test_crash_loop_backs_off_then_cools_down_instead_of_giving_up():
    """A child that exits at once gets growing delays, then a cool-down at the budget, then tries again."""
    clock = FakeClock()
    core = make_core()
    decisions = []
    for _ in range(7):
        d = await run_child(core, clock, 0.1)
        decisions.append(d)
        await follow(d, clock)
    assert [d.delay for d in decisions[:5]] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert decisions[5] == CoolDown(300.0, 5, 60.0)
    # After the cool-down the supervisor tries again (supervisord would be FATAL by now).
    assert isinstance(decisions[6], Restart)
    assert core.restarts == 7


async def test_budget_window_slides():
    """Restarts older than the window no longer count: crashes spread out never exhaust the budget."""
    clock = FakeClock()
    core = make_core(max_restarts=3, window=10.0, min_uptime=1000.0,
                     backoff=Backoff(base=1.0, factor=1.0, cap=1.0, jitter="none"))
    for _ in range(20):
        d = await run_child(core, clock, 3.0)  # one restart every 4 s: at most 3 in any 10 s
        assert isinstance(d, Restart), d
        await follow(d, clock)
    assert core.restarts_in_window(clock.monotonic()) <= 3


async def test_budget_counts_fast_restarts_within_window():
    """Four restarts within the window with max_restarts=3: the fourth exit cools down."""
    clock = FakeClock()
    core = make_core(max_restarts=3, window=10.0, backoff=Backoff(base=0.5, factor=1.0, cap=0.5, jitter="none"))
    kinds = []
    for _ in range(4):
        d = await run_child(core, clock, 0.5)
        kinds.append(type(d).__name__)
        await follow(d, clock)
    assert kinds == ["Restart", "Restart", "Restart", "CoolDown"]


async def test_exhausted_budget_can_exit_with_distinct_code():
    """on_exhausted="exit" returns ExitSupervisor with the configured code instead of a cool-down."""
    clock = FakeClock()
    core = make_core(max_restarts=2, on_exhausted="exit", exhausted_exit_code=75)
    results = []
    for _ in range(3):
        d = await run_child(core, clock, 0.0)
        results.append(d)
        await follow(d, clock)
    assert results[-1] == ExitSupervisor(75, 2, 60.0)


async def test_backoff_resets_only_after_min_uptime():
    """A run shorter than min_uptime keeps the delay growing; a run past it starts the backoff over."""
    clock = FakeClock()
    core = make_core(min_uptime=10.0, max_restarts=100)
    delays = []
    for uptime in (0.1, 0.1, 9.9, 0.1, 10.0, 0.1):
        d = await run_child(core, clock, uptime)
        delays.append(d.delay)
        await follow(d, clock)
    # 9.9 s is not stable (PM2 would already count it as a good run at its min_uptime of 1 s).
    assert delays == [1.0, 2.0, 4.0, 8.0, 1.0, 2.0]


async def test_restart_policies():
    """never and on-failure stay down on the child's own exit; supervisor-made restarts still restart."""
    clock = FakeClock()
    assert isinstance(await run_child(make_core(policy="never"), clock, 1, CRASH), StayDown)
    assert isinstance(await run_child(make_core(policy="on-failure"), clock, 1, classify_exit(0)), StayDown)
    assert isinstance(await run_child(make_core(policy="on-failure"), clock, 1, CRASH), Restart)
    assert isinstance(await run_child(make_core(policy="always"), clock, 1, classify_exit(0)), Restart)
    mem = classify_exit(0, StopCause.MEMORY_SOFT)
    assert isinstance(await run_child(make_core(policy="never"), clock, 1, mem), Restart)
    stopped = classify_exit(-15, StopCause.SHUTDOWN)
    assert isinstance(await run_child(make_core(), clock, 1, stopped), StayDown)


async def test_scheduled_restart_is_immediate_and_outside_the_budget():
    """A cron restart restarts at once and does not use the crash budget."""
    clock = FakeClock()
    core = make_core(max_restarts=1)
    for _ in range(5):
        d = await run_child(core, clock, 1.0, classify_exit(0, StopCause.SCHEDULED))
        assert d == Restart(0.0, 0)
    assert core.restarts_in_window(clock.monotonic()) == 0


def test_classify_exit():
    """Exit codes and signals map to clean / crash / signal; a supervisor cause wins over the code."""
    assert classify_exit(0).kind is ExitKind.CLEAN
    crash = classify_exit(3)
    assert (crash.kind, crash.code) == (ExitKind.CRASH, 3)
    assert crash.describe() == "crash (exit code 3)"
    killed = classify_exit(-signal.SIGKILL)
    assert (killed.kind, killed.signal) == (ExitKind.SIGNAL, signal.SIGKILL)
    assert "SIGKILL" in killed.describe()
    assert classify_exit(0, StopCause.MEMORY_SOFT).kind is ExitKind.MEMORY
    assert classify_exit(-9, StopCause.MEMORY_HARD).kind is ExitKind.MEMORY
    assert classify_exit(1, StopCause.HEALTH).kind is ExitKind.HEALTH
    assert classify_exit(0, StopCause.SCHEDULED).kind is ExitKind.SCHEDULED


def test_memory_soft_needs_k_consecutive_samples_hard_is_immediate():
    """Soft limit: K samples in a row (a dip resets the count); hard limit: one sample."""
    watch = MemoryWatch(soft=100, hard=200, samples=3)
    assert [watch.observe(x) for x in (150, 150, 90, 150, 150)] == [MemoryVerdict.OK] * 5
    assert watch.observe(150) is MemoryVerdict.SOFT
    watch.reset()
    assert watch.observe(250) is MemoryVerdict.HARD


async def test_health_failures_count_only_after_grace():
    """Failures during the start-up grace are ignored; then `failures` in a row restart; a success resets."""
    clock = FakeClock()
    watch = HealthWatch(failures=3, grace=5.0)
    watch.started(clock.monotonic())
    results = []
    for ok in (False, False, False):  # during grace
        await clock.advance(1.0)
        results.append(watch.observe(clock.monotonic(), ok))
    await clock.advance(3.0)
    for ok in (False, False, True, False, False, False):
        await clock.advance(1.0)
        results.append(watch.observe(clock.monotonic(), ok))
    assert results == [False] * 8 + [True]


def test_cron_schedule_next_and_splay():
    """The next restart follows the cron expression, plus a splay within [0, splay]."""
    base = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    plain = CronSchedule("*/5 * * * *")
    assert plain.next_after(base + 1) == base + 300
    splayed = CronSchedule("*/5 * * * *", splay=60.0, rng=random.Random(1))
    for _ in range(20):
        assert base + 300 <= splayed.next_after(base + 1) <= base + 360
    with pytest.raises(ConfigError, match="cron"):
        CronSchedule("every night")


def test_child_transition_table():
    """Legal lifecycle steps pass; anything outside the table raises InvalidTransition."""
    from tether._errors import InvalidTransition
    from tether.supervise import ChildState as C
    from tether.supervise._core import check_child_transition

    for old, new in [(C.STARTING, C.RUNNING), (C.RUNNING, C.STOPPING), (C.STOPPING, C.BACKOFF),
                     (C.BACKOFF, C.STARTING), (C.RUNNING, C.COOLDOWN), (C.COOLDOWN, C.STOPPED),
                     (C.STARTING, C.BACKOFF), (C.RUNNING, C.DOWN)]:
        check_child_transition(old, new)
    for old, new in [(C.BACKOFF, C.RUNNING), (C.DOWN, C.STARTING), (C.STOPPED, C.STARTING),
                     (C.STOPPING, C.RUNNING)]:
        with pytest.raises(InvalidTransition, match=f"{old.name} -> {new.name}"):
            check_child_transition(old, new)

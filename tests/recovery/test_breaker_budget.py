"""Circuit breaker transitions, the retry budget, and a 100 % failure storm that stays within the budget."""

from __future__ import annotations

import asyncio

import pytest

from tether import BudgetExhausted, CircuitOpenError, ConfigError
from tether._errors import InvalidTransition
from tether.recovery import BREAKER_TRANSITIONS, BreakerState, CircuitBreaker, CircuitStateChanged, RecoveryPolicy, RetryBudget
from tether.testing import FakeClock

C, O, H = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def run_script(breaker: CircuitBreaker, script):
    """Apply (time, op) steps; op is 'ok', 'fail', 'allow', 'deny' or 'release'; return states after each."""
    states = []
    for now, op in script:
        if op in ("allow", "deny"):
            assert breaker.allow("k", now) is (op == "allow"), (now, op)
        elif op == "release":
            breaker.release("k", now)
        else:
            breaker.record("k", op == "ok", now)
        states.append(breaker.state("k", now))
    return states


@pytest.mark.parametrize(
    "script, expected",
    [
        # below min_calls nothing opens, even at 100 % failures
        ([(0, "fail"), (1, "fail"), (2, "fail")], [C, C, C]),
        # 2 of 4 failed (50 %) with min_calls=4: open
        ([(0, "ok"), (1, "fail"), (2, "ok"), (3, "fail")], [C, C, C, O]),
        # 1 of 4 failed (25 %): stays closed
        ([(0, "ok"), (1, "ok"), (2, "ok"), (3, "fail")], [C, C, C, C]),
        # old outcomes leave the 10 s window: failures at 0, 1 do not count at 20
        ([(0, "fail"), (1, "fail"), (20, "ok"), (21, "ok"), (22, "ok"), (23, "fail")], [C, C, C, C, C, C]),
        # open: calls denied until open_for (5 s) elapsed, then half-open
        ([(0, "fail")] * 4 + [(1, "deny"), (4.9, "deny"), (5, "allow")], [C, C, C, O, O, O, H]),
        # half-open: 2 probes admitted, a third denied; two successes close it
        ([(0, "fail")] * 4 + [(5, "allow"), (5, "allow"), (5, "deny"), (6, "ok"), (6, "ok")], [C, C, C, O, H, H, H, H, C]),
        # half-open: a failed probe opens again for another open_for
        ([(0, "fail")] * 4 + [(5, "allow"), (6, "fail"), (10, "deny"), (11, "allow")], [C, C, C, O, H, O, O, H]),
        # half-open: a neutral outcome (e.g. HTTP 400) frees its probe slot
        ([(0, "fail")] * 4 + [(5, "allow"), (5, "allow"), (5, "release"), (5, "allow")], [C, C, C, O, H, H, H, H]),
    ],
)
def test_breaker_transitions(script, expected):
    """Closed/open/half-open transitions follow the failure-rate window, open duration and probe count."""
    b = CircuitBreaker(failure_rate=0.5, window=10, min_calls=4, open_for=5, probes=2)
    assert run_script(b, script) == expected


def test_breaker_table_is_complete_and_enforced():
    """Every transition lives in one table; a trigger the table lacks raises InvalidTransition."""
    assert BREAKER_TRANSITIONS[(C, "failure_rate_reached")] is O
    assert BREAKER_TRANSITIONS[(O, "open_elapsed")] is H
    assert BREAKER_TRANSITIONS[(H, "probe_failed")] is O
    assert BREAKER_TRANSITIONS[(H, "probes_succeeded")] is C
    b = CircuitBreaker()
    b.allow("k", 0)
    with pytest.raises(InvalidTransition):
        b._move("k", b._circuits["k"], "probe_failed")


def test_breaker_keys_are_independent():
    """One key's open circuit does not affect another key."""
    b = CircuitBreaker(min_calls=1, failure_rate=1.0)
    b.record("a", False, 0)
    assert b.state("a", 0) is O and b.state("b", 0) is C and b.allow("b", 0)


async def test_policy_fails_fast_on_open_circuit():
    """With an open circuit the policy raises CircuitOpenError without calling the function; events say why."""
    clock = FakeClock()
    policy = RecoveryPolicy(clock=clock, breaker=CircuitBreaker(min_calls=2, failure_rate=0.5, open_for=30))
    events = []
    policy.subscribe(events.append)
    calls = []

    async def down():
        calls.append(1)
        raise ConnectionResetError("x")

    task = asyncio.ensure_future(policy.run(down, key="api"))
    await clock.advance(10)
    with pytest.raises(CircuitOpenError):
        await task
    assert len(calls) == 2  # the second failure opened the circuit; no third call, no sleep after it
    assert clock.sleepers == 0
    with pytest.raises(CircuitOpenError, match="half-opens"):
        await policy.run(down, key="api")
    assert len(calls) == 2
    assert CircuitStateChanged("api", "closed", "open") in events


@pytest.mark.parametrize("kwargs", [{"failure_rate": 0}, {"min_calls": 0}, {"probes": 0}, {"window": 0}])
def test_breaker_bad_options(kwargs):
    """Invalid breaker options raise ConfigError."""
    with pytest.raises(ConfigError):
        CircuitBreaker(**kwargs)


def test_budget_ratio_and_floor():
    """Retries are allowed up to floor + ratio × calls in the window, and come back as the window slides."""
    b = RetryBudget(ratio=0.2, min_per_second=0.2, ttl=10)  # floor: 2 retries per window
    for _ in range(10):
        b.record_call(0)
    allowed = sum(b.try_retry(0) for _ in range(100))
    assert allowed == 4  # 2 + 0.2 × 10
    assert not b.try_retry(5)
    assert b.try_retry(11)  # the old calls and retries left the window; the floor remains


def test_budget_floor_serves_quiet_callers():
    """A bot making one call still gets its few retries from the floor."""
    b = RetryBudget()
    b.record_call(0)
    assert all(b.try_retry(0) for _ in range(3))


async def test_failure_storm_within_budget():
    """100 % failure storm: 100 concurrent calls all fail; retries stay within ratio × calls + floor."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_second=0.1, ttl=60)  # floor: 6 retries per window
    policy = RecoveryPolicy(clock=clock, budget=budget)
    calls = 0

    async def down():
        nonlocal calls
        calls += 1
        raise ConnectionResetError("upstream down")

    tasks = [asyncio.ensure_future(policy.run(down, key=f"chat:{i}")) for i in range(100)]
    await clock.advance(50)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    retries = calls - 100
    assert retries <= 0.2 * 100 + 6
    assert retries > 0  # the budget lets some through: it limits, it does not forbid
    assert sum(isinstance(r, BudgetExhausted) for r in results) == 100
    assert any("retry budget exhausted" in str(r) for r in results)
    # without a budget the same storm would have made 4× the calls
    assert calls < 100 * 4


def test_budget_bad_options():
    """A non-positive window is a ConfigError."""
    with pytest.raises(ConfigError):
        RetryBudget(ttl=0)

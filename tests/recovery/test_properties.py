"""Properties of the engine for any sequence of errors (hypothesis, on a recording clock: no real sleeps)."""

from __future__ import annotations

import asyncio
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether import ErrorClass, RecoveryError
from tether.recovery import RecoveryPolicy, RecoveryScheduled, plan
from tether.recovery import DEFAULT_CLASS_POLICIES, ClassPolicy
from tether import Action, Classification

from .conftest import RecordingClock


class FloodWait(Exception):
    def __init__(self, value):
        super().__init__("flood")
        self.value = value


class RetryAfter(Exception):  # python-telegram-bot shape, seconds as float
    def __init__(self, retry_after):
        super().__init__("retry after")
        self.retry_after = retry_after


class ProxyConnectionError(OSError):
    pass


class AuthKeyUnregistered(Exception):
    pass


class RPCError(Exception):
    def __init__(self, code):
        super().__init__(str(code))
        self.code = code


waits = st.floats(min_value=0, max_value=5000, allow_nan=False)
errors = st.one_of(
    waits.map(FloodWait),
    waits.map(RetryAfter),
    st.just(ConnectionResetError("reset")),
    st.just(TimeoutError()),
    st.just(ProxyConnectionError("proxy")),
    st.sampled_from([RPCError(500), RPCError(503), RPCError(429), RPCError(400)]),
    st.just(ValueError("odd")),
    st.just(AuthKeyUnregistered("auth")),
)


async def _scenario(seq, deadline, max_wait, seed, with_callbacks):
    clock = RecordingClock()
    events: list = []

    async def cb(failure):
        if failure.attempt % 3 == 0:
            raise RuntimeError("callback broke")

    kw = {"reconnect": cb, "rotate_proxy": cb, "relogin": cb} if with_callbacks else {}
    policy = RecoveryPolicy(clock=clock, deadline=deadline, max_wait=max_wait, rng=random.Random(seed), budget=None, **kw)
    policy.subscribe(events.append)
    calls = 0

    async def fn():
        nonlocal calls
        calls += 1
        if calls <= len(seq):
            raise seq[calls - 1]
        raise seq[-1]  # keep failing: only the budgets can end the call

    outcome = None
    try:
        await policy.run(fn, key="k")
    except RecoveryError as err:
        outcome = err
    except Exception as err:  # FAIL classes re-raise the original error
        outcome = err
    return policy, clock, events, calls, outcome


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seq=st.lists(errors, min_size=1, max_size=30),
    deadline=st.one_of(st.none(), st.floats(min_value=0.5, max_value=2000)),
    max_wait=st.floats(min_value=0, max_value=4000),
    seed=st.integers(0, 2**16),
    with_callbacks=st.booleans(),
)
def test_engine_invariants(seq, deadline, max_wait, seed, with_callbacks):
    """Never sleeps less than a server wait, never exceeds a class's retries, never crosses the deadline, always ends."""
    policy, clock, events, calls, outcome = asyncio.run(
        asyncio.wait_for(_scenario(seq, deadline, max_wait, seed, with_callbacks), 10)
    )
    # always ends, and with a bounded number of calls
    total_budget = sum(cp.max_retries for cp in policy.classes.values())
    assert calls <= 1 + total_budget
    assert outcome is not None  # the sequence never succeeds, so the call must end with an error
    scheduled = [e for e in events if isinstance(e, RecoveryScheduled)]
    # never less than the server asked; never more than max_wait asked of us
    for e in scheduled:
        if e.server_wait is not None:
            assert e.delay >= e.server_wait
            assert e.server_wait <= max_wait
    # every sleep on the clock is one the history records (scheduled waits and callback fallbacks), in order
    assert [r.delay for r in policy.history if r.action is not Action.FAIL and r.delay > 0] == clock.sleeps
    # never more retries of a class than its budget
    for cls in ErrorClass:
        assert sum(1 for e in scheduled if e.error_class is cls) <= policy.classes[cls].max_retries
    # no sleep crosses the deadline
    if deadline is not None:
        assert clock.now <= deadline + 1e-9


@given(
    wait=st.one_of(st.none(), waits),
    used=st.integers(0, 10),
    now=st.floats(0, 1e6),
    left=st.one_of(st.none(), st.floats(0, 1e4)),
    backoff=st.floats(0, 300),
    extra=st.floats(0, 5),
    cls=st.sampled_from(list(ErrorClass)),
)
def test_plan_is_total_and_safe(wait, used, now, left, backoff, extra, cls):
    """plan() answers every input with a Step or a Stop, and a Step never undercuts the server or crosses the deadline."""
    cp = DEFAULT_CLASS_POLICIES[cls]
    c = Classification(cls, "x", retry_after=wait)
    deadline_at = None if left is None else now + left
    step = plan(c, cp, used=used, now=now, deadline_at=deadline_at, max_wait=3600, backoff=backoff, wait_extra=extra)
    if hasattr(step, "delay"):
        assert step.action is cp.action and step.action is not Action.FAIL
        assert used < cp.max_retries
        if wait is not None:
            assert step.delay >= wait
        if deadline_at is not None:
            assert now + step.delay <= deadline_at + 1e-6
    else:
        assert step.kind in ("fail", "budget", "deadline", "wait_too_long")


def test_class_policy_validation():
    """A class policy with negative retries is rejected."""
    import pytest

    from tether import ConfigError

    with pytest.raises(ConfigError):
        ClassPolicy(Action.RETRY, max_retries=-1)

"""RecoveryPolicy: the seed's class → action table, waits, deadlines, callbacks, history, stats, API forms."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

import tether
from tether import Action, BudgetExhausted, ConfigError, DeadlineExceeded, ErrorClass, NoHealthyProxy, WaitTooLong
from tether.recovery import (
    CallbackFailed,
    ClassPolicy,
    Recovered,
    RecoveryFailed,
    RecoveryPolicy,
    RecoveryScheduled,
)
from tether.testing import FakeClock

E = ErrorClass


class FloodWait(Exception):
    def __init__(self, value):
        super().__init__(f"Telegram says: wait {value} seconds")
        self.value = value


class ProxyConnectionError(OSError):
    pass


class AuthKeyUnregistered(Exception):
    pass


class RPCError(Exception):
    def __init__(self, code):
        super().__init__(f"rpc {code}")
        self.code = code


def http429():
    req = httpx.Request("POST", "https://api.telegram.org/x")
    return httpx.HTTPStatusError("429", request=req, response=httpx.Response(429, request=req))


def failing(exc_factory, *, succeed_after: int | None = None):
    """A function that raises exc_factory() until it has been called succeed_after times."""
    calls = []

    async def fn():
        calls.append(1)
        if succeed_after is None or len(calls) <= succeed_after:
            raise exc_factory()
        return "sent"

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


class Callbacks:
    def __init__(self, fail: set[str] = frozenset()):
        self.log: list[tuple[str, str]] = []
        self.fail = fail

    def make(self, name):
        async def cb(failure):
            self.log.append((name, failure.key))
            if name in self.fail:
                raise RuntimeError(f"{name} broke")

        return cb

    def kwargs(self):
        return {n: self.make(n) for n in ("reconnect", "rotate_proxy", "relogin")}


# (exception, class, action, retries, exact delays with jitter="none" and wait_jitter=0)
SEED_TABLE = [
    (lambda: FloodWait(30), E.FLOOD_WAIT, Action.WAIT, 5, [30] * 5),
    (http429, E.RATE_LIMIT, Action.WAIT, 5, [1, 2, 4, 8, 16]),
    (lambda: ProxyConnectionError("proxy down"), E.PROXY, Action.ROTATE_PROXY, 3, [5, 5, 5]),
    (lambda: ConnectionResetError("reset"), E.CONNECTION, Action.RECONNECT, 3, [2, 4, 8]),
    (lambda: RPCError(502), E.TEMPORARY, Action.RETRY, 3, [1, 2, 4]),
    (lambda: ValueError("odd"), E.UNKNOWN, Action.RETRY, 2, [1, 2]),
]


@pytest.mark.parametrize("make, cls, action, retries, delays", SEED_TABLE, ids=[r[1].value for r in SEED_TABLE])
async def test_seed_table_retrying_classes(rclock, make, cls, action, retries, delays):
    """Each retrying class takes its seed action, its seed number of retries and base·2ⁿ delays, then stops."""
    cbs = Callbacks()
    policy = RecoveryPolicy(clock=rclock, jitter="none", wait_jitter=0, budget=None, **cbs.kwargs())
    fn = failing(make)
    with pytest.raises(BudgetExhausted) as info:
        await policy.run(fn, key="chat:1")
    assert isinstance(info.value.__cause__, type(make()))
    assert info.value.error_class is cls
    assert len(fn.calls) == retries + 1
    assert rclock.sleeps == delays
    recs = policy.history
    assert [r.action for r in recs] == [action] * retries + [Action.FAIL]
    assert all(r.error_class is cls and r.key == "chat:1" for r in recs)
    expected_cb = {Action.RECONNECT: "reconnect", Action.ROTATE_PROXY: "rotate_proxy"}.get(action)
    assert cbs.log == ([(expected_cb, "chat:1")] * retries if expected_cb else [])


@pytest.mark.parametrize(
    "make, cls",
    [(lambda: AuthKeyUnregistered("revoked"), E.AUTH), (lambda: RPCError(400), E.PERMANENT)],
    ids=["auth", "permanent"],
)
async def test_seed_table_failing_classes(rclock, make, cls):
    """AUTH (without relogin) and PERMANENT fail at once with the original error: one call, no sleep."""
    policy = RecoveryPolicy(clock=rclock)
    fn = failing(make)
    with pytest.raises(type(make())):
        await policy.run(fn)
    assert len(fn.calls) == 1 and rclock.sleeps == []
    assert [(r.error_class, r.action) for r in policy.history] == [(cls, Action.FAIL)]


async def test_auth_relogin_when_registered(rclock):
    """With a relogin callback, AUTH becomes RELOGIN once (2 s), and a recovered call returns its value."""
    cbs = Callbacks()
    policy = RecoveryPolicy(clock=rclock, jitter="none", relogin=cbs.make("relogin"))
    fn = failing(lambda: AuthKeyUnregistered("x"), succeed_after=1)
    assert await policy.run(fn, key="acc") == "sent"
    assert cbs.log == [("relogin", "acc")] and rclock.sleeps == [2]
    assert policy.history[0].action is Action.RELOGIN


async def test_auth_relogin_only_once(rclock):
    """Credentials refused again after a relogin stop the call: auth is never retried blindly."""
    policy = RecoveryPolicy(clock=rclock, relogin=Callbacks().make("relogin"))
    fn = failing(lambda: AuthKeyUnregistered("x"))
    with pytest.raises(BudgetExhausted):
        await policy.run(fn)
    assert len(fn.calls) == 2


async def test_without_callbacks_actions_degrade(rclock):
    """Without callbacks RECONNECT and ROTATE_PROXY act as RETRY; RELOGIN configured without one is FAIL."""
    policy = RecoveryPolicy(clock=rclock, budget=None, classes={E.AUTH: ClassPolicy(Action.RELOGIN, 1)})
    fn = failing(lambda: ConnectionResetError("x"), succeed_after=1)
    await policy.run(fn)
    assert policy.history[0].action is Action.RETRY
    auth = failing(lambda: AuthKeyUnregistered("x"))
    with pytest.raises(AuthKeyUnregistered):
        await policy.run(auth)
    assert len(auth.calls) == 1


async def test_flood_wait_too_long(rclock):
    """A FloodWait longer than max_wait fails at once with WaitTooLong carrying the wait."""
    policy = RecoveryPolicy(clock=rclock)
    fn = failing(lambda: FloodWait(7200))
    with pytest.raises(WaitTooLong) as info:
        await policy.run(fn)
    assert info.value.wait == 7200 and "7200" in str(info.value)
    assert len(fn.calls) == 1 and rclock.sleeps == []


async def test_server_wait_never_shortened(rclock):
    """Jitter only adds to a server wait: every sleep is in [wait, wait + wait_jitter]."""
    policy = RecoveryPolicy(clock=rclock, wait_jitter=2.0, rng=random.Random(1))
    fn = failing(lambda: FloodWait(10), succeed_after=5)
    await policy.run(fn)
    assert len(rclock.sleeps) == 5 and all(10 <= s <= 12 for s in rclock.sleeps)
    assert len(set(rclock.sleeps)) > 1  # jitter really spreads a fleet of clients


async def test_deadline_refuses_server_wait(rclock):
    """A server wait that would cross the deadline ends the call at once instead of sleeping less."""
    policy = RecoveryPolicy(clock=rclock)
    with pytest.raises(DeadlineExceeded) as info:
        await policy.run(failing(lambda: FloodWait(30)), deadline=20)
    assert rclock.sleeps == [] and isinstance(info.value.__cause__, FloodWait)


async def test_deadline_trims_only_jitter(rclock):
    """Near the deadline the added jitter is trimmed, never the server's wait."""
    policy = RecoveryPolicy(clock=rclock, wait_jitter=5.0, rng=random.Random(3))
    await policy.run(failing(lambda: FloodWait(10), succeed_after=1), deadline=10.5)
    assert 10 <= rclock.sleeps[0] <= 10.5


async def test_deadline_stops_backoff(rclock):
    """No backoff sleep crosses the deadline: 2 s, then 4 s would cross 5 s, so the call ends."""
    policy = RecoveryPolicy(clock=rclock, jitter="none", deadline=5.0)
    with pytest.raises(DeadlineExceeded):
        await policy.run(failing(lambda: ConnectionResetError("x")))
    assert rclock.sleeps == [2] and rclock.now <= 5


async def test_callback_failure_falls_back_to_retry(rclock):
    """A failing reconnect callback is recorded, announced, and the call retries after a backoff."""
    cbs = Callbacks(fail={"reconnect"})
    policy = RecoveryPolicy(clock=rclock, jitter="none", **cbs.kwargs())
    events = []
    policy.subscribe(events.append)
    fn = failing(lambda: ConnectionResetError("x"), succeed_after=1)
    assert await policy.run(fn, key="k") == "sent"
    assert [r.action for r in policy.history] == [Action.RECONNECT, Action.RETRY]
    assert "reconnect callback failed" in policy.history[1].message
    assert rclock.sleeps == [2, 4]  # the reconnect delay, then the fallback retry's backoff
    assert any(isinstance(e, CallbackFailed) and e.failed_action is Action.RECONNECT for e in events)
    stats = policy.stats()
    assert stats.by_action[Action.RECONNECT].failed == 1 and stats.by_action[Action.RETRY].succeeded == 1


async def test_callback_no_healthy_proxy_ends_call(rclock):
    """A rotate_proxy callback raising NoHealthyProxy ends the call: no loop on dead proxies."""

    async def rotate(failure):
        raise NoHealthyProxy("no usable proxy")

    policy = RecoveryPolicy(clock=rclock, rotate_proxy=rotate)
    fn = failing(lambda: ProxyConnectionError("dead"))
    with pytest.raises(NoHealthyProxy):
        await policy.run(fn)
    assert len(fn.calls) == 1


async def test_history_ring_and_masking(rclock):
    """History keeps the last 100 records with time, class, action, delay, message, key; secrets masked."""
    policy = RecoveryPolicy(clock=rclock, budget=None, classes={E.UNKNOWN: ClassPolicy(Action.RETRY, 500, 0.0)})
    fn = failing(lambda: ValueError("login https://bob:hunter2@10.0.0.1:8443 token 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"), succeed_after=150)
    await policy.run(fn, key="k")
    h = policy.history
    assert len(h) == 100 and h[-1].attempt == 150
    r = h[-1]
    assert (r.key, r.error_class, r.action, r.delay) == ("k", E.UNKNOWN, Action.RETRY, 0.0)
    assert r.time == rclock.wall()
    assert "hunter2" not in r.message and "AAHdqTcv" not in r.message and "bob:***@" in r.message


async def test_stats_per_class_and_action(rclock):
    """stats() counts successes and failures per class and action and the recovery rate."""
    policy = RecoveryPolicy(clock=rclock, budget=None)
    await policy.run(failing(lambda: FloodWait(1), succeed_after=2))
    with pytest.raises(AuthKeyUnregistered):
        await policy.run(failing(lambda: AuthKeyUnregistered("x")))
    await policy.run(failing(lambda: ValueError("x"), succeed_after=0))
    s = policy.stats()
    assert (s.calls, s.successes, s.failures, s.recovered) == (3, 2, 1, 1)
    assert s.recovery_rate == pytest.approx(0.5)
    assert s.by_class[E.FLOOD_WAIT].seen == 2 and s.by_class[E.FLOOD_WAIT].recovered == 1
    assert s.by_class[E.AUTH].failed == 1
    assert s.by_action[Action.WAIT].taken == 2 and s.by_action[Action.WAIT].succeeded == 1


async def test_subscribe_events(rclock):
    """Subscribers get frozen events; a broken subscriber never breaks the call; unsubscribe stops them."""
    policy = RecoveryPolicy(clock=rclock, jitter="none", wait_jitter=0)
    seen = []
    unsubscribe = policy.subscribe(seen.append)
    policy.subscribe(lambda e: 1 / 0)
    await policy.run(failing(lambda: FloodWait(3), succeed_after=1), key="k")
    assert seen[0] == RecoveryScheduled("k", 1, E.FLOOD_WAIT, Action.WAIT, 3.0, seen[0].message, 3.0)
    assert isinstance(seen[1], Recovered) and seen[1].failures == 1
    with pytest.raises(Exception):
        seen[0].delay = 1  # frozen
    unsubscribe()
    with pytest.raises(AuthKeyUnregistered):
        await policy.run(failing(lambda: AuthKeyUnregistered("x")))
    assert len(seen) == 2
    later = []
    policy.subscribe(later.append)
    with pytest.raises(AuthKeyUnregistered):
        await policy.run(failing(lambda: AuthKeyUnregistered("x")))
    assert isinstance(later[0], RecoveryFailed) and later[0].action is Action.FAIL


async def test_retry_decorator(rclock):
    """@tether.retry(policy) runs every call through the policy, keyed by the function's name."""
    policy = RecoveryPolicy(clock=rclock)
    n = []

    @tether.retry(policy)
    async def send(text, *, chat):
        n.append(1)
        if len(n) < 2:
            raise ConnectionResetError("x")
        return f"{chat}:{text}"

    assert await send("hi", chat=5) == "5:hi"
    assert send.policy is policy and policy.history[0].key.endswith("send")


async def test_bare_retry_decorator_and_sync_rejected():
    """Bare @tether.retry gives a default policy; decorating a sync function is a clear ConfigError."""

    @tether.retry
    async def ok():
        return 1

    assert await ok() == 1 and isinstance(ok.policy, RecoveryPolicy)
    with pytest.raises(ConfigError, match="async"):
        tether.retry(RecoveryPolicy())(lambda: 1)


async def test_attempts_form(rclock):
    """`async for attempt in policy.attempts(): with attempt:` retries the body until it succeeds."""
    policy = RecoveryPolicy(clock=rclock, jitter="none")
    numbers = []
    async for attempt in policy.attempts(key="loop"):
        with attempt:
            numbers.append(attempt.number)
            if attempt.number < 3:
                raise RPCError(503)
    assert numbers == [1, 2, 3] and rclock.sleeps == [1, 2]
    assert policy.stats().recovered == 1


async def test_attempts_form_gives_up(rclock):
    """When a class's retries are used up, the attempts loop raises BudgetExhausted."""
    policy = RecoveryPolicy(clock=rclock)
    count = 0
    with pytest.raises(BudgetExhausted):
        async for attempt in policy.attempts():
            with attempt:
                count += 1
                raise ValueError("x")
    assert count == 3


async def test_cancellation_is_never_retried(rclock):
    """CancelledError passes through at once: the engine only handles Exception."""
    policy = RecoveryPolicy(clock=rclock)
    fn = failing(asyncio.CancelledError)
    with pytest.raises(asyncio.CancelledError):
        await policy.run(fn)
    assert len(fn.calls) == 1 and policy.history == ()


async def test_sync_function_and_args(rclock):
    """run() also calls plain functions and passes positional and keyword arguments through."""
    policy = RecoveryPolicy(clock=rclock)
    assert await policy.run(lambda a, b=0: a + b, 2, b=3) == 5


async def test_fake_clock_no_real_sleep():
    """On a FakeClock a 30 s FloodWait takes no real time, and no retry happens before 30 s."""
    clock = FakeClock()
    policy = RecoveryPolicy(clock=clock, wait_jitter=0)
    fn = failing(lambda: FloodWait(30), succeed_after=1)
    task = asyncio.ensure_future(policy.run(fn))
    await clock.advance(29.9)
    assert len(fn.calls) == 1 and not task.done()
    await clock.advance(0.2)
    assert await asyncio.wait_for(task, 1) == "sent" and len(fn.calls) == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"max_wait": -1}, {"cap": 0}, {"deadline": 0}, {"jitter": "decorrelated"}, {"classes": {"auth": 1}}],
)
def test_bad_options(kwargs):
    """Invalid options raise ConfigError naming what to fix."""
    with pytest.raises(ConfigError):
        RecoveryPolicy(**kwargs)


async def test_metrics_can_subscribe(rclock):
    """tether.observe's Metrics counts the policy's events by class and action through subscribe()."""
    from tether.observe import Metrics

    m = Metrics(process=False)
    policy = RecoveryPolicy(clock=rclock)
    policy.subscribe(m.observe_recovery_event)
    await policy.run(failing(lambda: FloodWait(2), succeed_after=2))
    with pytest.raises(AuthKeyUnregistered):
        await policy.run(failing(lambda: AuthKeyUnregistered("x")))
    get = m.registry.get_sample_value
    assert get("tether_recovery_actions_total", {"error_class": "flood_wait", "action": "wait"}) == 2
    assert get("tether_recovery_actions_total", {"error_class": "auth", "action": "fail"}) == 1

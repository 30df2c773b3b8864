"""RecoveryPolicy: the asyncio shell around the pure engine — sleeps, callbacks, breaker, budget, history.

Three ways to use one policy::

    result = await policy.run(send_message, chat_id, text, key="chat:42")

    @tether.retry(policy)
    async def send(chat_id, text): ...

    async for attempt in policy.attempts(key="chat:42"):
        with attempt:
            await client.send_message(chat_id, text)
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
from collections import deque
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence, TypeVar

from .._backoff import Jitter
from .._clock import Clock, SystemClock
from .._decision import Action, Classification, ErrorClass
from .._errors import (
    BudgetExhausted,
    CircuitOpenError,
    ConfigError,
    DeadlineExceeded,
    RecoveryError,
    WaitTooLong,
)
from ._breaker import BreakerState, CircuitBreaker
from ._budget import RetryBudget
from ._engine import DEFAULT_CLASS_POLICIES, RELOGIN_AUTH, CallState, ClassPolicy, Step, Stop, plan
from ._events import (
    CallbackFailed,
    CircuitStateChanged,
    Recovered,
    RecoveryEvent,
    RecoveryFailed,
    RecoveryRecord,
    RecoveryScheduled,
    RecoveryStats,
    _StatsBook,
)
from ._mask import mask_secrets
from ._rules import Rule, classify, describe

__all__ = ["RecoveryPolicy", "Failure", "Attempt", "retry", "BREAKER_CLASSES"]

log = logging.getLogger("tether.recovery")
T = TypeVar("T")

#: Classes that say the upstream is unhealthy; others (auth, 400s, server-named waits) do not trip a breaker.
BREAKER_CLASSES = frozenset({ErrorClass.CONNECTION, ErrorClass.PROXY, ErrorClass.TEMPORARY, ErrorClass.UNKNOWN})
_CALLBACK_ACTIONS = {Action.RECONNECT: "reconnect", Action.ROTATE_PROXY: "rotate_proxy", Action.RELOGIN: "relogin"}


@dataclass(frozen=True, slots=True)
class Failure:
    """What a recovery callback is told: the failed attempt it is asked to repair."""

    key: str
    error: BaseException = field(compare=False)
    classification: Classification
    attempt: int


Callback = Callable[[Failure], Awaitable[None] | None]


class RecoveryPolicy:
    """Classify each failure, pick its action, keep budgets, history and statistics.

    Defaults follow seed 001 (see ``DEFAULT_CLASS_POLICIES``): FLOOD_WAIT/RATE_LIMIT → WAIT (5),
    PROXY → ROTATE_PROXY (3, 5 s), CONNECTION → RECONNECT (3, 2 s·2ⁿ), AUTH → FAIL (RELOGIN once when a
    ``relogin`` callback is given), TEMPORARY → RETRY (3, 1 s·2ⁿ), PERMANENT → FAIL, UNKNOWN → RETRY (2).

    Args:
        classes: per-class overrides, merged over the defaults: ``{ErrorClass.UNKNOWN: ClassPolicy(Action.FAIL)}``.
        packs: classification rule packs in order (default ``DEFAULT_PACKS``).
        classifier: replace classification entirely: ``exc -> Classification``.
        max_wait: longest server-mandated wait honoured (s); a longer one raises WaitTooLong at once.
        cap: largest backoff step (s).
        jitter: backoff jitter, as ``tether.Backoff`` (``"equal"``: each delay in [step/2, step]).
        wait_jitter: at most this many seconds added on top of a server-mandated wait (never subtracted).
        deadline: default per-call deadline in seconds (None: none); no sleep may cross it.
        reconnect, rotate_proxy, relogin: async callbacks ``cb(failure)`` for those actions; without one,
            RECONNECT and ROTATE_PROXY act as RETRY. A callback that raises falls back to RETRY with backoff;
            one that raises a ``tether.RecoveryError`` (e.g. NoHealthyProxy) ends the call with it.
        breaker: a CircuitBreaker shared by every key of this policy (None: no breaker).
        budget: a RetryBudget (default ``RetryBudget()``; None: unlimited retries, not recommended).
        history_size: how many records ``history`` keeps.
        clock: time source (``tether.testing.FakeClock`` in tests).
        rng: a ``random.Random`` for reproducible jitter.
    """

    def __init__(
        self,
        *,
        classes: Mapping[ErrorClass, ClassPolicy] | None = None,
        packs: Sequence[Iterable[Rule]] | None = None,
        classifier: Callable[[BaseException], Classification] | None = None,
        max_wait: float = 3600.0,
        cap: float = 300.0,
        jitter: Jitter = "equal",
        wait_jitter: float = 1.0,
        deadline: float | None = None,
        reconnect: Callback | None = None,
        rotate_proxy: Callback | None = None,
        relogin: Callback | None = None,
        breaker: CircuitBreaker | None = None,
        budget: RetryBudget | None | bool = True,
        history_size: int = 100,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if max_wait < 0 or cap <= 0 or wait_jitter < 0:
            raise ConfigError("RecoveryPolicy needs max_wait >= 0, cap > 0 and wait_jitter >= 0 (seconds)")
        if deadline is not None and deadline <= 0:
            raise ConfigError(f"RecoveryPolicy deadline must be > 0 seconds or None, got {deadline!r}")
        if jitter == "decorrelated" or jitter not in ("full", "equal", "none"):
            raise ConfigError(f"RecoveryPolicy jitter must be 'full', 'equal' or 'none', got {jitter!r}")
        merged = dict(DEFAULT_CLASS_POLICIES)
        if relogin is not None:
            merged[ErrorClass.AUTH] = RELOGIN_AUTH
        for k, v in (classes or {}).items():
            if not isinstance(k, ErrorClass) or not isinstance(v, ClassPolicy):
                raise ConfigError(f"classes maps tether.ErrorClass to ClassPolicy; got {k!r}: {v!r}")
            merged[k] = v
        self.classes: Mapping[ErrorClass, ClassPolicy] = MappingProxyType(merged)
        self.packs = tuple(tuple(p) for p in packs) if packs is not None else None
        self.classifier = classifier
        self.max_wait = float(max_wait)
        self.cap = float(cap)
        self.jitter: Jitter = jitter
        self.wait_jitter = float(wait_jitter)
        self.deadline = deadline
        self.callbacks: dict[str, Callback | None] = {"reconnect": reconnect, "rotate_proxy": rotate_proxy, "relogin": relogin}
        self.breaker = breaker
        if breaker is not None and breaker.on_change is None:
            breaker.on_change = self._breaker_changed
        self.budget = RetryBudget() if budget is True else (budget or None)
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self._history: deque[RecoveryRecord] = deque(maxlen=history_size)
        self._stats = _StatsBook()
        self._subscribers: list[Callable[[RecoveryEvent], None]] = []

    # -- observation -------------------------------------------------------------------------
    @property
    def history(self) -> tuple[RecoveryRecord, ...]:
        """The last ``history_size`` records, oldest first."""
        return tuple(self._history)

    def stats(self) -> RecoveryStats:
        """Successes and failures per class and per action, and the recovery rate."""
        return self._stats.snapshot()

    def subscribe(self, callback: Callable[[RecoveryEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every recovery event; returns an unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _emit(self, event: RecoveryEvent) -> None:
        for cb in tuple(self._subscribers):
            try:
                cb(event)
            except Exception:  # an observer must never break the call it observes
                log.exception("recovery subscriber %r failed", cb)

    def _breaker_changed(self, key: str, old: BreakerState, new: BreakerState) -> None:
        self._emit(CircuitStateChanged(key, old.value, new.value))

    def classify(self, exc: BaseException) -> Classification:
        """The classification this policy gives ``exc``."""
        if self.classifier is not None:
            return self.classifier(exc)
        return classify(exc, packs=self.packs, now=self.clock.wall())

    # -- API ---------------------------------------------------------------------------------
    async def run(self, fn: Callable[..., Awaitable[T] | T], /, *args: Any, key: str | None = None,
                  deadline: float | None = None, **kwargs: Any) -> T:
        """Call ``fn(*args, **kwargs)`` and recover from its failures until it succeeds or must stop.

        ``key`` names the call for the breaker and history (default: the function's qualified name);
        ``deadline`` overrides the policy's per-call deadline. To pass arguments named ``key`` or
        ``deadline`` to ``fn``, wrap it in ``functools.partial``.

        Raises:
            The original exception for FAIL classes; BudgetExhausted, DeadlineExceeded, WaitTooLong,
            CircuitOpenError or NoHealthyProxy (each with the last failure as ``__cause__``).
        """
        call = _Call(self, key or _name_of(fn), deadline)
        while True:
            call.before_attempt()
            try:
                result = fn(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                await call.failed(exc)
                continue
            call.succeeded()
            return result  # type: ignore[return-value]

    def attempts(self, *, key: str = "default", deadline: float | None = None) -> "_Attempts":
        """``async for attempt in policy.attempts(key=...): with attempt: ...`` — a loop of attempts.

        The body inside ``with attempt`` is one attempt: an exception there is classified and either
        followed by the next attempt (after the sleep and callback) or raised from the loop.
        """
        return _Attempts(_Call(self, key, deadline))

    def __repr__(self) -> str:
        cbs = ",".join(k for k, v in self.callbacks.items() if v) or "none"
        return f"RecoveryPolicy(max_wait={self.max_wait:g}, cap={self.cap:g}, deadline={self.deadline}, callbacks={cbs})"


def _name_of(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


class _Call:
    """One call's journey through the policy (the shell around ``plan``)."""

    __slots__ = ("p", "key", "state", "started", "deadline_at", "last_action", "last_class", "seen", "number")

    def __init__(self, policy: RecoveryPolicy, key: str, deadline: float | None) -> None:
        self.p = policy
        self.key = key
        self.state = CallState(jitter=policy.jitter, cap=policy.cap, rng=policy.rng)
        now = policy.clock.monotonic()
        self.started = now
        limit = deadline if deadline is not None else policy.deadline
        self.deadline_at = None if limit is None else now + limit
        self.last_action: Action | None = None
        self.last_class: ErrorClass | None = None
        self.seen: set[ErrorClass] = set()
        self.number = 0
        policy._stats.calls += 1
        if policy.budget is not None:
            policy.budget.record_call(now)

    def before_attempt(self) -> None:
        p = self.p
        if p.breaker is not None:
            now = p.clock.monotonic()
            if not p.breaker.allow(self.key, now):
                wait = p.breaker.retry_in(self.key, now)
                err = CircuitOpenError(f"circuit for {self.key!r} is open; it half-opens in {wait:.3g}s", attempts=self.number)
                self._give_up(err, self.last_class or ErrorClass.UNKNOWN, str(err), count_class=False)
                raise err
        self.number += 1

    def succeeded(self) -> None:
        p, book = self.p, self.p._stats
        if p.breaker is not None:
            p.breaker.record(self.key, True, p.clock.monotonic())
        book.successes += 1
        if self.seen:
            book.recovered += 1
            for c in self.seen:
                book.classes[c][1] += 1
        if self.last_action is not None:
            book.actions[self.last_action][1] += 1
        p._emit(Recovered(self.key, self.number, self.state.failures, p.clock.monotonic() - self.started))

    def _record(self, c: ErrorClass, action: Action, delay: float, message: str) -> None:
        self.p._history.append(RecoveryRecord(self.p.clock.wall(), self.key, c, action, delay, message, self.number))

    def _give_up(self, error: BaseException, c: ErrorClass, reason: str, *, count_class: bool = True) -> None:
        book = self.p._stats
        book.failures += 1
        if count_class:
            book.classes[c][2] += 1
        self._record(c, Action.FAIL, 0.0, reason)
        self.p._emit(RecoveryFailed(self.key, self.number, c, reason, error))

    def _effective(self, cp: ClassPolicy) -> ClassPolicy:
        """Without its callback, RECONNECT/ROTATE_PROXY become RETRY and RELOGIN becomes FAIL."""
        name = _CALLBACK_ACTIONS.get(cp.action)
        if name is None or self.p.callbacks[name] is not None:
            return cp
        if cp.action is Action.RELOGIN:
            return ClassPolicy(Action.FAIL)
        return ClassPolicy(Action.RETRY, cp.max_retries, cp.delay, cp.factor)

    async def failed(self, exc: Exception) -> None:
        """Handle a failed attempt: return to try again, or raise what the caller gets."""
        p, book = self.p, self.p._stats
        now = p.clock.monotonic()
        c = p.classify(exc)
        cls = c.error_class
        message = mask_secrets(c.reason or describe(exc))
        self.state.failures += 1
        self.seen.add(cls)
        self.last_class = cls
        book.classes[cls][0] += 1
        if self.last_action is not None:
            book.actions[self.last_action][2] += 1
        if p.breaker is not None:
            if cls in BREAKER_CLASSES:
                p.breaker.record(self.key, False, now)
            else:
                p.breaker.release(self.key, now)
            if p.breaker.state(self.key, now) is BreakerState.OPEN:
                # this failure opened the circuit: sleeping first would only delay the same answer
                wait = p.breaker.retry_in(self.key, now)
                err = CircuitOpenError(f"circuit for {self.key!r} is open; it half-opens in {wait:.3g}s ({message})",
                                       error_class=cls, attempts=self.number)
                self._give_up(err, cls, str(err))
                raise err from exc
        cp = self._effective(p.classes[cls])
        backoff = self.state.next_backoff(cls, cp) if cp.action is not Action.FAIL else 0.0
        extra = p.rng.uniform(0.0, p.wait_jitter) if c.retry_after is not None and p.wait_jitter > 0 else 0.0
        step = plan(c, cp, used=self.state.count(cls), now=now, deadline_at=self.deadline_at,
                    max_wait=p.max_wait, backoff=backoff, wait_extra=extra)
        if isinstance(step, Step) and p.budget is not None and not p.budget.try_retry(now):
            calls, retries = p.budget.usage(now)
            step = Stop("budget", f"retry budget exhausted: {retries} retries for {calls} calls in the last "
                                  f"{p.budget.ttl:g}s (ratio {p.budget.ratio:g}) — {message}")
        if isinstance(step, Stop):
            self._stop(step, exc, cls, message)
        assert isinstance(step, Step)
        self.state.use(cls)
        self._record(cls, step.action, step.delay, message)
        p._emit(RecoveryScheduled(self.key, self.number, cls, step.action, step.delay, message, step.server_wait))
        if step.delay > 0:
            await p.clock.sleep(step.delay)
        book.actions[step.action][0] += 1
        self.last_action = step.action
        name = _CALLBACK_ACTIONS.get(step.action)
        if name is not None:
            await self._callback(name, step, exc, c, cp)

    def _stop(self, stop: Stop, exc: Exception, cls: ErrorClass, message: str) -> None:
        if stop.kind == "fail":
            self._give_up(exc, cls, stop.message if not message else f"{cls.value}: not retried ({message})")
            raise exc
        kinds = {"budget": BudgetExhausted, "deadline": DeadlineExceeded}
        if stop.kind == "wait_too_long":
            err: RecoveryError = WaitTooLong(mask_secrets(stop.message), wait=stop.wait or 0.0, error_class=cls, attempts=self.number)
        else:
            err = kinds[stop.kind](mask_secrets(stop.message), error_class=cls, attempts=self.number)
        self._give_up(err, cls, err.args[0])
        raise err from exc

    async def _callback(self, name: str, step: Step, exc: Exception, c: Classification, cp: ClassPolicy) -> None:
        p, book = self.p, self.p._stats
        cb = p.callbacks[name]
        assert cb is not None
        try:
            result = cb(Failure(self.key, exc, c, self.number))
            if inspect.isawaitable(result):
                await result
            return
        except RecoveryError as err:  # e.g. NoHealthyProxy: looping would not help (Pyrogram's dead-proxy loop)
            self._give_up(err, c.error_class, mask_secrets(describe(err)))
            raise
        except Exception as err:
            why = mask_secrets(f"{name} callback failed: {describe(err)}; falling back to retry")
        book.actions[step.action][2] += 1
        book.actions[Action.RETRY][0] += 1
        self.last_action = Action.RETRY
        now = p.clock.monotonic()
        delay = self.state.next_backoff(c.error_class, cp)
        if self.deadline_at is not None and now + delay > self.deadline_at:
            err2 = DeadlineExceeded(f"{why}; next wait {delay:.3g}s would cross the deadline",
                                    error_class=c.error_class, attempts=self.number)
            self._give_up(err2, c.error_class, err2.args[0])
            raise err2 from exc
        self._record(c.error_class, Action.RETRY, delay, why)
        p._emit(CallbackFailed(self.key, step.action, c.error_class, why))
        if delay > 0:
            await p.clock.sleep(delay)


class Attempt:
    """One attempt of ``policy.attempts()``; use it as ``with attempt:`` around the call."""

    __slots__ = ("number", "key", "error")

    def __init__(self, number: int, key: str) -> None:
        self.number = number
        self.key = key
        self.error: Exception | None = None

    def __enter__(self) -> "Attempt":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None and isinstance(exc, Exception):
            self.error = exc
            return True  # the loop decides: retry or raise
        return False  # success, or CancelledError/KeyboardInterrupt: never swallowed

    def __repr__(self) -> str:
        return f"Attempt(number={self.number}, key={self.key!r})"


class _Attempts:
    """The async iterator behind ``policy.attempts()``."""

    __slots__ = ("call", "current", "done")

    def __init__(self, call: _Call) -> None:
        self.call = call
        self.current: Attempt | None = None
        self.done = False

    def __aiter__(self) -> "_Attempts":
        return self

    async def __anext__(self) -> Attempt:
        if self.done:
            raise StopAsyncIteration
        if self.current is not None:
            if self.current.error is None:
                self.done = True
                self.call.succeeded()
                raise StopAsyncIteration
            try:
                await self.call.failed(self.current.error)
            except BaseException:
                self.done = True
                raise
        try:
            self.call.before_attempt()
        except BaseException:
            self.done = True
            raise
        self.current = Attempt(self.call.number, self.call.key)
        return self.current


def retry(policy: RecoveryPolicy | Callable[..., Any] | None = None, *, key: str | None = None,
          deadline: float | None = None) -> Any:
    """Decorate an async function so every call goes through ``policy.run``.

    ``@tether.retry(policy)``, ``@tether.retry(policy, key="send")`` or bare ``@tether.retry`` (a
    default RecoveryPolicy per function). The wrapper exposes the policy as ``wrapper.policy``.
    """

    def decorate(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(f"tether.retry decorates async functions; {_name_of(fn)} is not one")
        chosen = policy if isinstance(policy, RecoveryPolicy) else RecoveryPolicy()
        name = key or _name_of(fn)

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> T:
            return await chosen.run(fn, *args, key=name, deadline=deadline, **kwargs)

        wrapper.policy = chosen  # type: ignore[attr-defined]
        return wrapper

    if policy is not None and not isinstance(policy, RecoveryPolicy):
        if callable(policy):  # bare @retry
            fn, policy = policy, None
            return decorate(fn)
        raise ConfigError(f"tether.retry takes a RecoveryPolicy, got {policy!r}")
    return decorate

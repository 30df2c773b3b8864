"""Circuit breaker per key: closed → open → half-open → closed, as a transition table.

Sans-I/O: every method takes ``now`` (monotonic seconds) and returns; nothing sleeps.

* CLOSED: calls pass; outcomes enter a time window. When the window holds at least ``min_calls``
  outcomes and the failure rate reaches ``failure_rate``, the circuit OPENs.
* OPEN: calls fail fast (``allow`` is False) for ``open_for`` seconds, then the circuit is HALF_OPEN.
* HALF_OPEN: up to ``probes`` calls pass at once. ``probes`` successes close it; one failure opens it again.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .._errors import ConfigError, InvalidTransition

__all__ = ["BreakerState", "TRANSITIONS", "CircuitBreaker"]


class BreakerState(enum.Enum):
    """State of one key's circuit."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value


_C, _O, _H = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

#: (state, trigger) → next state. Anything else is an InvalidTransition.
TRANSITIONS: dict[tuple[BreakerState, str], BreakerState] = {
    (_C, "failure_rate_reached"): _O,
    (_O, "open_elapsed"): _H,
    (_H, "probe_failed"): _O,
    (_H, "probes_succeeded"): _C,
    (_C, "reset"): _C,
    (_O, "reset"): _C,
    (_H, "reset"): _C,
}


@dataclass(slots=True)
class _Circuit:
    state: BreakerState = _C
    opened_at: float = 0.0
    in_flight: int = 0  # half-open probes admitted and not yet reported
    probe_ok: int = 0
    window: deque[tuple[float, bool]] | None = None

    def outcomes(self) -> deque[tuple[float, bool]]:
        if self.window is None:
            self.window = deque()
        return self.window


class CircuitBreaker:
    """Per-key circuit breaker (resilience4j semantics, tuned for bots talking to one upstream).

    Args:
        failure_rate: failure ratio in the window that opens the circuit (0 < r <= 1).
        window: seconds of outcomes considered.
        min_calls: outcomes needed in the window before the rate is judged (no opening on 1 of 1).
        open_for: seconds the circuit stays open before probing.
        probes: calls admitted while half-open; that many successes close the circuit.
        on_change: ``callback(key, old, new)`` on every state change (the policy turns it into events).
    """

    def __init__(
        self,
        *,
        failure_rate: float = 0.5,
        window: float = 60.0,
        min_calls: int = 10,
        open_for: float = 30.0,
        probes: int = 3,
        on_change: Callable[[str, BreakerState, BreakerState], None] | None = None,
    ) -> None:
        if not 0 < failure_rate <= 1:
            raise ConfigError(f"CircuitBreaker failure_rate must be in (0, 1], got {failure_rate!r}")
        if window <= 0 or open_for < 0:
            raise ConfigError("CircuitBreaker window must be > 0 and open_for >= 0 seconds")
        if min_calls < 1 or probes < 1:
            raise ConfigError("CircuitBreaker min_calls and probes must be >= 1")
        self.failure_rate = failure_rate
        self.window = window
        self.min_calls = min_calls
        self.open_for = open_for
        self.probes = probes
        self.on_change = on_change
        self._circuits: dict[str, _Circuit] = {}

    def _move(self, key: str, c: _Circuit, trigger: str) -> None:
        new = TRANSITIONS.get((c.state, trigger))
        if new is None:
            raise InvalidTransition(f"circuit {key!r}: {trigger} is not allowed in state {c.state}")
        old, c.state = c.state, new
        c.in_flight = c.probe_ok = 0
        if new is _O:
            c.window = None
        if new is _C:
            c.window = None
        if old is not new and self.on_change is not None:
            self.on_change(key, old, new)

    def _circuit(self, key: str, now: float) -> _Circuit:
        c = self._circuits.get(key)
        if c is None:
            c = self._circuits[key] = _Circuit()
        if c.state is _O and now - c.opened_at >= self.open_for:
            self._move(key, c, "open_elapsed")
        return c

    def state(self, key: str, now: float) -> BreakerState:
        """The circuit's state at ``now`` (an elapsed open period shows as HALF_OPEN)."""
        return self._circuit(key, now).state

    def retry_in(self, key: str, now: float) -> float:
        """Seconds until an open circuit half-opens (0 when it is not open)."""
        c = self._circuit(key, now)
        return max(0.0, c.opened_at + self.open_for - now) if c.state is _O else 0.0

    def allow(self, key: str, now: float) -> bool:
        """Whether a call for ``key`` may go ahead now; a half-open admission reserves a probe slot."""
        c = self._circuit(key, now)
        if c.state is _C:
            return True
        if c.state is _O:
            return False
        if c.in_flight + c.probe_ok >= self.probes:
            return False
        c.in_flight += 1
        return True

    def record(self, key: str, ok: bool, now: float) -> None:
        """Report the outcome of an admitted call."""
        c = self._circuit(key, now)
        if c.state is _H:
            c.in_flight = max(0, c.in_flight - 1)
            if not ok:
                c.opened_at = now
                self._move(key, c, "probe_failed")
            else:
                c.probe_ok += 1
                if c.probe_ok >= self.probes:
                    self._move(key, c, "probes_succeeded")
            return
        if c.state is _O:
            return  # a straggler admitted before the circuit opened
        w = c.outcomes()
        w.append((now, ok))
        while w and w[0][0] <= now - self.window:
            w.popleft()
        if len(w) >= self.min_calls:
            failed = sum(1 for _, good in w if not good)
            if failed / len(w) >= self.failure_rate:
                c.opened_at = now
                self._move(key, c, "failure_rate_reached")

    def release(self, key: str, now: float) -> None:
        """An admitted call ended with an outcome that says nothing about health (e.g. a 400)."""
        c = self._circuit(key, now)
        if c.state is _H:
            c.in_flight = max(0, c.in_flight - 1)

    def reset(self, key: str) -> None:
        """Close the circuit by hand."""
        c = self._circuits.get(key)
        if c is not None:
            self._move(key, c, "reset")

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(failure_rate={self.failure_rate}, window={self.window}, min_calls={self.min_calls}, "
            f"open_for={self.open_for}, probes={self.probes}, keys={len(self._circuits)})"
        )

"""The Link's sans-I/O core: every decision a self-healing connection makes, with no sockets and no sleeping.

The asyncio shell (``_link.py``) feeds it inputs (an attempt succeeded or failed, the connection was lost,
a pong came back, time passed, the user asked to close or reconnect) together with the current monotonic
time, and performs the actions it returns (connect, send a ping, abort a connection, give up, emit an
event). Timers are not actions: the shell asks :meth:`LinkCore.next_deadline` when to call
:meth:`LinkCore.tick` next. That makes every path testable on a FakeClock by calling methods.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .._backoff import Backoff
from .._decision import Action, Decision, ErrorClass
from .._errors import AuthError, ConfigError, GaveUpError, LinkError
from .._events import (
    BackingOff,
    Closed,
    Connected,
    Connecting,
    Disconnected,
    Event,
    GaveUp,
    HeartbeatAck,
    HeartbeatMissed,
)
from .._state import State, check_transition

__all__ = [
    "LinkCore",
    "CoreConfig",
    "Connect",
    "SendPing",
    "Abort",
    "Sleep",
    "GiveUp",
    "Emit",
    "CoreAction",
]


# --- actions the shell performs -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    """Open connection number ``conn`` (attempt ``attempt`` since the last stable connection)."""

    conn: int
    attempt: int


@dataclass(frozen=True, slots=True)
class SendPing:
    """Send one heartbeat on connection ``conn``; report the answer with :meth:`LinkCore.pong_received`."""

    conn: int


@dataclass(frozen=True, slots=True)
class Abort:
    """Tear connection ``conn`` down at once (abort TCP: a dead peer gets no close handshake)."""

    conn: int
    reason: str


@dataclass(frozen=True, slots=True)
class Sleep:
    """The link backs off ``delay`` seconds; informational, the core's deadline ends the wait."""

    delay: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The link stopped for good (FAILED) with ``error``."""

    error: LinkError


@dataclass(frozen=True, slots=True)
class Emit:
    """Publish ``event`` to subscribers (the shell stamps ``at`` with the clock's wall time)."""

    event: Event


CoreAction = Connect | SendPing | Abort | Sleep | GiveUp | Emit


# --- configuration --------------------------------------------------------------------------------


def _check_positive(name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        hint = " or None to disable it" if allow_none else ""
        raise ConfigError(f"{name} must be a number of seconds > 0{hint}, got {value!r}")


@dataclass(slots=True)
class CoreConfig:
    """The knobs of the core; :meth:`LinkCore.configure` changes them while running."""

    heartbeat_interval: float | None = 20.0
    heartbeat_timeout: float = 10.0
    stable_after: float = 30.0
    max_attempts: int | None = None
    backoff: Backoff = field(default_factory=Backoff)

    def validate(self) -> None:
        _check_positive("heartbeat_interval", self.heartbeat_interval, allow_none=True)
        _check_positive("heartbeat_timeout", self.heartbeat_timeout)
        if isinstance(self.stable_after, bool) or not isinstance(self.stable_after, (int, float)) or self.stable_after < 0:
            raise ConfigError(f"stable_after must be seconds >= 0 (e.g. 30.0), got {self.stable_after!r}")
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1
        ):
            raise ConfigError(f"max_attempts must be an int >= 1, or None to retry forever; got {self.max_attempts!r}")
        if not isinstance(self.backoff, Backoff):
            raise ConfigError(f"backoff must be a tether.Backoff(...) or None, got {type(self.backoff).__name__}")


# --- the core -------------------------------------------------------------------------------------

#: One shared generator for the extra jitter on server waits (a Random per link costs ~2.9 KiB).
_SHARED_RNG = random.Random()

_HEARTBEAT_LOST = Decision(Action.RECONNECT, 0.0, "heartbeat timeout", ErrorClass.CONNECTION, 1006)
_MANUAL = Decision(Action.RECONNECT, 0.0, "reconnect requested", ErrorClass.UNKNOWN, None, True)


class LinkCore:
    """The decisions of one Link. Not thread-safe; one asyncio shell drives it.

    Args:
        config: heartbeat, stable_after, max_attempts and the backoff (the core uses it as given).
        rng: randomness for the extra jitter added on top of server-mandated waits.
    """

    def __init__(self, config: CoreConfig, *, rng: random.Random | None = None) -> None:
        config.validate()
        self.config = config
        self._rng = rng or _SHARED_RNG
        self.state = State.IDLE
        self.attempt = 0  # attempts since the last stable connection
        self.total_attempts = 0
        self.conn = 0  # id of the current (or last) connection attempt
        self.up_since: float | None = None
        self.down_since: float | None = None
        self.error: LinkError | None = None
        self._retry_at: float | None = None
        self._ping_sent: float | None = None
        self._next_ping: float | None = None
        self._suspended = False
        self._ever_connected = False

    # -- state table ------------------------------------------------------------------------------

    def _to(self, new: State) -> None:
        check_transition(self.state, new)
        self.state = new

    @property
    def active(self) -> bool:
        """True while the link is neither closing/closed nor failed."""
        return self.state not in (State.CLOSING, State.CLOSED, State.FAILED)

    # -- inputs ----------------------------------------------------------------------------------

    def start(self, now: float) -> list[CoreAction]:
        """Begin connecting (IDLE -> CONNECTING)."""
        if self.state is not State.IDLE:
            return []
        return self._connect(now)

    def attempt_succeeded(self, conn: int, now: float) -> list[CoreAction]:
        """The handshake of connection ``conn`` completed."""
        if conn != self.conn or self.state is not State.CONNECTING:
            return [Abort(conn, "stale connection")]
        self._to(State.CONNECTED)
        downtime = 0.0 if self.down_since is None else max(0.0, now - self.down_since)
        self.up_since = now
        self.down_since = None
        self._ever_connected = True
        self._ping_sent = None
        self._suspended = False
        self._next_ping = None if self.config.heartbeat_interval is None else now + self.config.heartbeat_interval
        return [Emit(Connected(self.attempt, downtime))]

    def attempt_failed(self, conn: int, decision: Decision, error: BaseException | None, now: float) -> list[CoreAction]:
        """Connection attempt ``conn`` failed; ``decision`` is the classifier's verdict on ``error``."""
        if conn != self.conn or self.state is not State.CONNECTING:
            return []
        return self._lost(None, decision, error, now)

    def connection_lost(
        self, conn: int, decision: Decision, error: BaseException | None, now: float, *, code: int | None = None
    ) -> list[CoreAction]:
        """Live connection ``conn`` ended (close frame, reset, write error); ``code`` is its close code."""
        if conn != self.conn or self.state is not State.CONNECTED:
            return []
        return self._lost(code, decision, error, now)

    def pong_received(self, conn: int, now: float) -> list[CoreAction]:
        """The answer to the outstanding heartbeat of connection ``conn`` arrived."""
        if conn != self.conn or self.state is not State.CONNECTED or self._ping_sent is None:
            return []
        rtt = max(0.0, now - self._ping_sent)
        interval = self.config.heartbeat_interval
        self._next_ping = None if interval is None else max(now, self._ping_sent + interval)
        self._ping_sent = None
        return [Emit(HeartbeatAck(rtt))]

    def reader_paused(self, conn: int, now: float) -> list[CoreAction]:
        """The application stopped reading and the receive queue is full: suspend the heartbeat judgement.

        While paused the shell reads nothing from the socket, so a pong could not be seen; killing the
        connection then would punish a slow application, not a dead peer.
        """
        if conn == self.conn and self.state is State.CONNECTED:
            self._suspended = True
            self._ping_sent = None
        return []

    def reader_resumed(self, conn: int, now: float) -> list[CoreAction]:
        """The receive queue has room again: the heartbeat starts over with a fresh ping."""
        if conn == self.conn and self.state is State.CONNECTED and self._suspended:
            self._suspended = False
            self._ping_sent = None
            self._next_ping = None if self.config.heartbeat_interval is None else now
        return []

    def tick(self, now: float) -> list[CoreAction]:
        """Time passed: end a backoff, send a due ping, or declare a silent peer dead."""
        if self.state is State.BACKING_OFF and self._retry_at is not None and now >= self._retry_at:
            return self._connect(now)
        if self.state is not State.CONNECTED or self._suspended:
            return []
        if self._ping_sent is not None:
            waited = now - self._ping_sent
            if waited >= self.config.heartbeat_timeout:
                conn = self.conn
                return [Emit(HeartbeatMissed(waited)), Abort(conn, "heartbeat timeout"), *self._lost(1006, _HEARTBEAT_LOST, None, now)]
            return []
        if self._next_ping is not None and now >= self._next_ping:
            self._ping_sent = now
            return [SendPing(self.conn)]
        return []

    @property
    def awaiting_pong(self) -> bool:
        """True while a heartbeat is out: the next deadline judges the peer rather than sends a ping."""
        return self._ping_sent is not None and self.state is State.CONNECTED and not self._suspended

    def next_deadline(self) -> float | None:
        """The monotonic time at which :meth:`tick` has something to do, or None."""
        if self.state is State.BACKING_OFF:
            return self._retry_at
        if self.state is not State.CONNECTED or self._suspended:
            return None
        if self._ping_sent is not None:
            return self._ping_sent + self.config.heartbeat_timeout
        return self._next_ping

    def close_requested(self, now: float) -> list[CoreAction]:
        """Intentional close: from any live state to CLOSING; nothing reconnects after this."""
        if self.state in (State.CLOSING, State.CLOSED):
            return []
        conn = self.conn
        was_connected = self.state in (State.CONNECTED, State.CONNECTING)
        self._to(State.CLOSING)
        self._retry_at = None
        return [Abort(conn, "closed by us")] if was_connected else []

    def closed(self, now: float) -> list[CoreAction]:
        """Everything is torn down: CLOSING -> CLOSED."""
        if self.state is State.CLOSED:
            return []
        if self.state is not State.CLOSING:
            self._to(State.CLOSING)
        self._to(State.CLOSED)
        return [Emit(Closed())]

    def reconnect_requested(self, now: float) -> list[CoreAction]:
        """Manual reconnect: retry a FAILED link from scratch, skip a backoff, or replace a live connection."""
        if self.state in (State.CLOSING, State.CLOSED):
            return []
        if self.state is State.IDLE:
            return self.start(now)
        if self.state is State.FAILED:
            self.error = None
            self.attempt = 0
            self.config.backoff.reset()
            return self._connect(now)
        if self.state is State.BACKING_OFF:
            return self._connect(now)
        if self.state is State.CONNECTED:
            conn = self.conn
            self.attempt = 0  # a hand-made reconnect is not a failure and must not count toward max_attempts
            out: list[CoreAction] = [Abort(conn, "reconnect requested")]
            out += self._lost(None, _MANUAL, None, now, delay=0.0)
            return out
        return []  # CONNECTING: an attempt is already under way

    def configure(
        self,
        *,
        heartbeat_interval: float | None | object = ...,
        heartbeat_timeout: float | object = ...,
        backoff: Backoff | object = ...,
    ) -> None:
        """Change settings while running; they apply from the next ping or the next backoff step.

        A new backoff continues at the step the old one had reached, so changing it during an outage
        does not restart the ramp from the bottom.
        """
        new = CoreConfig(
            heartbeat_interval=self.config.heartbeat_interval if heartbeat_interval is ... else heartbeat_interval,  # type: ignore[arg-type]
            heartbeat_timeout=self.config.heartbeat_timeout if heartbeat_timeout is ... else heartbeat_timeout,  # type: ignore[arg-type]
            stable_after=self.config.stable_after,
            max_attempts=self.config.max_attempts,
            backoff=self.config.backoff if backoff is ... else backoff,  # type: ignore[arg-type]
        )
        new.validate()
        if new.backoff is not self.config.backoff:
            reached = min(self.config.backoff.attempt, 64)
            new.backoff = new.backoff.clone()
            for _ in range(reached):
                try:
                    next(new.backoff)
                except StopIteration:
                    break
        old_interval = self.config.heartbeat_interval
        self.config = new
        if self.state is State.CONNECTED and self._ping_sent is None and new.heartbeat_interval != old_interval:
            if new.heartbeat_interval is None:
                self._next_ping = None
            else:
                base = (self._next_ping - old_interval) if (self._next_ping is not None and old_interval) else (self.up_since or 0.0)
                self._next_ping = base + new.heartbeat_interval

    # -- internals -------------------------------------------------------------------------------

    def _connect(self, now: float) -> list[CoreAction]:
        self._to(State.CONNECTING)
        self._retry_at = None
        self.attempt += 1
        self.total_attempts += 1
        self.conn += 1
        return [Emit(Connecting(self.attempt)), Connect(self.conn, self.attempt)]

    def _lost(
        self,
        code: int | None,
        decision: Decision,
        error: BaseException | None,
        now: float,
        *,
        delay: float | None = None,
    ) -> list[CoreAction]:
        was_up = self.state is State.CONNECTED
        reason = decision.reason or (type(error).__name__ if error is not None else "connection lost")
        out: list[CoreAction] = [Emit(Disconnected(code, reason, error))]
        if was_up:
            # Only a connection that stayed up stable_after earns a fresh backoff: an accept-then-close
            # peer must keep climbing the ramp instead of being hit in a tight loop.
            if self.up_since is not None and now - self.up_since >= self.config.stable_after:
                self.attempt = 0
                self.config.backoff.reset()
            self.up_since = None
        if self.down_since is None:
            self.down_since = now
        self._ping_sent = None
        self._next_ping = None
        self._suspended = False

        if decision.action is Action.FAIL:
            if decision.error_class is ErrorClass.AUTH:
                status = decision.code if decision.code is not None and 100 <= decision.code < 600 else None
                close = decision.code if status is None else None
                err: LinkError = AuthError(f"credentials refused: {reason}", status=status, code=close)
            else:
                err = GaveUpError(f"gave up: {reason}", attempts=self.attempt)
            return out + self._give_up(err, error)
        if self.config.max_attempts is not None and self.attempt >= self.config.max_attempts:
            err = GaveUpError(f"gave up after {self.attempt} attempts; last: {reason}", attempts=self.attempt)
            return out + self._give_up(err, error)

        if decision.reset_backoff:
            self.config.backoff.reset()
        if delay is None:
            try:
                step = next(self.config.backoff)
            except StopIteration:
                err = GaveUpError(f"gave up: backoff exhausted after {self.attempt} attempts; last: {reason}", attempts=self.attempt)
                return out + self._give_up(err, error)
            if decision.action is Action.WAIT:
                # Never sooner than the server asked; jitter only adds (up to 10 % or 1 s) so a
                # crowd told "Retry-After: 2" does not return in one burst.
                extra = self._rng.uniform(0.0, min(1.0, 0.1 * decision.delay)) if decision.delay > 0 else 0.0
                delay = max(step, decision.delay + extra)
            else:
                delay = max(step, decision.delay)
        self._to(State.BACKING_OFF)
        self._retry_at = now + delay
        return out + [Emit(BackingOff(self.attempt + 1, delay, reason)), Sleep(delay)]

    def _give_up(self, err: LinkError, cause: BaseException | None) -> list[CoreAction]:
        if cause is not None and err.__cause__ is None:
            err.__cause__ = cause
        self._to(State.FAILED)
        self._retry_at = None
        self.error = err
        return [Emit(GaveUp(err)), GiveUp(err)]

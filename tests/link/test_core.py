"""The Link's sans-I/O core: every transition and decision, with time passed in by hand."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether import AuthError, Backoff, ConfigError, GaveUpError, State
from tether._decision import Action, Decision, ErrorClass
from tether.events import (
    BackingOff,
    Closed,
    Connected,
    Connecting,
    Disconnected,
    GaveUp,
    HeartbeatAck,
    HeartbeatMissed,
)
from tether.link._core import Abort, Connect, CoreConfig, Emit, GiveUp as GiveUpAction, LinkCore, SendPing, Sleep
from tether.testing import FakeClock

NET = Decision(Action.RECONNECT, 0.0, "reset", ErrorClass.CONNECTION)
AUTH = Decision(Action.FAIL, 0.0, "HTTP 401", ErrorClass.AUTH, 401)
RESTART = Decision(Action.RECONNECT, 0.0, "close 1012", ErrorClass.TEMPORARY, 1012, reset_backoff=True)


def wait(seconds: float) -> Decision:
    return Decision(Action.WAIT, seconds, "HTTP 503", ErrorClass.FLOOD_WAIT, 503)


def core(**kw: object) -> LinkCore:
    kw.setdefault("backoff", Backoff(base=1.0, factor=2.0, cap=60.0, jitter="none"))
    return LinkCore(CoreConfig(**kw), rng=random.Random(7))  # type: ignore[arg-type]


def evs(actions: list) -> list:
    return [a.event for a in actions if isinstance(a, Emit)]


def delay_of(actions: list) -> float:
    (sleep,) = [a for a in actions if isinstance(a, Sleep)]
    return sleep.delay


def up(c: LinkCore, now: float = 0.0) -> None:
    c.start(now) if c.state is State.IDLE else None
    c.attempt_succeeded(c.conn, now)


def test_start_connects_first_attempt() -> None:
    """IDLE -> CONNECTING emits Connecting(1) and asks the shell to connect."""
    c = core()
    acts = c.start(0.0)
    assert c.state is State.CONNECTING
    assert evs(acts) == [Connecting(1)]
    assert Connect(1, 1) in acts
    assert c.start(0.0) == []  # starting twice does nothing


def test_success_is_connected_with_downtime() -> None:
    """CONNECTING -> CONNECTED emits Connected(attempt, downtime since the drop)."""
    c = core()
    c.start(0.0)
    assert evs(c.attempt_succeeded(1, 0.5)) == [Connected(1, 0.0)]
    assert c.state is State.CONNECTED
    c.connection_lost(1, NET, None, 40.0)
    c.tick(41.0)
    assert evs(c.attempt_succeeded(2, 42.5)) == [Connected(1, 2.5)]


def test_failed_attempt_backs_off_then_retries_on_deadline() -> None:
    """A failed attempt -> BACKING_OFF for the backoff delay; the deadline tick starts the next attempt."""
    c = core()
    c.start(0.0)
    acts = c.attempt_failed(1, NET, OSError("refused"), 0.0)
    assert c.state is State.BACKING_OFF
    assert evs(acts) == [Disconnected(None, "reset"), BackingOff(2, 1.0, "reset")]
    assert c.next_deadline() == 1.0
    assert c.tick(0.99) == []
    acts = c.tick(1.0)
    assert c.state is State.CONNECTING and Connect(2, 2) in acts
    c.attempt_failed(2, NET, None, 1.0)
    assert c.next_deadline() == 3.0  # 2nd step of base 1, factor 2


def test_auth_failure_fails_with_zero_further_attempts() -> None:
    """FAIL with AUTH -> FAILED, GaveUp(AuthError) carrying the status, and nothing is ever scheduled."""
    c = core()
    c.start(0.0)
    acts = c.attempt_failed(1, AUTH, None, 0.0)
    assert c.state is State.FAILED
    (gave,) = [e for e in evs(acts) if isinstance(e, GaveUp)]
    assert isinstance(gave.error, AuthError) and gave.error.status == 401
    assert any(isinstance(a, GiveUpAction) for a in acts)
    assert c.next_deadline() is None
    assert c.tick(10_000.0) == []
    assert c.total_attempts == 1


def test_auth_close_code_sets_code_not_status() -> None:
    """An auth close code (4001) yields AuthError(code=4001, status=None)."""
    c = core()
    up(c)
    c.connection_lost(1, Decision(Action.FAIL, 0.0, "close 4001", ErrorClass.AUTH, 4001), None, 1.0, code=4001)
    assert isinstance(c.error, AuthError) and c.error.code == 4001 and c.error.status is None


def test_non_auth_fail_gives_up_with_gave_up_error() -> None:
    """FAIL for anything but auth -> FAILED with GaveUpError."""
    c = core()
    c.start(0.0)
    c.attempt_failed(1, Decision(Action.FAIL, 0.0, "HTTP 400", ErrorClass.PERMANENT, 400), None, 0.0)
    assert c.state is State.FAILED and isinstance(c.error, GaveUpError) and not isinstance(c.error, AuthError)


@settings(max_examples=200, deadline=None)
@given(
    server=st.floats(min_value=0.0, max_value=3600.0),
    base=st.floats(min_value=0.01, max_value=10.0),
    failures=st.integers(min_value=0, max_value=12),
    jitter=st.sampled_from(["full", "equal", "decorrelated", "none"]),
)
def test_wait_is_never_shorter_than_the_server_asked(server: float, base: float, failures: int, jitter: str) -> None:
    """WAIT sleeps at least decision.delay whatever the backoff and jitter (jitter only adds)."""
    c = core(backoff=Backoff(base=base, cap=max(base, 60.0), jitter=jitter))  # type: ignore[arg-type]
    c.start(0.0)
    now = 0.0
    for _ in range(failures):
        c.attempt_failed(c.conn, NET, None, now)
        now = c.next_deadline() or now
        c.tick(now)
    acts = c.attempt_failed(c.conn, wait(server), None, now)
    assert delay_of(acts) >= server
    assert c.next_deadline() >= now + server


def test_wait_adds_bounded_jitter() -> None:
    """A server wait of 2 s gives a delay in [2, 2.2]: never less, at most 10 % more."""
    delays = []
    for seed in range(50):
        c = LinkCore(CoreConfig(backoff=Backoff(base=0.01, cap=0.01, jitter="none")), rng=random.Random(seed))
        c.start(0.0)
        delays.append(delay_of(c.attempt_failed(1, wait(2.0), None, 0.0)))
    assert min(delays) >= 2.0 and max(delays) <= 2.2 and len(set(delays)) > 1


def test_reset_backoff_decision_starts_from_first_step() -> None:
    """A planned restart (reset_backoff, close 1012) backs off from the first step, not the grown one."""
    c = core()
    c.start(0.0)
    now = 0.0
    for _ in range(4):
        c.attempt_failed(c.conn, NET, None, now)
        now = c.next_deadline()
        c.tick(now)
    c.attempt_succeeded(c.conn, now)
    acts = c.connection_lost(c.conn, RESTART, None, now + 1.0, code=1012)
    assert delay_of(acts) == 1.0


def test_backoff_keeps_growing_for_accept_then_close_peer() -> None:
    """Connections that drop before stable_after do not reset the backoff: delays grow 1, 2, 4, 8."""
    c = core(stable_after=30.0)
    c.start(0.0)
    now, delays = 0.0, []
    for _ in range(4):
        c.attempt_succeeded(c.conn, now)
        delays.append(delay_of(c.connection_lost(c.conn, NET, None, now + 0.01, code=1000)))
        now = c.next_deadline()
        c.tick(now)
    assert delays == [1.0, 2.0, 4.0, 8.0]


def test_backoff_resets_after_stable_after() -> None:
    """A connection that stayed up stable_after seconds resets the backoff and the attempt counter."""
    c = core(stable_after=30.0)
    c.start(0.0)
    for _ in range(3):
        c.attempt_failed(c.conn, NET, None, 0.0)
        c.tick(c.next_deadline())
    c.attempt_succeeded(c.conn, 100.0)
    acts = c.connection_lost(c.conn, NET, None, 130.0)
    assert delay_of(acts) == 1.0
    assert evs(c.tick(131.0)) == [Connecting(1)]


def test_max_attempts_gives_up_after_that_many() -> None:
    """max_attempts=3: three failed attempts, then FAILED with GaveUpError(attempts=3), no fourth."""
    c = core(max_attempts=3)
    c.start(0.0)
    for _ in range(2):
        c.attempt_failed(c.conn, NET, None, 0.0)
        c.tick(c.next_deadline())
    acts = c.attempt_failed(c.conn, NET, OSError("x"), 10.0)
    assert c.state is State.FAILED
    assert isinstance(c.error, GaveUpError) and c.error.attempts == 3
    assert isinstance(c.error.__cause__, OSError)
    assert c.total_attempts == 3 and c.next_deadline() is None
    assert any(isinstance(e, GaveUp) for e in evs(acts))


def test_exhausted_backoff_gives_up() -> None:
    """A Backoff with its own max_attempts that runs out ends the link in FAILED."""
    c = core(backoff=Backoff(base=1, jitter="none", max_attempts=1))
    c.start(0.0)
    c.attempt_failed(1, NET, None, 0.0)
    c.tick(1.0)
    c.attempt_failed(2, NET, None, 1.0)
    assert c.state is State.FAILED and isinstance(c.error, GaveUpError)


def test_heartbeat_ping_then_ack() -> None:
    """A ping goes out every interval; its pong emits HeartbeatAck(rtt) and schedules the next ping."""
    c = core(heartbeat_interval=20.0, heartbeat_timeout=10.0)
    up(c, 0.0)
    assert c.next_deadline() == 20.0
    assert c.tick(19.9) == []
    assert c.tick(20.0) == [SendPing(1)]
    assert c.next_deadline() == 30.0
    assert evs(c.pong_received(1, 20.25)) == [HeartbeatAck(0.25)]
    assert c.next_deadline() == 40.0
    assert c.pong_received(1, 21.0) == []  # no ping outstanding


def test_awaiting_pong_only_while_a_heartbeat_is_out() -> None:
    """awaiting_pong is True from the ping until its pong, and never while paused or down."""
    c = core(heartbeat_interval=20.0, heartbeat_timeout=10.0)
    up(c, 0.0)
    assert not c.awaiting_pong
    c.tick(20.0)
    assert c.awaiting_pong
    c.pong_received(1, 20.1)
    assert not c.awaiting_pong
    c.tick(40.1)
    c.reader_paused(1, 40.2)
    assert not c.awaiting_pong
    c.reader_resumed(1, 41.0)
    c.tick(41.0)
    c.connection_lost(1, NET, None, 41.5)
    assert not c.awaiting_pong


def test_heartbeat_silence_is_detected_within_interval_plus_timeout() -> None:
    """No pong within the timeout: HeartbeatMissed, the connection is aborted and replaced."""
    c = core(heartbeat_interval=20.0, heartbeat_timeout=10.0)
    up(c, 0.0)
    c.tick(20.0)
    assert c.tick(29.99) == []
    acts = c.tick(30.0)
    assert acts[0] == Emit(HeartbeatMissed(10.0))
    assert Abort(1, "heartbeat timeout") in acts
    assert Disconnected(1006, "heartbeat timeout") in evs(acts)
    assert c.state is State.BACKING_OFF


def test_heartbeat_suspended_while_reader_paused() -> None:
    """While the app's queue is full the heartbeat never declares death; on resume it pings at once."""
    c = core(heartbeat_interval=1.0, heartbeat_timeout=1.0)
    up(c, 0.0)
    c.tick(1.0)  # ping out
    c.reader_paused(1, 1.5)
    assert c.next_deadline() is None
    assert c.tick(100.0) == [] and c.state is State.CONNECTED
    c.reader_resumed(1, 100.0)
    assert c.tick(100.0) == [SendPing(1)]


def test_heartbeat_disabled_with_none() -> None:
    """heartbeat_interval=None: no pings, no deadline while connected."""
    c = core(heartbeat_interval=None)
    up(c)
    assert c.next_deadline() is None and c.tick(1e6) == []


def test_hot_configure_heartbeat_applies_to_next_ping() -> None:
    """configure(heartbeat_interval=5) moves the next ping without reconnecting."""
    c = core(heartbeat_interval=20.0)
    up(c, 0.0)
    c.configure(heartbeat_interval=5.0, heartbeat_timeout=2.0)
    assert c.state is State.CONNECTED and c.next_deadline() == 5.0
    c.tick(5.0)
    assert c.next_deadline() == 7.0


def test_hot_configure_backoff_continues_at_reached_step() -> None:
    """configure(backoff=...) uses the new backoff from the next delay on, at the step already reached."""
    c = core()
    c.start(0.0)
    c.attempt_failed(1, NET, None, 0.0)  # used step 0 (1 s)
    c.tick(1.0)
    c.configure(backoff=Backoff(base=10.0, factor=3.0, cap=1000.0, jitter="none"))
    assert delay_of(c.attempt_failed(2, NET, None, 1.0)) == 30.0


def test_configure_rejects_bad_values_and_keeps_old() -> None:
    """configure() with a bad value raises ConfigError naming the option and changes nothing."""
    c = core(heartbeat_interval=20.0)
    with pytest.raises(ConfigError, match="heartbeat_timeout"):
        c.configure(heartbeat_interval=5.0, heartbeat_timeout=-1)
    assert c.config.heartbeat_interval == 20.0


@pytest.mark.parametrize(
    ("option", "value"),
    [("heartbeat_interval", 0), ("heartbeat_timeout", "10"), ("stable_after", -1), ("max_attempts", 0), ("backoff", 3)],
)
def test_core_config_validation_names_option(option: str, value: object) -> None:
    """Invalid core settings raise ConfigError naming the option."""
    with pytest.raises(ConfigError, match=option):
        core(**{option: value})


@pytest.mark.parametrize("where", ["idle", "connecting", "connected", "backing_off", "failed"])
def test_close_from_every_state_never_reconnects(where: str) -> None:
    """close_requested -> CLOSING from every live state; later inputs are ignored; closed() -> CLOSED + Closed."""
    c = core()
    if where != "idle":
        c.start(0.0)
    if where == "connected":
        c.attempt_succeeded(1, 0.0)
    if where == "backing_off":
        c.attempt_failed(1, NET, None, 0.0)
    if where == "failed":
        c.attempt_failed(1, AUTH, None, 0.0)
    acts = c.close_requested(1.0)
    assert c.state is State.CLOSING
    assert (Abort(1, "closed by us") in acts) == (where in ("connecting", "connected"))
    assert c.attempt_failed(1, NET, None, 2.0) == []
    assert c.connection_lost(1, NET, None, 2.0) == []
    assert c.tick(1e6) == [] and c.next_deadline() is None
    assert evs(c.closed(3.0)) == [Closed()]
    assert c.state is State.CLOSED
    assert c.reconnect_requested(4.0) == [] and c.close_requested(4.0) == []


def test_reconnect_from_failed_starts_fresh() -> None:
    """reconnect() from FAILED: CONNECTING again with attempt 1 and the backoff reset."""
    c = core(max_attempts=1)
    c.start(0.0)
    c.attempt_failed(1, NET, None, 0.0)
    assert c.state is State.FAILED
    acts = c.reconnect_requested(5.0)
    assert c.state is State.CONNECTING and evs(acts) == [Connecting(1)] and c.error is None


def test_reconnect_skips_backoff() -> None:
    """reconnect() while BACKING_OFF connects now."""
    c = core()
    c.start(0.0)
    c.attempt_failed(1, NET, None, 0.0)
    acts = c.reconnect_requested(0.1)
    assert c.state is State.CONNECTING and Connect(2, 2) in acts


def test_reconnect_replaces_live_connection() -> None:
    """reconnect() while CONNECTED aborts it and connects again after a zero delay."""
    c = core()
    up(c)
    acts = c.reconnect_requested(5.0)
    assert Abort(1, "reconnect requested") in acts and delay_of(acts) == 0.0
    assert Connect(2, 1) in c.tick(5.0)


def test_stale_connection_inputs_are_ignored() -> None:
    """Reports about an older connection (after a heartbeat kill) change nothing; a late success is aborted."""
    c = core(heartbeat_interval=1.0, heartbeat_timeout=1.0)
    up(c, 0.0)
    c.tick(1.0)
    c.tick(2.0)  # heartbeat kill of conn 1
    assert c.connection_lost(1, NET, None, 2.1) == []
    c.tick(c.next_deadline())
    assert c.attempt_succeeded(1, 3.0) == [Abort(1, "stale connection")]
    assert c.pong_received(1, 3.0) == []


async def test_core_driven_by_fake_clock() -> None:
    """Driven with FakeClock time, a 503 Retry-After 2 never reconnects before 2 s have passed."""
    clock = FakeClock()
    c = core(backoff=Backoff(base=0.1, jitter="full"))
    c.start(clock.monotonic())
    c.attempt_failed(1, wait(2.0), None, clock.monotonic())
    await clock.advance(1.999)
    assert c.tick(clock.monotonic()) == [] and c.state is State.BACKING_OFF
    await clock.advance(0.3)
    assert any(isinstance(a, Connect) for a in c.tick(clock.monotonic()))

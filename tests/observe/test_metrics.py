"""Metrics: every family in the Prometheus text, event mapping, isolation, loop lag."""

from __future__ import annotations

import asyncio
import time

from prometheus_client.parser import text_string_to_metric_families

from tether import Action, Decision, ErrorClass, State
from tether import events as ev
from tether.observe import METRIC_NAMES, LoopLagSampler, Metrics


def families(m: Metrics) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(m.render().decode())}


def value(m: Metrics, name: str, **labels: str) -> float | None:
    for f in text_string_to_metric_families(m.render().decode()):
        for s in f.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def feed_everything(m: Metrics) -> None:
    for e in (ev.Connecting(1), ev.Connected(1), ev.HeartbeatAck(0.02), ev.Disconnected(1006, "abnormal"),
              ev.BackingOff(1, 0.5, "abnormal"), ev.Connecting(1), ev.Connected(1, downtime=1.5),
              ev.HeartbeatMissed(10.0), ev.Dropped(2), ev.GaveUp(RuntimeError("x"))):
        m.observe_link_event("sess_1", e)
    m.observe_recovery_event(Decision(Action.RECONNECT, error_class=ErrorClass.CONNECTION))
    m.message_in("sess_1", 3)
    m.message_out("sess_1", 2)
    m.set_outbox_depth("sess_1", 7)
    m.add_dead_letters("sess_1")


def test_render_parses_and_has_every_metric() -> None:
    """render() is valid Prometheus text and contains every family tether documents."""
    m = Metrics()
    feed_everything(m)
    fams = families(m)
    missing = [n for n in METRIC_NAMES if n not in fams]
    assert missing == []
    assert value(m, "tether_connects_total", session="sess_1") == 2
    assert value(m, "tether_reconnect_attempts_total", session="sess_1") == 1
    assert value(m, "tether_time_to_recover_seconds_count") == 1
    assert value(m, "tether_time_to_recover_seconds_sum") == 1.5
    assert value(m, "tether_heartbeat_rtt_seconds_count") == 1
    assert value(m, "tether_messages_in_total", session="sess_1") == 3
    assert value(m, "tether_outbox_depth", session="sess_1") == 7
    assert value(m, "tether_dead_letters", session="sess_1") == 1
    assert value(m, "tether_recovery_actions_total", error_class="connection", action="reconnect") == 1
    assert value(m, "tether_session_state", session="sess_1", state="failed") == 1
    assert value(m, "tether_process_resident_memory_bytes") > 0


def test_session_state_is_one_hot_and_closed_is_not_down() -> None:
    """The state gauge marks exactly the current state; a closed session has no session_up series."""
    m = Metrics(process=False)
    m.observe_link_event("a", ev.Connecting(1))
    m.observe_link_event("a", ev.Connected(1))
    states = {s.labels["state"]: s.value for s in families(m)["tether_session_state"] if s.labels["session"] == "a"}
    assert states == {s.value: (1.0 if s is State.CONNECTED else 0.0) for s in State}
    assert value(m, "tether_session_up", session="a") == 1
    m.observe_link_event("a", ev.Disconnected(None, "reset"))
    assert value(m, "tether_session_up", session="a") == 0
    m.observe_link_event("a", ev.Closed())
    assert value(m, "tether_session_up", session="a") is None


def test_registries_are_per_instance_and_sessions_can_be_forgotten() -> None:
    """Two Metrics never share counters; forget_session drops a session's series."""
    a, b = Metrics(process=False), Metrics(process=False)
    a.observe_link_event("s", ev.Connected(1))
    assert value(a, "tether_connects_total", session="s") == 1
    assert value(b, "tether_connects_total", session="s") is None
    a.forget_session("s")
    assert 'session="s"' not in a.render().decode()


def test_recovery_events_accept_objects_and_keywords() -> None:
    """observe_recovery_event counts a Decision, an event carrying one, or explicit keywords."""

    class Retried:
        decision = Decision(Action.WAIT, 3.0, error_class=ErrorClass.FLOOD_WAIT)

    m = Metrics(process=False)
    m.observe_recovery_event(Retried())
    m.observe_recovery_event(error_class="rate_limit", action="retry")
    assert value(m, "tether_recovery_actions_total", error_class="flood_wait", action="wait") == 1
    assert value(m, "tether_recovery_actions_total", error_class="rate_limit", action="retry") == 1


def test_samples_feed_the_alert_engine() -> None:
    """samples() lists (name, labels, value) tuples as exposed, counters with _total."""
    m = Metrics(process=False)
    m.observe_link_event("s", ev.Connected(1))
    assert ("tether_connects_total", {"session": "s"}, 1.0) in m.samples()


async def test_loop_lag_sampler_sees_a_blocked_loop() -> None:
    """A call that blocks the loop shows up as event-loop lag."""
    sampler = LoopLagSampler(interval=0.01, window=1000)
    sampler.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # block the loop on purpose
        for _ in range(500):
            if sampler.lag >= 0.1:
                break
            await asyncio.sleep(0.01)
        assert sampler.lag >= 0.1
    finally:
        await sampler.close()

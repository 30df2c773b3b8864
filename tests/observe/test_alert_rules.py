"""Alert rules on the FakeClock: for, repeat, resolution, silences, grouping, flapping."""

from __future__ import annotations

import pytest

from tether import ConfigError
from tether.observe import AlertEngine, AlertManager, AlertRule
from tether.testing import FakeClock

from .conftest import Recorder, Source, down_rule


async def test_fires_only_after_for(clock: FakeClock, source: Source, recorder: Recorder, manager) -> None:
    """A rule stays pending for `for` seconds and only then fires and notifies."""
    manager.add_rule(down_rule(for_=120))
    source.set("tether_session_up", 0, session="s1")
    await clock.advance(119)
    assert recorder.got == []
    assert [a.state for a in manager.alerts()] == ["pending"]
    await clock.advance(2)
    assert recorder.statuses == ["firing"]
    assert manager.alerts()[0].state == "firing"
    assert recorder.got[0].alerts[0]["labels"]["session"] == "s1"


async def test_condition_clearing_while_pending_resets_for(clock: FakeClock, source: Source, recorder: Recorder, manager) -> None:
    """If the condition clears during `for`, the pending timer starts over and nothing fires."""
    manager.add_rule(down_rule(for_=120))
    source.set("tether_session_up", 0, session="s1")
    await clock.advance(100)
    source.set("tether_session_up", 1, session="s1")
    await clock.advance(2)
    source.set("tether_session_up", 0, session="s1")
    await clock.advance(100)
    assert recorder.got == []
    await clock.advance(30)
    assert recorder.statuses == ["firing"]


async def test_notifies_once_per_repeat_interval(clock: FakeClock, source: Source, recorder: Recorder, manager) -> None:
    """A firing group that does not change is re-sent once per repeat_interval, not every evaluation."""
    manager.add_rule(down_rule(for_=0, repeat_interval=600, group_interval=60))
    source.set("tether_session_up", 0, session="s1")
    await clock.advance(1)
    assert recorder.statuses == ["firing"]
    await clock.advance(598)
    assert len(recorder.got) == 1
    await clock.advance(2)
    assert len(recorder.got) == 2 and recorder.got[1].repeat
    await clock.advance(1200)
    assert len(recorder.got) == 4


async def test_resolves_and_notifies_resolution(clock: FakeClock, source: Source, recorder: Recorder, manager) -> None:
    """When the condition clears the alert resolves and one resolution notification is sent."""
    manager.add_rule(down_rule(for_=0, group_interval=30))
    source.set("tether_session_up", 0, session="s1")
    await clock.advance(5)
    source.set("tether_session_up", 1, session="s1")
    await clock.advance(60)
    assert recorder.statuses == ["firing", "resolved"]
    resolved = recorder.got[1].alerts[0]
    assert resolved["state"] == "resolved" and resolved["resolved_at"] is not None
    await clock.advance(600)
    assert recorder.statuses == ["firing", "resolved"]
    assert manager.alerts() == []
    kinds = [(h["from"], h["to"]) for h in manager.history if h["kind"] == "transition"]
    assert kinds == [("inactive", "pending"), ("pending", "firing"), ("firing", "resolved")]


async def test_keep_firing_for_bridges_short_recovery(clock: FakeClock, source: Source, recorder: Recorder, manager) -> None:
    """keep_firing_for keeps a firing alert firing through a recovery shorter than it."""
    manager.add_rule(down_rule(for_=0, keep_firing_for=60, group_interval=10))
    source.set("tether_session_up", 0, session="s1")
    await clock.advance(5)
    source.set("tether_session_up", 1, session="s1")
    await clock.advance(30)
    source.set("tether_session_up", 0, session="s1")
    await clock.advance(30)
    assert recorder.statuses == ["firing"]
    source.set("tether_session_up", 1, session="s1")
    await clock.advance(100)
    assert recorder.statuses == ["firing", "resolved"]


async def test_respects_silences(clock: FakeClock, source: Source, recorder: Recorder, manager) -> None:
    """A silenced alert still fires (visible) but sends nothing until the silence ends."""
    manager.add_rule(down_rule(for_=0, group_interval=10))
    manager.add_silence([{"name": "session", "value": "s1"}], duration=300)
    source.set("tether_session_up", 0, session="s1")
    source.set("tether_session_up", 0, session="s2")
    await clock.advance(5)
    assert len(recorder.got) == 1
    assert [a["labels"]["session"] for a in recorder.got[0].alerts] == ["s2"]
    assert {a.labels["session"]: a.silenced for a in manager.alerts()} == {"s1": True, "s2": False}
    await clock.advance(200)
    assert len(recorder.got) == 1
    await clock.advance(120)  # the silence ended at 300 s: s1 now joins the group
    assert len(recorder.got) == 2
    assert sorted(a["labels"]["session"] for a in recorder.got[1].alerts) == ["s1", "s2"]


async def test_groups_alerts_of_one_rule(clock: FakeClock, source: Source, recorder: Recorder, manager) -> None:
    """Alerts of one rule firing within group_wait go out as one notification."""
    manager.add_rule(down_rule(for_=0, group_wait=30, group_interval=300))
    source.set("tether_session_up", 0, session="s1")
    await clock.advance(10)
    source.set("tether_session_up", 0, session="s2")
    await clock.advance(25)
    assert len(recorder.got) == 1 and len(recorder.got[0].alerts) == 2
    source.set("tether_session_up", 0, session="s3")
    await clock.advance(100)
    assert len(recorder.got) == 1  # group_interval holds the change back
    await clock.advance(250)
    assert len(recorder.got) == 2 and len(recorder.got[1].alerts) == 3


async def test_flapping_input_does_not_storm(clock: FakeClock, source: Source, recorder: Recorder, manager) -> None:
    """A session going down and up every 3 s for 30 min yields one firing and one resolution, not hundreds."""
    manager.add_rule(down_rule(name="SessionDown", for_=120))
    manager.add_rule(down_rule(name="SessionDownFast", for_=0, keep_firing_for=60, group_wait=0,
                               group_interval=300, repeat_interval=4 * 3600))
    manager.add_rule(AlertRule("ReconnectRateHigh", "tether_reconnect_attempts_total", ">", 10, function="increase",
                               range=300, keep_firing_for=300, group_wait=0))
    reconnects = 0
    for i in range(300):  # 300 x 6 s = 30 min of flapping
        source.set("tether_session_up", 0, session="s1")
        reconnects += 1
        source.set("tether_reconnect_attempts_total", reconnects, session="s1")
        await clock.advance(3)
        source.set("tether_session_up", 1, session="s1")
        await clock.advance(3)
    by_rule: dict[str, list[str]] = {}
    for n in recorder.got:
        by_rule.setdefault(n.rule, []).append(n.status)
    assert "SessionDown" not in by_rule  # never down for 2 minutes straight
    assert by_rule == {"SessionDownFast": ["firing"], "ReconnectRateHigh": ["firing"]}
    await clock.advance(900)  # flapping stopped: each rule resolves once
    by_rule = {}
    for n in recorder.got:
        by_rule.setdefault(n.rule, []).append(n.status)
    assert by_rule == {"SessionDownFast": ["firing", "resolved"], "ReconnectRateHigh": ["firing", "resolved"]}


def test_rate_and_increase_functions() -> None:
    """increase() sums counter growth over the range (resets count from zero); rate() divides by time."""
    inc = AlertRule("Inc", "c_total", ">", 4, function="increase", range=60, group_wait=0)
    rate = AlertRule("Rate", "c_total", ">", 0.5, function="rate", range=60, group_wait=0)
    engine = AlertEngine([inc, rate])
    values = [0, 1, 2, 3, 1, 2]  # a reset after 3: total growth 3 + 1 + 1 = 5
    for t, v in enumerate(values):
        notes = engine.evaluate([("c_total", {}, v)], now=t * 10.0, wall=t * 10.0)
    assert [n.rule for n in notes] == ["Inc"]
    assert notes[0].alerts[0]["value"] == 5
    for t in range(6, 20):  # flat for a while: growth leaves the window
        engine.evaluate([("c_total", {}, 2)], now=t * 10.0, wall=t * 10.0)
    assert [a.state for a in engine.alerts() if a.rule == "Inc"] in ([], ["resolved"])


def test_matchers_select_series() -> None:
    """Label matchers (=, !=, =~, !~) pick which series a rule watches."""
    rule = AlertRule("R", "m", ">", 0, matchers=[{"name": "session", "value": "bot_.*", "op": "=~"},
                                                 {"name": "env", "value": "test", "op": "!="}], group_wait=0)
    engine = AlertEngine([rule])
    notes = engine.evaluate([("m", {"session": "bot_1"}, 1), ("m", {"session": "web"}, 1),
                             ("m", {"session": "bot_2", "env": "test"}, 1)], now=0, wall=0)
    assert [a["labels"]["session"] for a in notes[0].alerts] == ["bot_1"]


@pytest.mark.parametrize("field,value", [("op", "=>"), ("threshold", "high"), ("for_", -1), ("severity", "urgent"),
                                         ("function", "avg"), ("name", "bad name!")])
def test_invalid_rule_names_the_field(field: str, value: object) -> None:
    """A bad rule raises ConfigError whose message names the offending field."""
    kwargs = {"name": "R", "metric": "m", field: value}
    with pytest.raises(ConfigError) as err:
        AlertRule(**kwargs)  # type: ignore[arg-type]
    assert field.rstrip("_") in str(err.value)


def test_rule_round_trips_through_dict() -> None:
    """to_dict/from_dict round-trip a rule, spelling `for_` as `for`."""
    rule = down_rule(matchers={"session": "s1"}, actions=("email",))
    data = rule.to_dict()
    assert data["for"] == 120 and "for_" not in data
    assert AlertRule.from_dict(data) == rule


async def test_rules_and_silences_survive_a_restart(tmp_path, clock: FakeClock, source: Source) -> None:
    """With state_path, API-made rules and live silences are reloaded by the next manager; expired ones are not."""
    path = tmp_path / "alerts.json"
    first = AlertManager(source, rules=[down_rule()], clock=clock, state_path=path)
    first.add_rule(AlertRule("Lag", "tether_event_loop_lag_seconds", ">", 0.5, for_=60))
    first.remove_rule("SessionDown")
    keep = first.add_silence([{"name": "session", "value": "s1"}], duration=3600, comment="maintenance")
    first.add_silence([{"name": "session", "value": "s2"}], duration=10)
    await clock.advance(20)
    second = AlertManager(source, rules=[down_rule()], clock=clock, state_path=path)
    assert [r.name for r in second.rules] == ["Lag"] and second.rules[0].for_ == 60
    assert [s.id for s in second.engine.silences()] == [keep.id]
    assert second.add_silence([{"name": "a", "value": "b"}], duration=5).id != keep.id
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="alerts.json"):
        AlertManager(source, clock=clock, state_path=path)

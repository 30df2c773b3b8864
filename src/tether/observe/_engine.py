"""AlertEngine: sans-I/O rule evaluation. Feed it samples and the time; it returns notifications.

Per alert (a rule and one label set)::

    inactive --cond--> pending --held for `for`--> firing --cond clear for keep_firing_for--> resolved
        ^                 |                                                                     |
        +----cond clear---+---------------------------(notified or never notified)-------------+

Notifications are grouped per rule, Alertmanager style: the first waits ``group_wait`` (more alerts
of the same rule join it), later ones come at most every ``group_interval`` and only when the
group changed; an unchanged firing group is re-sent every ``repeat_interval``. Silenced alerts are
left out. Together, ``for``, ``keep_firing_for`` and ``group_interval`` turn a flapping input into
one notification instead of a storm.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .._errors import ConfigError
from ._rules import OPERATORS, AlertRule, Sample, Silence, as_samples

__all__ = ["AlertEngine", "Alert", "Notification", "INACTIVE", "PENDING", "FIRING", "RESOLVED"]

INACTIVE, PENDING, FIRING, RESOLVED = "inactive", "pending", "firing", "resolved"
LabelKey = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Alert:
    """One alert instance: a rule applied to one label set. Times are wall-clock epoch seconds."""

    rule: str
    labels: dict[str, str]
    state: str
    value: float
    summary: str
    active_since: float | None = None  # when the condition first held (pending)
    fired_at: float | None = None
    resolved_at: float | None = None
    silenced: bool = False
    # private bookkeeping (monotonic times)
    _since: float = 0.0
    _last_true: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "rule": self.rule, "severity": self.labels.get("severity", ""), "labels": dict(self.labels),
            "state": self.state, "value": self.value,
            "summary": self.summary, "active_since": self.active_since, "fired_at": self.fired_at,
            "resolved_at": self.resolved_at, "silenced": self.silenced,
        }


@dataclass(frozen=True, slots=True)
class Notification:
    """What the engine asks the actions to send: one rule's group of alerts."""

    rule: str
    status: str  # "firing" while any alert in the group fires, else "resolved"
    severity: str
    alerts: tuple[dict[str, Any], ...]
    at: float
    actions: tuple[str, ...] = ()
    repeat: bool = False

    @property
    def firing(self) -> list[dict[str, Any]]:
        """The firing alerts of the group."""
        return [a for a in self.alerts if a["state"] == FIRING]

    def title(self) -> str:
        """A one-line title: ``[FIRING:2] SessionDown (critical)``."""
        n = len(self.firing) if self.status == FIRING else len(self.alerts)
        return f"[{self.status.upper()}:{n}] {self.rule} ({self.severity})"

    def text(self) -> str:
        """A short human text: the title, then one line per alert."""
        lines = [self.title()]
        for a in self.alerts:
            lines.append(f"- {a['state']}: {a['summary']}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the webhook body)."""
        return {
            "version": "1", "rule": self.rule, "status": self.status, "severity": self.severity, "at": self.at,
            "repeat": self.repeat, "title": self.title(), "alerts": [dict(a) for a in self.alerts],
        }


@dataclass(slots=True)
class _Group:
    started: float | None = None  # monotonic: when the first alert of a new episode fired
    last_sent: float | None = None
    notified: dict[LabelKey, dict[str, Any]] = field(default_factory=dict)  # announced as firing


@dataclass(slots=True)
class _Series:
    points: collections.deque[tuple[float, float]] = field(default_factory=collections.deque)


class AlertEngine:
    """Evaluates :class:`AlertRule` s against samples; keeps alert state, silences and history.

    No I/O and no clock: every call passes ``now`` (monotonic seconds, for durations) and ``wall``
    (epoch seconds, for timestamps and silences).

    Args:
        rules: the initial rules.
        history: how many history entries to keep.
    """

    def __init__(self, rules: Iterable[AlertRule] = (), *, history: int = 1000) -> None:
        self._rules: dict[str, AlertRule] = {}
        self._alerts: dict[str, dict[LabelKey, Alert]] = {}
        self._groups: dict[str, _Group] = {}
        self._series: dict[tuple[str, LabelKey], _Series] = {}
        self._silences: dict[str, Silence] = {}
        self._silence_ids = itertools.count(1)
        self._seq = itertools.count(1)
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=history)
        for r in rules:
            self.add_rule(r)

    # ---- rules and silences ------------------------------------------------------------------
    @property
    def rules(self) -> list[AlertRule]:
        """The rules, in the order they were added."""
        return list(self._rules.values())

    def rule(self, name: str) -> AlertRule | None:
        """The rule called ``name``, or None."""
        return self._rules.get(name)

    def add_rule(self, rule: AlertRule, *, replace: bool = True) -> None:
        """Add ``rule``, or replace the rule of the same name (its alert state is kept).

        Raises:
            ConfigError: a rule of that name exists and ``replace`` is False.
        """
        if not replace and rule.name in self._rules:
            raise ConfigError(f"an alert rule named {rule.name!r} already exists")
        self._rules[rule.name] = rule
        self._alerts.setdefault(rule.name, {})
        self._groups.setdefault(rule.name, _Group())

    def remove_rule(self, name: str) -> bool:
        """Remove a rule and its alerts; False when there was none."""
        if self._rules.pop(name, None) is None:
            return False
        self._alerts.pop(name, None)
        self._groups.pop(name, None)
        return True

    def add_silence(self, matchers: Any, *, starts_at: float, ends_at: float, created_by: str = "",
                    comment: str = "", id: str | None = None) -> Silence:
        """Add a silence and return it (raises ConfigError on bad matchers or times)."""
        sid = id or f"s{next(self._silence_ids)}"
        while id is None and sid in self._silences:
            sid = f"s{next(self._silence_ids)}"
        s = Silence(sid, matchers, float(starts_at), float(ends_at), created_by, comment)
        self._silences[sid] = s
        return s

    def remove_silence(self, silence_id: str) -> bool:
        """Expire a silence now; False when there was none."""
        return self._silences.pop(silence_id, None) is not None

    def silences(self, wall: float | None = None) -> list[Silence]:
        """Every silence, or only those not yet ended at ``wall``."""
        return [s for s in self._silences.values() if wall is None or s.ends_at > wall]

    def alerts(self, *, include_inactive: bool = False) -> list[Alert]:
        """Current alerts (pending, firing, resolved-awaiting-notification)."""
        return [a for per in self._alerts.values() for a in per.values() if include_inactive or a.state != INACTIVE]

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(self, samples: Iterable[Any], *, now: float, wall: float) -> list[Notification]:
        """Evaluate every rule against ``samples`` at ``now``; return the notifications due."""
        by_name: dict[str, list[Sample]] = collections.defaultdict(list)
        for s in as_samples(samples):
            by_name[s.name].append(s)
        self._record_series(by_name, now)
        for s in [s for s in self._silences.values() if s.ends_at <= wall]:
            del self._silences[s.id]  # expired silences go away
        out: list[Notification] = []
        for rule in list(self._rules.values()):
            if rule.enabled:
                self._eval_rule(rule, by_name.get(rule.metric, ()), now, wall)
            note = self._group_step(rule, now, wall)
            if note is not None:
                out.append(note)
        return out

    def _record_series(self, by_name: Mapping[str, list[Sample]], now: float) -> None:
        ranges: dict[str, float] = {}
        for r in self._rules.values():
            if r.function != "value" and r.enabled:
                ranges[r.metric] = max(ranges.get(r.metric, 0.0), r.range)
        for metric, rng in ranges.items():
            for s in by_name.get(metric, ()):
                series = self._series.setdefault((metric, _key(s.labels)), _Series())
                series.points.append((now, s.value))
                # keep one point older than the window, so increase() covers the whole range
                while len(series.points) > 2 and series.points[1][0] <= now - rng:
                    series.points.popleft()
        for k in [k for k in self._series if k[0] not in ranges]:
            del self._series[k]

    def _value(self, rule: AlertRule, s: Sample, now: float) -> float | None:
        if rule.function == "value":
            return s.value
        series = self._series.get((rule.metric, _key(s.labels)))
        pts = list(series.points) if series else []
        # the points inside the window plus the last one before it, so the increase spans the range
        i = 0
        while i < len(pts) and pts[i][0] < now - rule.range:
            i += 1
        pts = pts[max(0, i - 1):]
        if len(pts) < 2:
            return 0.0 if rule.function == "increase" else None
        # a value that went down is a counter reset: count from zero, as Prometheus does
        inc = sum((v - p if v >= p else v) for (_, p), (_, v) in zip(pts, pts[1:]))
        if rule.function == "increase":
            return inc
        span = pts[-1][0] - pts[0][0]
        return inc / span if span > 0 else None

    def _eval_rule(self, rule: AlertRule, samples: Iterable[Sample], now: float, wall: float) -> None:
        alerts = self._alerts[rule.name]
        compare = OPERATORS[rule.op]
        true_now: dict[LabelKey, tuple[dict[str, str], float]] = {}
        for s in samples:
            if not all(m.matches(s.labels) for m in rule.matchers):
                continue
            v = self._value(rule, s, now)
            if v is not None and compare(v, rule.threshold):
                labels = {**s.labels, **rule.labels, "alertname": rule.name, "severity": rule.severity}
                true_now[_key(labels)] = (labels, v)
        for key, (labels, v) in true_now.items():
            a = alerts.get(key)
            if a is None or a.state in (INACTIVE, RESOLVED):
                a = Alert(rule.name, labels, PENDING, v, rule.describe(labels, v), active_since=wall, _since=now)
                alerts[key] = a
                self._transition(a, INACTIVE, PENDING, wall)
            a.value = v
            a.summary = rule.describe(labels, v)
            a._last_true = now
            if a.state == PENDING and now - a._since >= rule.for_:
                a.state, a.fired_at = FIRING, wall
                self._transition(a, PENDING, FIRING, wall)
        for key, a in list(alerts.items()):
            if key in true_now:
                continue
            if a.state == PENDING:
                del alerts[key]
                self._transition(a, PENDING, INACTIVE, wall)
            elif a.state == FIRING and now - a._last_true >= rule.keep_firing_for:
                a.state, a.resolved_at = RESOLVED, wall
                self._transition(a, FIRING, RESOLVED, wall)
        for a in alerts.values():
            a.silenced = any(s.mutes(a.labels, wall) for s in self._silences.values())

    def _group_step(self, rule: AlertRule, now: float, wall: float) -> Notification | None:
        alerts = self._alerts.get(rule.name, {})
        group = self._groups[rule.name]
        firing_all = {k for k, a in alerts.items() if a.state == FIRING}
        firing = {k: a for k, a in alerts.items() if a.state == FIRING and not a.silenced}
        # A resolution is owed for every alert we announced that no longer fires (a silenced one
        # still fires: silences mute, they do not resolve).
        owed = [k for k in group.notified if k not in firing_all]
        for k in [k for k, a in alerts.items() if a.state == RESOLVED and k not in group.notified]:
            del alerts[k]  # cleared before anyone heard of it (inside group_wait, or silenced)
        if not firing and not owed:
            group.started = None
            return None
        repeat = False
        if group.last_sent is None:
            if group.started is None:
                group.started = now
            if not firing or now - group.started < rule.group_wait:
                return None
        else:
            if now - group.last_sent < rule.group_interval:
                return None
            if not (set(firing) - set(group.notified)) and not owed:
                if not firing or now - group.last_sent < rule.repeat_interval:
                    return None
                repeat = True
        members = [a.to_dict() for a in firing.values()]
        for k in owed:
            a = alerts.get(k)
            if a is not None and a.state == RESOLVED:
                members.append(a.to_dict())
                del alerts[k]
            else:  # flapped back to pending, or the rule's series vanished: still no longer firing
                members.append({**group.notified[k], "state": RESOLVED, "resolved_at": wall})
            del group.notified[k]
        for k, a in firing.items():
            group.notified[k] = a.to_dict()
        note = Notification(
            rule=rule.name, status=FIRING if firing else RESOLVED, severity=rule.severity,
            alerts=tuple(members), at=wall, actions=rule.actions, repeat=repeat,
        )
        group.last_sent = now
        if not group.notified:
            group.last_sent, group.started = None, None  # episode over: the next one waits group_wait again
        self.history.append({
            "seq": next(self._seq), "at": wall, "kind": "notification", "rule": rule.name, "status": note.status,
            "alerts": len(members), "repeat": repeat,
        })
        return note

    def _transition(self, a: Alert, old: str, new: str, wall: float) -> None:
        self.history.append({
            "seq": next(self._seq), "at": wall, "kind": "transition", "rule": a.rule, "labels": dict(a.labels), "from": old, "to": new,
            "value": a.value,
        })


def _key(labels: Mapping[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))

"""Alert rule data: matchers, rules, silences, samples. Pure data with validation, no I/O.

Semantics follow Prometheus + Alertmanager: a rule is a metric (with label matchers), an
operator and a threshold; ``for`` keeps it pending before it fires; ``keep_firing_for`` keeps it
firing through short recoveries; notifications are grouped per rule (``group_wait``,
``group_interval``) and repeated every ``repeat_interval`` while firing.
"""

from __future__ import annotations

import operator
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Literal, Mapping, NamedTuple

from .._errors import ConfigError

__all__ = [
    "Sample", "SampleSource", "Matcher", "AlertRule", "Silence", "OPERATORS", "FUNCTIONS", "ALERT_SEVERITIES",
    "as_samples", "default_rules",
]

Operator = Literal[">", ">=", "<", "<=", "==", "!="]
OPERATORS: Mapping[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}
#: ``value``: the sample as is; ``rate``: per-second increase over ``range``; ``increase``: increase over ``range``.
FUNCTIONS = ("value", "rate", "increase")
ALERT_SEVERITIES = ("info", "warning", "critical")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,127}$")


class Sample(NamedTuple):
    """One metric sample: name (as exposed, counters end in ``_total``), labels, value."""

    name: str
    labels: Mapping[str, str]
    value: float


SampleSource = Callable[[], Iterable["Sample | tuple[str, Mapping[str, str], float]"]]


def as_samples(raw: Iterable[Any]) -> list[Sample]:
    """Normalise ``(name, labels, value)`` tuples into :class:`Sample`; NaN values are skipped."""
    out: list[Sample] = []
    for item in raw:
        name, labels, value = item
        value = float(value)
        if value != value:  # NaN: "unknown", never compares true
            continue
        out.append(Sample(str(name), dict(labels), value))
    return out


@dataclass(frozen=True, slots=True)
class Matcher:
    """A label matcher: ``=`` / ``!=`` (exact) or ``=~`` / ``!~`` (full-match regex).

    A missing label matches as the empty string, as in Prometheus.
    """

    name: str
    value: str
    op: Literal["=", "!=", "=~", "!~"] = "="

    def __post_init__(self) -> None:
        if self.op not in ("=", "!=", "=~", "!~"):
            raise ConfigError(f"matcher op must be one of =, !=, =~, !~; got {self.op!r}")
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ConfigError(f"matcher {self.name!r} has an invalid regex {self.value!r}: {exc}") from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when ``labels`` satisfy this matcher."""
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        hit = re.fullmatch(self.value, got) is not None
        return hit if self.op == "=~" else not hit

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | "Matcher") -> "Matcher":
        """Build from a Matcher or a ``{"name", "value", "op"}`` mapping."""
        if isinstance(spec, Matcher):
            return spec
        try:
            return cls(str(spec["name"]), str(spec["value"]), spec.get("op", "="))
        except KeyError as exc:
            raise ConfigError(f"a matcher needs {exc.args[0]!r}") from None


def _matchers(value: Any) -> tuple[Matcher, ...]:
    if isinstance(value, Mapping):  # shorthand {"session": "s1"}
        return tuple(Matcher(str(k), str(v)) for k, v in value.items())
    return tuple(Matcher.parse(m) for m in value or ())


def _nonneg(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"alert rule field {name!r} must be a number of seconds, got {value!r}") from None
    if not v >= 0:
        raise ConfigError(f"alert rule field {name!r} must be >= 0 seconds, got {value!r}")
    return v


@dataclass(frozen=True)
class AlertRule:
    """An alerting rule.

    Attributes:
        name: unique rule name (becomes the ``alertname`` label).
        metric: the sample name, e.g. ``tether_session_up`` or ``tether_connects_total``.
        op: comparison operator (``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=``).
        threshold: the value compared against.
        matchers: label matchers selecting series (a mapping is shorthand for ``=`` matchers).
        function: ``value``, ``rate`` (per second over ``range``) or ``increase`` (over ``range``).
        range: the window in seconds for ``rate`` and ``increase``.
        for_: seconds the condition must hold before the alert fires (JSON/API field ``for``).
        keep_firing_for: seconds a firing alert stays firing after the condition clears.
        repeat_interval: resend a still-firing group this often.
        group_wait: wait this long after a group's first alert before the first notification.
        group_interval: at least this long between two notifications of one group.
        severity: ``info``, ``warning`` or ``critical``.
        summary: text for notifications; ``{value}``, ``{threshold}`` and ``{labels[NAME]}`` are filled in.
        actions: names of the actions to notify; empty means every configured action.
        labels: extra labels attached to every alert of this rule.
        enabled: a disabled rule is kept but never evaluated.
    """

    name: str
    metric: str
    op: str = ">"
    threshold: float = 0.0
    matchers: tuple[Matcher, ...] = ()
    function: str = "value"
    range: float = 300.0
    for_: float = 0.0
    keep_firing_for: float = 0.0
    repeat_interval: float = 4 * 3600.0
    group_wait: float = 30.0
    group_interval: float = 300.0
    severity: str = "warning"
    summary: str = ""
    actions: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigError(f"alert rule name must be 1-128 of letters, digits, _ . : -; got {self.name!r}")
        if not isinstance(self.metric, str) or not _NAME_RE.match(self.metric):
            raise ConfigError(f"alert rule {self.name!r}: metric must be a metric name, got {self.metric!r}")
        if self.op not in OPERATORS:
            raise ConfigError(f"alert rule {self.name!r}: op must be one of {', '.join(OPERATORS)}; got {self.op!r}")
        if self.function not in FUNCTIONS:
            raise ConfigError(f"alert rule {self.name!r}: function must be one of {', '.join(FUNCTIONS)}; got {self.function!r}")
        if self.severity not in ALERT_SEVERITIES:
            raise ConfigError(f"alert rule {self.name!r}: severity must be one of {', '.join(ALERT_SEVERITIES)}; got {self.severity!r}")
        try:
            object.__setattr__(self, "threshold", float(self.threshold))
        except (TypeError, ValueError):
            raise ConfigError(f"alert rule {self.name!r}: threshold must be a number, got {self.threshold!r}") from None
        for f in ("range", "for_", "keep_firing_for", "repeat_interval", "group_wait", "group_interval"):
            object.__setattr__(self, f, _nonneg(f.rstrip("_"), getattr(self, f)))
        if self.function != "value" and self.range <= 0:
            raise ConfigError(f"alert rule {self.name!r}: range must be > 0 for function {self.function!r}")
        if self.repeat_interval <= 0 or self.group_interval <= 0:
            raise ConfigError(f"alert rule {self.name!r}: repeat_interval and group_interval must be > 0")
        object.__setattr__(self, "matchers", _matchers(self.matchers))
        object.__setattr__(self, "actions", tuple(str(a) for a in self.actions))
        object.__setattr__(self, "labels", {str(k): str(v) for k, v in dict(self.labels).items()})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``for_`` is spelled ``for``)."""
        d = asdict(self)
        d["for"] = d.pop("for_")
        d["matchers"] = [asdict(m) for m in self.matchers]
        d["actions"] = list(self.actions)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AlertRule":
        """Build from a mapping (accepts ``for`` or ``for_``). Raises ConfigError naming a bad field."""
        d = dict(data)
        if "for" in d:
            d["for_"] = d.pop("for")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown alert rule field {unknown[0]!r}")
        for req in ("name", "metric"):
            if req not in d:
                raise ConfigError(f"alert rule field {req!r} is required")
        return cls(**d)

    def describe(self, labels: Mapping[str, str], value: float) -> str:
        """The summary with placeholders filled in (falls back to a generic text)."""
        if self.summary:
            try:
                return self.summary.format(value=value, threshold=self.threshold, labels=_Labels(labels))
            except (KeyError, IndexError, ValueError, AttributeError):
                pass
        sel = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity"))
        return f"{self.name}: {self.function}({self.metric}{{{sel}}}) = {value:g} {self.op} {self.threshold:g}"


class _Labels(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return ""


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes notifications of alerts whose labels match every matcher, between ``starts_at`` and ``ends_at``.

    Times are wall-clock epoch seconds. Silenced alerts still change state (visible in the API and
    history); only their notifications are suppressed.
    """

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str = ""
    comment: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "matchers", _matchers(self.matchers))
        if not self.matchers:
            raise ConfigError("a silence needs at least one matcher (it would mute everything)")
        if not self.ends_at > self.starts_at:
            raise ConfigError(f"silence ends_at ({self.ends_at}) must be after starts_at ({self.starts_at})")

    def active(self, wall: float) -> bool:
        """True while the silence is in force."""
        return self.starts_at <= wall < self.ends_at

    def mutes(self, labels: Mapping[str, str], wall: float) -> bool:
        """True when this silence is active and matches ``labels``."""
        return self.active(wall) and all(m.matches(labels) for m in self.matchers)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id, "matchers": [asdict(m) for m in self.matchers], "starts_at": self.starts_at,
            "ends_at": self.ends_at, "created_by": self.created_by, "comment": self.comment,
        }


def default_rules(*, memory_bytes: float = 1024**3, loop_lag: float = 0.5) -> list[AlertRule]:
    """tether's default alert rules.

    * ``SessionDown``: a session's connection has been down for over 2 minutes (critical).
    * ``ReconnectRateHigh``: more than 10 reconnect attempts in 5 minutes on one session: flapping.
    * ``MemoryHigh``: RSS above ``memory_bytes`` (1 GiB, PM2's common ``max_memory_restart``) for 5 minutes.
    * ``EventLoopLagHigh``: the event loop ran timers over ``loop_lag`` seconds late for 1 minute.
    * ``DeadLettersGrowing``: a session's dead-letter count rose in the last 10 minutes.
    """
    return [
        AlertRule("SessionDown", "tether_session_up", "==", 0, for_=120, keep_firing_for=30, severity="critical",
                  group_wait=10, summary="session {labels[session]} has been down for over 2 minutes"),
        AlertRule("ReconnectRateHigh", "tether_reconnect_attempts_total", ">", 10, function="increase", range=300,
                  keep_firing_for=300, severity="warning",
                  summary="session {labels[session]} reconnected {value:.0f} times in 5 minutes (flapping)"),
        AlertRule("MemoryHigh", "tether_process_resident_memory_bytes", ">", memory_bytes, for_=300, severity="warning",
                  summary="process memory {value:.0f} bytes is above {threshold:.0f}"),
        AlertRule("EventLoopLagHigh", "tether_event_loop_lag_seconds", ">", loop_lag, for_=60, severity="warning",
                  summary="event loop lag {value:.3f}s is above {threshold}s: something blocks the loop"),
        AlertRule("DeadLettersGrowing", "tether_dead_letters", ">", 0, function="increase", range=600,
                  keep_firing_for=600, severity="warning",
                  summary="session {labels[session]} gained {value:.0f} dead letters in 10 minutes"),
    ]

"""Prometheus metrics for tether, on a registry owned by one service instance.

The registry is never prometheus_client's global one: two services (or two tests) in one process
must not share or collide on counters. Label cardinality is bounded by sessions: session ids are
labels, message ids never are. Histograms carry no session label, so their series count stays at
"buckets", not "buckets x sessions".
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Iterator

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .. import _events as ev
from .._state import State

__all__ = ["Metrics", "LoopLagSampler", "METRIC_NAMES", "CONTENT_TYPE_LATEST"]

P = "tether_"

#: Every metric family Metrics exposes (names as the text format shows them, without _total).
METRIC_NAMES = (
    P + "session_state",
    P + "session_up",
    P + "connects",
    P + "disconnects",
    P + "reconnect_attempts",
    P + "heartbeat_missed",
    P + "gave_up",
    P + "dropped_messages",
    P + "time_to_recover_seconds",
    P + "heartbeat_rtt_seconds",
    P + "messages_in",
    P + "messages_out",
    P + "outbox_depth",
    P + "dead_letters",
    P + "recovery_actions",
    P + "process_resident_memory_bytes",
    P + "process_memory_percent",
    P + "process_cpu_percent",
    P + "process_open_files",
    P + "event_loop_lag_seconds",
)

_RECOVER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, float("inf"))
_RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))
_STATES = tuple(s.value for s in State)


class _ProcessCollector:
    """Reads psutil at scrape time, so the numbers are as fresh as the scrape."""

    def __init__(self, proc: psutil.Process, lag: Callable[[], float]) -> None:
        self._proc = proc
        self._lag = lag
        # psutil's first cpu_percent() call returns 0.0; prime it so the first scrape is meaningful.
        self._proc.cpu_percent(None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        p = self._proc
        try:
            with p.oneshot():
                rss = float(p.memory_info().rss)
                mem_pct = float(p.memory_percent())
                cpu = float(p.cpu_percent(None))
                try:
                    files = float(len(p.open_files()))
                except (psutil.Error, OSError):
                    files = float("nan")
        except psutil.Error:
            return
        yield GaugeMetricFamily(P + "process_resident_memory_bytes", "Resident set size of this process.", value=rss)
        yield GaugeMetricFamily(P + "process_memory_percent", "RSS as a percentage of total RAM.", value=mem_pct)
        yield GaugeMetricFamily(P + "process_cpu_percent", "CPU use since the previous scrape (100 = one core).", value=cpu)
        yield GaugeMetricFamily(P + "process_open_files", "Files this process holds open.", value=files)
        yield GaugeMetricFamily(
            P + "event_loop_lag_seconds", "Largest event-loop scheduling delay seen in the last sampling period.",
            value=self._lag(),
        )


class LoopLagSampler:
    """Measures how late the event loop runs a timer: the lag a blocking call causes everyone else.

    It deliberately uses the loop's own real clock, not an injected Clock: the quantity measured *is*
    real scheduling delay. ``lag`` is the largest delay seen over the last ``window`` samples.

    Args:
        interval: seconds between probes.
        window: how many probes ``lag`` covers.
    """

    def __init__(self, *, interval: float = 0.5, window: int = 10) -> None:
        self.interval = interval
        self._recent: list[float] = []
        self._window = window
        self._task: asyncio.Task[None] | None = None
        self.on_sample: Callable[[float], None] | None = None

    @property
    def lag(self) -> float:
        """The largest scheduling delay over the recent window (0.0 before the first probe)."""
        return max(self._recent, default=0.0)

    def start(self) -> None:
        """Start probing on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tether-loop-lag")

    async def close(self) -> None:
        """Stop probing and wait for the probe task to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - start - self.interval)
            self._recent.append(lag)
            del self._recent[: -self._window]
            if self.on_sample is not None:
                self.on_sample(lag)


class Metrics:
    """tether's Prometheus metrics on a private :class:`CollectorRegistry`.

    Feed it link events with :meth:`observe_link_event` (or :meth:`attach` a link), recovery
    decisions with :meth:`observe_recovery_event`, and message/outbox counts with the small setters.
    :meth:`render` returns the Prometheus text exposition.

    Args:
        registry: a registry to use; a fresh one by default.
        process: export process metrics (psutil) and event-loop lag.
        lag_interval: seconds between event-loop lag probes (after :meth:`start`).
    """

    def __init__(self, *, registry: CollectorRegistry | None = None, process: bool = True, lag_interval: float = 0.5) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.session_state = Gauge(P + "session_state", "1 for the state each session is in, 0 for the others.", ["session", "state"], registry=r)
        self.session_up = Gauge(P + "session_up", "1 while the session's connection is up, 0 while it is down.", ["session"], registry=r)
        self.connects = Counter(P + "connects", "Successful connections.", ["session"], registry=r)
        self.disconnects = Counter(P + "disconnects", "Connections dropped or attempts failed.", ["session"], registry=r)
        self.reconnect_attempts = Counter(P + "reconnect_attempts", "Connection attempts after the first.", ["session"], registry=r)
        self.heartbeat_missed = Counter(P + "heartbeat_missed", "Heartbeats that got no answer in time.", ["session"], registry=r)
        self.gave_up = Counter(P + "gave_up", "Times a session stopped reconnecting for good.", ["session"], registry=r)
        self.dropped = Counter(P + "dropped_messages", "Buffered messages dropped because the buffer was full.", ["session"], registry=r)
        self.time_to_recover = Histogram(
            P + "time_to_recover_seconds", "Seconds from a drop to the next successful connection.",
            buckets=_RECOVER_BUCKETS, registry=r,
        )
        self.heartbeat_rtt = Histogram(P + "heartbeat_rtt_seconds", "Heartbeat round-trip time.", buckets=_RTT_BUCKETS, registry=r)
        self.messages_in = Counter(P + "messages_in", "Messages received from upstreams.", ["session"], registry=r)
        self.messages_out = Counter(P + "messages_out", "Messages sent upstream.", ["session"], registry=r)
        self.outbox_depth = Gauge(P + "outbox_depth", "Messages waiting in the outbox.", ["session"], registry=r)
        self.dead_letters = Gauge(P + "dead_letters", "Messages in the dead-letter store.", ["session"], registry=r)
        self.recovery_actions = Counter(
            P + "recovery_actions", "Recovery decisions by error class and action.", ["error_class", "action"], registry=r,
        )
        self._seen_connecting: set[str] = set()
        self.lag_sampler = LoopLagSampler(interval=lag_interval)
        if process:
            r.register(_ProcessCollector(psutil.Process(os.getpid()), lambda: self.lag_sampler.lag))  # type: ignore[arg-type]

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the event-loop lag sampler (call from inside the running loop)."""
        self.lag_sampler.start()

    async def close(self) -> None:
        """Stop the lag sampler."""
        await self.lag_sampler.close()

    # ---- link and recovery events -----------------------------------------------------------
    def set_state(self, session: str, state: State | str) -> None:
        """Record that ``session`` is now in ``state`` (one-hot over every State)."""
        value = state.value if isinstance(state, State) else str(state)
        for s in _STATES:
            self.session_state.labels(session, s).set(1.0 if s == value else 0.0)
        if value == State.CLOSED.value:
            # A session closed on purpose is not "down": drop its up series so no alert fires on it.
            self._remove(self.session_up, session)
        else:
            self.session_up.labels(session).set(1.0 if value == State.CONNECTED.value else 0.0)

    def observe_link_event(self, session: str, event: ev.Event) -> None:
        """Update the metrics from one :mod:`tether.events` event of ``session``'s link."""
        match event:
            case ev.Connecting():
                if session in self._seen_connecting:
                    self.reconnect_attempts.labels(session).inc()
                self._seen_connecting.add(session)
                self.set_state(session, State.CONNECTING)
            case ev.Connected(downtime=downtime):
                self.connects.labels(session).inc()
                if downtime > 0:
                    self.time_to_recover.observe(downtime)
                self.set_state(session, State.CONNECTED)
            case ev.Disconnected():
                self.disconnects.labels(session).inc()
                self.session_up.labels(session).set(0.0)
            case ev.BackingOff():
                self.set_state(session, State.BACKING_OFF)
            case ev.HeartbeatAck(rtt=rtt):
                self.heartbeat_rtt.observe(max(0.0, rtt))
            case ev.HeartbeatMissed():
                self.heartbeat_missed.labels(session).inc()
            case ev.GaveUp():
                self.gave_up.labels(session).inc()
                self.set_state(session, State.FAILED)
            case ev.Closed():
                self.set_state(session, State.CLOSED)
            case ev.Dropped(count=count):
                self.dropped.labels(session).inc(count)
            case _:
                pass

    def observe_recovery_event(self, event: Any = None, *, error_class: Any = None, action: Any = None) -> None:
        """Count one recovery decision, by error class and action.

        Accepts a :class:`tether.Decision`, any event with ``error_class``/``action`` attributes
        (or a ``decision`` attribute holding them), or the two values as keywords.
        """
        if event is not None:
            source = getattr(event, "decision", None) or event
            error_class = getattr(source, "error_class", error_class)
            action = getattr(source, "action", action)
        if error_class is None and action is None:
            return
        self.recovery_actions.labels(_label(error_class), _label(action)).inc()

    def attach(self, session: str, source: Any) -> Callable[[], None]:
        """Subscribe to ``source.subscribe(cb)`` (a Link) and feed its events in; returns unsubscribe."""
        return source.subscribe(lambda event: self.observe_link_event(session, event))

    # ---- counters the service feeds -----------------------------------------------------------
    def message_in(self, session: str, n: int = 1) -> None:
        """Count ``n`` messages received on ``session``."""
        self.messages_in.labels(session).inc(n)

    def message_out(self, session: str, n: int = 1) -> None:
        """Count ``n`` messages sent on ``session``."""
        self.messages_out.labels(session).inc(n)

    def set_outbox_depth(self, session: str, depth: int) -> None:
        """Set the outbox depth of ``session``."""
        self.outbox_depth.labels(session).set(depth)

    def set_dead_letters(self, session: str, count: int) -> None:
        """Set how many dead letters ``session`` has."""
        self.dead_letters.labels(session).set(count)

    def add_dead_letters(self, session: str, n: int = 1) -> None:
        """Add ``n`` dead letters to ``session``'s count."""
        self.dead_letters.labels(session).inc(n)

    def forget_session(self, session: str) -> None:
        """Drop every series of a deleted session, so the label set stays bounded by live sessions."""
        for metric in (self.session_up, self.connects, self.disconnects, self.reconnect_attempts, self.heartbeat_missed,
                       self.gave_up, self.dropped, self.messages_in, self.messages_out, self.outbox_depth, self.dead_letters):
            self._remove(metric, session)
        for s in _STATES:
            self._remove(self.session_state, session, s)
        self._seen_connecting.discard(session)

    @staticmethod
    def _remove(metric: Any, *labels: str) -> None:
        try:
            metric.remove(*labels)
        except KeyError:
            pass

    # ---- reading -----------------------------------------------------------------------------
    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """Every current sample as ``(name, labels, value)``: a value source for the alert engine."""
        out: list[tuple[str, dict[str, str], float]] = []
        for family in self.registry.collect():
            for s in family.samples:
                out.append((s.name, dict(s.labels), float(s.value)))
        return out


def _label(value: Any) -> str:
    if value is None:
        return "none"
    v = getattr(value, "value", value)
    return str(v)


"""AlertManager: the asyncio shell around :class:`AlertEngine`.

Every ``interval`` seconds (on the injected clock) it reads samples from the source, lets the
engine decide, logs transitions to ``tether.alerts`` and hands notifications to the actions, each
delivery in its own task so a slow webhook never delays evaluation. Failed deliveries are logged,
recorded in the ErrorTracker when one is given, and kept in ``deliveries``.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

from .._clock import SYSTEM_CLOCK, Clock
from .._errors import ConfigError
from ._actions import AlertAction
from ._engine import Alert, AlertEngine, Notification
from ._redact import redact
from ._rules import AlertRule, SampleSource, Silence, default_rules
from ._tracker import ErrorTracker

__all__ = ["AlertManager"]

_log = logging.getLogger("tether.alerts")


class AlertManager:
    """Evaluates alert rules on a clock and delivers notifications to actions.

    Args:
        source: returns the current samples as ``(name, labels, value)`` (sync or async), e.g.
            :meth:`Metrics.samples`.
        rules: the rules; :func:`default_rules` when None.
        actions: where notifications go; a rule's ``actions`` names pick some, empty means all.
        clock: evaluation and retry timing.
        interval: seconds between evaluations.
        tracker: failed deliveries are recorded here too.
        delivery_timeout: seconds one delivery may take before it is cancelled and counted failed.
        state_path: a JSON file keeping rules and silences across restarts. When it exists, its
            rules replace ``rules``; every change through this manager rewrites it atomically.
    """

    def __init__(self, source: SampleSource, *, rules: Iterable[AlertRule] | None = None,
                 actions: Iterable[AlertAction] = (), clock: Clock | None = None, interval: float = 15.0,
                 tracker: ErrorTracker | None = None, delivery_timeout: float = 120.0, history: int = 1000,
                 state_path: str | Path | None = None) -> None:
        if not interval > 0:
            raise ConfigError(f"AlertManager interval must be > 0 seconds, got {interval!r}")
        self.source = source
        self.state_path = Path(state_path) if state_path is not None else None
        saved = self._load()
        if saved is not None:
            rules = saved[0]
        self.engine = AlertEngine(default_rules() if rules is None else rules, history=history)
        self.actions: dict[str, AlertAction] = {}
        self._defaults: set[str] = set()
        for a in actions:
            self.add_action(a)
        self.clock = clock or SYSTEM_CLOCK
        self.interval = float(interval)
        self.tracker = tracker
        self.delivery_timeout = delivery_timeout
        self.deliveries: collections.deque[dict[str, Any]] = collections.deque(maxlen=history)
        self.notifications: collections.deque[Notification] = collections.deque(maxlen=history)
        self._pending: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._seen_history = 0
        if saved is not None:
            for sil in saved[1]:
                if sil.ends_at > self.clock.wall():
                    self.engine.add_silence(sil.matchers, starts_at=sil.starts_at, ends_at=sil.ends_at,
                                            created_by=sil.created_by, comment=sil.comment, id=sil.id)

    def _load(self) -> tuple[list[AlertRule], list[Silence]] | None:
        if self.state_path is None or not self.state_path.exists():
            return None
        try:
            data = json.loads(self.state_path.read_text())
            rules = [AlertRule.from_dict(r) for r in data.get("rules", [])]
            silences = [Silence(s["id"], s["matchers"], float(s["starts_at"]), float(s["ends_at"]),
                                s.get("created_by", ""), s.get("comment", "")) for s in data.get("silences", [])]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read alert state {self.state_path}: {exc}; fix or delete the file") from None
        return rules, silences

    def _save(self) -> None:
        if self.state_path is None:
            return
        data = {"rules": [r.to_dict() for r in self.engine.rules],
                "silences": [s.to_dict() for s in self.engine.silences(self.clock.wall())]}
        tmp = self.state_path.with_suffix(".tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.state_path)  # atomic: a crash leaves the old file or the new one
        except OSError as exc:
            _log.error("cannot save alert state to %s: %s", self.state_path, exc)

    # ---- configuration -----------------------------------------------------------------------
    def add_action(self, action: AlertAction, *, default: bool | None = None) -> None:
        """Register an action under ``action.name`` (replacing one of the same name).

        ``default``: whether rules that name no actions use it; None reads ``action.default``
        (True unless the action says otherwise: a restart must be asked for by name).
        """
        self.actions[action.name] = action
        if default if default is not None else getattr(action, "default", True):
            self._defaults.add(action.name)
        else:
            self._defaults.discard(action.name)

    def add_rule(self, rule: AlertRule, *, replace: bool = True) -> None:
        """Add or replace a rule (see :meth:`AlertEngine.add_rule`)."""
        self.engine.add_rule(rule, replace=replace)
        self._save()

    def remove_rule(self, name: str) -> bool:
        """Remove a rule; False when there was none."""
        removed = self.engine.remove_rule(name)
        if removed:
            self._save()
        return removed

    @property
    def rules(self) -> list[AlertRule]:
        """The rules."""
        return self.engine.rules

    def add_silence(self, matchers: Any, *, starts_at: float | None = None, ends_at: float | None = None,
                    duration: float | None = None, created_by: str = "", comment: str = "") -> Silence:
        """Silence matching alerts from ``starts_at`` (default now) to ``ends_at`` or for ``duration`` seconds."""
        start = self.clock.wall() if starts_at is None else float(starts_at)
        if ends_at is None:
            if duration is None:
                raise ConfigError("a silence needs ends_at or duration")
            ends_at = start + float(duration)
        s = self.engine.add_silence(matchers, starts_at=start, ends_at=ends_at, created_by=created_by, comment=comment)
        _log.info("silence %s added until %s: %s", s.id, ends_at, redact(s.to_dict()["matchers"]))
        self._save()
        return s

    def remove_silence(self, silence_id: str) -> bool:
        """Expire a silence now; False when there was none."""
        removed = self.engine.remove_silence(silence_id)
        if removed:
            _log.info("silence %s removed", silence_id)
            self._save()
        return removed

    def alerts(self) -> list[Alert]:
        """Current pending, firing and resolved alerts."""
        return self.engine.alerts()

    @property
    def history(self) -> list[dict[str, Any]]:
        """Transitions and notifications, oldest first."""
        return list(self.engine.history)

    # ---- running -----------------------------------------------------------------------------
    async def tick(self) -> list[Notification]:
        """Evaluate once now and start delivering what is due; returns the notifications."""
        try:
            raw = self.source()
            if inspect.isawaitable(raw):
                raw = await raw
            samples = list(raw)
        except Exception as exc:  # noqa: BLE001 - a broken source must not kill alerting
            _log.error("alert source failed: %s", redact(f"{type(exc).__name__}: {exc}"))
            samples = []
        notes = self.engine.evaluate(samples, now=self.clock.monotonic(), wall=self.clock.wall())
        self._log_transitions()
        for note in notes:
            self.notifications.append(note)
            _log.warning("%s%s", note.title(), " (repeat)" if note.repeat else "")
            names = note.actions or tuple(n for n in self.actions if n in self._defaults)
            for name in names:
                action = self.actions.get(name)
                if action is None:
                    _log.error("rule %s names unknown action %r", note.rule, name)
                    continue
                task = asyncio.get_running_loop().create_task(self._deliver(action, note), name=f"tether-alert-{name}")
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
        return notes

    def _log_transitions(self) -> None:
        last = self._seen_history
        for e in self.engine.history:
            if e["seq"] <= last:
                continue
            self._seen_history = e["seq"]
            if e["kind"] != "transition":
                continue
            session = e["labels"].get("session")
            _log.info("alert %s %s -> %s (value %g)", e["rule"], e["from"], e["to"], e["value"],
                      extra={"session": session} if session else {})

    async def _deliver(self, action: AlertAction, note: Notification) -> None:
        at = self.clock.wall()
        try:
            await asyncio.wait_for(action.send(note), self.delivery_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - report and keep going
            msg = redact(f"{type(exc).__name__}: {exc}")
            self.deliveries.append({"at": at, "rule": note.rule, "status": note.status, "action": action.name,
                                    "ok": False, "error": msg})
            _log.error("delivery of %s to %s failed: %s", note.rule, action.name, msg)
            if self.tracker is not None:
                self.tracker.record(exc, "high", "alerts", None, {"rule": note.rule, "action": action.name})
        else:
            self.deliveries.append({"at": at, "rule": note.rule, "status": note.status, "action": action.name,
                                    "ok": True, "error": None})
            _log.info("delivered %s (%s) to %s", note.rule, note.status, action.name)

    async def drain(self, timeout: float | None = 30.0) -> None:
        """Wait until every delivery started so far has finished (tests, shutdown)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)

    def start(self) -> None:
        """Start evaluating every ``interval`` seconds (idempotent)."""
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="tether-alerts")

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - a bug in one evaluation must not end alerting for good
                _log.exception("alert evaluation failed")
            await self.clock.sleep(self.interval)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop evaluating; give in-flight deliveries ``timeout`` seconds, then cancel them."""
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._pending:
            _, still = await asyncio.wait(set(self._pending), timeout=timeout)
            for t in still:
                t.cancel()
            await asyncio.gather(*still, return_exceptions=True)

"""The health sweep: every ``sweep_interval`` seconds, check each session and heal what is stuck.

:func:`assess` is pure (a snapshot and the time in, a finding out), so every rule is tested without
a socket; :class:`HealthSweep` only gathers snapshots, applies restarts and records the report.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from .._clock import Clock
from .._state import State
from ._events import SweepCompleted, SweepFinding
from ._settings import SessionDefaults

__all__ = ["SessionHealth", "assess", "HealthSweep"]

log = logging.getLogger("tether.service")

_DOWN = (State.CONNECTING, State.BACKING_OFF, State.IDLE)


@dataclass(frozen=True, slots=True)
class SessionHealth:
    """What the sweep knows about one session at one instant."""

    session: str
    desired: str  # running | stopped | logged_out
    state: State
    state_age: float  # seconds in the current state
    heartbeat_age: float | None  # seconds since the last heartbeat answer, None if unknown
    queue_depth: int
    last_error: str | None = None


def _auth_failure(error: str | None) -> bool:
    text = (error or "").lower()
    return any(w in text for w in ("auth", "401", "403", "credential", "unauthor", "forbidden"))


def assess(h: SessionHealth, policy: SessionDefaults) -> SweepFinding | None:
    """Decide what to do about one session; None means healthy (or not ours to touch)."""
    if h.desired != "running":
        return None  # stopped and logged-out sessions stay down on purpose
    if h.state is State.FAILED:
        if _auth_failure(h.last_error):
            # Retrying refused credentials never helps (peers that do get banned): report only.
            return SweepFinding(h.session, f"failed: credentials refused ({h.last_error})", "report")
        return SweepFinding(h.session, f"failed: {h.last_error or 'gave up'}", "restart")
    if h.state in (State.CLOSED, State.CLOSING):
        return SweepFinding(h.session, "closed while it should run", "restart")
    if h.state in _DOWN and h.state_age >= policy.stuck_after:
        return SweepFinding(h.session, f"{h.state} for {h.state_age:.0f}s", "restart")
    if (h.state is State.CONNECTED and h.heartbeat_age is not None
            and h.heartbeat_age >= policy.heartbeat_stale_after):
        return SweepFinding(h.session, f"no heartbeat for {h.heartbeat_age:.0f}s", "restart")
    if h.queue_depth >= policy.max_queue_depth:
        return SweepFinding(h.session, f"backlog of {h.queue_depth} messages", "report")
    return None


class HealthSweep:
    """Runs :meth:`sweep_once` every ``interval`` seconds on ``clock``; keeps the last reports.

    Args:
        manager: the SessionManager to check.
        interval: seconds between sweeps.
        clock: time source.
        concurrency: restarts run at once (each waits ``restart_delay``).
    """

    def __init__(self, manager: Any, *, interval: float, clock: Clock, concurrency: int = 32) -> None:
        self._manager = manager
        self.interval = interval
        self._clock = clock
        self._concurrency = concurrency
        self._task: asyncio.Task[None] | None = None
        self.reports: deque[SweepCompleted] = deque(maxlen=50)
        self.last_run_at: float | None = None
        self.running = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tether-sweep")

    async def _run(self) -> None:
        while True:
            await self._clock.sleep(self.interval)
            try:
                await self.sweep_once()
            except Exception:  # one bad sweep must not end the sweeping
                log.exception("health sweep failed")

    async def snapshot(self) -> list[SessionHealth]:
        now_wall = self._clock.wall()
        now = self._clock.monotonic()
        out = []
        owns = getattr(self._manager, "owns", None)  # scale-out: each node heals what it runs
        for s in self._manager.list():
            if owns is not None and not owns(s.id):
                continue
            stats = s.stats()
            hb = stats.get("last_heartbeat_at")
            out.append(SessionHealth(
                session=s.id,
                desired=s.row.desired,
                state=s.state,
                state_age=max(0.0, now - s.state_since),
                heartbeat_age=None if hb is None else max(0.0, now_wall - hb),
                queue_depth=await self._manager.depth(s.id),
                last_error=stats.get("last_error"),
            ))
        return out

    async def sweep_once(self) -> SweepCompleted:
        """Check every session, restart what is stuck, record and return the report."""
        started = self._clock.monotonic()
        self.running = True
        try:
            log.info("health sweep: checking %d sessions", len(self._manager.list()))
            snaps = await self.snapshot()
            findings = [f for h in snaps if (f := assess(h, self._manager.settings.sessions)) is not None]
            sem = asyncio.Semaphore(self._concurrency)

            async def heal(f: SweepFinding) -> None:
                async with sem:
                    log.warning("[%s] sweep: %s -> %s", f.session, f.problem, f.action)
                    if f.action == "restart":
                        try:
                            await self._manager.restart(f.session, reason=f"sweep: {f.problem}")
                        except Exception as exc:
                            log.warning("[%s] sweep restart failed: %s", f.session, exc)

            await asyncio.gather(*(heal(f) for f in findings))
            report = SweepCompleted(len(snaps), tuple(findings), self._clock.monotonic() - started,
                                    at=self._clock.wall())
            self.reports.append(report)
            self.last_run_at = report.at
            self._manager.emit(report)
            return report
        finally:
            self.running = False

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

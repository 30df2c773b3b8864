"""Delivery: how a session's outbox reaches its connector, and what a failed send means.

The loop leases a batch from the outbox, hands it to the connector (written, or written and
acknowledged by the upstream), acks what was delivered and gives back the rest in order; every
failure is decided by the recovery engine (:func:`send_verdict`). :class:`SessionManager` runs one
loop per running session; the loop's state lives on the :class:`Session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from .._clock import wait_for
from .._decision import Action, ErrorClass
from .._errors import MessageRejected, NotConnectedError
from .._state import State
from ..recovery import DEFAULT_CLASS_POLICIES, ClassPolicy, Step, classify, plan
from ._connector import Connector
from ._events import MessageDeadLettered, MessageSendFailed, MessageSent

if TYPE_CHECKING:
    from ._manager import Session

__all__ = ["SendVerdict", "send_verdict", "send_retry_delay", "DeliveryLoop"]

log = logging.getLogger("tether.service")

# Delivery loops are woken by sends and by connects; this poll only picks up leases a killed process
# left behind (they expire after lease_for), so it can be slow: 1,000 idle sessions cost ~70 wake-ups/s.
_IDLE_POLL = 15.0


@dataclass(frozen=True, slots=True)
class SendVerdict:
    """What the delivery loop does with a message whose send failed.

    Attributes:
        action: ``"retry"`` (a failed attempt: counts toward ``outbox_max_attempts``), ``"hold"``
            (the upstream named a wait, e.g. Telegram 429 ``retry_after``: not a failure of the
            message, so it counts nothing) or ``"dead"`` (the message can never be sent, PERMANENT:
            dead-lettered at once with the reason).
        delay: seconds before the message is handed out again (never less than a server's wait).
        reason: the classification's short text.
    """

    action: str
    delay: float
    reason: str


def _server_wait(exc: BaseException, named: float | None) -> float | None:
    """The longest wait the upstream asked for: the classifier's, or the error's own ``retry_after``
    (a connector's error may carry one that no rule pack knows)."""
    own = getattr(exc, "retry_after", None)
    if not isinstance(own, (int, float)) or isinstance(own, bool) or not math.isfinite(own) or own < 0:
        own = None
    waits = [w for w in (named, own) if w is not None]
    return max(waits) if waits else None


def _class_policies(recovery: Any) -> Mapping[ErrorClass, ClassPolicy]:
    # Built per failed send (a few microseconds), so a PATCH of [recovery] applies to the next failure.
    return recovery.policy_kwargs()["classes"] if recovery is not None else DEFAULT_CLASS_POLICIES


def send_verdict(exc: BaseException, failures: int, now: float, recovery: Any = None) -> SendVerdict:
    """Decide about a failed send with the recovery engine (``classify`` + ``plan``, as webhooks do).

    A server-mandated wait is a hold of at least that long (a wait longer than the recovery settings'
    ``max_wait`` dead-letters the message with the wait in the reason, as the engine fails such a call);
    otherwise the class's backoff step (``[recovery.classes]`` overrides the defaults) grows with
    consecutive failures, capped at 60 s or ``recovery.cap`` if lower, and the outbox bounds the attempts.

    Args:
        recovery: the live ``[recovery]`` settings (``RecoverySettings``), or None for the defaults.
    """
    c = classify(exc, now=now)
    if c.error_class is ErrorClass.PERMANENT or isinstance(exc, MessageRejected):
        # e.g. InvalidBotPayload, or a Telegram 403 for one chat: retrying repeats the refusal
        return SendVerdict("dead", 0.0, c.reason)
    wait = _server_wait(exc, c.retry_after)
    max_wait = recovery.max_wait if recovery is not None else math.inf
    if wait is not None and wait > max_wait:
        return SendVerdict("dead", 0.0, f"{c.reason}: the upstream asked to wait {wait:g} s, longer than "
                                        f"recovery.max_wait ({max_wait:g} s)")
    cap = min(60.0, recovery.cap) if recovery is not None else 60.0
    cp = _class_policies(recovery)[c.error_class]
    step = min(cap, max(0.5, cp.delay) * (max(cp.factor, 1.5) ** min(max(failures, 1) - 1, 20)))
    if cp.action is Action.FAIL:
        step = cap  # e.g. AUTH: a retry will likely fail too; don't hammer, let the attempts run out
    # The outbox bounds the attempts (outbox_max_attempts), so the class's own retry budget is not used.
    policy = ClassPolicy(Action.WAIT if wait is not None else Action.RETRY, max_retries=1, delay=step)
    decision = plan(dataclasses.replace(c, retry_after=wait), policy, used=0, now=0.0, deadline_at=None,
                    max_wait=math.inf, backoff=step)
    assert isinstance(decision, Step)  # WAIT/RETRY with a retry left and no deadline always continue
    return SendVerdict("hold" if decision.server_wait is not None else "retry", decision.delay, c.reason)


def send_retry_delay(exc: BaseException, failures: int, now: float) -> float:
    """How long a message waits after a failed send (see :func:`send_verdict`)."""
    return send_verdict(exc, failures, now).delay


class DeliveryLoop:
    """The delivery half of :class:`~tether.service._manager.SessionManager` (a mixin: it uses the
    manager's ``settings``, ``_clock``, ``_stores`` and ``_emit``)."""

    async def _idle(self, s: Session, timeout: float) -> None:
        """Wait for a wake-up (send, connect, stop). The caller cleared ``wake`` *before* it looked
        for work, so a wake-up that raced with the look is not lost."""
        if s.stopping:
            return
        try:
            await wait_for(s.wake.wait(), timeout, self._clock)
        except TimeoutError:
            pass

    async def _deliver_loop(self, s: Session, conn: Connector) -> None:
        """Runs :meth:`_deliver_round` until the session stops; a store failure pauses, never ends it."""
        failures = 0
        while not s.stopping:
            try:
                failures = await self._deliver_round(s, conn, failures)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # StoreUnavailable, or a bug: log it, keep the loop alive
                s.last_error = f"delivery paused: {type(exc).__name__}: {exc}"
                log.error("[%s] %s", s.id, s.last_error)
                s.wake.clear()
                await self._idle(s, 5.0)

    async def _deliver_round(self, s: Session, conn: Connector, failures: int) -> int:
        """Lease → send → ack/nack, only while connected, so the outbox (on disk) is the buffer.

        Returns the count of consecutive failed sends (it grows the retry delay).
        """
        cfg = self.settings.sessions
        outbox = self._stores.outbox
        s.wake.clear()
        if conn.state is not State.CONNECTED:
            await self._idle(s, _IDLE_POLL)
            return failures
        batch = await outbox.lease(s.id, cfg.send_batch, lease_for=30.0 + cfg.send_timeout * cfg.send_batch)
        if not batch:
            await self._idle(s, _IDLE_POLL)
            return failures
        settled: set[str] = set()  # ids of the batch already acked, nacked or dead-lettered
        try:
            if getattr(conn, "acks", False):
                return await self._deliver_acked(s, conn, batch, failures, settled)
            return await self._deliver_batch(s, conn, batch, failures, settled)
        except asyncio.CancelledError:
            # Stopped mid-batch (restart, update, shutdown): what is still leased goes back now, in
            # order, instead of blocking the session's head of line until the lease runs out.
            rest = [x.id for x in batch if x.id not in settled]
            if rest:
                await asyncio.shield(outbox.nack(rest, 0.0, reason="session stopping", count=False))
            raise

    async def _deliver_batch(self, s: Session, conn: Connector, batch: list[Any], failures: int,
                             settled: set[str]) -> int:
        """Without upstream acks: a message counts as delivered once the connector has sent it."""
        cfg = self.settings.sessions
        outbox = self._stores.outbox
        for i, m in enumerate(batch):
            if s.stopping:  # shutdown: give the rest back at once, in order
                await outbox.nack([x.id for x in batch[i:]], 0.0, reason="service stopping")
                settled.update(x.id for x in batch[i:])
                break
            try:
                await wait_for(conn.send(m.payload), cfg.send_timeout, self._clock)
            except Exception as exc:  # TetherError, timeout, OSError, or a connector bug: retry later
                reason = f"{type(exc).__name__}: {exc}"
                not_connected = isinstance(exc, NotConnectedError)
                verdict = SendVerdict("retry", 0.0, "not connected") if not_connected else \
                    send_verdict(exc, failures + 1, self._clock.wall(), self.settings.recovery)
                if verdict.action == "dead":
                    # This message alone is at fault: bury it with the reason, go on with the rest
                    # of the batch (still leased by us, in order).
                    await self._dead_letter(s, m.id, reason)
                    settled.add(m.id)
                    continue
                failures = await self._give_back(s, [x.id for x in batch[i:]], exc, failures, settled)
                break
            await outbox.ack([m.id])
            settled.add(m.id)
            failures = 0
            s.sent += 1
            self._emit(MessageSent(s.id, m.id, at=self._clock.wall()))
        return failures

    async def _deliver_acked(self, s: Session, conn: Any, batch: list[Any], failures: int,
                             settled: set[str]) -> int:
        """With upstream acks (``conn.send_acked``): write the batch back to back, then ack in the
        outbox only what the upstream acknowledged; the rest goes back, in order, and is sent again
        with the same id (at least once; an upstream that de-duplicates by id applies it once)."""
        cfg = self.settings.sessions
        outbox = self._stores.outbox
        written: list[tuple[Any, asyncio.Future[bool]]] = []
        error: BaseException | None = None
        rest: list[str] = []  # leased, not written: given back after the acks are in
        for i, m in enumerate(batch):
            if s.stopping:
                rest = [x.id for x in batch[i:]]
                break
            try:
                written.append((m, await wait_for(conn.send_acked(m.id, m.payload), cfg.send_timeout, self._clock)))
            except Exception as exc:  # TetherError, timeout, OSError, or a connector bug
                if send_verdict(exc, failures + 1, self._clock.wall(), self.settings.recovery).action == "dead" \
                        and not isinstance(exc, NotConnectedError):
                    await self._dead_letter(s, m.id, f"{type(exc).__name__}: {exc}")
                    settled.add(m.id)
                    continue
                error, rest = exc, [x.id for x in batch[i:]]
                break
        timeout = getattr(conn, "ack_timeout", None) or cfg.send_timeout
        if written:
            # A lost connection settles every receipt at once (False); the timeout covers an upstream
            # that is connected but silent (a partition the heartbeat has not caught yet).
            with contextlib.suppress(TimeoutError):
                await wait_for(asyncio.wait([r for _, r in written]), timeout, self._clock)
        acked = [m.id for m, r in written if r.done() and not r.cancelled() and r.result()]
        if acked:
            await outbox.ack(acked)
            settled.update(acked)
            s.sent += len(acked)
            now = self._clock.wall()
            for mid in acked:
                self._emit(MessageSent(s.id, mid, at=now))
            failures = 0
        unacked = [m.id for m, r in written if m.id not in settled]
        back = unacked + rest
        if not back:
            return failures
        if error is None:
            if s.stopping:
                await outbox.nack(back, 0.0, reason="service stopping", count=False)
                settled.update(back)
                return failures
            lost = any(r.done() for m, r in written if m.id in unacked) or conn.state is not State.CONNECTED
            error = NotConnectedError("connection lost before the upstream acknowledged") if lost else \
                TimeoutError(f"no ack from the upstream within {timeout:g}s")
        return await self._give_back(s, back, error, failures, settled)

    async def _dead_letter(self, s: Session, mid: str, reason: str) -> None:
        """This message alone is at fault (PERMANENT): bury it with the reason; the batch goes on."""
        s.send_failures += 1
        await self._stores.outbox.dead_letter([mid], reason=f"undeliverable: {reason}")
        log.warning("[%s] message %s dead-lettered: %s", s.id, mid, reason)
        self._emit(MessageDeadLettered(s.id, mid, reason, at=self._clock.wall()))

    async def _give_back(self, s: Session, ids: list[str], exc: BaseException, failures: int,
                         settled: set[str]) -> int:
        """Nack ``ids`` (in order) after a failed send with the recovery engine's delay; returns the
        new count of consecutive failures."""
        reason = f"{type(exc).__name__}: {exc}"
        not_connected = isinstance(exc, NotConnectedError)
        verdict = SendVerdict("retry", 0.0, "not connected") if not_connected else \
            send_verdict(exc, failures + 1, self._clock.wall(), self.settings.recovery)
        hold = verdict.action == "hold"
        if not hold:  # a wait the upstream named is not a failure: no backoff growth, no attempt
            failures += 1
        s.send_failures += 1
        await self._stores.outbox.nack(ids, verdict.delay, reason=reason, count=not hold)
        settled.update(ids)
        self._emit(MessageSendFailed(s.id, ids[0], reason, verdict.delay, at=self._clock.wall()))
        if not not_connected:
            await self._clock.sleep(verdict.delay)
        return failures

    # --- inbound ----------------------------------------------------------------------------

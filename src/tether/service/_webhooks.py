"""Inbound delivery to webhook URLs: durable queue, HMAC-SHA256 signature, bounded retries.

Retries are decided by the recovery engine (``tether.recovery.classify`` + ``plan``: 5xx and network
errors retry with backoff, 429 waits at least ``Retry-After``, 4xx and auth failures stop at once);
the schedule lives in the queue (``next_at``), so a restart resumes it instead of forgetting it.

Every inbound message is queued (one job per URL) in the service database *before* the inbox marks
it seen, so a crash in between re-delivers (at-least-once) and never loses. Receivers de-duplicate
with ``X-Tether-Message-Id`` (stable across redeliveries).

Signature: ``X-Tether-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``
(verify with :func:`verify_signature`; reject old ``t`` to stop replays).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from typing import Callable

import httpx

from .._clock import Clock, wait_for
from .._decision import Action
from ..recovery import DEFAULT_CLASS_POLICIES, ClassPolicy, Stop, classify, plan
from ._db import ServiceDB, WebhookJob
from ._events import WebhookDelivered, WebhookFailed
from ._settings import WebhookSettings

__all__ = ["WebhookDispatcher", "sign", "verify_signature"]

log = logging.getLogger("tether.service")

_CONCURRENCY = 8


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Tether-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: bytes, body: bytes, header: str, *, tolerance: float = 300.0, now: float | None = None) -> bool:
    """Check a signature header in constant time; False when it is wrong or older than ``tolerance``."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
        given = parts["v1"]
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    expected = sign(secret, body, ts).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


class WebhookDispatcher:
    """Drains the webhook queue. One task; ``close()`` cancels and awaits it.

    Args:
        db: the service database holding the queue.
        emit: where delivery events go (the event log).
        secret_for: the HMAC key for a session.
        settings: timeouts and retry bounds.
        clock: time source for waits.
    """

    def __init__(self, db: ServiceDB, *, emit: Callable[[object], object], secret_for: Callable[[str], bytes],
                 settings: WebhookSettings, clock: Clock) -> None:
        self._db = db
        self._emit = emit
        self._secret_for = secret_for
        self._settings = settings
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._inflight: set[int] = set()
        self.delivered = 0
        self.failed = 0

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._settings.timeout, follow_redirects=False, trust_env=False)
        self._task = asyncio.create_task(self._run(), name="tether-webhooks")

    def kick(self) -> None:
        """New jobs are queued: look now."""
        self._wake.set()

    async def _run(self) -> None:
        sem = asyncio.Semaphore(_CONCURRENCY)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._wake.clear()
                now = self._clock.wall()
                for job in self._db.due_webhooks(now, limit=50):
                    if job.id in self._inflight:
                        continue
                    self._inflight.add(job.id)
                    await sem.acquire()
                    t = asyncio.create_task(self._deliver(job, sem))
                    running.add(t)
                    t.add_done_callback(running.discard)
                nxt = self._db.next_webhook_at()
                wait = 5.0 if nxt is None else min(5.0, max(0.05, nxt - self._clock.wall()))
                try:
                    await wait_for(self._wake.wait(), wait, self._clock)
                except TimeoutError:
                    pass
        finally:
            for t in running:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def _decide(self, exc: Exception, attempts: int) -> tuple[bool, float, str]:
        """(final, delay, reason) for a failed attempt, from the recovery engine's pure planner."""
        c = classify(exc, now=self._clock.wall())
        base = DEFAULT_CLASS_POLICIES[c.error_class]
        # Our own bounds: max_attempts per delivery, the configured first step; FAIL classes stay FAIL.
        cp = base if base.action is Action.FAIL else ClassPolicy(
            base.action, max_retries=self._settings.max_attempts - 1, delay=self._settings.backoff_base, factor=2.0)
        step = min(self._settings.backoff_cap, cp.delay * (cp.factor ** min(attempts - 1, 30)))
        backoff = step / 2 + random.uniform(0, step / 2)
        decision = plan(c, cp, used=attempts - 1, now=self._clock.monotonic(), deadline_at=None,
                        max_wait=3600.0, backoff=backoff, wait_extra=random.uniform(0, 0.5))
        if isinstance(decision, Stop):
            return True, backoff, decision.message
        return False, decision.delay, c.reason

    async def _deliver(self, job: WebhookJob, sem: asyncio.Semaphore) -> None:
        attempts = job.attempts + 1
        try:
            body = job.body.encode()
            ts = int(self._clock.wall())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "tether-webhook/1",
                "X-Tether-Message-Id": job.message_id,
                "X-Tether-Session": job.session,
                "X-Tether-Attempt": str(attempts),
                "Idempotency-Key": f"{job.session}:{job.message_id}",
                "X-Tether-Signature": sign(self._secret_for(job.session), body, ts),
            }
            assert self._client is not None
            try:
                resp = await self._client.post(job.url, content=body, headers=headers)
                if 200 <= resp.status_code < 300:
                    self._db.webhook_done(job.id, attempts)
                    self.delivered += 1
                    self._emit(WebhookDelivered(job.session, job.message_id, job.url, resp.status_code, attempts,
                                                at=self._clock.wall()))
                    return
                failure: Exception = httpx.HTTPStatusError(f"HTTP {resp.status_code}", request=resp.request,
                                                           response=resp)
            except httpx.HTTPError as exc:
                failure = exc
            final, delay, error = self._decide(failure, attempts)
            self._db.webhook_retry(job.id, attempts, self._clock.wall() + delay, error, dead=final)
            if final:
                self.failed += 1
            log.warning("[%s] webhook %s failed (%s), attempt %d%s", job.session, job.url, error, attempts,
                        ": giving up" if final else f", retrying in {delay:.1f}s")
            self._emit(WebhookFailed(job.session, job.message_id, job.url, error, attempts, final,
                                     at=self._clock.wall()))
        finally:
            self._inflight.discard(job.id)
            sem.release()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

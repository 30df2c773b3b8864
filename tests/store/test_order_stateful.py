"""Per-session order holds under concurrent producers and any interleaving of lease/ack/nack/expiry."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tether.store import Outbox
from tether.testing import FakeClock

SESSIONS = ("a", "b", "c")
MAX_ATTEMPTS = 3


class OutboxOrder(RuleBasedStateMachine):
    """A model of the outbox (queue order, leases, delays, attempts, dead letters) checked step by step."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.mkdtemp(prefix="tether-order-")
        self.clock = FakeClock()
        self.box = Outbox(Path(self.dir) / "o.db", clock=self.clock, synchronous="NORMAL",
                          max_attempts=MAX_ATTEMPTS, sweep_interval=None)
        self.queue: dict[str, list[str]] = {s: [] for s in SESSIONS}
        self.lease_until: dict[str, float] = {}
        self.available_at: dict[str, float] = {}
        self.attempts: dict[str, int] = {}
        self.payload: dict[str, str] = {}
        self.dead: set[str] = set()
        self.producers = itertools.count()

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def now(self) -> float:
        return self.clock.wall()

    def teardown(self) -> None:
        try:
            self.run(self.box.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- producers ------------------------------------------------------------------------
    async def _producer(self, session: str, p: int, count: int) -> list[str]:
        return [await self.box.put(session, f"{p}:{k}") for k in range(count)]

    def _absorb(self, jobs, results) -> None:
        """Learn the store's order of the new messages and check it against every producer's order."""
        for (session, p, count), ids in zip(jobs, results):
            for k, mid in enumerate(ids):
                self.payload[mid] = f"{p}:{k}"
                self.attempts[mid] = 0
        for session in {s for s, _, _ in jobs}:
            stored = [m.id for m in self.run(self.box.messages(session, limit=10_000))
                      if m.status in ("pending", "leased")]
            old = self.queue[session]
            assert stored[: len(old)] == old, "new messages must queue behind the older ones"
            new = stored[len(old):]
            expected = {mid for (s, _, _), ids in zip(jobs, results) if s == session for mid in ids}
            assert set(new) == expected
            for (s, p, _), ids in zip(jobs, results):  # each producer's messages keep its order
                if s == session:
                    assert [mid for mid in new if mid in set(ids)] == ids
            self.queue[session] = stored

    @rule(plan=st.lists(st.tuples(st.sampled_from(SESSIONS), st.integers(1, 4)), min_size=1, max_size=4))
    def produce(self, plan):
        """Several producers (each awaiting its puts one by one) run concurrently on some sessions."""
        jobs = [(s, next(self.producers), c) for s, c in plan]

        async def together() -> list[list[str]]:
            return await asyncio.gather(*(self._producer(s, p, c) for s, p, c in jobs))

        self._absorb(jobs, self.run(together()))

    def _deliverable(self, queue: list[str], n: int) -> list[str]:
        run: list[str] = []
        for mid in queue:
            if self.available_at.get(mid, 0) > self.now() or len(run) == n:
                break
            run.append(mid)
        return run

    def _idle_sessions(self) -> list[str]:
        return [s for s in SESSIONS if not any(self._leased(m) for m in self.queue[s])]

    @precondition(lambda self: self._idle_sessions())
    @rule(data=st.data(), n=st.integers(1, 6), counts=st.lists(st.integers(1, 4), min_size=1, max_size=3),
          wait=st.sampled_from([0.0, 0.0005, 0.002]))
    def produce_while_leasing(self, data, n, counts, wait):
        """A lease racing concurrent producers gets an in-order head, including every older message."""
        session = data.draw(st.sampled_from(self._idle_sessions()))
        old_run = self._deliverable(self.queue[session], n)
        jobs = [(session, next(self.producers), c) for c in counts]

        async def late_lease():
            await asyncio.sleep(wait)  # the lease lands before, among or after the producers' commits
            return await self.box.lease(session, n, lease_for=10.0)

        async def together():
            lease = asyncio.ensure_future(late_lease())
            results = await asyncio.gather(*(self._producer(s, p, c) for s, p, c in jobs))
            return results, await lease

        now = self.now()  # FakeClock: no time passes during the real-time wait
        results, got = self.run(together())
        self._absorb(jobs, results)
        full_run = self._deliverable(self.queue[session], n)
        assert [m.id for m in got] == full_run[: len(got)]
        assert len(got) >= len(old_run)
        for m in got:
            self.lease_until[m.id] = now + 10.0
            self.available_at.pop(m.id, None)

    # -- consumers ------------------------------------------------------------------------
    def _leased(self, mid: str) -> bool:
        return mid in self.lease_until

    @rule(session=st.sampled_from(SESSIONS), n=st.integers(1, 5), lease_for=st.sampled_from([1.0, 10.0]))
    def lease(self, session, n, lease_for):
        """lease() returns exactly the deliverable head of the session, in order (strict head-of-line)."""
        now = self.now()
        expect: list[str] = []
        for mid in list(self.queue[session]):
            if self._leased(mid) and self.lease_until[mid] > now:
                break
            if self.available_at.get(mid, 0) > now:
                break
            if self._leased(mid):  # lease ran out: a failed attempt
                self.attempts[mid] += 1
                if self.attempts[mid] >= MAX_ATTEMPTS:
                    self._bury(session, mid)
                    continue
            expect.append(mid)
            if len(expect) == n:
                break
        got = self.run(self.box.lease(session, n, lease_for=lease_for))
        assert [m.id for m in got] == expect
        for m in got:
            assert m.payload == self.payload[m.id] and m.attempts == self.attempts[m.id]
            self.lease_until[m.id] = now + lease_for
            self.available_at.pop(m.id, None)

    def _bury(self, session: str, mid: str) -> None:
        self.queue[session].remove(mid)
        self.lease_until.pop(mid, None)
        self.available_at.pop(mid, None)
        self.dead.add(mid)

    def _all_leased(self) -> list[tuple[str, str]]:
        return [(s, mid) for s in SESSIONS for mid in self.queue[s] if self._leased(mid)]

    @precondition(lambda self: self._all_leased())
    @rule(data=st.data())
    def ack(self, data):
        """Acked messages (any subset of the leased ones, any order) are never handed out again."""
        leased = self._all_leased()
        chosen = data.draw(st.lists(st.sampled_from(leased), min_size=1, unique=True))
        self.run(self.box.ack([mid for _, mid in chosen]))
        for session, mid in chosen:
            self.queue[session].remove(mid)
            self.lease_until.pop(mid, None)

    @precondition(lambda self: self._all_leased())
    @rule(data=st.data(), delay=st.sampled_from([0.0, 2.0]))
    def nack(self, data, delay):
        """A nacked message goes back to the head with its followers; attempts count; max -> dead."""
        session, mid = data.draw(st.sampled_from(self._all_leased()))
        now = self.now()
        self.run(self.box.nack([mid], delay, reason="boom"))
        self.attempts[mid] += 1
        if self.attempts[mid] >= MAX_ATTEMPTS:
            self._bury(session, mid)
        else:
            del self.lease_until[mid]
            self.available_at[mid] = now + delay
        q = self.queue[session]
        pos = q.index(mid) if mid in q else None
        followers = q[pos + 1:] if pos is not None else [m for m in q if int(m) > int(mid)]
        for f in followers:
            if self._leased(f):
                del self.lease_until[f]
                self.available_at[f] = now + delay

    @rule(seconds=st.sampled_from([0.5, 2.0, 11.0]))
    def advance(self, seconds):
        """Time passes (leases and nack delays run out)."""
        self.run(self.clock.advance(seconds))

    # -- invariants -----------------------------------------------------------------------
    @invariant()
    def store_matches_model(self):
        """The store's undelivered messages, order, lease state and dead letters match the model."""
        now = self.now()
        for session in SESSIONS:
            ms = [m for m in self.run(self.box.messages(session, limit=10_000))
                  if m.status in ("pending", "leased")]
            assert [m.id for m in ms] == self.queue[session]
            for m in ms:
                leased = self._leased(m.id) and self.lease_until[m.id] > now
                assert m.status == ("leased" if leased else "pending")
        assert {d.id for d in self.run(self.box.dead_letters(limit=10_000))} == self.dead


OutboxOrder.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOutboxOrder = OutboxOrder.TestCase

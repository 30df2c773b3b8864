"""LeaseKeeper: the Redis shell around :class:`OwnershipCore` (leases with fencing tokens)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Iterable

from . import _scripts
from ._base import RedisBase, dec
from ._ownership import Acquire, Drop, OwnershipCore, Release, Renew

__all__ = ["LeaseKeeper"]

log = logging.getLogger("tether.store.redis")

OnGain = Callable[[str, str], Awaitable[None]]
OnLose = Callable[[str, str], Awaitable[None]]
Sessions = Callable[[], "Iterable[str] | Awaitable[Iterable[str]]"]


class LeaseKeeper(RedisBase):
    """Owns sessions for this node through Redis leases; one sweep every ``interval`` seconds.

    Keys: ``<p>:own:{s}`` holds ``"<node>:<token>"`` with a PX ttl (``SET NX PX``), ``<p>:fence:{s}``
    is the fencing-token counter (``INCR``), ``<p>:nodes`` (sorted set of live nodes, scored by
    expiry on the Redis server's clock) and ``<p>:urls`` (each node's base URL, for forwarding).

    Each sweep: heartbeat this node, read the live nodes and every lease (``MGET``), ask the core,
    perform its actions. ``on_gain(session, value)`` runs after a lease is acquired, in its own task
    beside the sweep, so starting many sessions never delays renewals (start the
    session; fence the stores with ``value``); ``on_lose(session, reason)`` runs when a lease is
    dropped or before it is released (stop the session, unfence). A node that dies stops renewing;
    its leases expire after ``ttl`` and the next sweep of another node acquires them, so takeover
    takes at most ``ttl + interval``.

    Args:
        node: this node's id.
        sessions: returns the sessions that should run somewhere (called each sweep).
        on_gain / on_lose: async callbacks (see above).
        url / client / prefix / clock: as the stores.
        ttl: lease length; interval: seconds between sweeps (default ``ttl / 3``).
        base_url: this node's HTTP base URL, registered for forwarding.
        core: an :class:`OwnershipCore` (built from node/ttl when omitted).
    """

    def __init__(self, node: str, *, sessions: Sessions, on_gain: OnGain, on_lose: OnLose,
                 url: str | None = None, client: Any = None, prefix: str = "tether", clock: Any = None,
                 ttl: float = 15.0, interval: float | None = None, base_url: str = "",
                 core: OwnershipCore | None = None) -> None:
        super().__init__(url, client=client, prefix=prefix, clock=clock)
        self.core = core or OwnershipCore(node, ttl=ttl, renew_every=interval)
        self.node = self.core.node
        self.interval = self.core.renew_every if interval is None else float(interval)
        self.base_url = base_url
        self._sessions = sessions
        self._on_gain = on_gain
        self._on_lose = on_lose
        self._task: asyncio.Task[None] | None = None
        self._gains: set[asyncio.Task[None]] = set()  # on_gain calls in progress
        self._gain_slots = asyncio.Semaphore(16)
        self._stopping = False
        self.live_nodes: list[str] = [self.node]
        self.owners_seen: dict[str, str | None] = {}  # session -> owner node, as of the last sweep
        self.sweeps = 0

    def start(self) -> None:
        """Start the sweep loop (owned by this object; :meth:`close` ends it)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"tether-leases[{self.node}]")

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: keep trying; may_act() ends our leases in time
                log.warning("[%s] lease sweep failed: %s", self.node, exc)
            await self._expire_local()
            await self._clock.sleep(self._next_wait())

    def _next_wait(self) -> float:
        # Wake at the earliest local lease expiry too, so a lease that could not be renewed is
        # dropped on time (before Redis lets another node take it), not up to a sweep later.
        now = self._clock.monotonic()
        until = min((h.until for h in self.core.held.values()), default=now + self.interval)
        return max(0.01, min(self.interval, until - now))

    async def _expire_local(self) -> None:
        now = self._clock.monotonic()
        for s, h in list(self.core.held.items()):
            if now >= h.until:
                self.core.released(s)
                await self._lose(s, "lease expired before it could be renewed (Redis unreachable or this node too busy)")

    def may_act(self, session: str) -> bool:
        """True while this node surely owns ``session``."""
        return self.core.may_act(session, self._clock.monotonic())

    async def owners(self, sessions: list[str]) -> dict[str, str | None]:
        if not sessions:
            return {}
        vals = await self._call(self.redis.mget([self.own_key(s) for s in sessions]))
        return {s: (dec(v) if v is not None else None) for s, v in zip(sessions, vals)}

    async def node_urls(self) -> dict[str, str]:
        raw = await self._call(self.redis.hgetall(f"{self.prefix}:urls"))
        return {dec(k): dec(v) for k, v in raw.items()}

    async def owner(self, session: str) -> tuple[str | None, str | None]:
        """The node that owns ``session`` now and its base URL (None, None when nobody does)."""
        v = await self._call(self.redis.get(self.own_key(session)))
        if v is None:
            return None, None
        node = dec(v).rsplit(":", 1)[0]
        url = await self._call(self.redis.hget(f"{self.prefix}:urls", node))
        return node, (dec(url) if url is not None else None)

    async def owner_url(self, session: str) -> str | None:
        """The base URL of the node that owns ``session`` now, or None."""
        return (await self.owner(session))[1]

    async def _run(self, name: str, source: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.redis.register_script(source)
        return await self._call(script(keys=keys, args=args))

    async def sweep(self) -> None:
        """One round: heartbeat, observe, decide, act."""
        ttl_ms = int(self.core.ttl * 1000)
        nodes = await self._run("heartbeat", _scripts.HEARTBEAT, [f"{self.prefix}:nodes", f"{self.prefix}:urls"],
                                [self.node, self.base_url, ttl_ms])
        self.live_nodes = [dec(n) for n in nodes]
        got = self._sessions()
        wanted = list(await got if hasattr(got, "__await__") else got)
        owners = await self.owners(sorted(set(wanted) | set(self.core.held)))
        self.owners_seen = {s: (v.rsplit(":", 1)[0] if v else None) for s, v in owners.items()}
        now = self._clock.monotonic()
        actions = self.core.sweep(now, wanted, owners, self.live_nodes)
        # Renewals first and in one round trip: on a busy event loop, 100 sequential round trips
        # could take longer than the lease has left. Then releases and drops, then acquisitions
        # (also one round trip).
        await self._renew_all([a for a in actions if isinstance(a, Renew)])
        for action in actions:
            if isinstance(action, (Release, Drop)):
                await self._perform(action)
        await self._acquire_all([a for a in actions if isinstance(a, Acquire)])
        self.sweeps += 1

    def _script_obj(self, name: str, source: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.redis.register_script(source)
        return script

    async def _renew_all(self, renews: list[Renew]) -> None:
        if not renews:
            return
        ttl_ms = int(self.core.ttl * 1000)
        script = self._script_obj("renew", _scripts.RENEW)
        pipe = self.redis.pipeline(transaction=False)
        for a in renews:
            await script(keys=[self.own_key(a.session)], args=[a.value, ttl_ms], client=pipe)  # queues
        sent = self._clock.monotonic()
        results = await self._call(pipe.execute())
        for a, ok in zip(renews, results):
            drop = self.core.renewed(a.session, bool(ok), sent)
            if drop is not None:
                await self._lose(a.session, drop.reason)

    async def _acquire_all(self, acquires: list[Acquire]) -> None:
        if not acquires:
            return
        ttl_ms = int(self.core.ttl * 1000)
        script = self._script_obj("acquire", _scripts.ACQUIRE)
        pipe = self.redis.pipeline(transaction=False)
        for a in acquires:
            await script(keys=[self.own_key(a.session), self.key("fence", a.session)], args=[self.node, ttl_ms],
                         client=pipe)  # queues
        sent = self._clock.monotonic()
        results = await self._call(pipe.execute())
        for a, v in zip(acquires, results):
            if v:
                self._gained(a.session, dec(v), sent)

    def _gained(self, session: str, value: str, sent: float) -> None:
        self.core.acquired(session, value, sent)
        # Started beside the sweep: a sweep that acquires a dead node's 100 sessions must not hold
        # up the renewal of the leases it already has.
        task = asyncio.create_task(self._gain(session, value), name=f"tether-gain[{session}]")
        self._gains.add(task)
        task.add_done_callback(self._gains.discard)

    async def _perform(self, action: Any) -> None:
        ttl_ms = int(self.core.ttl * 1000)
        match action:
            case Acquire(session=s):
                sent = self._clock.monotonic()
                v = await self._run("acquire", _scripts.ACQUIRE, [self.own_key(s), self.key("fence", s)],
                                    [self.node, ttl_ms])
                if v:
                    self._gained(s, dec(v), sent)
            case Renew(session=s, value=v):
                sent = self._clock.monotonic()
                ok = await self._run("renew", _scripts.RENEW, [self.own_key(s)], [v, ttl_ms])
                drop = self.core.renewed(s, bool(ok), sent)
                if drop is not None:
                    await self._lose(s, drop.reason)
            case Release(session=s, value=v, reason=reason):
                await self._release(s, v, reason)
            case Drop(session=s, reason=reason):
                await self._lose(s, reason)

    async def _gain(self, session: str, value: str) -> None:
        async with self._gain_slots:
            if not self.may_act(session):
                return  # lost or released before it could start
            try:
                await self._on_gain(session, value)
            except Exception as exc:  # cannot run it here: give it back for another node
                log.warning("[%s] could not start %s: %s", self.node, session, exc)
                if self.core.held.get(session) is not None and self.core.held[session].value == value:
                    await self._release(session, value, f"start failed: {exc}")

    async def _release(self, session: str, value: str, reason: str) -> None:
        # Stop acting first, then free the lease: the next owner never overlaps with us.
        self.core.released(session)
        await self._lose(session, reason)
        await self._run("release", _scripts.RELEASE, [self.own_key(session)], [value])

    async def _lose(self, session: str, reason: str) -> None:
        try:
            await self._on_lose(session, reason)
        except Exception as exc:
            log.warning("[%s] stopping %s failed: %s", self.node, session, exc)

    async def stop(self) -> None:
        """End the sweep loop (leases are kept until :meth:`close` or until they expire)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        gains = list(self._gains)
        for t in gains:
            t.cancel()
        if gains:
            await asyncio.wait(gains, timeout=10.0)  # bounded: a start stuck on I/O is abandoned

    async def close(self, *, release: bool = True) -> None:
        """End the sweep loop; stop every session and release their leases (others take over at once)."""
        await self.stop()
        if release and not self._closed:
            for s, h in list(self.core.held.items()):
                try:
                    await self._release(s, h.value, "node shutting down")
                except Exception as exc:
                    log.warning("[%s] release of %s failed: %s", self.node, s, exc)
            try:
                await self._run("leave", _scripts.LEAVE, [f"{self.prefix}:nodes", f"{self.prefix}:urls"], [self.node])
            except Exception:
                pass
        await super().close()

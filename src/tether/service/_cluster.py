"""Scale-out: ``tether serve --store redis://...`` — many nodes, one Redis, each session owned once.

What moves to Redis: the session registry (so every node knows every session), the outbox, inbox
and cursors (:mod:`tether.store.redis`), and session ownership (:class:`LeaseKeeper`: leases with
fencing tokens). What stays per node, in ``data_dir``: the event log (which also mirrors the other
nodes' events, see ``_cluster_events``) and the webhook queue. API calls for a session another node
runs are forwarded to it (``_cluster_api``).

A node runs a session only while it holds the session's lease: :class:`ClusterManager` starts a
session when the keeper acquires it and stops it when the lease is released or lost. The fencing
token is checked (1) before each connection attempt (the connector's admission gate waits while
the node does not hold the lease) and (2) inside every store write (lease, ack, nack, mark,
cursor), so a node that lost a session can neither connect for it nor move its queue or cursor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .._clock import Clock
from .._errors import LeaseLost, SessionConflict, SessionNotFound, StoreUnavailable
from .._state import State
from ..store.redis import LeaseKeeper, RedisInbox, RedisOutbox
from ..store.redis._base import safe_url
from ._cluster_events import EventBridge
from ._db import EventRow, ServiceDB, SessionRow
from ._manager import Session, SessionManager
from ._settings import Settings
from ._stores import Stores

__all__ = ["RedisServiceDB", "ClusterManager", "ClusterSession", "open_stores", "service_db", "node_id"]

log = logging.getLogger("tether.service")

PREFIX = "tether"


def node_id(settings: Settings) -> str:
    """This node's id: ``settings.node_id`` or ``<hostname>-<pid>``."""
    return getattr(settings, "node_id", None) or f"{socket.gethostname()}-{os.getpid()}"


class RedisServiceDB(ServiceDB):
    """The service database with the session registry in Redis (shared by every node).

    Events and webhook jobs stay in the local SQLite file. Registry calls are single small Redis
    commands made on the event loop, like the SQLite statements they replace.
    """

    def __init__(self, path: str | Path, url: str, *, prefix: str = PREFIX) -> None:
        import redis

        super().__init__(path)
        self._url = safe_url(url)
        self._key = f"{prefix}:registry"
        self._r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5.0)

    def _do(self, fn: Callable[[], Any]) -> Any:
        import redis

        try:
            return fn()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"cannot reach Redis at {self._url}: {type(exc).__name__} "
                                   "(is redis-server running? check --store)") from exc

    def sessions(self) -> list[SessionRow]:
        raw = self._do(lambda: self._r.hgetall(self._key))
        rows = [SessionRow(**json.loads(v)) for v in raw.values()]
        return sorted(rows, key=lambda r: (r.created_at, r.id))

    def put_session(self, row: SessionRow) -> None:
        data = {"id": row.id, "kind": row.kind, "options": row.options, "webhooks": row.webhooks,
                "desired": row.desired, "created_at": row.created_at, "updated_at": row.updated_at}
        self._do(lambda: self._r.hset(self._key, row.id, json.dumps(data)))

    def has_session(self, session: str) -> bool:
        return bool(self._do(lambda: self._r.hexists(self._key, session)))

    def delete_session(self, session: str) -> None:
        self._do(lambda: self._r.hdel(self._key, session))
        super().delete_session(session)

    def ping(self) -> bool:
        try:
            return bool(self._r.ping()) and super().ping()
        except Exception:
            return False

    def close(self) -> None:
        self._r.close()
        super().close()


def service_db(settings: Settings, data_dir: Path) -> RedisServiceDB:
    return RedisServiceDB(data_dir / "service.db", str(settings.store))


async def open_stores(settings: Settings, *, clock: Clock) -> Stores:
    """Outbox, inbox and cursors on Redis, sharing one connection pool; consumer = this node."""
    outbox = RedisOutbox(str(settings.store), prefix=PREFIX, consumer=node_id(settings), clock=clock,
                         max_attempts=settings.sessions.outbox_max_attempts)
    await outbox.open()
    inbox = RedisInbox(client=outbox.redis, prefix=PREFIX, clock=clock)
    return Stores(outbox=outbox, inbox=inbox, cursors=inbox.cursors)


class _FencedAdmission:
    """The shared connect gate, plus: no connection attempt while this node does not own the session."""

    def __init__(self, inner: Any, may_act: Callable[[], bool], clock: Clock, wait: float) -> None:
        self._inner, self._may_act, self._clock, self._wait = inner, may_act, clock, wait

    async def acquire(self) -> None:
        if self._inner is not None:
            await self._inner.acquire()
        for _ in range(max(1, int(self._wait / 0.05))):  # bounded: about one lease ttl
            if self._may_act():
                return
            await self._clock.sleep(0.05)
        raise LeaseLost("this node does not own the session; it is not connected from here")


@dataclass(eq=False)
class ClusterSession(Session):
    """A session as one cluster node sees it: run here (``connector``) or by ``owner`` elsewhere.

    For a session another node runs, ``state`` is that node's last reported link state (from the
    shared events), so every node lists every session truthfully.
    """

    owner: str | None = None
    remote_state: str | None = None

    @property
    def state(self) -> State:
        if self.connector is None and self.row.desired == "running" and self.owner and self.remote_state:
            try:
                return State(self.remote_state)
            except ValueError:
                pass
        return Session.state.fget(self)  # type: ignore[attr-defined]


class ClusterManager(SessionManager):
    """A SessionManager that runs only the sessions this node holds a lease on.

    Every node loads the shared registry each sweep; :class:`LeaseKeeper` decides ownership and
    calls back here to start (``_gain``) and stop (``_lose``) sessions.
    """

    session_class = ClusterSession

    def __init__(self, settings: Settings, **kw: Any) -> None:
        super().__init__(settings, **kw)
        self.node = node_id(settings)
        base_url = getattr(settings, "public_url", None) or f"http://{settings.host}:{settings.port}"
        self.keeper = LeaseKeeper(self.node, sessions=self._wanted, on_gain=self._gain, on_lose=self._lose,
                                  client=self._stores.outbox.redis, prefix=PREFIX, clock=self._clock,
                                  ttl=getattr(settings, "lease_ttl", 10.0), base_url=base_url)
        self.bridge = EventBridge(self.node, self._stores.outbox.redis, self._events, prefix=PREFIX,
                                  maxlen=settings.event_log_size, on_remote=self._remote_event)
        self._refresh_soon: asyncio.TimerHandle | None = None
        self._registered: set[str] = set()  # session ids in the registry at the last refresh
        self._http: Any = None
        self.forwarded = 0  # API calls this node forwarded to an owner (see _cluster_api)

    def http_client(self) -> Any:
        """The HTTP client that forwards API calls to other nodes (closed with the manager)."""
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        self.forwarded += 1
        return self._http

    async def open(self) -> None:
        """Load the registry (starting nothing) and start the lease sweep, which starts what we own."""
        self._refresh()
        await self.bridge.start()
        await self._load_states()
        self._pubsub = self._stores.outbox.redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(f"{PREFIX}:wake")
        self._waker = asyncio.create_task(self._wake_loop(), name=f"tether-wake[{self.node}]")
        self.keeper.start()
        log.info("node %s joined the cluster at %s", self.node, self._stores.outbox.url)

    def _refresh(self) -> None:
        rows = {r.id: r for r in self._db.sessions()}
        for sid, row in rows.items():
            s = self._sessions.get(sid)
            if s is None:
                self._sessions[sid] = ClusterSession(row, state_since=self._clock.monotonic())
            elif s.connector is None or row.desired == "running":
                s.row = row  # changed on another node; running sessions keep their options until restart
            else:
                s.row = row  # desired no longer running: the keeper releases it, which stops it
        for sid in [sid for sid, s in self._sessions.items() if sid not in rows and s.connector is None]:
            del self._sessions[sid]
        self._registered = set(rows)

    async def _wanted(self) -> list[str]:
        self._refresh()
        self._note_owners(self.keeper.owners_seen)
        # A session deleted from the registry elsewhere is not wanted even while it still runs here:
        # the keeper releases it, which stops it, and the next refresh forgets it.
        return [sid for sid, s in self._sessions.items() if s.row.desired == "running" and sid in self._registered]

    def _note_owners(self, owners: Mapping[str, str | None]) -> None:
        """The owners the last lease sweep saw (a remote state from an older owner is dropped)."""
        for sid, node in owners.items():
            s = self._sessions.get(sid)
            if not isinstance(s, ClusterSession):
                continue
            if self.owns(sid):  # the map was read before this node's latest acquisitions
                s.owner = self.node
            elif s.connector is None and s.owner != node:
                s.owner, s.remote_state = node, None

    async def _load_states(self) -> None:
        """At start: the state other nodes last reported for their sessions (later: live events)."""
        try:
            states = await self.bridge.states()
        except Exception as exc:  # only the listing is less precise until the first events arrive
            log.warning("could not read the cluster's session states: %s", exc)
            return
        for sid, st in states.items():
            s = self._sessions.get(sid)
            if isinstance(s, ClusterSession) and s.connector is None and st.get("node") != self.node:
                s.owner, s.remote_state = st.get("node"), st.get("state")

    def _remote_event(self, node: str, row: EventRow) -> None:
        """Another node recorded ``row``: keep our view of its sessions (owner, state, registry) fresh."""
        if row.type in ("session.created", "session.deleted", "session.updated", "session.logged_out"):
            if self._refresh_soon is None:  # one registry read for a burst of creates
                def refresh() -> None:
                    self._refresh_soon = None
                    try:
                        self._refresh()
                    except Exception as exc:
                        log.warning("registry refresh failed: %s", exc)

                self._refresh_soon = asyncio.get_running_loop().call_later(0.05, refresh)
            return
        s = self._sessions.get(row.session or "")
        if not isinstance(s, ClusterSession) or s.connector is not None:
            return
        if row.type.startswith("link.") and isinstance(row.data.get("state"), str):
            s.owner, s.remote_state = node, row.data["state"]
            s.state_since = self._clock.monotonic()
        elif row.type == "session.stopped" and s.owner == node:
            s.remote_state = None

    async def _wake_loop(self) -> None:
        """Wake the delivery loop of an owned session when another node queued a message for it."""
        while True:
            try:
                msg = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the delivery loops' idle poll still finds the work
                log.warning("wake channel failed: %s", exc)
                await self._clock.sleep(1.0)
                continue
            if msg is not None:
                s = self._sessions.get(msg["data"].decode() if isinstance(msg["data"], bytes) else str(msg["data"]))
                if s is not None and s.connector is not None:
                    s.wake.set()

    async def send(self, session_id: str, payload: str | bytes, *, key: str | None = None) -> str:
        """Queue in the shared outbox; when another node owns the session, wake its delivery loop."""
        mid = await super().send(session_id, payload, key=key)
        if not self.owns(session_id):
            try:
                await self._stores.outbox.redis.publish(f"{PREFIX}:wake", session_id)
            except Exception as exc:  # queued durably already; the owner's idle poll delivers it
                log.warning("[%s] could not wake the owner: %s", session_id, exc)
        return mid

    def get(self, session_id: str) -> Session:
        """A session of the shared registry, also one another node created a moment ago."""
        try:
            return super().get(session_id)
        except SessionNotFound:
            if not self._db.has_session(session_id):
                raise
            self._refresh()
            return super().get(session_id)

    def owns(self, session_id: str) -> bool:
        """True while this node holds the session's lease."""
        return self.keeper.may_act(session_id)

    async def owner_of(self, session_id: str) -> tuple[str | None, str | None]:
        """The node running ``session_id`` now and its base URL (None, None: nobody)."""
        return await self.keeper.owner(session_id)

    async def _act_here(self, session_id: str) -> None:
        """Restart, logout, update and delete act where the session runs. The API forwards them to
        the owner (``_cluster_api``); this guards a request that arrives after ownership moved."""
        self.get(session_id)
        if self.owns(session_id):
            return
        node, _ = await self.owner_of(session_id)
        if node is not None and node != self.node:
            raise LeaseLost(f"session {session_id!r} runs on node {node!r}; retry the request "
                            "(any node forwards it to the owner)")
        # Nobody runs it: this node may write its queue and registry row (unfenced).
        self._stores.outbox.fence(session_id, None)
        self._stores.inbox.fence(session_id, None)

    async def create(self, **kw: Any) -> Session:
        """Create a session in the shared registry; an id another node created already is a conflict."""
        sid = kw.get("session_id")
        if sid and sid not in self._sessions and self._db.has_session(sid):
            self._refresh()
            raise SessionConflict(f"session {sid!r} exists already; PATCH it or pick another id")
        return await super().create(**kw)

    async def update(self, session_id: str, **kw: Any) -> Session:
        await self._act_here(session_id)
        return await super().update(session_id, **kw)

    async def restart(self, session_id: str, *, reason: str = "api") -> Session:
        await self._act_here(session_id)
        return await super().restart(session_id, reason=reason)

    async def logout(self, session_id: str) -> Session:
        await self._act_here(session_id)
        return await super().logout(session_id)

    async def delete(self, session_id: str) -> None:
        await self._act_here(session_id)
        await super().delete(session_id)
        try:
            await self.bridge.forget(session_id)
        except Exception as exc:  # only a stale state entry remains
            log.warning("[%s] could not drop its state entry: %s", session_id, exc)

    async def _start(self, s: Session) -> None:
        if not self.keeper.may_act(s.id):
            return  # another node runs it, or the next sweep acquires it and starts it here
        await super()._start(s)

    def _context(self, s: Session) -> Any:
        ctx = super()._context(s)
        ctx.admission = _FencedAdmission(ctx.admission, lambda: self.keeper.may_act(s.id), self._clock,
                                         self.keeper.core.ttl)
        return ctx

    async def _gain(self, sid: str, value: str) -> None:
        s = self._sessions.get(sid)
        if s is None:
            raise LeaseLost(f"session {sid!r} is not in the registry")
        async with s.lock:  # serialised with _lose: a lease lost meanwhile is not started
            if not self.keeper.may_act(sid):
                return
            self._stores.outbox.fence(sid, value)
            self._stores.inbox.fence(sid, value)  # the cursors share the inbox's fences
            if isinstance(s, ClusterSession):
                s.owner, s.remote_state = self.node, None
            # A dead owner's leased messages go out again now, in order (XAUTOCLAIM, no attempt counted).
            await self._stores.outbox.release_leases(sid)
            if s.connector is None and s.row.desired == "running":
                await self._start(s)
        log.info("[%s] owned by %s (lease %s)", sid, self.node, value.rsplit(":", 1)[1])

    async def _lose(self, sid: str, reason: str) -> None:
        # The fence keeps the old value: any late write of ours is refused by Redis (LeaseLost).
        s = self._sessions.get(sid)
        if s is None:
            return
        if isinstance(s, ClusterSession) and s.owner == self.node:
            s.owner, s.remote_state = None, None
        async with s.lock:
            await self._stop(s, "lease lost" if "rebalanc" not in reason else "rebalanced")
        log.info("[%s] no longer run by %s: %s", sid, self.node, reason)

    async def close(self, *, drain_timeout: float | None = None) -> None:
        """Stop the sweep, drain and stop our sessions, then release their leases (fast takeover)."""
        await self.keeper.stop()
        if getattr(self, "_waker", None) is not None:
            self._waker.cancel()
            await asyncio.gather(self._waker, return_exceptions=True)
            await self._pubsub.aclose()
        await super().close(drain_timeout=drain_timeout)
        await self.keeper.close(release=True)
        if self._refresh_soon is not None:
            self._refresh_soon.cancel()
        await self.bridge.close()
        if self._http is not None:
            await self._http.aclose()

"""Events shared by the nodes of a cluster, so any node's SSE stream and dashboard show every session.

Each node appends the events it records to one Redis Stream (``<prefix>:events``, trimmed to about
``event_log_size`` entries) and tails that stream; the events of other nodes are mirrored into its
own event log (:meth:`EventLog.mirror`) with ``data.node`` naming the node that recorded them. SSE
ids stay local to a node (each node's log numbers its rows), so ``Last-Event-ID`` resumes as before.

Why a Stream and not pub/sub: a node that loses Redis for a moment resumes tailing from the last
entry it read, so its SSE clients miss nothing; pub/sub would drop what was published meanwhile.
Observers (metrics, alerts, error log) see only their own node's events: nothing is counted twice.

The latest link state of each session also goes to a hash (``<prefix>:state``: session ->
``{"node", "state", "at"}``), so a node that starts later still shows the state of sessions that
other nodes run.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable

from ._db import EventRow
from ._eventlog import EventLog

__all__ = ["EventBridge"]

log = logging.getLogger("tether.service")

_QUEUE_LIMIT = 20_000  # events waiting to be published while Redis is slow; beyond: dropped, counted
_BATCH = 500
_BLOCK_MS = 500


class EventBridge:
    """Publish this node's events to Redis and mirror the other nodes' events here.

    Args:
        node: this node's id.
        redis: a ``redis.asyncio.Redis`` (``decode_responses=False``), shared with the stores.
        events: this node's event log.
        prefix: key namespace.
        maxlen: about how many events the shared stream keeps.
        on_remote: called as ``on_remote(node, row)`` for every mirrored event (session state).
    """

    def __init__(self, node: str, redis: Any, events: EventLog, *, prefix: str, maxlen: int,
                 on_remote: Callable[[str, EventRow], None] | None = None) -> None:
        self.node = node
        self._redis = redis
        self._events = events
        self._stream = f"{prefix}:events"
        self._state = f"{prefix}:state"
        self._maxlen = maxlen
        self._on_remote = on_remote or (lambda node, row: None)
        self._queue: asyncio.Queue[tuple[str, str | None, float, dict[str, Any]] | None] = asyncio.Queue(_QUEUE_LIMIT)
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self.published = self.mirrored = self.dropped = 0
        self._stopping = False

    async def start(self) -> None:
        """Start tailing after the stream's current last entry, and publishing every local event."""
        last = await self._redis.xrevrange(self._stream, count=1)
        self._last = last[0][0] if last else b"0-0"
        self._unsubscribe = self._events.subscribe(self._local)
        self._tasks = [asyncio.create_task(self._publish_loop(), name=f"tether-events-out[{self.node}]"),
                       asyncio.create_task(self._tail_loop(), name=f"tether-events-in[{self.node}]")]

    def _local(self, event: Any, row: EventRow) -> None:
        if self._stopping:
            return
        try:
            self._queue.put_nowait((row.type, row.session, row.at, row.data))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("cluster events: %d not shared (Redis too slow or away)", self.dropped)

    async def _publish_loop(self) -> None:
        # Ends at the None that close() queues, after publishing what came before it (redis-py may
        # swallow a cancellation inside a command, so the loops end by flag and sentinel instead).
        batch: list[tuple[str, str | None, float, dict[str, Any]]] = []
        last = False
        while not (last and not batch):
            if not batch and not last:
                first = await self._queue.get()
                last = first is None
                if first is not None:
                    batch.append(first)
                while len(batch) < _BATCH and not self._queue.empty() and not last:
                    item = self._queue.get_nowait()
                    if item is None:
                        last = True
                    else:
                        batch.append(item)
            if not batch:
                continue
            try:
                await self._publish(batch)
                self.published += len(batch)
                batch = []
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: keep the batch, try again (the queue is bounded)
                if self._stopping:
                    return
                log.warning("cluster events: publish failed, retrying: %s", exc)
                await asyncio.sleep(1.0)

    async def _publish(self, batch: list[tuple[str, str | None, float, dict[str, Any]]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        states: dict[str, bytes] = {}
        for type_, session, at, data in batch:
            fields = {"n": self.node, "t": type_, "s": session or "", "a": repr(at),
                      "d": json.dumps(data, default=str)}
            pipe.xadd(self._stream, fields, maxlen=self._maxlen, approximate=True)
            if session and type_.startswith("link.") and isinstance(data.get("state"), str):
                states[session] = json.dumps({"node": self.node, "state": data["state"], "at": at}).encode()
        if states:
            pipe.hset(self._state, mapping=states)
        await pipe.execute()

    async def _tail_loop(self) -> None:
        # Ends by the flag within one block period: cancelling a blocked XREAD is not always clean.
        while not self._stopping:
            try:
                got = await self._redis.xread({self._stream: self._last}, count=_BATCH, block=_BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # resume from self._last when Redis is back: nothing missed
                if self._stopping:
                    return
                log.warning("cluster events: reading the shared stream failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            for _stream, entries in got or ():
                for eid, f in entries:
                    self._last = eid
                    self._mirror(f)

    def _mirror(self, f: dict[bytes, bytes]) -> None:
        node = f.get(b"n", b"").decode()
        if node == self.node:
            return
        try:
            data = json.loads(f[b"d"])
            session = f[b"s"].decode() or None
            row = self._events.mirror(f[b"t"].decode(), session, float(f[b"a"]), {**data, "node": node})
        except (KeyError, ValueError) as exc:  # a foreign or damaged entry: skip it, keep tailing
            log.warning("cluster events: skipped a malformed entry: %s", exc)
            return
        self.mirrored += 1
        try:
            self._on_remote(node, row)
        except Exception:
            log.exception("cluster events: on_remote failed")

    async def states(self) -> dict[str, dict[str, Any]]:
        """The last reported link state of every session: ``{session: {"node", "state", "at"}}``."""
        raw = await self._redis.hgetall(self._state)
        out = {}
        for k, v in raw.items():
            try:
                out[k.decode()] = json.loads(v)
            except ValueError:
                continue
        return out

    async def forget(self, session: str) -> None:
        """Drop a deleted session's state entry."""
        await self._redis.hdel(self._state, session)

    async def close(self, *, flush_timeout: float = 2.0) -> None:
        """Stop mirroring; publish what is queued (bounded), then stop publishing."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if not self._tasks:
            return
        publisher, tailer = self._tasks
        self._stopping = True
        try:
            self._queue.put_nowait(None)  # publish what is queued, then stop
        except asyncio.QueueFull:
            publisher.cancel()
        _, stuck = await asyncio.wait(self._tasks, timeout=max(flush_timeout, _BLOCK_MS / 1000 + 1.0))
        for t in stuck:  # last resort; bounded wait either way
            t.cancel()
        if stuck:
            _, stuck = await asyncio.wait(stuck, timeout=2.0)
            if stuck:
                log.warning("cluster events: %d task(s) did not stop", len(stuck))
        self._tasks = []

"""The event log: every service event gets a persisted, monotonically growing id.

SSE clients resume with ``Last-Event-ID``: the log replays what they missed from SQLite (bounded to
``size`` events), then streams live events from an in-memory queue per client. A slow client whose
queue overflows is cut off and resumes from its last id, so one client never holds memory hostage.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Callable

from ._db import EventRow, ServiceDB
from ._events import event_data, event_type

__all__ = ["EventLog"]

log = logging.getLogger("tether.service")

_QUEUE_LIMIT = 1000


class EventLog:
    """Persist and fan out service events.

    Args:
        db: the service database.
        size: how many events to keep for resume.
        wall: a function returning wall-clock seconds (the clock's ``wall``).
    """

    def __init__(self, db: ServiceDB, *, size: int, wall: Callable[[], float]) -> None:
        self._db = db
        self._size = size
        self._wall = wall
        self._queues: set[asyncio.Queue[EventRow | None]] = set()
        self._subscribers: list[Callable[[Any, EventRow], None]] = []
        self._appended = 0
        self._closed = False

    def subscribe(self, callback: Callable[[Any, EventRow], None]) -> Callable[[], None]:
        """Call ``callback(event, row)`` for every appended event; returns an unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def append(self, event: Any) -> EventRow:
        """Persist ``event`` and hand it to live streams and subscribers."""
        data = event_data(event)
        at = getattr(event, "at", 0.0) or self._wall()
        session = data.get("session")
        type_ = event_type(event)
        row = self._store_and_stream(type_, session, at, data)
        for cb in list(self._subscribers):
            try:
                cb(event, row)
            except Exception:
                log.exception("event subscriber failed")
        return row

    def mirror(self, type_: str, session: str | None, at: float, data: dict[str, Any]) -> EventRow:
        """Persist and stream an event another cluster node recorded (scale-out, see ``_cluster_events``).

        Live streams (SSE, dashboard) get it with a local id; subscribers (metrics, alerts, error
        log) do not: each node's observers count only what that node did, so nothing is counted twice.
        """
        return self._store_and_stream(type_, session, at, data)

    def _store_and_stream(self, type_: str, session: str | None, at: float, data: dict[str, Any]) -> EventRow:
        try:
            eid = self._db.append_event(type_, session, at, data)
        except Exception as exc:  # the log must never break the caller (a connector's hook)
            log.warning("event log write failed: %s", exc)
            eid = 0
        row = EventRow(eid, type_, session, at, data)
        self._appended += 1
        if self._appended % 500 == 0:
            self._db.trim_events(self._size)
        for q in list(self._queues):
            if q.qsize() >= _QUEUE_LIMIT:
                self._queues.discard(q)
                q.put_nowait(None)  # end that stream; the client resumes with Last-Event-ID
            else:
                q.put_nowait(row)
        return row

    def since(self, after: int, *, limit: int = 500, session: str | None = None) -> list[EventRow]:
        """Events with id > ``after``, oldest first."""
        return self._db.events_after(after, limit=limit, session=session)

    @property
    def last_id(self) -> int:
        return self._db.last_event_id()

    async def stream(self, after: int | None, *, session: str | None = None) -> AsyncIterator[EventRow | None]:
        """Replay events after ``after`` (None: only new ones), then live ones.

        Yields ``None`` every ``keepalive`` period of silence so the caller can send a comment.
        Ends when the log closes or the client is too slow.
        """
        q: asyncio.Queue[EventRow | None] = asyncio.Queue()
        self._queues.add(q)  # subscribe before replay: nothing falls in the gap
        try:
            last = after if after is not None else self.last_id
            while after is not None:
                batch = self.since(last, session=session)
                for row in batch:
                    last = row.id
                    yield row
                if len(batch) < 500:
                    break
            while not self._closed:
                try:
                    row = await asyncio.wait_for(q.get(), 15.0)
                except TimeoutError:
                    yield None
                    continue
                if row is None:
                    return
                if row.id <= last or (session is not None and row.session != session):
                    continue
                last = row.id
                yield row
        finally:
            self._queues.discard(q)

    def close(self) -> None:
        """End every live stream (shutdown)."""
        self._closed = True
        for q in list(self._queues):
            q.put_nowait(None)
        self._queues.clear()

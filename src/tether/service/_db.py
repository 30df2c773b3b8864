"""The service's own SQLite file: the session registry, the event log and the webhook queue.

Outbound messages, inbox de-duplication and cursors live in ``tether.store``; this file holds only
what the service itself must remember across restarts. Every statement is small, so it runs on the
event loop thread (WAL, ``synchronous=NORMAL``: a power cut may lose the last events, never corrupt).
Session rows use ``synchronous=FULL`` semantics by committing each change.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .._errors import StoreUnavailable

__all__ = ["ServiceDB", "SessionRow", "EventRow", "WebhookJob"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    options TEXT NOT NULL,
    webhooks TEXT NOT NULL,
    desired TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    session TEXT,
    at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    message_id TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT,
    UNIQUE (session, message_id, url)
);
CREATE INDEX IF NOT EXISTS webhook_jobs_due ON webhook_jobs (status, next_at);
"""


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A persisted session. ``desired`` is running | stopped | logged_out."""

    id: str
    kind: str
    options: dict[str, Any]
    webhooks: list[str]
    desired: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class EventRow:
    """One entry of the event log; ``id`` grows monotonically (the SSE event id)."""

    id: int
    type: str
    session: str | None
    at: float
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WebhookJob:
    """One inbound message waiting to be POSTed to one webhook URL."""

    id: int
    session: str
    message_id: str
    url: str
    body: str
    attempts: int
    next_at: float


class ServiceDB:
    """The service database (``<data_dir>/service.db``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open the service database {str(self.path)!r}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            self._db.execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    # --- sessions -------------------------------------------------------------------------
    def sessions(self) -> list[SessionRow]:
        rows = self._db.execute(
            "SELECT id, kind, options, webhooks, desired, created_at, updated_at FROM sessions ORDER BY created_at, id"
        ).fetchall()
        return [self._session(r) for r in rows]

    @staticmethod
    def _session(r: tuple[Any, ...]) -> SessionRow:
        return SessionRow(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4], r[5], r[6])

    def put_session(self, row: SessionRow) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row.id, row.kind, json.dumps(row.options), json.dumps(row.webhooks), row.desired,
             row.created_at, row.updated_at),
        )

    def delete_session(self, session: str) -> None:
        self._db.execute("DELETE FROM sessions WHERE id = ?", (session,))
        self._db.execute("DELETE FROM webhook_jobs WHERE session = ?", (session,))

    # --- event log ------------------------------------------------------------------------
    def append_event(self, type_: str, session: str | None, at: float, data: dict[str, Any]) -> int:
        cur = self._db.execute(
            "INSERT INTO events (type, session, at, data) VALUES (?, ?, ?, ?)",
            (type_, session, at, json.dumps(data, default=str)),
        )
        return int(cur.lastrowid or 0)

    def events_after(self, after: int, *, limit: int = 500, session: str | None = None) -> list[EventRow]:
        if session is None:
            rows = self._db.execute(
                "SELECT id, type, session, at, data FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT id, type, session, at, data FROM events WHERE id > ? AND session = ? ORDER BY id LIMIT ?",
                (after, session, limit),
            ).fetchall()
        return [EventRow(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def last_event_id(self) -> int:
        row = self._db.execute("SELECT MAX(id) FROM events").fetchone()
        return int(row[0] or 0)

    def first_event_id(self) -> int:
        row = self._db.execute("SELECT MIN(id) FROM events").fetchone()
        return int(row[0] or 0)

    def trim_events(self, keep: int) -> None:
        self._db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (keep,))

    # --- webhook queue --------------------------------------------------------------------
    def enqueue_webhooks(self, session: str, message_id: str, urls: Iterable[str], body: str, now: float) -> int:
        """Queue one job per URL; a message already queued for a URL is not queued twice."""
        n = 0
        try:
            for url in urls:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO webhook_jobs (session, message_id, url, body, next_at) VALUES (?, ?, ?, ?, ?)",
                    (session, message_id, url, body, now),
                )
                n += cur.rowcount
        except sqlite3.Error as exc:  # the caller retries: the message is not marked seen yet
            raise StoreUnavailable(f"cannot queue webhooks in {str(self.path)!r}: {exc}") from exc
        return n

    def due_webhooks(self, now: float, limit: int = 50) -> list[WebhookJob]:
        rows = self._db.execute(
            "SELECT id, session, message_id, url, body, attempts, next_at FROM webhook_jobs "
            "WHERE status = 'pending' AND next_at <= ? ORDER BY next_at, id LIMIT ?",
            (now, limit),
        ).fetchall()
        return [WebhookJob(*r) for r in rows]

    def next_webhook_at(self) -> float | None:
        row = self._db.execute("SELECT MIN(next_at) FROM webhook_jobs WHERE status = 'pending'").fetchone()
        return None if row[0] is None else float(row[0])

    def webhook_done(self, job_id: int, attempts: int) -> None:
        self._db.execute("UPDATE webhook_jobs SET status = 'delivered', attempts = ? WHERE id = ?", (attempts, job_id))

    def webhook_retry(self, job_id: int, attempts: int, next_at: float, error: str, *, dead: bool) -> None:
        self._db.execute(
            "UPDATE webhook_jobs SET attempts = ?, next_at = ?, last_error = ?, status = ? WHERE id = ?",
            (attempts, next_at, error, "dead" if dead else "pending", job_id),
        )

    def webhook_counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM webhook_jobs GROUP BY status").fetchall()
        return {status: n for status, n in rows}

    def trim_webhooks(self, keep_delivered: int = 10_000) -> None:
        self._db.execute(
            "DELETE FROM webhook_jobs WHERE status = 'delivered' AND id <= "
            "(SELECT MAX(id) FROM webhook_jobs) - ?",
            (keep_delivered,),
        )


def now_wall() -> float:
    return time.time()

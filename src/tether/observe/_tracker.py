"""ErrorTracker: every error tether sees, redacted, in a bounded SQLite table.

Writes are small and synchronous (one row, one commit in WAL mode), so ``record()`` can be called
from a sync hook. Retention is bounded both by count and by age; pruning runs on write.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .._clock import SYSTEM_CLOCK, Clock
from .._errors import ConfigError, StoreUnavailable
from ._redact import redact, redact_obj

__all__ = ["ErrorTracker", "ErrorRecord", "SEVERITIES"]

#: Allowed severities, least to most severe (the seed's scale).
SEVERITIES = ("low", "medium", "high", "critical")

_log = logging.getLogger("tether.errors")
_LOG_LEVEL = {"low": logging.INFO, "medium": logging.WARNING, "high": logging.ERROR, "critical": logging.CRITICAL}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    severity TEXT NOT NULL,
    component TEXT NOT NULL,
    session TEXT,
    error_class TEXT NOT NULL,
    message TEXT NOT NULL,
    traceback TEXT,
    context TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS errors_at ON errors(at);
CREATE INDEX IF NOT EXISTS errors_session ON errors(session, at);
"""


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One stored error. Every text field is already redacted."""

    id: int
    at: float
    severity: str
    component: str
    session: str | None
    error_class: str
    message: str
    traceback: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id, "at": self.at, "severity": self.severity, "component": self.component,
            "session": self.session, "error_class": self.error_class, "message": self.message,
            "traceback": self.traceback, "context": dict(self.context), "metadata": dict(self.metadata),
        }


class ErrorTracker:
    """Records errors with secrets redacted; queries and statistics; bounded retention.

    Args:
        path: the SQLite file (created with its parent directory), or ":memory:".
        max_records: keep at most this many rows (oldest are pruned first).
        max_age: drop rows older than this many seconds.
        clock: timestamps come from ``clock.wall()``.
        log: also log each recorded error to the ``tether.errors`` logger (errors.log).
    """

    def __init__(self, path: str | Path, *, max_records: int = 10_000, max_age: float = 7 * 86400.0,
                 clock: Clock | None = None, log: bool = True) -> None:
        if max_records < 1:
            raise ConfigError(f"ErrorTracker max_records must be >= 1, got {max_records!r}")
        if not max_age > 0:
            raise ConfigError(f"ErrorTracker max_age must be > 0 seconds, got {max_age!r}")
        self.path = str(path)
        self.max_records = int(max_records)
        self.max_age = float(max_age)
        self.clock = clock or SYSTEM_CLOCK
        self._log = log
        self._lock = threading.Lock()  # the API may read from a worker thread while the loop writes
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open error database {self.path}: {exc}") from exc
        self._closed = False

    # ---- writing -----------------------------------------------------------------------------
    def record(
        self,
        error: BaseException | str,
        severity: str = "medium",
        component: str = "tether",
        session: str | None = None,
        context: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Store one error (redacted) and return its id.

        Args:
            error: the exception (its class, message and traceback are kept) or a message.
            severity: one of ``low``, ``medium``, ``high``, ``critical``.
            component: which part failed ("link", "webhook", "alerts", ...).
            session: the session id, when the error belongs to one.
            context: what was going on (URL, attempt...); secret-named keys are masked.
            metadata: anything else worth keeping; masked the same way.

        Raises:
            ConfigError: unknown severity.
        """
        if severity not in SEVERITIES:
            raise ConfigError(f"severity must be one of {', '.join(SEVERITIES)}; got {severity!r}")
        if isinstance(error, BaseException):
            error_class = type(error).__name__
            message = redact(str(error) or error_class)
            tb = "".join(traceback.format_exception(type(error), error, error.__traceback__)) if error.__traceback__ else None
            tb = redact(tb) if tb else None
        else:
            error_class, message, tb = "Message", redact(error), None
        ctx = json.dumps(redact_obj(dict(context or {})), default=str)
        meta = json.dumps(redact_obj(dict(metadata or {})), default=str)
        now = self.clock.wall()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO errors (at, severity, component, session, error_class, message, traceback, context, metadata)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now, severity, component, session, error_class, message, tb, ctx, meta),
            )
            row_id = int(cur.lastrowid or 0)
            self._prune_locked(now)
        if self._log:
            extra = {"session": session} if session else {}
            _log.log(_LOG_LEVEL[severity], "%s error in %s: %s: %s", severity, component, error_class, message, extra=extra)
        return row_id

    def prune(self) -> int:
        """Apply retention now; returns how many rows were deleted."""
        with self._lock:
            return self._prune_locked(self.clock.wall())

    def _prune_locked(self, now: float) -> int:
        n = self._db.execute("DELETE FROM errors WHERE at < ?", (now - self.max_age,)).rowcount
        n += self._db.execute(
            "DELETE FROM errors WHERE id <= (SELECT id FROM errors ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (self.max_records,),
        ).rowcount
        return n

    # ---- reading -----------------------------------------------------------------------------
    def query(
        self,
        *,
        severity: str | Iterable[str] | None = None,
        component: str | None = None,
        session: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[ErrorRecord]:
        """Errors matching every given filter, newest first.

        Args:
            severity: one severity, or several.
            component / session: exact match.
            since / until: wall-clock bounds in epoch seconds (inclusive / exclusive).
            limit: at most this many rows (1..10000).
        """
        where, args = self._where(severity, component, session, since, until)
        limit = max(1, min(int(limit), 10_000))
        with self._lock:
            rows = self._db.execute(
                "SELECT id, at, severity, component, session, error_class, message, traceback, context, metadata"
                f" FROM errors{where} ORDER BY at DESC, id DESC LIMIT ?", (*args, limit),
            ).fetchall()
        return [
            ErrorRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), json.loads(r[9])) for r in rows
        ]

    def count(self, *, severity: str | Iterable[str] | None = None, component: str | None = None,
              session: str | None = None, since: float | None = None, until: float | None = None) -> int:
        """How many errors match the filters."""
        where, args = self._where(severity, component, session, since, until)
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM errors{where}", args).fetchone()[0])

    def stats(self, *, since: float | None = None, until: float | None = None) -> dict[str, Any]:
        """Counts per error class (with first/last seen), per severity and per component."""
        where, args = self._where(None, None, None, since, until)
        with self._lock:
            by_class = self._db.execute(
                f"SELECT error_class, COUNT(*), MIN(at), MAX(at) FROM errors{where} GROUP BY error_class ORDER BY 2 DESC", args
            ).fetchall()
            by_sev = self._db.execute(f"SELECT severity, COUNT(*) FROM errors{where} GROUP BY severity", args).fetchall()
            by_comp = self._db.execute(f"SELECT component, COUNT(*) FROM errors{where} GROUP BY component", args).fetchall()
        return {
            "total": sum(r[1] for r in by_class),
            "by_class": {r[0]: {"count": r[1], "first_seen": r[2], "last_seen": r[3]} for r in by_class},
            "by_severity": {r[0]: r[1] for r in by_sev},
            "by_component": {r[0]: r[1] for r in by_comp},
        }

    @staticmethod
    def _where(severity: str | Iterable[str] | None, component: str | None, session: str | None,
               since: float | None, until: float | None) -> tuple[str, tuple[Any, ...]]:
        parts: list[str] = []
        args: list[Any] = []
        if severity is not None:
            sevs = [severity] if isinstance(severity, str) else list(severity)
            bad = [s for s in sevs if s not in SEVERITIES]
            if bad:
                raise ConfigError(f"severity must be one of {', '.join(SEVERITIES)}; got {bad[0]!r}")
            parts.append(f"severity IN ({', '.join('?' * len(sevs))})")
            args.extend(sevs)
        if component is not None:
            parts.append("component = ?")
            args.append(component)
        if session is not None:
            parts.append("session = ?")
            args.append(session)
        if since is not None:
            parts.append("at >= ?")
            args.append(float(since))
        if until is not None:
            parts.append("at < ?")
            args.append(float(until))
        return (" WHERE " + " AND ".join(parts) if parts else ""), tuple(args)

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> "ErrorTracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

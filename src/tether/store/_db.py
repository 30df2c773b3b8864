"""One SQLite file, one dedicated writer thread, group commit.

Every store object (Outbox, Inbox, Cursors) on the same file shares one :class:`Database`. Callers
on the event loop queue an operation and await a future; the writer thread takes everything queued
(up to ``batch_max``), runs it in ONE transaction, commits, and only then resolves the futures.
While one batch is being fsynced, the next one accumulates, so throughput grows with concurrency
instead of being capped at one fsync per message. The event loop never makes a SQLite call.

Why a thread and stdlib ``sqlite3`` rather than aiosqlite: aiosqlite also runs one thread per
connection, but commits per call, so group commit would still have to be built on top, with an
extra hop per statement. Owning the thread lets a batch be a transaction, and costs no dependency.

Operation contract: an op is ``fn(conn, state, *args)`` run on the writer thread. It may carry a
bulk form ``fn.many(conn, state, [args, ...]) -> [(ok, value), ...]`` used for runs of it in a batch. An op that
refuses (raises a :class:`~tether.TetherError`) must do so before it writes anything; any other
exception rolls the whole batch back and the batch's ops are retried one transaction each, so one
bad op cannot fail its neighbours. ``state`` is a per-database dict of caches owned by the ops; it
is cleared whenever a rollback happens or another connection changed the file.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

from .._errors import ConfigError, StoreError, StoreTypeError, StoreUnavailable, TetherError

__all__ = ["Database", "acquire", "store_unavailable"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    session      TEXT NOT NULL,
    payload      BLOB NOT NULL,
    key          TEXT,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_at   REAL NOT NULL,
    expires_at   REAL,
    available_at REAL NOT NULL,
    delivered_at REAL,
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS outbox_open ON outbox(session, seq) WHERE status != 'delivered';
CREATE INDEX IF NOT EXISTS outbox_expiry ON outbox(expires_at)
    WHERE expires_at IS NOT NULL AND status != 'delivered';
CREATE INDEX IF NOT EXISTS outbox_done ON outbox(delivered_at) WHERE status = 'delivered';
CREATE TABLE IF NOT EXISTS outbox_keys (
    session    TEXT NOT NULL,
    key        TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (session, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    n          INTEGER PRIMARY KEY AUTOINCREMENT,
    seq        INTEGER NOT NULL UNIQUE,
    session    TEXT NOT NULL,
    payload    BLOB NOT NULL,
    key        TEXT,
    reason     TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    created_at REAL NOT NULL,
    died_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_session ON dead_letters(session, n);
CREATE TABLE IF NOT EXISTS inbox (
    session    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    n          INTEGER NOT NULL,
    seen_at    REAL NOT NULL,
    PRIMARY KEY (session, message_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inbox_order ON inbox(session, n);
CREATE TABLE IF NOT EXISTS cursors (
    session    TEXT PRIMARY KEY,
    "offset"   INTEGER,
    seq        INTEGER,
    epoch      TEXT,
    updated_at REAL NOT NULL
);
"""

SYNCHRONOUS = ("FULL", "NORMAL")
_STOP = object()
# Errors that are about the file, not about one op: retrying ops one by one cannot help.
_FILE_ERRORS = ("locked", "busy", "not a database", "malformed", "corrupt", "disk i/o", "full",
                "unable to open", "readonly", "read-only")


def store_unavailable(path: str, exc: BaseException, busy_timeout: float) -> StoreUnavailable:
    """Translate a sqlite3 error into a StoreUnavailable that names the file and what to do."""
    text = str(exc)
    low = text.lower()
    if "locked" in low or "busy" in low:
        msg = (f"SQLite database {path} is locked by another connection or process (waited "
               f"{busy_timeout:g}s): stop the other program using it, or give this store its own file")
    elif "not a database" in low or "malformed" in low or "corrupt" in low:
        msg = (f"SQLite database {path} is corrupt or not a SQLite file ({text}): stop tether, move "
               f"the file and its -wal/-shm files aside (or restore them from a backup); tether "
               f"creates a fresh database on the next start")
    elif "unable to open" in low:
        msg = (f"cannot open SQLite database {path} ({text}): check that the directory exists "
               f"and is writable")
    elif "readonly" in low or "read-only" in low:
        msg = f"SQLite database {path} is read-only ({text}): fix the file's permissions"
    elif "full" in low or "disk i/o" in low:
        msg = f"SQLite database {path} cannot be written ({text}): free disk space or check the disk"
    else:
        msg = f"SQLite database {path} failed: {text}"
    err = StoreUnavailable(msg)
    err.__cause__ = exc
    return err


def _resolve(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in items:
        if fut.done():  # the caller was cancelled; the op still ran (use a key to retry safely)
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _call_listener(callback: Callable[[Any], None], event: Any) -> None:
    try:
        callback(event)
    except Exception:  # noqa: BLE001 - an observer's bug must not break the store
        import logging

        logging.getLogger("tether.store").exception("store subscriber %r failed", callback)


class Database:
    """The writer thread for one SQLite file. Use :func:`acquire`, not the constructor."""

    def __init__(self, path: str, *, synchronous: str, busy_timeout: float, batch_max: int) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.batch_max = batch_max
        self.state: dict[str, Any] = {}
        # (loop, callback) pairs; events that ops leave in state["events"] are sent after COMMIT.
        self.listeners: list[tuple[asyncio.AbstractEventLoop, Callable[[Any], None]]] = []
        self.refs = 0
        self.batches = 0
        self.ops = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closing = False
        self._stopped = threading.Event()
        self._stop_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"tether-store:{Path(path).name}",
                                        daemon=True)
        self._thread.start()

    # -- event-loop side -------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Queue ``fn(conn, state, *args)`` for the writer; the future resolves after COMMIT."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:  # never behind _STOP: a queued op is always run or failed, never lost
            if self._closing:
                raise StoreError(f"store {self.path} is closed")
            self._queue.put((fn, args, fut, loop))
        return fut

    async def stop(self) -> None:
        """Finish everything queued, close the connection and end the thread."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            if self._stopped.is_set():
                return
            self._stop_waiters.append((loop, fut))
            if not self._closing:
                self._closing = True
                self._queue.put(_STOP)
        await fut

    # -- writer thread ---------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=True)
        except sqlite3.Error as e:
            raise store_unavailable(self.path, e, self.busy_timeout) from e
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"SQLite database {self.path} has schema version {version}, written by a newer "
                    f"tether (this one knows {SCHEMA_VERSION}): upgrade tether or use another file")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.executescript(
                f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version={SCHEMA_VERSION};COMMIT;")
            self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as e:
            conn.close()
            raise store_unavailable(self.path, e, self.busy_timeout) from e
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            stop = False
            while not stop:
                item = self._queue.get()
                if item is _STOP:
                    break
                batch = [item]
                while len(batch) < self.batch_max:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    batch.append(item)
                if conn is None:
                    # Opened lazily and retried on the next batch: a lock held by another
                    # process fails these callers, not the store for good.
                    try:
                        conn = self._open()
                    except StoreUnavailable as e:
                        self._deliver([(fut, loop, False, _copy(e)) for _, _, fut, loop in batch])
                        continue
                self._execute(conn, batch)
        finally:
            if conn is not None:
                conn.close()
            self._finish()

    def _finish(self) -> None:
        with self._lock:
            self._closing = True
            self._stopped.set()
            waiters, self._stop_waiters = self._stop_waiters, []
        leftovers = []  # only if the thread died unexpectedly: fail them rather than hang them
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftovers.append((item[2], item[3], False,
                                  StoreError(f"store {self.path} stopped before this operation ran")))
        self._deliver(leftovers)
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(lambda f=fut: f.done() or f.set_result(None))
            except RuntimeError:
                pass  # that loop is closed

    def _execute(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        self.batches += 1
        self.ops += len(batch)
        results: list[tuple[Any, Any, bool, Any]] = []
        try:
            dv = conn.execute("PRAGMA data_version").fetchone()[0]
            if dv != self._data_version:  # someone else wrote the file: caches are stale
                self.state.clear()
                self._data_version = dv
            conn.execute("BEGIN IMMEDIATE")
            self.state["listen"] = bool(self.listeners)
            i, size = 0, len(batch)
            while i < size:
                fn, args, fut, loop = batch[i]
                many = getattr(fn, "many", None)
                if many is None:
                    try:
                        results.append((fut, loop, True, fn(conn, self.state, *args)))
                    except TetherError as e:  # a clean refusal: the op wrote nothing
                        results.append((fut, loop, False, e))
                    i += 1
                    continue
                # A run of the same op with a bulk form (e.g. puts): one executemany for all.
                j = i + 1
                while j < size and batch[j][0] is fn:
                    j += 1
                outs = many(conn, self.state, [op[1] for op in batch[i:j]])
                results.extend((op[2], op[3], ok, value) for op, (ok, value) in zip(batch[i:j], outs))
                i = j
            conn.execute("COMMIT")
            self._emit()
        except Exception as e:  # noqa: BLE001 - translated below, never leaks raw
            self._rollback(conn)
            if isinstance(e, sqlite3.Error) and _is_file_error(e) or len(batch) == 1:
                results = [(fut, loop, False, self._translate(e)) for _, _, fut, loop in batch]
            else:
                results = [self._execute_one(conn, op) for op in batch]
        self._deliver(results)

    def _execute_one(self, conn: sqlite3.Connection, op: Any) -> tuple[Any, Any, bool, Any]:
        fn, args, fut, loop = op
        try:
            conn.execute("BEGIN IMMEDIATE")
            self.state["listen"] = bool(self.listeners)
            try:
                value = fn(conn, self.state, *args)
            except TetherError as e:
                conn.execute("ROLLBACK")
                self.state.pop("events", None)
                return (fut, loop, False, e)
            conn.execute("COMMIT")
            self._emit()
            return (fut, loop, True, value)
        except Exception as e:  # noqa: BLE001
            self._rollback(conn)
            return (fut, loop, False, self._translate(e))

    def _translate(self, e: BaseException) -> BaseException:
        if isinstance(e, sqlite3.Error):
            return store_unavailable(self.path, e, self.busy_timeout)
        err = StoreError(f"store operation on {self.path} failed: {type(e).__name__}: {e}")
        err.__cause__ = e
        return err

    def _emit(self) -> None:
        events = self.state.pop("events", None)
        if not events:
            return
        for loop, callback in list(self.listeners):
            for event in events:
                try:
                    loop.call_soon_threadsafe(_call_listener, callback, event)
                except RuntimeError:
                    pass  # that loop is closed

    def _rollback(self, conn: sqlite3.Connection) -> None:
        self.state.clear()
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    @staticmethod
    def _deliver(results: list[tuple[Any, Any, bool, Any]]) -> None:
        by_loop: dict[Any, list[tuple[Any, bool, Any]]] = {}
        for fut, loop, ok, value in results:
            by_loop.setdefault(loop, []).append((fut, ok, value))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, items)
            except RuntimeError:
                pass  # the caller's loop is closed; nobody is waiting any more


def _copy(err: StoreUnavailable) -> StoreUnavailable:
    """A fresh exception per waiter (one instance raised in many tasks would share tracebacks)."""
    new = StoreUnavailable(str(err))
    new.__cause__ = err.__cause__
    return new


def _is_file_error(e: sqlite3.Error) -> bool:
    if isinstance(e, sqlite3.IntegrityError):
        return False
    low = str(e).lower()
    return any(word in low for word in _FILE_ERRORS)


# -- one Database per file per process -------------------------------------------------------
_registry: dict[str, Database] = {}
_registry_lock = threading.Lock()


def acquire(path: str | os.PathLike[str], *, synchronous: str, busy_timeout: float,
            batch_max: int) -> Database:
    """The shared Database for ``path``, started on first use; pair with :func:`release`."""
    if not isinstance(path, (str, os.PathLike)):
        raise StoreTypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if not isinstance(synchronous, str) or synchronous.upper() not in SYNCHRONOUS:
        raise ConfigError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
    synchronous = synchronous.upper()
    if not isinstance(busy_timeout, (int, float)) or busy_timeout < 0:
        raise ConfigError(f"busy_timeout must be a number of seconds >= 0, got {busy_timeout!r}")
    if not isinstance(batch_max, int) or isinstance(batch_max, bool) or batch_max < 1:
        raise ConfigError(f"batch_max must be an int >= 1, got {batch_max!r}")
    key = os.path.abspath(os.fspath(path))
    with _registry_lock:
        db = _registry.get(key)
        if db is not None and (db._closing or db._stopped.is_set()):
            db = None
        if db is None:
            db = Database(key, synchronous=synchronous, busy_timeout=float(busy_timeout),
                          batch_max=batch_max)
            _registry[key] = db
        elif db.synchronous != synchronous:
            raise ConfigError(
                f"{key} is already open with synchronous={db.synchronous!r}; every store on one "
                f"file shares one setting (got {synchronous!r})")
        db.refs += 1
        return db


async def release(db: Database) -> None:
    """Drop one reference; the last one stops the writer after its queued work is done."""
    with _registry_lock:
        db.refs -= 1
        last = db.refs <= 0
        if last and _registry.get(db.path) is db:
            del _registry[db.path]
    if last:
        await db.stop()


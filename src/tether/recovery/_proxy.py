"""ProxyPool: proxies in rotation with health marks and cooldown, persisted in SQLite.

A failed proxy cools down (``cooldown · 2ⁿ⁻¹`` after its n-th consecutive failure, capped at
``max_cooldown``); a success clears its record. Cooldowns are stored as wall-clock times, so a
restarted process does not hammer a proxy it just saw fail. When nothing is usable the pool
raises :class:`tether.NoHealthyProxy` instead of looping (Pyrogram loops forever on a dead proxy).

Proxy URLs often carry a password: it never appears in errors, logs or reprs (see ``mask_url``).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from .._clock import Clock, SystemClock
from .._errors import ConfigError, NoHealthyProxy, StoreUnavailable
from ._mask import mask_url

__all__ = ["ProxyPool", "ProxyStatus"]

T = TypeVar("T")
_SCHEMES = frozenset({"socks4", "socks4a", "socks5", "socks5h", "http", "https", "mtproto"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS proxies (
    url TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    cooldown_until REAL NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS pool_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class ProxyStatus:
    """One proxy's health. ``url`` is the real URL (kept out of the repr); ``masked`` is safe to show."""

    url: str = field(repr=False)
    masked: str
    healthy: bool
    failures: int
    cooldown_left: float
    current: bool


class ProxyPool:
    """A rotating pool of proxy URLs stored in SQLite.

    Args:
        path: the SQLite file (``":memory:"`` for a pool that does not survive restarts).
        cooldown: seconds a proxy rests after its first consecutive failure (doubles each further failure).
        max_cooldown: the longest rest.
        clock: time source; cooldowns use ``clock.wall()`` so they survive restarts.

    Use ``async with ProxyPool(path) as pool`` or call ``await pool.close()``.
    """

    def __init__(self, path: str | os.PathLike[str] = ":memory:", *, cooldown: float = 60.0,
                 max_cooldown: float = 3600.0, clock: Clock | None = None) -> None:
        if cooldown < 0 or max_cooldown < cooldown:
            raise ConfigError("ProxyPool needs 0 <= cooldown <= max_cooldown (seconds)")
        self.path = os.fspath(path)
        self.cooldown = float(cooldown)
        self.max_cooldown = float(max_cooldown)
        self.clock: Clock = clock or SystemClock()
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._closed = False

    # -- plumbing ----------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailable(f"ProxyPool({self.path}) is closed")
        if self._conn is None:
            try:
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                if self.path != ":memory:":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
            except sqlite3.DatabaseError as exc:
                raise StoreUnavailable(f"cannot open proxy pool database {self.path}: {exc}") from exc
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def work() -> T:
            with self._lock:
                conn = self._db()
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    result = fn(conn)
                    conn.execute("COMMIT")
                    return result
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise

        try:
            return await asyncio.to_thread(work)
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailable(f"proxy pool database {self.path} failed: {exc}") from exc

    async def close(self) -> None:
        """Close the database; the pool cannot be used afterwards."""
        def work() -> None:
            with self._lock:
                self._closed = True
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(work)

    async def __aenter__(self) -> "ProxyPool":
        await self._run(lambda conn: None)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- API ---------------------------------------------------------------------------------
    async def add(self, *urls: str) -> None:
        """Add proxies at the end of the rotation (already known ones keep their place and health)."""
        for url in urls:
            _validate(url)

        def work(conn: sqlite3.Connection) -> None:
            (top,) = conn.execute("SELECT COALESCE(MAX(position), -1) FROM proxies").fetchone()
            for url in urls:
                top += 1
                conn.execute("INSERT OR IGNORE INTO proxies(url, position) VALUES (?, ?)", (url, top))

        await self._run(work)

    async def remove(self, url: str) -> None:
        """Take a proxy out of the pool."""
        await self._run(lambda conn: conn.execute("DELETE FROM proxies WHERE url = ?", (url,)))

    async def mark_ok(self, url: str) -> None:
        """Record a success: the proxy is healthy and its failure count starts again."""
        await self._run(lambda conn: conn.execute(
            "UPDATE proxies SET failures = 0, cooldown_until = 0, last_error = NULL WHERE url = ?", (url,)))

    async def mark_failed(self, url: str, reason: str | None = None) -> None:
        """Record a failure: the proxy cools down for cooldown·2ⁿ⁻¹ seconds (capped)."""
        now = self.clock.wall()
        await self._run(lambda conn: self._fail(conn, url, now, reason))

    def _fail(self, conn: sqlite3.Connection, url: str, now: float, reason: str | None) -> None:
        row = conn.execute("SELECT failures FROM proxies WHERE url = ?", (url,)).fetchone()
        if row is None:
            return
        failures = row[0] + 1
        rest = min(self.max_cooldown, self.cooldown * 2 ** min(failures - 1, 30))
        conn.execute("UPDATE proxies SET failures = ?, cooldown_until = ?, last_error = ? WHERE url = ?",
                     (failures, now + rest, reason, url))

    async def current(self) -> str:
        """The proxy in use; if it is cooling down, the next healthy one. Raises NoHealthyProxy."""
        now = self.clock.wall()
        return await self._run(lambda conn: self._pick(conn, now, advance=False))

    async def rotate(self, *, failed: bool = True, reason: str | None = None) -> str:
        """Move to the next healthy proxy in order, marking the current one failed first (by default).

        Raises:
            NoHealthyProxy: every proxy is cooling down, or the pool is empty.
        """
        now = self.clock.wall()

        def work(conn: sqlite3.Connection) -> str:
            cur = _meta(conn, "current")
            if failed and cur is not None:
                self._fail(conn, cur, now, reason)
            return self._pick(conn, now, advance=True)

        return await self._run(work)

    def _pick(self, conn: sqlite3.Connection, now: float, *, advance: bool) -> str:
        rows = conn.execute("SELECT url, cooldown_until FROM proxies ORDER BY position").fetchall()
        if not rows:
            raise NoHealthyProxy("the proxy pool is empty; add proxies with `await pool.add(url)`")
        urls = [u for u, _ in rows]
        cur = _meta(conn, "current")
        start = urls.index(cur) if cur in urls else -1
        if not advance and start >= 0 and rows[start][1] <= now:
            return urls[start]
        n = len(rows)
        for step in range(1, n + 1):
            url, until = rows[(start + step) % n]
            if until <= now:
                conn.execute("INSERT OR REPLACE INTO pool_meta(k, v) VALUES ('current', ?)", (url,))
                return url
        soonest = min(until for _, until in rows) - now
        raise NoHealthyProxy(f"no usable proxy: all {n} are cooling down after failures; "
                             f"the first is usable again in {soonest:.0f}s")

    async def statuses(self) -> list[ProxyStatus]:
        """Every proxy with its health, in rotation order."""
        now = self.clock.wall()

        def work(conn: sqlite3.Connection) -> list[ProxyStatus]:
            cur = _meta(conn, "current")
            rows = conn.execute("SELECT url, failures, cooldown_until FROM proxies ORDER BY position").fetchall()
            return [ProxyStatus(u, mask_url(u), until <= now, f, max(0.0, until - now), u == cur) for u, f, until in rows]

        return await self._run(work)

    def __repr__(self) -> str:
        return f"ProxyPool(path={self.path!r}, cooldown={self.cooldown:g}, max_cooldown={self.max_cooldown:g})"


def _meta(conn: sqlite3.Connection, k: str) -> str | None:
    row = conn.execute("SELECT v FROM pool_meta WHERE k = ?", (k,)).fetchone()
    return row[0] if row else None


def _validate(url: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except (ValueError, TypeError, AttributeError):
        raise ConfigError(f"proxy URL {mask_url(str(url))!r} is malformed; use scheme://[user:password@]host:port") from None
    if parts.scheme.lower() not in _SCHEMES or not parts.hostname or port is None:
        raise ConfigError(
            f"proxy URL {mask_url(url)!r} needs a scheme ({', '.join(sorted(_SCHEMES))}), a host and a port, "
            "e.g. socks5://user:password@10.0.0.1:1080"
        )

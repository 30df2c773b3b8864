"""The configuration manager: validated, versioned, hot-applied settings with rollback.

Every accepted change (API patch, rollback, config file edit) becomes a new version in
``<data_dir>/config.db`` (SQLite, mode 0600) holding the full document, so a rollback restores it
exactly, and a diff with secrets masked. Subscribers apply a new version to the running parts.

Start-up: the settings from the TOML file, ``TETHER_*`` and CLI flags (the *bootstrap*) are
compared with the bootstrap stored last time. Unchanged: the latest stored version wins, so API
changes survive a restart. Changed: what changed in the file is applied over the latest version.
A stored version that this tether no longer accepts (a setting renamed by an upgrade) is logged
and skipped: the service starts from the file and environment, as a new version.

Backups: every version is also written whole to ``<data_dir>/config-backups/config-v<N>.json``
(0600, the newest :data:`BACKUP_KEEP` kept), so a lost or damaged ``config.db`` costs nothing:
``tether config import --replace <backup>`` restores one into any running service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from pydantic import ValidationError

from .._clock import SYSTEM_CLOCK, Clock
from .._errors import ConfigError, ServiceError
from ._config_doc import diff, field_errors, make_patch, masked, merge_patch, restart_paths, secret_paths, to_document
from ._settings import Settings, load_settings

__all__ = ["ConfigManager", "ConfigVersion", "ConfigInvalid", "ConfigConflict", "BACKUP_KEEP", "validate"]

#: how many per-version backup files ``<data_dir>/config-backups`` keeps
BACKUP_KEEP = 20

log = logging.getLogger("tether.config")

Subscriber = Callable[[Settings, Settings, "ConfigVersion"], Awaitable[None] | None]


class ConfigInvalid(ConfigError):
    """A proposed configuration failed validation; ``fields`` names each bad field. Nothing was applied."""

    def __init__(self, message: str, fields: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.fields = fields


class ConfigConflict(ServiceError):
    """The configuration changed since the version the caller read (``If-Match``); read it again."""

    def __init__(self, message: str, current: int) -> None:
        super().__init__(message)
        self.current = current


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """One stored version. ``document`` holds secrets in clear: never return it; use ``public()``."""

    version: int
    at: float
    user: str
    reason: str
    source: str
    changes: list[dict[str, Any]] = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)
    document: dict[str, Any] = field(default_factory=dict, repr=False)

    def public(self) -> dict[str, Any]:
        """The version without its document (the diff is already masked)."""
        return {"version": self.version, "at": self.at, "user": self.user, "reason": self.reason,
                "source": self.source, "changes": self.changes, "restart_required": self.restart_required}


class _Store:
    """Versions in SQLite. The file holds secrets, so it is created 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        try:
            os.chmod(path, 0o600)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS versions (version INTEGER PRIMARY KEY, at REAL NOT NULL, "
                             "user TEXT NOT NULL, reason TEXT NOT NULL, source TEXT NOT NULL, "
                             "changes TEXT NOT NULL, restart TEXT NOT NULL, document TEXT NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"cannot open the config history {str(path)!r}: {exc}; move it away to start a fresh "
                              "history (every version is also in config-backups/ beside it)") from None
        for suffix in ("-wal", "-shm"):  # SQLite's side files hold the same secrets
            side = Path(f"{path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)

    def add(self, v: ConfigVersion, bootstrap: Mapping[str, Any] | None = None) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO versions VALUES (?,?,?,?,?,?,?,?)",
                             (v.version, v.at, v.user, v.reason, v.source, json.dumps(v.changes),
                              json.dumps(v.restart_required), json.dumps(v.document)))
            if bootstrap is not None:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('bootstrap', ?)", (json.dumps(bootstrap),))

    def set_bootstrap(self, doc: Mapping[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('bootstrap', ?)", (json.dumps(doc),))

    def bootstrap(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM meta WHERE key='bootstrap'").fetchone()
        return json.loads(row[0]) if row else None

    def _row(self, r: tuple[Any, ...]) -> ConfigVersion:
        return ConfigVersion(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6]), json.loads(r[7]))

    def latest(self) -> ConfigVersion | None:
        r = self._db.execute("SELECT * FROM versions ORDER BY version DESC LIMIT 1").fetchone()
        return self._row(r) if r else None

    def get(self, version: int) -> ConfigVersion | None:
        r = self._db.execute("SELECT * FROM versions WHERE version=?", (version,)).fetchone()
        return self._row(r) if r else None

    def history(self, limit: int) -> list[ConfigVersion]:
        rows = self._db.execute("SELECT * FROM versions ORDER BY version DESC LIMIT ?", (limit,)).fetchall()
        return [self._row(r) for r in rows]

    def close(self) -> None:
        self._db.close()


class _DocumentSettings(Settings):
    """Settings built from a stored document alone.

    The environment was already folded into the bootstrap. Read again here, a ``TETHER_*`` entry
    of a free-form map (``TETHER_ALERTS__RULES__X__THRESHOLD``) would come back after a patch or a
    rollback removed it, and a rollback would not restore the exact document.
    """

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, *_a: Any, **_kw: Any) -> tuple[Any, ...]:
        return (init_settings,)


_DocumentSettings.__name__ = _DocumentSettings.__qualname__ = "Settings"


def validate(doc: Mapping[str, Any]) -> Settings:
    """Build Settings from a full document (no environment, no file); raises :class:`ConfigInvalid`
    naming every bad field."""
    if not isinstance(doc, Mapping):
        raise ConfigInvalid("a configuration document must be an object", [{"field": "config", "message": "not an object"}])
    try:
        return _DocumentSettings(**dict(doc))
    except ValidationError as exc:
        fields = field_errors(exc)
        raise ConfigInvalid("invalid configuration: " + "; ".join(f"{f['field']}: {f['message']}" for f in fields),
                            fields) from None


class ConfigManager:
    """Owns the running configuration: versions, patches, rollback, file reload and subscribers.

    Args:
        bootstrap: the settings ``tether serve`` loaded (file + env + flags); its class remembers
            the TOML path and the flags (see :func:`load_settings`).
        clock: wall time for version timestamps.
        watch: reload when the TOML file changes (watchfiles).
    """

    def __init__(self, bootstrap: Settings, *, clock: Clock = SYSTEM_CLOCK, watch: bool = True) -> None:
        self.bootstrap = bootstrap
        self.path: Path | None = getattr(type(bootstrap), "toml_file", None)
        self._overrides: dict[str, Any] = dict(getattr(type(bootstrap), "overrides", {}) or {})
        self._clock = clock
        self._watch = watch
        self._lock = asyncio.Lock()
        self._subscribers: list[Subscriber] = []
        self._store: _Store | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._file_doc: dict[str, Any] = {}
        self.settings: Settings = bootstrap
        self.started: Settings = bootstrap  # what the running process was started with
        self.current: ConfigVersion | None = None
        self.reloads = 0
        self.rejected = 0

    # --- lifecycle ------------------------------------------------------------------------------
    def open(self) -> Settings:
        """Open the history and work out the effective settings (see the module docstring)."""
        data_dir = Path(self.bootstrap.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self._store = _Store(data_dir / "config.db")
        boot = to_document(self.bootstrap)
        self._file_doc = boot
        latest = self._store.latest()
        if latest is None:
            self.current = self._record(boot, None, user="startup", reason="first start", source="startup",
                                        bootstrap=boot)
            self.settings = self.bootstrap
        else:
            self.current = latest
            try:
                self.settings = validate(latest.document)
                before = self._store.bootstrap() or boot
                patch = make_patch(before, boot)
                doc = merge_patch(latest.document, patch) if patch else latest.document
                new = validate(doc)
            except ConfigInvalid as exc:
                # Typically an upgrade renamed or tightened a setting. Refusing to start would leave the
                # operator nothing to fix but the database; the file + environment are a valid start.
                log.error("stored config version %d is not valid for this tether (%s); starting from %s and "
                          "the environment as a new version (the old one stays in the history)",
                          latest.version, exc, self.path or "the defaults")
                self.current = self._record(boot, None, user="startup", source="startup", bootstrap=boot,
                                            reason=f"version {latest.version} invalid: "
                                                   + ", ".join(f["field"] for f in exc.fields))
                self.settings = self.bootstrap
                patch = {}
            if patch:
                if doc != latest.document:
                    self.current = self._record(doc, self.settings, user="file", reason="changed while stopped",
                                                source="startup", bootstrap=boot)
                    self.settings = new
                else:
                    self._store.set_bootstrap(boot)
        self.started = self.settings
        log.info("config version %d (%s)", self.current.version, self.path or "no config file")
        return self.settings

    async def start(self) -> None:
        """Start watching the config file (when there is one)."""
        if self._watch and self.path is not None and self._watcher is None:
            ready = asyncio.Event()
            self._watcher = asyncio.create_task(self._watch_file(ready), name="tether-config-watch")
            await asyncio.wait({self._watcher, asyncio.ensure_future(ready.wait())}, timeout=5,
                               return_when=asyncio.FIRST_COMPLETED)

    async def close(self) -> None:
        """Stop the watcher and close the history."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(self._watcher), 5)
            except BaseException:  # noqa: BLE001 - cancelled or failed: it is gone either way
                pass
            self._watcher = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """``callback(old, new, version)`` (sync or async) after each new version; returns unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    # --- reading --------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self.current.version if self.current else 0

    def masked(self) -> dict[str, Any]:
        """The running document with every secret masked."""
        return masked(self.settings)

    def pending_restart(self) -> list[str]:
        """Restart-only paths whose running value differs from the current version."""
        changes = diff(to_document(self.started), to_document(self.settings), masked(self.started), masked(self.settings))
        return restart_paths(changes)

    def history(self, limit: int = 50) -> list[ConfigVersion]:
        assert self._store is not None
        return self._store.history(limit)

    def get(self, version: int) -> ConfigVersion | None:
        assert self._store is not None
        return self._store.get(version)

    # --- changing -------------------------------------------------------------------------------
    async def patch(self, patch: Mapping[str, Any], *, user: str, reason: str = "", if_match: int | None = None,
                    source: str = "api") -> ConfigVersion:
        """Validate and apply a merge patch as a new version.

        Raises:
            ConfigInvalid: a field is invalid (nothing changed).
            ConfigConflict: ``if_match`` is not the current version.
        """
        if not isinstance(patch, Mapping):
            raise ConfigInvalid("the body must be a JSON object (a partial configuration document)",
                                [{"field": "body", "message": "must be a JSON object"}])
        async with self._lock:
            self._check_match(if_match)
            doc = merge_patch(self.current.document, patch, secret_paths(self.settings))  # type: ignore[union-attr]
            return await self._apply(doc, user=user, reason=reason, source=source)

    async def rollback(self, version: int, *, user: str, reason: str = "", if_match: int | None = None) -> ConfigVersion:
        """Make the exact document of ``version`` the current one (as a new version)."""
        async with self._lock:
            self._check_match(if_match)
            old = self.get(version)
            if old is None:
                raise ConfigInvalid(f"no config version {version}; GET /api/config/history lists them",
                                    [{"field": "version", "message": f"no version {version}"}])
            try:
                return await self._apply(old.document, user=user, reason=reason or f"rollback to version {version}",
                                         source=f"rollback:{version}")
            except ConfigInvalid as exc:  # stored by an older tether whose settings differ: nothing applied
                raise ConfigInvalid(f"version {version} cannot be restored, this tether rejects it ({exc}); "
                                    "nothing changed: patch the current config instead", exc.fields) from None

    def _check_match(self, if_match: int | None) -> None:
        if if_match is not None and if_match != self.version:
            raise ConfigConflict(f"the configuration is at version {self.version}, not {if_match}: someone changed "
                                 "it; GET /api/config and apply your change again", self.version)

    async def _apply(self, doc: dict[str, Any], *, user: str, reason: str, source: str,
                     bootstrap: Mapping[str, Any] | None = None) -> ConfigVersion:
        new = validate(doc)  # raises before anything changes
        doc = to_document(new)  # normalised (defaults filled in, types coerced)
        assert self.current is not None
        if doc == self.current.document:
            return self.current
        old = self.settings
        v = self._record(doc, old, user=user, reason=reason, source=source, bootstrap=bootstrap)
        self.settings, self.current = new, v
        shown = ", ".join(c["path"] for c in v.changes)
        log.info("config version %d by %s (%s): %s%s", v.version, user, reason or "no reason given", shown,
                 f"; after restart: {', '.join(v.restart_required)}" if v.restart_required else "")
        for cb in list(self._subscribers):
            try:
                result = cb(old, new, v)
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - one failing part must not stop the others
                log.error("applying config version %d failed in %s: %s: %s", v.version,
                          getattr(cb, "__qualname__", cb), type(exc).__name__, exc)
        return v

    def _record(self, doc: dict[str, Any], old: Settings | None, *, user: str, reason: str, source: str,
                bootstrap: Mapping[str, Any] | None = None) -> ConfigVersion:
        assert self._store is not None
        new = validate(doc)
        changes = diff(to_document(old), doc, masked(old), masked(new)) if old is not None else []
        v = ConfigVersion(version=self.version + 1, at=self._clock.wall(), user=str(user)[:64] or "unknown",
                          reason=str(reason)[:500], source=source, changes=changes,
                          restart_required=restart_paths(changes), document=doc)
        self._store.add(v, bootstrap)
        self._backup(v)
        return v

    def _backup(self, v: ConfigVersion) -> None:
        """Write ``v`` whole (secrets included: a masked copy could not restore them) beside config.db."""
        folder = Path(self.bootstrap.data_dir) / "config-backups"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            path = folder / f"config-v{v.version:06d}.json"
            tmp = folder / f".{path.name}.tmp"
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"version": v.version, "at": v.at, "user": v.user, "reason": v.reason,
                           "source": v.source, "config": v.document}, f, indent=2)
            os.replace(tmp, path)  # whole or not at all: a crash never leaves half a backup
            for old in sorted(folder.glob("config-v*.json"))[:-BACKUP_KEEP]:
                old.unlink(missing_ok=True)
        except OSError as exc:  # the version is stored in config.db already; a backup is a second copy
            log.warning("cannot write the config backup for version %d in %s: %s", v.version, folder,
                        exc.strerror or type(exc).__name__)

    # --- the config file ------------------------------------------------------------------------
    async def reload(self) -> ConfigVersion | None:
        """Read the file again; what changed in it since the last read becomes a new version by ``file``.

        An invalid file is logged (naming the field) and ignored: the running config stays.
        """
        if self.path is None:
            return None
        try:
            fresh = to_document(load_settings(self.path, **self._overrides))
        except ConfigError as exc:
            self.rejected += 1
            log.error("config file %s rejected, running config stays at version %d: %s", self.path, self.version, exc)
            return None
        patch = make_patch(self._file_doc, fresh)
        if not patch:
            return None
        async with self._lock:
            doc = merge_patch(self.current.document, patch)  # type: ignore[union-attr]
            try:
                v = await self._apply(doc, user="file", reason=f"edited {self.path.name}", source="file",
                                      bootstrap=fresh)
            except ConfigInvalid as exc:
                self.rejected += 1
                log.error("config file %s rejected, running config stays at version %d: %s", self.path,
                          self.version, exc)
                return None
        self._file_doc = fresh
        self.reloads += 1
        return v

    async def _watch_file(self, ready: asyncio.Event) -> None:
        from watchfiles import awatch

        assert self.path is not None
        target = self.path.resolve()
        # Watch the directory: editors replace the file (write a temp, rename), which ends a watch on it.
        ready.set()
        async for _changes in awatch(target.parent, stop_event=self._stop, debounce=150, step=30,
                                     watch_filter=lambda _c, p: Path(p).name == target.name, rust_timeout=1000):
            try:
                await self.reload()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive one bad reload
                log.error("config reload failed: %s: %s", type(exc).__name__, exc)

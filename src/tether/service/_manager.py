"""SessionManager: every session's lifecycle and inbound handling; outbound delivery is in _delivery.py.

Each session owns one connector (self-healing) and one delivery task. Sessions persist in the
service database with a *desired* state (running | stopped | logged_out), so a restarted service
brings back exactly what was running and never resurrects a logged-out session.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .. import _events as link_events
from .._clock import SYSTEM_CLOCK, Clock
from .._errors import (
    ConfigError,
    ServiceClosing,
    SessionConflict,
    SessionNotFound,
    TetherError,
)
from .._state import State
from ..link import Admission
from ._connector import CONNECTOR_OPTIONS, CONNECTOR_SECRETS, CONNECTORS, Connector, ConnectorContext, InboundMessage
from ._db import ServiceDB, SessionRow
from ._delivery import DeliveryLoop, SendVerdict, send_retry_delay, send_verdict  # noqa: F401  (re-exported)
from ._eventlog import EventLog
from ._events import (
    MessageQueued,
    MessageReceived,
    SessionCreated,
    SessionDeleted,
    SessionLinkEvent,
    SessionLoggedOut,
    SessionRestarted,
    SessionStarted,
    SessionStopped,
    SessionUpdated,
)
from ._settings import Settings
from ._stores import Stores

__all__ = ["SessionManager", "Session", "InvalidOptions", "mask_secrets", "SESSION_ID_RE", "SendVerdict", "send_verdict"]

log = logging.getLogger("tether.service")

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SECRET_KEY_RE = re.compile(r"(token|secret|password|passwd|authorization|cookie|api[_-]?key|credential)", re.I)
_URL_SECRET_RE = re.compile(r"(bot\d+:)[A-Za-z0-9_-]+|((?:token|key|secret|password)=)[^&\s]+|(//[^/:@\s]+:)[^@/\s]+@", re.I)


class InvalidOptions(ConfigError):
    """Session options failed validation; ``errors`` holds (field path, message) pairs."""

    def __init__(self, message: str, errors: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.errors = errors


def _mask_str(value: str) -> str:
    if "=" not in value and "@" not in value and "bot" not in value:
        return value  # fast path: nothing that could carry a credential
    return _URL_SECRET_RE.sub(lambda m: (m.group(1) or m.group(2) or m.group(3) or "") + "***" + ("@" if m.group(3) else ""), value)


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    return _SECRET_KEY_RE.search(key) is not None


def mask_secrets(value: Any, secret_names: tuple[str, ...] = ()) -> Any:
    """A copy of ``value`` with credentials replaced by ``"***"`` (by key name, and inside URLs)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if v is None or type(v) in (int, float, bool):
                out[k] = v
            elif (k in secret_names or _secret_key(str(k))) and not isinstance(v, (dict, bool)):
                out[k] = "***"
            else:
                out[k] = mask_secrets(v)
        return out
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    if isinstance(value, str):
        return _mask_str(value)
    return value


def clear_secrets(options: Mapping[str, Any], secret_names: tuple[str, ...]) -> dict[str, Any]:
    """``options`` without credentials (logout)."""
    out: dict[str, Any] = {}
    for k, v in options.items():
        if k in secret_names or _SECRET_KEY_RE.search(str(k)):
            continue
        out[k] = clear_secrets(v, ()) if isinstance(v, Mapping) else v
    return out


@dataclass(eq=False)
class Session:
    """One session at run time: its row, connector, delivery task and counters."""

    row: SessionRow
    connector: Connector | None = None
    delivery: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    state_since: float = 0.0
    last_state: State = State.IDLE
    sent: int = 0
    send_failures: int = 0
    received: int = 0
    duplicates: int = 0
    restarts: int = 0
    last_error: str | None = None
    stopping: bool = False

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def state(self) -> State:
        if self.connector is not None:
            return self.connector.state
        return State.CLOSED if self.row.desired != "running" else State.IDLE

    def stats(self) -> dict[str, Any]:
        base: dict[str, Any] = dict(self.connector.stats()) if self.connector is not None else {}
        base.update(sent_total=self.sent, send_failures=self.send_failures, received_total=self.received,
                    duplicates=self.duplicates, restarts=self.restarts)
        if base.get("last_error") is None:
            base["last_error"] = self.last_error
        return base


class SessionManager(DeliveryLoop):
    """Creates, runs, restarts and stops sessions.

    Args:
        settings: the service settings.
        db: the service database (session registry, event log, webhook queue).
        events: the event log every session event goes to.
        stores: outbox, inbox and cursors.
        clock: time source (FakeClock in tests).
        on_inbound: called after an inbound message is stored (the webhook dispatcher's ``kick``).
        secret_for: the webhook HMAC key for a session (used to build the inbound body only).
    """

    session_class: type[Session] = Session  # the cluster manager's sessions also know their owner node

    def __init__(self, settings: Settings, *, db: ServiceDB, events: EventLog, stores: Stores,
                 clock: Clock = SYSTEM_CLOCK, on_inbound: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self._db = db
        self._events = events
        self._stores = stores
        self._clock = clock
        self._on_inbound = on_inbound or (lambda: None)
        self._sessions: dict[str, Session] = {}
        self._accepting = True
        self.started_at = clock.wall()
        self.admission = Admission(rate=settings.sessions.connect_rate, burst=settings.sessions.connect_burst,
                                   clock=clock)

    # --- lookup -----------------------------------------------------------------------------
    def list(self) -> list[Session]:
        return list(self._sessions.values())

    def get(self, session_id: str) -> Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFound(f"no session {session_id!r}; GET /api/sessions lists them") from None

    @property
    def accepting(self) -> bool:
        return self._accepting

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise ServiceClosing("the service is shutting down; retry when it is back")

    # --- lifecycle --------------------------------------------------------------------------
    async def open(self) -> None:
        """Load persisted sessions and start those that were running."""
        for row in self._db.sessions():
            s = self.session_class(row, state_since=self._clock.monotonic())
            self._sessions[row.id] = s
        for s in self._sessions.values():
            if s.row.desired != "running":
                continue
            try:
                await self._start(s)
            except TetherError as exc:  # one broken session must not keep the others down
                s.last_error = str(exc)
                log.error("[%s] could not start: %s", s.id, exc)

    @staticmethod
    def validate_options(kind: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``kind`` exists and ``options`` fit it; returns the options to store."""
        if kind not in CONNECTORS:
            known = ", ".join(sorted(CONNECTORS)) or "none registered"
            raise InvalidOptions(f"kind: unknown connector {kind!r} (known: {known})", [("kind", f"unknown connector {kind!r}; known: {known}")])
        model = CONNECTOR_OPTIONS.get(kind)
        if model is None:
            return dict(options)
        from pydantic import ValidationError

        try:
            model.model_validate(dict(options))
        except ValidationError as exc:
            errors = []
            for e in exc.errors():
                loc = ".".join(str(p) for p in ("options", *e["loc"]))
                msg = "unknown option (check the spelling)" if e["type"] == "extra_forbidden" else e["msg"]
                errors.append((loc, msg))
            raise InvalidOptions("; ".join(f"{l}: {m}" for l, m in errors), errors) from None
        return dict(options)

    async def create(self, *, kind: str, options: Mapping[str, Any], webhooks: list[str] | None = None,
                     session_id: str | None = None, enabled: bool = True) -> Session:
        """Create (and by default start) a session. Raises SessionConflict if the id exists."""
        self._check_accepting()
        sid = session_id or f"sess_{uuid.uuid4().hex[:8]}"
        if not SESSION_ID_RE.match(sid):
            raise InvalidOptions("id: use 1-64 letters, digits, '_', '.', '-'", [("id", "use 1-64 letters, digits, '_', '.', '-'")])
        if sid in self._sessions:
            raise SessionConflict(f"session {sid!r} exists already; PATCH it or pick another id")
        opts = self.validate_options(kind, options)
        now = self._clock.wall()
        row = SessionRow(sid, kind, opts, list(webhooks or []), "running" if enabled else "stopped", now, now)
        self._db.put_session(row)
        s = self.session_class(row, state_since=self._clock.monotonic())
        self._sessions[sid] = s
        self._emit(SessionCreated(sid, kind, at=now))
        if enabled:
            await self._start(s)
        return s

    async def update(self, session_id: str, *, options: Mapping[str, Any] | None = None,
                     webhooks: list[str] | None = None, enabled: bool | None = None) -> Session:
        """Change options (merged: a ``null`` value removes a key), webhooks or enabled; a running
        session with new options restarts to apply them."""
        self._check_accepting()
        s = self.get(session_id)
        async with s.lock:
            row = s.row
            changed: list[str] = []
            new_opts = row.options
            if options is not None:
                merged = {**row.options, **options}
                new_opts = self.validate_options(row.kind, {k: v for k, v in merged.items() if v is not None})
                changed.append("options")
            desired = row.desired
            if options is not None and desired == "logged_out":
                desired = "stopped"  # new credentials: the session may be started again
            if enabled is not None:
                if enabled and desired == "logged_out":
                    raise SessionConflict(f"session {session_id!r} is logged out; PATCH new options (credentials) first")
                desired = "running" if enabled else "stopped"
                changed.append("enabled")
            if webhooks is not None:
                changed.append("webhooks")
            s.row = SessionRow(row.id, row.kind, new_opts, list(webhooks) if webhooks is not None else row.webhooks,
                               desired, row.created_at, self._clock.wall())
            self._db.put_session(s.row)
            running = s.connector is not None
            if running and (desired != "running" or "options" in changed):
                await self._stop(s, "api")
            if desired == "running" and s.connector is None:
                await self._start(s)
        self._emit(SessionUpdated(session_id, tuple(changed), at=self._clock.wall()))
        return s

    async def delete(self, session_id: str) -> None:
        """Stop and remove a session; its undelivered messages go to the dead letters ("session
        deleted"), so a new session with the same id does not send them."""
        s = self.get(session_id)
        async with s.lock:
            await self._stop(s, "delete")
            buried = await self._stores.outbox.dead_letter_session(session_id, reason="session deleted")
            if buried:
                log.info("[%s] deleted; %d undelivered messages moved to the dead letters", s.id, buried)
            self._db.delete_session(session_id)
            purge = getattr(self._stores, "purge", None)
            if purge is not None:
                await purge(session_id)
            self._sessions.pop(session_id, None)
        self._emit(SessionDeleted(session_id, at=self._clock.wall()))

    async def restart(self, session_id: str, *, reason: str = "api") -> Session:
        """Close, wait ``restart_delay``, reconnect from the saved cursor; the outbox flushes on connect."""
        self._check_accepting()
        s = self.get(session_id)
        if s.row.desired == "logged_out":
            raise SessionConflict(f"session {session_id!r} is logged out; PATCH new options (credentials) to log in again")
        async with s.lock:
            log.info("[%s] restarting (%s)", s.id, reason)
            await self._stop(s, "restart")
            await self._clock.sleep(self.settings.restart_delay)
            if s.row.desired != "running":
                s.row = SessionRow(s.row.id, s.row.kind, s.row.options, s.row.webhooks, "running",
                                   s.row.created_at, self._clock.wall())
                self._db.put_session(s.row)
            await self._start(s)
            s.restarts += 1
        self._emit(SessionRestarted(session_id, reason, at=self._clock.wall()))
        return s

    async def logout(self, session_id: str) -> Session:
        """Intentional close with credentials cleared: the session never reconnects on its own."""
        s = self.get(session_id)
        async with s.lock:
            await self._stop(s, "logout")
            secrets = CONNECTOR_SECRETS.get(s.row.kind, ())
            s.row = SessionRow(s.row.id, s.row.kind, clear_secrets(s.row.options, secrets), s.row.webhooks,
                               "logged_out", s.row.created_at, self._clock.wall())
            self._db.put_session(s.row)
        log.info("[%s] logged out (credentials cleared; it will not reconnect)", s.id)
        self._emit(SessionLoggedOut(session_id, at=self._clock.wall()))
        return s

    def _context(self, s: Session) -> ConnectorContext:
        sid = s.id

        async def load_cursor() -> Mapping[str, Any] | None:
            c = await self._stores.cursors.get(sid)
            if c is None:
                return None
            return {k: getattr(c, k) for k in ("offset", "seq", "epoch") if getattr(c, k, None) is not None}

        async def save_cursor(c: Mapping[str, Any]) -> None:
            await self._stores.cursors.set(sid, self._stores.make_cursor(c))

        async def deliver(msg: InboundMessage) -> None:
            await self._inbound(s, msg)

        return ConnectorContext(session=sid, options=dict(s.row.options), clock=self._clock, deliver=deliver,
                                emit=lambda ev: self._connector_event(s, ev), load_cursor=load_cursor,
                                save_cursor=save_cursor, defaults=self.settings.sessions,
                                admission=self.admission)

    async def _start(self, s: Session) -> None:
        factory = CONNECTORS.get(s.row.kind)
        if factory is None:
            s.last_error = f"connector {s.row.kind!r} is not installed"
            log.error("[%s] %s", s.id, s.last_error)
            return
        try:
            connector = factory(self._context(s))
        except (TetherError, ValueError) as exc:
            s.last_error = f"cannot build connector: {exc}"
            log.error("[%s] %s", s.id, s.last_error)
            return
        s.connector = connector
        s.stopping = False
        s.state_since = self._clock.monotonic()
        try:
            await connector.start()
        except Exception as exc:  # a connector that cannot start leaves the session down, visibly
            s.connector = None
            s.last_error = f"cannot start: {type(exc).__name__}: {exc}"
            log.error("[%s] %s", s.id, s.last_error)
            try:
                await connector.stop()
            except Exception:
                pass
            return
        s.delivery = asyncio.create_task(self._deliver_loop(s, connector), name=f"tether-delivery[{s.id}]")
        self._emit(SessionStarted(s.id, at=self._clock.wall()))

    async def _stop(self, s: Session, reason: str, *, drain: float = 0.0) -> None:
        connector, task = s.connector, s.delivery
        if connector is None:
            return
        s.stopping = True
        s.wake.set()
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), drain) if drain > 0 else None
            except (TimeoutError, asyncio.TimeoutError):
                pass
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await connector.stop()
        except Exception as exc:  # a connector's bug must not stop the others
            log.warning("[%s] connector stop failed: %s", s.id, exc)
        s.connector, s.delivery = None, None
        s.state_since = self._clock.monotonic()
        self._emit(SessionStopped(s.id, reason, at=self._clock.wall()))

    # --- events -----------------------------------------------------------------------------
    def emit(self, event: Any) -> None:
        """Record a service event (event log, SSE, subscribers)."""
        self._events.append(event)

    _emit = emit

    def _connector_event(self, s: Session, ev: Any) -> None:
        state = s.state
        if state is not s.last_state:
            s.last_state = state
            s.state_since = self._clock.monotonic()
        max_attempts = None
        if s.connector is not None:
            max_attempts = s.connector.stats().get("max_attempts")
        match ev:
            case link_events.Connected(downtime=downtime):
                log.info("[%s] connected%s", s.id, f" after {downtime:.1f}s down" if downtime else "")
                s.wake.set()
            case link_events.BackingOff(attempt=attempt, delay=delay):
                of = f"/{max_attempts}" if max_attempts else ""
                log.info("[%s] reconnecting in %.1fs (attempt %d%s)", s.id, delay, attempt, of)
            case link_events.Disconnected(code=code, reason=reason):
                s.last_error = reason or (f"close {code}" if code else "disconnected")
                log.info("[%s] disconnected: %s", s.id, s.last_error)
            case link_events.GaveUp(error=error):
                s.last_error = str(error)
                attempts = getattr(error, "attempts", 0) or max_attempts
                if attempts:
                    log.warning("[%s] gave up after %d attempts: %s", s.id, attempts, error)
                else:
                    log.warning("[%s] gave up: %s", s.id, error)
            case link_events.Closed():
                log.info("[%s] closed", s.id)
            case _:
                pass
        if isinstance(ev, link_events.Event):
            self._emit(SessionLinkEvent(s.id, ev, str(s.state), at=ev.at or self._clock.wall()))
        else:
            self._emit(ev)

    # --- outbound ---------------------------------------------------------------------------
    async def send(self, session_id: str, payload: str | bytes, *, key: str | None = None) -> str:
        """Put a message in the session's outbox (on disk when this returns) and wake delivery."""
        self._check_accepting()
        s = self.get(session_id)
        if s.row.desired == "logged_out":
            raise SessionConflict(f"session {session_id!r} is logged out; nothing could deliver this message")
        mid = await self._stores.outbox.put(session_id, payload, key=key)
        self._emit(MessageQueued(session_id, mid, at=self._clock.wall()))
        s.wake.set()
        return mid

    async def messages(self, session_id: str, *, status: str | None = None, limit: int = 100) -> list[Any]:
        self.get(session_id)
        return await self._stores.outbox.messages(session_id, status=status, limit=limit)

    async def depth(self, session_id: str | None = None) -> int:
        return await self._stores.outbox.depth(session_id)

    async def _inbound(self, s: Session, msg: InboundMessage) -> None:
        """Inbox de-dup, then webhook queue (durable) and the event stream: at-least-once."""
        inbox = self._stores.inbox
        if await inbox.seen(s.id, msg.id):
            s.duplicates += 1
            return
        if s.row.webhooks:
            body = json.dumps({"id": msg.id, "session": s.id, "payload": msg.payload, "received_at": msg.received_at,
                               "cursor": dict(msg.cursor) if msg.cursor else None, "meta": dict(msg.meta)},
                              default=str)
            # queued before mark(): a crash in between re-delivers, never loses
            self._db.enqueue_webhooks(s.id, msg.id, s.row.webhooks, body, self._clock.wall())
            self._on_inbound()
        cursor = self._stores.make_cursor(msg.cursor) if msg.cursor else None
        if not await inbox.mark(s.id, msg.id, cursor=cursor):
            s.duplicates += 1
            return
        s.received += 1
        preview = msg.payload if not isinstance(msg.payload, str) or len(msg.payload) <= 4096 else msg.payload[:4096] + "…"
        self._emit(MessageReceived(s.id, msg.id, preview, at=self._clock.wall()))

    # --- shutdown ---------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        self._accepting = False

    async def close(self, *, drain_timeout: float | None = None) -> None:
        """Stop accepting, let in-flight sends finish (bounded), close every connector."""
        self._accepting = False
        timeout = self.settings.shutdown_timeout if drain_timeout is None else drain_timeout
        started = time.monotonic()
        for s in self._sessions.values():
            s.stopping = True
            s.wake.set()
        tasks = [s.delivery for s in self._sessions.values() if s.delivery is not None]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=timeout)
            if pending:
                log.warning("%d delivery loops still busy after %.1fs; their leased messages are retried after restart",
                            len(pending), timeout)
        remaining = max(0.5, timeout - (time.monotonic() - started))
        stops = [self._stop(s, "shutdown") for s in self._sessions.values()]
        results = await asyncio.wait_for(asyncio.gather(*stops, return_exceptions=True), remaining + 5.0)
        for r in results:
            if isinstance(r, BaseException):
                log.warning("stop failed during shutdown: %s", r)

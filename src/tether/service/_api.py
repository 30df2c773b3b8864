"""The HTTP API (FastAPI): sessions, durable sends, health, metrics, errors and the event stream.

Every error is JSON ``{"error": {"code", "message"}}``; validation errors name the field. Requests
beyond ``max_message_bytes`` get 413 (declared Content-Length and streamed size). With a token set,
everything but ``GET /health`` and the docs needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import json
import logging
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from .. import __version__
from .._clock import parse_time
from .._errors import ConfigError, ServiceClosing, SessionConflict, SessionNotFound, TetherError
from .._state import State
from ._connector import CONNECTOR_SECRETS
from ._db import EventRow
from ._manager import InvalidOptions, Session, mask_secrets
from ._metrics_text import render_metrics
from ._models import (
    ErrorBody, ErrorList, EventList, EventOut, HealthOut, MessageAccepted, MessageIn, MessageList, MessageOut,
    MessageStatus, SessionCreate, SessionList, SessionOut, SessionPatch, SweepList, SweepOut,
)
from ._service import Service

__all__ = ["create_app"]

log = logging.getLogger("tether.service")

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or wrong bearer token"},
    404: {"model": ErrorBody, "description": "no such session"},
    413: {"model": ErrorBody, "description": "request body too large"},
    422: {"model": ErrorBody, "description": "invalid input; the message names the field"},
}
_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "validation_error",
          429: "rate_limited", 503: "unavailable"}


def error_response(status: int, message: str, *, code: str | None = None, fields: list[dict[str, str]] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code or _CODES.get(status, "error"), "message": message}
    if fields:
        body["fields"] = fields
    return JSONResponse({"error": body}, status_code=status, headers=headers)


class _BodyLimit:
    """ASGI middleware: 413 when the declared or the streamed body exceeds ``limit`` bytes."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await error_response(400, "Content-Length is not a number")(scope, receive, send)
                if declared > self.limit:
                    return await self._too_large(scope, receive, send)
        seen = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, f"request body exceeds {self.limit} bytes (max_message_bytes)")
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except HTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Any, receive: Any, send: Any) -> None:
        await error_response(413, f"request body exceeds {self.limit} bytes; send smaller messages "
                                  "or raise max_message_bytes")(scope, receive, send)


def _field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body",)]
        field = ".".join(loc) or "body"
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "json_invalid":
            field, msg = "body", f"malformed JSON ({e.get('ctx', {}).get('error', 'invalid')})"
        elif e.get("type") == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        elif e.get("type") == "missing":
            msg = "is required"
        out.append({"field": field, "message": msg})
    return out


def _session_out(s: Session, service: Service, depth: int | None = None) -> SessionOut:
    row = s.row
    return SessionOut(
        id=row.id, kind=row.kind, state=str(s.state), desired=row.desired,
        options=mask_secrets(row.options, CONNECTOR_SECRETS.get(row.kind, ())),
        webhooks=mask_secrets(row.webhooks), stats=mask_secrets(s.stats()), queue_depth=depth,
        state_age=max(0.0, service.clock.monotonic() - s.state_since), log_prefix=f"[{row.id}]",
        created_at=row.created_at, updated_at=row.updated_at, node=getattr(s, "owner", None),
    )


def _event_out(row: EventRow) -> EventOut:
    return EventOut(id=row.id, type=row.type, session=row.session, at=row.at, data=row.data)


class LiveStats:
    """Counters of the dashboard's live channel (``app.state.live``): what a storm would show first.

    ``total`` counts accepted handshakes, ``open``/``peak`` the sockets open now / at most at once,
    ``refused`` the hellos closed for a wrong token.
    """

    __slots__ = ("open", "peak", "total", "refused")

    def __init__(self) -> None:
        self.open = self.peak = self.total = self.refused = 0

    def opened(self) -> None:
        self.total += 1
        self.open += 1
        self.peak = max(self.peak, self.open)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def create_app(service: Service) -> FastAPI:
    """Build the FastAPI app around a started :class:`Service` (include observe's router if given)."""
    settings = service.settings
    token = settings.token.get_secret_value() if settings.token is not None else None
    app = FastAPI(title="tether gateway", version=__version__,
                  description="Sessions that heal themselves and lose nothing. Errors: "
                              '`{"error": {"code", "message"}}`.')
    app.state.service = service
    app.state.live = live_stats = LiveStats()
    bearer = HTTPBearer(auto_error=False, description="TETHER_TOKEN")

    def check_token(provided: str | None) -> bool:
        return token is None or (provided is not None and hmac.compare_digest(provided.encode(), token.encode()))

    async def require_auth(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        if creds is None or not check_token(creds.credentials):
            raise HTTPException(401, "missing or wrong bearer token (send Authorization: Bearer $TETHER_TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})

    def manager() -> Any:
        if service.manager is None:
            raise HTTPException(503, "the service is starting")
        return service.manager

    # --- error handlers: JSON everywhere, never a traceback -------------------------------------
    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = _field_errors(exc)
        message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return error_response(422, message, fields=fields)

    @app.exception_handler(SessionNotFound)
    async def _not_found(request: Request, exc: SessionNotFound) -> JSONResponse:
        return error_response(404, str(exc))

    @app.exception_handler(InvalidOptions)
    async def _invalid(request: Request, exc: InvalidOptions) -> JSONResponse:
        return error_response(422, str(exc), fields=[{"field": f, "message": m} for f, m in exc.errors])

    @app.exception_handler(SessionConflict)
    async def _conflict(request: Request, exc: SessionConflict) -> JSONResponse:
        return error_response(409, str(exc))

    @app.exception_handler(ServiceClosing)
    async def _closing(request: Request, exc: ServiceClosing) -> JSONResponse:
        return error_response(503, str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(ConfigError)
    async def _config(request: Request, exc: ConfigError) -> JSONResponse:
        return error_response(422, str(exc))

    @app.exception_handler(TetherError)
    async def _tether(request: Request, exc: TetherError) -> JSONResponse:
        log.warning("%s %s failed: %s", request.method, request.url.path, exc)
        return error_response(503, f"{type(exc).__name__}: {exc}")

    @app.exception_handler(Exception)
    async def _last_resort(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        service.errors.record(component="api", message=f"{type(exc).__name__} on {request.url.path}")
        return error_response(500, "internal error; it was logged (GET /health/errors)", code="internal")

    # --- health --------------------------------------------------------------------------------
    health = APIRouter(tags=["health"])

    @health.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
    async def get_health() -> Response:
        """Overall status and each component (no token needed: for load balancers and probes)."""
        mgr = service.manager
        db_ok = service.db is not None and service.db.ping()
        comps: dict[str, dict[str, Any]] = {"database": {"status": "ok" if db_ok else "down"}}
        try:
            depth = await service.stores.outbox.depth() if service.stores else 0
            comps["store"] = {"status": "ok", "outbox_depth": depth}
        except TetherError as exc:
            comps["store"] = {"status": "down", "error": str(exc)}
        by_state: dict[str, int] = {}
        down = []
        for s in mgr.list() if mgr else []:
            by_state[str(s.state)] = by_state.get(str(s.state), 0) + 1
            if s.row.desired == "running" and s.state is not State.CONNECTED:
                down.append(s.id)
        comps["sessions"] = {"status": "degraded" if down else "ok", "total": sum(by_state.values()),
                             "by_state": by_state, "not_connected": down[:50]}
        sweep = service.sweep
        last = sweep.reports[-1] if sweep and sweep.reports else None
        comps["sweep"] = {"status": "ok", "interval": service.settings.sweep_interval,  # live: /api/config
                          "last_run_at": last.at if last else None,
                          "last_findings": len(last.findings) if last else 0}
        wh = service.db.webhook_counts() if db_ok and service.db else {}
        comps["webhooks"] = {"status": "degraded" if wh.get("dead") else "ok", **{k: wh.get(k, 0) for k in
                             ("pending", "delivered", "dead")}}
        comps["api"] = {"status": "ok" if mgr is not None and mgr.accepting else "down"}
        statuses = {c["status"] for c in comps.values()}
        overall = "down" if "down" in statuses else "degraded" if "degraded" in statuses else "ok"
        body = HealthOut(status=overall, version=__version__,
                         uptime=max(0.0, service.clock.wall() - (service.started_at or service.clock.wall())),
                         components=comps)
        return JSONResponse(body.model_dump(), status_code=503 if overall == "down" else 200)

    @health.get("/health/metrics", response_class=PlainTextResponse, dependencies=[Depends(require_auth)],
                responses=_ERRORS)
    async def get_metrics() -> Response:
        """Prometheus text exposition."""
        fn = service.observability.metrics_text
        text = fn() if fn is not None else await render_metrics(service)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @health.get("/health/errors", response_model=ErrorList, dependencies=[Depends(require_auth)], responses=_ERRORS)
    async def get_errors(
        session: str | None = Query(None, max_length=64),
        severity: list[str] | None = Query(None, max_length=20, description="repeatable: low, medium, high, critical"),
        component: str | None = Query(None, max_length=200),
        since: str | None = Query(None, max_length=40, description="epoch seconds or ISO 8601"),
        until: str | None = Query(None, max_length=40, description="epoch seconds or ISO 8601"),
        limit: int = Query(100, ge=1, le=1000),
    ) -> ErrorList:
        """Recent errors, newest first (disconnects, give-ups, failed sends and webhooks), filtered."""
        t0, t1 = parse_time("since", since), parse_time("until", until)
        filters = dict(session=session, severity=severity or None, component=component, since=t0, until=t1, limit=limit)
        fn = service.observability.errors
        items = fn(**filters) if fn is not None else service.errors.query(**filters)
        return ErrorList(errors=mask_secrets(items), total=len(items))

    @health.get("/health/sweeps", response_model=SweepList, dependencies=[Depends(require_auth)], responses=_ERRORS)
    async def get_sweeps() -> SweepList:
        """What the last health sweeps found and did, newest first."""
        reports = list(reversed(service.sweep.reports)) if service.sweep else []
        return SweepList(interval=service.settings.sweep_interval, reports=[
            SweepOut(at=r.at, checked=r.checked, duration=r.duration,
                     findings=[{"session": f.session, "problem": f.problem, "action": f.action} for f in r.findings])
            for r in reports])

    @health.post("/health/sweep", response_model=SweepOut, dependencies=[Depends(require_auth)], responses=_ERRORS)
    async def run_sweep() -> SweepOut:
        """Run a health sweep now and return its report."""
        if service.sweep is None:
            raise HTTPException(503, "the service is starting")
        r = await service.sweep.sweep_once()
        return SweepOut(at=r.at, checked=r.checked, duration=r.duration,
                        findings=[{"session": f.session, "problem": f.problem, "action": f.action} for f in r.findings])

    # --- sessions ------------------------------------------------------------------------------
    api = APIRouter(prefix="/api", tags=["sessions"], dependencies=[Depends(require_auth)], responses=_ERRORS)

    @api.get("/sessions", response_model=SessionList)
    async def list_sessions(state: str | None = Query(None, max_length=32, description="filter by state")) -> Response:
        """Every session with state and stats (queue depth: see GET /api/sessions/{id})."""
        items = [_session_out(s, service).model_dump(mode="json") for s in manager().list()
                 if state is None or str(s.state) == state]
        # Already validated per item: skip FastAPI's second pass over 1,000 sessions.
        return JSONResponse({"sessions": items, "total": len(items)})

    @api.post("/sessions", response_model=SessionOut, status_code=201, responses={409: {"model": ErrorBody}})
    async def create_session(body: SessionCreate) -> SessionOut:
        """Create a session (and start it unless ``enabled`` is false)."""
        s = await manager().create(kind=body.kind, options=body.options, webhooks=body.webhooks,
                                   session_id=body.id, enabled=body.enabled)
        return _session_out(s, service, 0)

    @api.get("/sessions/{session_id}", response_model=SessionOut)
    async def get_session(session_id: str) -> SessionOut:
        s = manager().get(session_id)
        return _session_out(s, service, await manager().depth(session_id))

    @api.patch("/sessions/{session_id}", response_model=SessionOut, responses={409: {"model": ErrorBody}})
    async def patch_session(session_id: str, body: SessionPatch) -> SessionOut:
        """Change options (merged), webhooks or enabled; new options restart a running session."""
        s = await manager().update(session_id, options=body.options, webhooks=body.webhooks, enabled=body.enabled)
        return _session_out(s, service, await manager().depth(session_id))

    @api.delete("/sessions/{session_id}", status_code=204, response_class=Response)
    async def delete_session(session_id: str) -> Response:
        """Stop and remove a session."""
        await manager().delete(session_id)
        return Response(status_code=204)

    @api.post("/sessions/{session_id}/restart", response_model=SessionOut, responses={409: {"model": ErrorBody}})
    async def restart_session(session_id: str) -> SessionOut:
        """Close, wait ``restart_delay``, reconnect from the saved cursor, flush the outbox."""
        s = await manager().restart(session_id, reason="api")
        return _session_out(s, service, await manager().depth(session_id))

    @api.post("/sessions/{session_id}/logout", response_model=SessionOut)
    async def logout_session(session_id: str) -> SessionOut:
        """Close on purpose and clear credentials: the session never reconnects by itself."""
        s = await manager().logout(session_id)
        return _session_out(s, service, await manager().depth(session_id))

    @api.post("/sessions/{session_id}/messages", response_model=MessageAccepted, status_code=202,
              responses={409: {"model": ErrorBody}, 503: {"model": ErrorBody}})
    async def send_message(session_id: str, body: MessageIn,
                           idempotency_key: str | None = Header(None, max_length=200)) -> MessageAccepted:
        """Queue a message durably: 202 once it is on disk. The same Idempotency-Key gives the same id."""
        text = body.text()
        if len(text.encode()) > settings.max_message_bytes:
            raise HTTPException(413, f"payload exceeds {settings.max_message_bytes} bytes")
        mid = await manager().send(session_id, text, key=idempotency_key)
        return MessageAccepted(id=mid, session=session_id)

    @api.get("/sessions/{session_id}/messages", response_model=MessageList)
    async def list_messages(session_id: str, status: MessageStatus | None = None,
                            limit: int = Query(100, ge=1, le=1000)) -> MessageList:
        """Outbound messages of a session, newest first, optionally by status."""
        msgs = await manager().messages(session_id, status=status, limit=limit)
        return MessageList(messages=[
            MessageOut(id=m.id, session=m.session, status=m.status, attempts=m.attempts, key=m.key,
                       created_at=m.created_at, last_error=getattr(m, "last_error", None),
                       payload=m.payload if isinstance(m.payload, str) else m.payload.decode("utf-8", "replace"))
            for m in msgs])

    # --- events --------------------------------------------------------------------------------
    ev = APIRouter(prefix="/api", tags=["events"], dependencies=[Depends(require_auth)], responses=_ERRORS)

    @ev.get("/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream"}})
    async def stream_events(request: Request,
                            last_event_id: str | None = Header(None, max_length=20),
                            since: int | None = Query(None, ge=0, description="replay events after this id"),
                            session: str | None = Query(None, max_length=64)) -> StreamingResponse:
        """Server-Sent Events of every service event; resume with the ``Last-Event-ID`` header."""
        after = since
        if last_event_id is not None:
            try:
                after = int(last_event_id)
            except ValueError:
                raise HTTPException(422, "Last-Event-ID must be an event id (integer)") from None
        assert service.events is not None

        async def gen() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            async for row in service.events.stream(after, session=session):
                if await request.is_disconnected():
                    return
                if row is None:
                    yield b": keepalive\n\n"
                    continue
                data = json.dumps({"id": row.id, "type": row.type, "session": row.session, "at": row.at,
                                   "data": row.data}, default=str)
                yield f"id: {row.id}\nevent: {row.type}\ndata: {data}\n\n".encode()

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @ev.get("/events/history", response_model=EventList)
    async def event_history(since: int = Query(0, ge=0), limit: int = Query(200, ge=1, le=1000),
                            session: str | None = Query(None, max_length=64)) -> EventList:
        """Events after ``since`` (oldest first), for polling clients and the dashboard."""
        assert service.events is not None
        rows = service.events.since(since, limit=limit, session=session)
        return EventList(events=[_event_out(r) for r in rows], last_id=rows[-1].id if rows else since)

    @app.websocket("/api/live")
    async def live(ws: WebSocket) -> None:
        """Dashboard channel (tether.js): hello {token, last_event_id} → replay, then live events."""
        await ws.accept()
        live_stats.opened()
        try:
            await _live_session(ws)
        finally:
            live_stats.open -= 1

    async def _live_session(ws: WebSocket) -> None:
        try:
            hello = json.loads(await ws.receive_text())
        except (ValueError, WebSocketDisconnect):
            await ws.close(1008, "first message must be a JSON hello")
            return
        if not isinstance(hello, dict) or not check_token(hello.get("token")):
            live_stats.refused += 1
            await ws.close(4401, "wrong or missing token")
            return
        after = hello.get("last_event_id")
        after = after if isinstance(after, int) and not isinstance(after, bool) else None
        assert service.events is not None
        if after is None or after < service.db.first_event_id() - 1:
            # No cursor (first connect) or one older than the log: start from an explicit cursor and
            # say which, so a client that drops before its first event resumes from there, not from
            # "only new events" (which would lose what happened while it was away).
            after = service.events.last_id
            await ws.send_json({"type": "reset", "last_event_id": after})

        import asyncio

        async def pump() -> None:
            async for row in service.events.stream(after):
                if row is not None:
                    await ws.send_json({"type": "event", "id": row.id,
                                        "event": {"type": row.type.split(".", 1)[-1], "name": row.type,
                                                  "session": row.session, "at": row.at, **row.data}})
            await ws.close(1012, "service restarting")  # the log closed: shutdown

        task = asyncio.create_task(pump())
        try:
            while True:
                msg = json.loads(await ws.receive_text())
                if isinstance(msg, dict) and msg.get("type") == "ping":
                    await ws.send_json({"type": "pong", "t": msg.get("t")})
        except (WebSocketDisconnect, ValueError, RuntimeError):
            pass
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    app.include_router(health)
    app.include_router(api)
    app.include_router(ev)
    if service.observability.router is not None:
        # Routes the service already serves (it delegates /health/metrics and /health/errors to
        # observe through the seam) are skipped, so every path has one owner and one operation id.
        taken = {(r.path, m) for router in (health, api, ev) for r in router.routes
                 for m in getattr(r, "methods", None) or ()}
        extra = APIRouter()
        extra.routes.extend(r for r in service.observability.router.routes
                            if not any((r.path, m) in taken for m in getattr(r, "methods", None) or ()))
        app.include_router(extra, dependencies=[Depends(require_auth)])

    dashboard = Path(__file__).with_name("dashboard")
    if (dashboard / "index.html").is_file():
        from fastapi.staticfiles import StaticFiles

        app.mount("/dashboard", StaticFiles(directory=dashboard, html=True), name="dashboard")

        @app.get("/", include_in_schema=False)
        async def root() -> Response:
            return Response(status_code=307, headers={"Location": "/dashboard/"})

    # The JSON envelope around a payload of max_message_bytes needs a little room.
    app.add_middleware(_BodyLimit, limit=settings.max_message_bytes + 16_384)
    return app

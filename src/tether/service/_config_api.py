"""``/api/config``: read (secrets masked), patch, history, rollback and the JSON Schema.

Writes carry ``user`` and ``reason`` (query parameters, or ``X-Tether-User`` / ``X-Tether-Reason``)
and may carry ``If-Match: <version>``; a stale version is 409, and every answer holding the
current version has ``ETag: "<version>"``. Invalid input is 422 naming each field; nothing is
applied then.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from ._api import error_response
from ._config import ConfigConflict, ConfigInvalid, ConfigManager
from ._settings import Settings

__all__ = ["config_router"]


class RollbackIn(BaseModel):
    """Body of ``POST /api/config/rollback``."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(..., ge=1, description="the version whose document becomes current again")
    user: str | None = Field(None, max_length=64)
    reason: str | None = Field(None, max_length=500)


def _if_match(value: str | None) -> int | None:
    if value is None or value.strip() in ("", "*"):
        return None
    raw = value.strip().removeprefix("W/").strip('"')
    try:
        return int(raw)
    except ValueError:
        raise ConfigInvalid("If-Match must be a config version such as \"3\" (the ETag of GET /api/config)",
                            [{"field": "If-Match", "message": "must be a version number"}]) from None


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def config_router(service: Any) -> APIRouter:
    """The config routes for a service whose ``config`` is a :class:`ConfigManager`."""
    settings = service.settings
    token = settings.token.get_secret_value() if settings.token is not None else None
    bearer = HTTPBearer(auto_error=False, description="TETHER_TOKEN")

    async def require_auth(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token (send Authorization: Bearer $TETHER_TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})

    router = APIRouter(prefix="/api/config", tags=["config"], dependencies=[Depends(require_auth)])

    def config() -> ConfigManager:
        if service.config is None:
            raise HTTPException(503, "the configuration manager is not running")
        return service.config

    def current(c: ConfigManager, **extra: Any) -> JSONResponse:
        body = {"version": c.version, **extra, "config": c.masked(), "pending_restart": c.pending_restart(),
                "file": str(c.path) if c.path else None}
        return JSONResponse(body, headers=_etag(c.version))

    def failed(exc: Exception) -> JSONResponse:
        if isinstance(exc, ConfigConflict):
            return error_response(409, str(exc), headers=_etag(exc.current))
        assert isinstance(exc, ConfigInvalid)
        return error_response(422, str(exc), fields=exc.fields)

    @router.get("", summary="The running configuration (secrets masked)")
    async def get_config() -> JSONResponse:
        return current(config())

    @router.get("/schema", summary="JSON Schema of the configuration document")
    async def get_schema() -> JSONResponse:
        return JSONResponse(Settings.model_json_schema(by_alias=True))

    @router.patch("", summary="Change settings with a partial document (JSON merge patch)")
    async def patch_config(
        request: Request,
        user: str | None = Query(None, max_length=64, description="who changes it"),
        reason: str | None = Query(None, max_length=500, description="why"),
        if_match: str | None = Header(None, description="the version you read (ETag); 409 when stale"),
        x_tether_user: str | None = Header(None, max_length=64),
        x_tether_reason: str | None = Header(None, max_length=500),
    ) -> JSONResponse:
        c = config()
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError as exc:
            return error_response(422, f"body: malformed JSON ({exc.msg})", fields=[{"field": "body", "message": "malformed JSON"}])
        try:
            v = await c.patch(body, user=user or x_tether_user or "api", reason=reason or x_tether_reason or "",
                              if_match=_if_match(if_match))
        except (ConfigInvalid, ConfigConflict) as exc:
            return failed(exc)
        return current(c, changes=v.changes, restart_required=v.restart_required)

    @router.get("/history", summary="Versions, newest first, each with its masked diff")
    async def get_history(limit: int = Query(50, ge=1, le=1000)) -> JSONResponse:
        c = config()
        return JSONResponse({"version": c.version, "versions": [v.public() for v in c.history(limit)]},
                            headers=_etag(c.version))

    @router.post("/rollback", summary="Make an earlier version's exact document current (as a new version)")
    async def rollback(body: RollbackIn, if_match: str | None = Header(None)) -> JSONResponse:
        c = config()
        try:
            v = await c.rollback(body.version, user=body.user or "api", reason=body.reason or "",
                                 if_match=_if_match(if_match))
        except (ConfigInvalid, ConfigConflict) as exc:
            return failed(exc)
        return current(c, changes=v.changes, restart_required=v.restart_required)

    return router

"""Request and response bodies of the HTTP API (pydantic): the OpenAPI schema at /docs comes from here."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ErrorDetail", "ErrorBody", "SessionCreate", "SessionPatch", "SessionOut", "SessionList",
    "MessageIn", "MessageAccepted", "MessageOut", "MessageList", "EventOut", "EventList",
    "HealthOut", "SweepOut", "SweepList", "ErrorList", "MessageStatus",
]

MessageStatus = Literal["pending", "leased", "delivered", "dead"]


class ErrorDetail(BaseModel):
    code: str = Field(..., description="machine-readable: not_found, validation_error, unauthorized, ...")
    message: str = Field(..., description="what went wrong and what to do")
    fields: list[dict[str, str]] | None = Field(None, description="for validation errors: field and problem")


class ErrorBody(BaseModel):
    error: ErrorDetail


class SessionCreate(BaseModel):
    """A new session: ``{"id": "sess_1", "kind": "websocket", "options": {"url": "ws://..."}}``."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=64, description="letters, digits, _ . - (generated when omitted)")
    kind: str = Field(..., min_length=1, max_length=64, description="connector kind: websocket, telegram-bot, ...")
    options: dict[str, Any] = Field(default_factory=dict, description="connector options (see docs/service.md)")
    webhooks: list[str] = Field(default_factory=list, max_length=10, description="URLs receiving inbound messages")
    enabled: bool = Field(True, description="start the session at once")

    @field_validator("webhooks")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")) or len(url) > 2048:
                raise ValueError(f"{url[:80]!r} is not an http(s) URL")
        return v


class SessionPatch(BaseModel):
    """Change a session. ``options`` are merged into the current ones (``null`` removes a key)."""

    model_config = ConfigDict(extra="forbid")

    options: dict[str, Any] | None = None
    webhooks: list[str] | None = Field(None, max_length=10)
    enabled: bool | None = None

    @field_validator("webhooks")
    @classmethod
    def _urls(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else SessionCreate._urls(v)


class SessionOut(BaseModel):
    id: str
    kind: str
    state: str = Field(..., description="idle, connecting, connected, backing_off, closing, closed, failed")
    desired: str = Field(..., description="running, stopped or logged_out")
    options: dict[str, Any] = Field(..., description="credentials masked as ***")
    webhooks: list[str]
    stats: dict[str, Any]
    queue_depth: int | None = None
    state_age: float = Field(..., description="seconds in the current state")
    log_prefix: str
    created_at: float
    updated_at: float
    node: str | None = Field(None, description="scale-out (--store redis://): the node running the session now")


class SessionList(BaseModel):
    sessions: list[SessionOut]
    total: int


class MessageIn(BaseModel):
    """An outbound message. A string is sent as is; an object or array is sent as JSON text."""

    model_config = ConfigDict(extra="forbid")

    payload: Any = Field(..., description="a string, or a JSON object/array")

    @field_validator("payload")
    @classmethod
    def _payload(cls, v: Any) -> Any:
        if not isinstance(v, (str, dict, list)):
            raise ValueError("must be a string or a JSON object/array")
        return v

    def text(self) -> str:
        return self.payload if isinstance(self.payload, str) else json.dumps(self.payload, separators=(",", ":"))


class MessageAccepted(BaseModel):
    id: str = Field(..., description="stable message id (the same for a repeated Idempotency-Key)")
    session: str
    status: str = "accepted"


class MessageOut(BaseModel):
    id: str
    session: str
    status: str
    attempts: int
    key: str | None
    created_at: float
    payload: str
    last_error: str | None = None


class MessageList(BaseModel):
    messages: list[MessageOut]


class EventOut(BaseModel):
    id: int
    type: str
    session: str | None
    at: float
    data: dict[str, Any]


class EventList(BaseModel):
    events: list[EventOut]
    last_id: int = Field(..., description="pass as ?since= to continue")


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "down"]
    version: str
    uptime: float
    components: dict[str, dict[str, Any]]


class SweepOut(BaseModel):
    at: float
    checked: int
    duration: float
    findings: list[dict[str, str]]


class SweepList(BaseModel):
    interval: float
    reports: list[SweepOut]


class ErrorList(BaseModel):
    errors: list[dict[str, Any]]
    total: int

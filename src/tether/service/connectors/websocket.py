"""The ``websocket`` connector: any WebSocket upstream, kept alive by a :class:`tether.Link`.

Options (``{"kind": "websocket", "options": {...}}``)::

    url                 ws:// or wss:// URL (required)
    headers             extra handshake headers
    token               sent as ``Authorization: Bearer <token>`` (masked in output, cleared on logout)
    heartbeat_interval  heartbeat_timeout  connect_timeout  max_attempts  backoff_base  backoff_cap
                        default to the service's ``[sessions]`` settings

Inbound message ids: a JSON object's ``id`` / ``message_id`` / ``update_id`` field when present
(stable across redeliveries, so duplicates are dropped); otherwise a hash of the connection number,
the position in that connection and the payload (unique, but a generic upstream that replays
without ids cannot be de-duplicated).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any, ClassVar, Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ..._backoff import Backoff
from ..._errors import LinkClosedError, NotConnectedError, TetherError
from ..._state import State
from ...link import connect
from .._connector import ConnectorContext, InboundMessage, register_connector

__all__ = ["WebSocketConnector", "WebSocketOptions"]

log = logging.getLogger("tether.service")

_ID_FIELDS = ("id", "message_id", "update_id")


class WebSocketOptions(BaseModel):
    """Options of a ``websocket`` session."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(..., description="ws:// or wss:// URL of the upstream")
    headers: dict[str, str] = Field(default_factory=dict)
    token: SecretStr | None = Field(None, description="sent as Authorization: Bearer <token>")
    heartbeat_interval: float | None = Field(None, gt=0)
    heartbeat_timeout: float | None = Field(None, gt=0)
    connect_timeout: float | None = Field(None, gt=0)
    max_attempts: int | None = Field(None, ge=1)
    backoff_base: float | None = Field(None, gt=0)
    backoff_cap: float | None = Field(None, gt=0)

    @field_validator("url")
    @classmethod
    def _ws_url(cls, v: str) -> str:
        if not v.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return v


def message_id(payload: str | bytes, *, connection: int, position: int) -> str:
    """The stable id of an inbound message (see the module docstring)."""
    if isinstance(payload, str) and payload[:1] == "{":
        try:
            obj = json.loads(payload)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            for key in _ID_FIELDS:
                if isinstance(obj.get(key), (str, int)) and not isinstance(obj.get(key), bool):
                    return str(obj[key])
    raw = payload.encode() if isinstance(payload, str) else payload
    digest = hashlib.sha256(f"{connection}:{position}:".encode() + raw).hexdigest()
    return "h" + digest[:31]


class WebSocketConnector:
    """One session on one WebSocket upstream."""

    kind: ClassVar[str] = "websocket"

    def __init__(self, ctx: ConnectorContext) -> None:
        self._ctx = ctx
        opts = WebSocketOptions.model_validate(dict(ctx.options))
        d = ctx.defaults

        def pick(name: str, fallback: Any) -> Any:
            value = getattr(opts, name)
            if value is not None:
                return value
            return getattr(d, name, fallback) if d is not None else fallback

        headers = dict(opts.headers)
        if opts.token is not None:
            headers["Authorization"] = f"Bearer {opts.token.get_secret_value()}"
        self.max_attempts: int | None = pick("max_attempts", 10)
        backoff = Backoff(
            base=pick("backoff_base", 3.0),
            factor=2.0,
            cap=max(pick("backoff_cap", 60.0), pick("backoff_base", 3.0)),
            jitter="equal",
        )
        kwargs = dict(
            heartbeat_interval=pick("heartbeat_interval", 20.0),
            heartbeat_timeout=pick("heartbeat_timeout", 10.0),
            connect_timeout=pick("connect_timeout", 10.0),
            backoff=backoff,
            max_attempts=self.max_attempts,
            clock=ctx.clock,
            headers=headers or None,
            name=ctx.session,
        )
        if ctx.admission is not None:
            kwargs["admission"] = ctx.admission
        self._link = connect(opts.url, **kwargs)
        self._unsubscribe = self._link.subscribe(ctx.emit)
        self._reader: asyncio.Task[None] | None = None
        self._connection = 0
        self._position = 0
        self._delivered = 0
        self._stopped = False

    def configure(self, defaults: Any) -> None:
        """Take new ``[sessions]`` defaults (this session's own options still win): heartbeat and
        backoff apply at the link's next cycle, without reconnecting."""
        opts = WebSocketOptions.model_validate(dict(self._ctx.options))

        def pick(name: str, fallback: Any) -> Any:
            value = getattr(opts, name)
            return value if value is not None else getattr(defaults, name, fallback)

        base = pick("backoff_base", 3.0)
        self._link.configure(heartbeat_interval=pick("heartbeat_interval", 20.0),
                             heartbeat_timeout=pick("heartbeat_timeout", 10.0),
                             backoff=Backoff(base=base, factor=2.0, cap=max(pick("backoff_cap", 60.0), base),
                                             jitter="equal"))

    @property
    def state(self) -> State:
        return self._link.state

    def stats(self) -> Mapping[str, Any]:
        s = self._link.stats
        keys = ("connects", "disconnects", "attempts", "sent", "received", "buffered", "last_error",
                "up_since", "last_close_code", "last_close_reason", "last_heartbeat_rtt", "last_heartbeat_at")
        out = {k: getattr(s, k, None) for k in keys}
        if out["last_error"] is not None and not isinstance(out["last_error"], str):
            out["last_error"] = str(out["last_error"])
        out["max_attempts"] = self.max_attempts
        out["delivered"] = self._delivered
        return out

    async def start(self) -> None:
        cursor = await self._ctx.load_cursor()
        if cursor and isinstance(cursor.get("seq"), int):
            self._connection = cursor["seq"]
        await self._link.start()
        self._reader = asyncio.create_task(self._read(), name=f"tether-ws-reader[{self._ctx.session}]")

    async def _read(self) -> None:
        seen_connects = -1
        try:
            async for payload in self._link:
                connects = getattr(self._link.stats, "connects", 0)
                if connects != seen_connects:  # a new connection: positions start again
                    seen_connects = connects
                    self._connection += 1
                    self._position = 0
                    await self._ctx.save_cursor({"seq": self._connection})
                self._position += 1
                mid = message_id(payload, connection=self._connection, position=self._position)
                if isinstance(payload, bytes):
                    try:
                        payload = payload.decode("utf-8")
                    except UnicodeDecodeError:
                        payload = payload.hex()
                msg = InboundMessage(
                    session=self._ctx.session,
                    id=mid,
                    payload=payload,
                    received_at=self._ctx.clock.wall(),
                    cursor={"seq": self._connection, "offset": self._position},
                )
                await self._deliver(msg)
                self._delivered += 1
        except (LinkClosedError, asyncio.CancelledError):
            pass
        except TetherError as exc:
            log.info("[%s] reader stopped: %s", self._ctx.session, exc)

    async def _deliver(self, msg: InboundMessage) -> None:
        """Hand a message to the service until it is stored: a store hiccup delays it, never drops it
        (the Link keeps receiving into its bounded queue meanwhile)."""
        delay = 0.5
        while True:
            try:
                await self._ctx.deliver(msg)
                return
            except (TetherError, OSError) as exc:
                log.warning("[%s] could not store inbound message %s (%s); retrying in %.1fs",
                            self._ctx.session, msg.id, exc, delay)
                await self._ctx.clock.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def send(self, payload: Any) -> None:
        if self._stopped:
            raise LinkClosedError(f"session {self._ctx.session} is stopped")
        if self._link.state is not State.CONNECTED:
            # The outbox is the buffer: never let the Link buffer in memory what is already on disk.
            raise NotConnectedError(f"session {self._ctx.session} is not connected ({self._link.state})")
        await self._link.send(payload)

    async def stop(self) -> None:
        self._stopped = True
        try:
            await self._link.close()
        finally:
            if self._reader is not None:
                self._reader.cancel()
                await asyncio.gather(self._reader, return_exceptions=True)
            self._unsubscribe()

    async def reconnect(self) -> None:
        """Force a fresh connection (used by the sweep for a FAILED session)."""
        await self._link.reconnect()


register_connector("websocket", WebSocketConnector, options=WebSocketOptions, secrets=("token",))

"""The ``websocket`` connector: any WebSocket upstream, kept alive by a :class:`tether.Link`.

Options (``{"kind": "websocket", "options": {...}}``)::

    url                 ws:// or wss:// URL (required)
    headers             extra handshake headers
    token               sent as ``Authorization: Bearer <token>`` (masked in output, cleared on logout)
    heartbeat_interval  heartbeat_timeout  connect_timeout  max_attempts  backoff_base  backoff_cap
                        default to the service's ``[sessions]`` settings
    ack                 the upstream acknowledges each message (``true``, or ``{"id_field": "id",
                        "type_field": "type", "ack_type": "ack", "ack_id_field": null, "timeout": null}``)

Outbound delivery: without ``ack`` a message counts as delivered once written to the socket (at most
once on the wire: bytes in flight when the connection dies are lost with it). With ``ack`` each
message is a JSON object carrying an id (its own ``id_field``, else the outbox id is set there); it
counts as delivered only when the upstream answers ``{"type": "ack", "id": ...}`` (``"id": [...]``
acks several); anything unacknowledged when the connection ends, or after ``timeout``, is sent again
in order with the same id (at least once: an upstream that de-duplicates by id applies it once).
Ack messages are consumed here and never reach the inbox.

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
from ..._errors import ConfigError, LinkClosedError, MessageRejected, NotConnectedError, TetherError
from ..._events import Closed, Disconnected
from ..._state import State
from ...link import JsonAck, connect
from .._connector import ConnectorContext, InboundMessage, register_connector

__all__ = ["WebSocketConnector", "WebSocketOptions", "WebSocketAck"]

log = logging.getLogger("tether.service")

_ID_FIELDS = ("id", "message_id", "update_id")


class WebSocketAck(BaseModel):
    """``ack`` of a ``websocket`` session: the upstream acknowledges every message by its id."""

    model_config = ConfigDict(extra="forbid")

    id_field: str = Field("id", min_length=1, description="field of outgoing messages carrying the id "
                          "(the outbox id is set there when the payload has none)")
    type_field: str = Field("type", min_length=1, description="field of incoming messages telling their type")
    ack_type: str = Field("ack", min_length=1, description="value of type_field that marks an ack")
    ack_id_field: str | None = Field(None, min_length=1, description="field of the ack holding the id(s); "
                                     "default: id_field")
    timeout: float | None = Field(None, gt=0, description="seconds to wait for an ack before sending again "
                                  "(default: [sessions] send_timeout)")

    def spec(self) -> JsonAck:
        return JsonAck(id_field=self.id_field, type_field=self.type_field, ack_type=self.ack_type,
                       ack_id_field=self.ack_id_field)


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
    ack: WebSocketAck | None = Field(None, description="the upstream acknowledges each message (true or an object)")

    @field_validator("ack", mode="before")
    @classmethod
    def _ack_shorthand(cls, v: Any) -> Any:
        if v is True:
            return {}
        if v is False:
            return None
        return v

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
        self._ack: JsonAck | None = opts.ack.spec() if opts.ack is not None else None
        #: seconds the delivery loop waits for acks (None: its send_timeout)
        self.ack_timeout: float | None = opts.ack.timeout if opts.ack is not None else None
        # wire id -> receipts of messages written and not acknowledged yet (resolved True on the ack,
        # False when the connection that carried them ends)
        self._waiting: dict[str, list[asyncio.Future[bool]]] = {}
        self._unsubscribe = self._link.subscribe(self._on_event)
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

    @property
    def acks(self) -> bool:
        """True when the upstream acknowledges messages (the delivery loop then uses send_acked)."""
        return self._ack is not None

    def _on_event(self, ev: Any) -> None:
        if self._waiting and isinstance(ev, (Disconnected, Closed)):
            # Whatever that connection carried without an ack may be lost: it is sent again.
            self._settle_all(False)
        self._ctx.emit(ev)

    def _settle_all(self, acked: bool) -> None:
        waiting, self._waiting = self._waiting, {}
        for futs in waiting.values():
            for fut in futs:
                if not fut.done():
                    fut.set_result(acked)

    def _consume_ack(self, payload: str | bytes) -> bool:
        """True when ``payload`` is an ack (it settles its receipts and goes no further)."""
        assert self._ack is not None
        if isinstance(payload, str) and payload[:1] != "{" and not payload[:1].isspace():
            return False  # cheap reject: not a JSON object
        ids = self._ack.acked_ids(payload)
        if ids is None:
            return False
        for wire_id in ids:
            for fut in self._waiting.pop(wire_id, ()):
                if not fut.done():
                    fut.set_result(True)
        return True

    def stats(self) -> Mapping[str, Any]:
        s = self._link.stats
        keys = ("connects", "disconnects", "attempts", "sent", "received", "buffered", "last_error",
                "up_since", "last_close_code", "last_close_reason", "last_heartbeat_rtt", "last_heartbeat_at")
        out = {k: getattr(s, k, None) for k in keys}
        if out["last_error"] is not None and not isinstance(out["last_error"], str):
            out["last_error"] = str(out["last_error"])
        out["max_attempts"] = self.max_attempts
        out["delivered"] = self._delivered
        if self._ack is not None:
            out["awaiting_ack"] = sum(len(futs) for futs in self._waiting.values())
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
                if self._ack is not None and self._consume_ack(payload):
                    continue
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
        # Written now or not at all: a failed write goes back to the outbox (in order), never into
        # the Link's memory buffer, from where it would go out ahead of the outbox's resends.
        await self._link.send(payload, buffer=False)

    async def send_acked(self, message_id: str, payload: Any) -> "asyncio.Future[bool]":
        """Write ``payload`` now carrying an id; the returned receipt resolves True when the upstream
        acknowledges it, False when the connection ends first (then it must be sent again).

        Raises:
            MessageRejected: the payload is not a JSON object (it could carry no id).
            NotConnectedError / LinkClosedError: it was not written.
        """
        if self._ack is None:
            raise ConfigError(f"session {self._ctx.session} has no ack option")
        if self._stopped:
            raise LinkClosedError(f"session {self._ctx.session} is stopped")
        if self._link.state is not State.CONNECTED:
            raise NotConnectedError(f"session {self._ctx.session} is not connected ({self._link.state})")
        try:
            stamped = self._ack.stamp(payload, message_id)
        except ConfigError:
            raise MessageRejected(
                f"with the ack option a message must be a JSON object (it carries the id "
                f"{self._ack.id_field!r} the upstream acknowledges); post {{\"payload\": {{...}}}}") from None
        wire_id = self._ack.id_of(stamped) or message_id
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(wire_id, []).append(fut)  # before the write: the ack can beat send()'s return
        try:
            await self._link.send(stamped, buffer=False)
        except BaseException:
            futs = self._waiting.get(wire_id)
            if futs is not None and fut in futs:
                futs.remove(fut)
                if not futs:
                    del self._waiting[wire_id]
            fut.cancel()
            raise
        return fut

    async def stop(self) -> None:
        self._stopped = True
        try:
            await self._link.close()
        finally:
            if self._reader is not None:
                self._reader.cancel()
                await asyncio.gather(self._reader, return_exceptions=True)
            self._unsubscribe()
            self._settle_all(False)

    async def reconnect(self) -> None:
        """Force a fresh connection (used by the sweep for a FAILED session)."""
        await self._link.reconnect()


register_connector("websocket", WebSocketConnector, options=WebSocketOptions, secrets=("token",))

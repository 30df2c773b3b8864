"""Small option objects of the Link: AppPing (application heartbeat) and JsonAck (peer acknowledgements)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from .._errors import ConfigError

__all__ = ["AppPing", "JsonAck", "Message"]

Message = str | bytes


def _json_object(message: Message) -> dict[str, Any] | None:
    """The message as a JSON object, or None when it is not one (cheap reject before parsing)."""
    if isinstance(message, bytes):
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError:
            return None
    text = message.lstrip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _default_make() -> Message:
    return '{"type":"ping"}'


def _default_is_pong(message: Message) -> bool:
    obj = _json_object(message)
    return obj is not None and obj.get("type") == "pong"


@dataclass(frozen=True, slots=True)
class AppPing:
    """An application-level heartbeat for servers that want JSON pings instead of WebSocket pings.

    Every ``heartbeat_interval`` the link sends ``make()``; the first incoming message for which
    ``is_pong(message)`` is true answers it. Pongs are consumed by the link and never reach ``recv()``.

    Example::

        tether.connect(url, heartbeat=tether.AppPing(
            make=lambda: json.dumps({"op": 1}), is_pong=lambda m: '"op":11' in m))

    Args:
        make: builds the ping message (str or bytes). Default: ``{"type":"ping"}``.
        is_pong: tells whether a received message is the pong. Default: a JSON object with ``type == "pong"``.
    """

    make: Callable[[], Message] = _default_make
    is_pong: Callable[[Message], bool] = _default_is_pong

    def __post_init__(self) -> None:
        if not callable(self.make) or not callable(self.is_pong):
            raise ConfigError("AppPing(make=..., is_pong=...) takes two callables: make() -> str|bytes, is_pong(msg) -> bool")


@dataclass(frozen=True, slots=True)
class JsonAck:
    """How a peer acknowledges durable messages, for ``tether.connect(..., outbox=..., ack=JsonAck())``.

    Each outgoing durable message must be a JSON object; the link sets ``id_field`` in it to the
    outbox id (unless the payload already has one). An incoming JSON object whose ``type_field`` equals
    ``ack_type`` acknowledges the id found in ``ack_id_field`` (a string, or a list of strings for batch
    acks). Acks are consumed by the link and never reach ``recv()``.

    Wire example with the defaults: out ``{"id": "m-17", "text": "hi"}``, in ``{"type": "ack", "id": "m-17"}``.

    Args:
        id_field: the field of outgoing messages that carries the id. Default ``"id"``.
        type_field: the field of incoming messages that tells their type. Default ``"type"``.
        ack_type: the value of ``type_field`` that marks an ack. Default ``"ack"``.
        ack_id_field: the field of the ack holding the acknowledged id(s). Default: same as ``id_field``.
    """

    id_field: str = "id"
    type_field: str = "type"
    ack_type: str = "ack"
    ack_id_field: str | None = field(default=None)

    def __post_init__(self) -> None:
        for name in ("id_field", "type_field", "ack_type"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"JsonAck {name} must be a non-empty string, got {getattr(self, name)!r}")

    def stamp(self, payload: Message, message_id: str) -> Message:
        """The payload with ``id_field`` set to ``message_id`` (kept when the payload already has one)."""
        obj = _json_object(payload)
        if obj is None:
            raise ConfigError(f"with ack=JsonAck(), send() needs a JSON object (str or bytes); got {payload[:40]!r}")
        if self.id_field in obj:
            return payload
        obj[self.id_field] = message_id
        return json.dumps(obj, separators=(",", ":"))

    def acked_ids(self, message: Message) -> list[str] | None:
        """The ids acknowledged by ``message``, or None when it is not an ack."""
        obj = _json_object(message)
        if obj is None or obj.get(self.type_field) != self.ack_type:
            return None
        value = obj.get(self.ack_id_field or self.id_field)
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [str(v) for v in value]
        if value is None:
            return None
        return [str(value)]

    def id_of(self, payload: Message) -> str | None:
        """The id carried by an outgoing payload, if any."""
        obj = _json_object(payload)
        if obj is None or self.id_field not in obj:
            return None
        return str(obj[self.id_field])

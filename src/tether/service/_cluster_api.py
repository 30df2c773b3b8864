"""Scale-out API: a call on any node acts on any session, by forwarding it to the node that runs it.

Which calls: ``GET``/``PATCH``/``DELETE /api/sessions/{id}`` and ``POST .../restart`` and
``.../logout`` — the ones that touch the running connector or report its live stats. Sending
(``POST .../messages``) is not forwarded: every node writes the shared outbox and wakes the owner.

How: HTTP to the owner's advertised base URL (``public_url``, registered in Redis with the node's
heartbeat), with the caller's ``Authorization`` header. HTTP rather than a command channel in Redis
because the owner then answers exactly as if it had been called (status, body, errors) with no
second protocol to keep in step, and the request is not left behind in Redis when the owner dies
mid-call. The price: nodes must reach each other's ``public_url``.

A forwarded request carries ``X-Tether-Forwarded: <node>`` and is never forwarded again: when
ownership moved in between, the receiving node acts if nobody runs the session, else answers 503
(``LeaseLost``) and the caller retries. When the owner does not answer, the caller gets 503 with
``Retry-After`` (its sessions move to the other nodes within ``lease_ttl``).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from typing import Any

import httpx

from .._errors import TetherError

__all__ = ["ForwardToOwner", "install", "FORWARDED_HEADER"]

log = logging.getLogger("tether.service")

FORWARDED_HEADER = "x-tether-forwarded"
_PATH = re.compile(r"^/api/sessions/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})(?:/(restart|logout))?/?$")
_PASS_HEADERS = (b"authorization", b"content-type", b"idempotency-key", b"accept")


def _json(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> tuple[int, list, bytes]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    hs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    hs += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return status, hs, body


class ForwardToOwner:
    """ASGI middleware: session calls for a session another node runs go to that node."""

    def __init__(self, app: Any, service: Any) -> None:
        self.app = app
        self.service = service
        s = service.settings
        self.limit = s.max_message_bytes + 16_384
        # a forwarded restart waits restart_delay on the owner; a delete may drain sends
        self.timeout = s.restart_delay + s.shutdown_timeout + 10.0
        self._token = s.token.get_secret_value().encode() if s.token is not None else None

    def _target(self, scope: Any) -> str | None:
        if scope["type"] != "http":
            return None
        m = _PATH.match(scope["path"])
        if m is None:
            return None
        method = scope["method"]
        if (m.group(2) and method != "POST") or (not m.group(2) and method not in ("GET", "PATCH", "DELETE")):
            return None
        headers = dict(scope.get("headers") or ())
        if FORWARDED_HEADER.encode() in headers:
            return None  # forwarded once already: act here, never bounce
        if self._token is not None:  # the local route answers 401; don't reveal owners to strangers
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self._token):
                return None
        return m.group(1)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        sid = self._target(scope)
        mgr = self.service.manager
        if sid is None or mgr is None or not hasattr(mgr, "owner_of") or mgr.owns(sid):
            return await self.app(scope, receive, send)
        try:
            node, url = await mgr.owner_of(sid)
        except TetherError:  # Redis away: the local route answers (503 with the reason)
            return await self.app(scope, receive, send)
        if node is None or node == mgr.node or not url:
            return await self.app(scope, receive, send)  # nobody runs it: act here
        body, too_large = await self._read_body(receive)
        if too_large:
            return await self._respond(send, *_json(413, "payload_too_large",
                                                    f"request body exceeds {self.limit} bytes"))
        await self._respond(send, *await self._forward(scope, sid, node, url, body))

    async def _read_body(self, receive: Any) -> tuple[bytes, bool]:
        chunks, size = [], 0
        while True:  # bounded by the body limit
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False

    async def _forward(self, scope: Any, sid: str, node: str, base: str, body: bytes) -> tuple[int, list, bytes]:
        headers = {k.decode(): v.decode("latin-1") for k, v in scope.get("headers") or () if k in _PASS_HEADERS}
        headers[FORWARDED_HEADER] = self.service.manager.node
        qs = scope.get("query_string", b"").decode("latin-1")
        url = base.rstrip("/") + scope["path"] + (f"?{qs}" if qs else "")
        try:
            client = self.service.manager.http_client()
            r = await client.request(scope["method"], url, headers=headers, content=body, timeout=self.timeout)
        except httpx.HTTPError as exc:
            ttl = getattr(self.service.settings, "lease_ttl", 10.0)
            log.warning("[%s] forwarding %s to node %s failed: %s", sid, scope["method"], node, type(exc).__name__)
            return _json(503, "unavailable", f"session {sid!r} runs on node {node!r}, which did not answer "
                         f"({type(exc).__name__}); retry in a few seconds (a dead node's sessions move to "
                         f"the others within lease_ttl={ttl:g}s)", {"Retry-After": str(max(1, round(ttl)))})
        hs = [(b"content-type", r.headers.get("content-type", "application/json").encode()),
              (b"content-length", str(len(r.content)).encode()), (b"x-tether-node", node.encode())]
        if "retry-after" in r.headers:
            hs.append((b"retry-after", r.headers["retry-after"].encode()))
        return r.status_code, hs, r.content

    @staticmethod
    async def _respond(send: Any, status: int, headers: list, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def install(app: Any, service: Any) -> None:
    """Add forwarding to ``app`` when the service runs as a cluster node (``--store redis://``)."""
    if service.settings.store:
        app.add_middleware(ForwardToOwner, service=service)

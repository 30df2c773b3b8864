"""FakeBotAPI: a real local HTTP server that speaks enough of the Telegram Bot API to test a bot.

It listens on 127.0.0.1 (a free port by default) and parses HTTP with ``h11``, so every request a
bot makes crosses a real socket, exactly like against ``https://api.telegram.org``; point your
bot's ``api_base`` at :attr:`FakeBotAPI.url`. Test controls inject what Telegram does on a bad day:
429 with ``retry_after``, 5xx, 409 Conflict, revoked tokens, slow answers and dropped connections.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email
import email.policy
import json
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import h11

__all__ = ["FakeBotAPI", "BotAPIRequest", "DEFAULT_TOKEN"]

#: The token a FakeBotAPI accepts when none is given (Telegram's shape: ``<bot id>:<secret>``).
DEFAULT_TOKEN = "123456789:TEST-tether-fake-bot-token-0000000"

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_WEBHOOK_CONFLICT = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
_METHODS = ("getMe", "getUpdates", "sendMessage", "deleteWebhook", "setWebhook", "getWebhookInfo")
_CANONICAL = {m.lower(): m for m in _METHODS}
_MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class BotAPIRequest:
    """One request the server received.

    Attributes:
        method: the Bot API method as the bot spelled it (``getUpdates``; canonical case for known ones).
        params: the parameters from the query string and the body (JSON or form).
        at: when it arrived, on the server's clock (``time.monotonic()`` unless a clock was given).
        authorized: whether the token was valid at that moment.
    """

    method: str
    params: Mapping[str, Any]
    at: float
    authorized: bool


@dataclass(slots=True)
class _Fault:
    kind: str  # "error" | "delay" | "drop"
    remaining: int
    method: str | None
    token: str | None
    status: int = 500
    retry_after: float | None = None
    description: str | None = None
    body: str | None = None
    seconds: float = 0.0

    def matches(self, method: str, token: str) -> bool:
        return (self.method is None or self.method == method.lower()) and (self.token is None or self.token == token)


@dataclass(slots=True)
class _Bot:
    token: str
    id: int
    username: str
    updates: list[dict[str, Any]] = field(default_factory=list)
    next_update_id: int = 1
    next_message_id: int = 1
    webhook_url: str = ""
    poll_generation: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        event, self.changed = self.changed, asyncio.Event()
        event.set()


class _Reply(Exception):
    """Internal: answer the current request with this status and JSON body."""

    def __init__(self, status: int, body: Mapping[str, Any] | None = None, *, raw: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.raw = raw


class _Drop(Exception):
    """Internal: abort the connection without answering."""


def _error(status: int, description: str | None = None, **parameters: Any) -> _Reply:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description or _REASONS.get(status, "Error")}
    params = {k: v for k, v in parameters.items() if v is not None}
    if params:
        body["parameters"] = params
    return _Reply(status, body)


class FakeBotAPI:
    """A local Telegram Bot API server for tests and demos.

    Implemented methods: ``getMe``, ``getUpdates`` (``offset``, ``limit``, ``timeout`` long polling that
    answers as soon as an update is queued; updates below ``offset`` are confirmed and forgotten, a
    negative offset keeps the last ``-offset``; a second poller terminates the first with 409 as
    Telegram does), ``sendMessage`` (recorded in :attr:`sent`), ``deleteWebhook``, ``setWebhook`` and
    ``getWebhookInfo``. Parameters are read from the query string, JSON or form bodies, with GET or POST.
    An unknown token gets ``401 {"ok": false, "error_code": 401, "description": "Unauthorized"}``.

    Example::

        from tether.testing import FakeBotAPI

        async def test_my_bot_replies():
            async with FakeBotAPI() as api:
                bot = MyBot(token=api.token, api_base=api.url)   # your bot, any Bot API client
                await bot.start()
                api.push_message("/start", chat_id=42)
                await api.wait_for_sent(1)
                assert api.sent[0]["text"] == "Hello!"
                api.fail_next(1, status=429, retry_after=3)      # Telegram's flood control
                api.revoke(api.token)                            # the token was revoked in @BotFather
                await bot.stop()

    Args:
        tokens: the bot tokens to accept (default: :data:`DEFAULT_TOKEN`). Each token is its own bot
            with its own update queue.
        host: the address to listen on (loopback by default).
        port: the port; 0 picks a free one (read :attr:`url` after start).
        clock: a :class:`tether.Clock` for request timestamps and message dates (the real clock by
            default). Long-poll waits and injected delays always run on real time: they are I/O.
        max_poll_timeout: the longest long-poll wait honoured, in seconds (Telegram allows 50).
    """

    def __init__(
        self,
        *tokens: str,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Any = None,
        max_poll_timeout: float = 50.0,
    ) -> None:
        self._host = host
        self._port = port
        self._clock = clock
        self._max_poll = max_poll_timeout
        self._bots: dict[str, _Bot] = {}
        self._revoked: set[str] = set()
        for token in tokens or (DEFAULT_TOKEN,):
            self.add_token(token)
        self._faults: list[_Fault] = []
        self._blocked: set[Any] = set()
        self.requests: list[BotAPIRequest] = []
        """Every request received, in order (the token is never recorded)."""
        self.sent: list[dict[str, Any]] = []
        """Every message sent with ``sendMessage``, as the Message objects returned (``from.id`` is the bot)."""
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._activity = asyncio.Event()
        self._closing = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> "FakeBotAPI":
        """Start listening; returns self. :attr:`url` is valid afterwards."""
        if self._server is None:
            self._closing = False
            self._server = await asyncio.start_server(self._handle, self._host, self._port)
            self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening, answer pending long polls, close every connection and await the handlers."""
        if self._server is None:
            return
        self._closing = True
        for bot in self._bots.values():
            bot.wake()
        self._server.close()
        await asyncio.sleep(0.01)  # let woken long polls answer before their sockets go
        for writer in list(self._writers):
            writer.transport.abort()
        if self._handlers:
            _, pending = await asyncio.wait(set(self._handlers), timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> "FakeBotAPI":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """The ``api_base`` to give a bot: ``http://127.0.0.1:<port>``."""
        if self._server is None:
            raise RuntimeError("FakeBotAPI is not started; use 'async with FakeBotAPI() as api'")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def token(self) -> str:
        """The first token (the one to use when there is a single bot)."""
        return next(iter(self._bots))

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not started"
        return f"FakeBotAPI({where}, bots={len(self._bots)})"

    # ------------------------------------------------------------------ tokens and updates
    def add_token(self, token: str, *, username: str | None = None) -> None:
        """Accept ``token`` (again, if it was revoked)."""
        self._revoked.discard(token)
        if token not in self._bots:
            head = token.split(":", 1)[0]
            bot_id = int(head) if head.isdigit() else zlib.crc32(token.encode()) or 1
            self._bots[token] = _Bot(token=token, id=bot_id, username=username or f"tether_fake_{bot_id}_bot")

    def revoke(self, token: str | None = None) -> None:
        """Reject ``token`` (default: :attr:`token`) with 401 from now on, like a token revoked in @BotFather."""
        self._revoked.add(token or self.token)

    def push_message(self, text: str, *, chat_id: int | str = 1, token: str | None = None,
                     from_id: int | None = None, **fields: Any) -> dict[str, Any]:
        """Queue an incoming text message from ``chat_id`` and wake long polls; returns the update."""
        bot = self._bot(token)
        message: dict[str, Any] = {
            "message_id": bot.next_message_id,
            "from": {"id": from_id if from_id is not None else chat_id, "is_bot": False, "first_name": "Tester"},
            "chat": _chat(chat_id),
            "date": int(self._wall()),
            "text": text,
            **fields,
        }
        bot.next_message_id += 1
        return self.push_update({"message": message}, token=token)

    def push_update(self, update: Mapping[str, Any] | str, *, chat_id: int | str = 1,
                    token: str | None = None) -> dict[str, Any]:
        """Queue an update (a dict without ``update_id``, which is assigned; or a text, see :meth:`push_message`)."""
        if isinstance(update, str):
            return self.push_message(update, chat_id=chat_id, token=token)
        bot = self._bot(token)
        full = {"update_id": bot.next_update_id, **{k: v for k, v in update.items() if k != "update_id"}}
        bot.next_update_id += 1
        bot.updates.append(full)
        bot.wake()
        self._bump()
        return full

    def pending(self, token: str | None = None) -> list[dict[str, Any]]:
        """Updates queued and not yet confirmed by a getUpdates ``offset``."""
        return list(self._bot(token).updates)

    def block(self, chat_id: int | str) -> None:
        """``sendMessage`` to this chat answers 403 "Forbidden: bot was blocked by the user"."""
        self._blocked.add(chat_id)

    def set_webhook(self, url: str, *, token: str | None = None) -> None:
        """Set a webhook, so ``getUpdates`` answers 409 until ``deleteWebhook``."""
        bot = self._bot(token)
        bot.webhook_url = url
        bot.wake()

    # ------------------------------------------------------------------ fault injection
    def fail_next(self, n: int = 1, *, status: int = 429, retry_after: float | None = 3,
                  description: str | None = None, method: str | None = None, token: str | None = None,
                  body: str | None = None) -> None:
        """Answer the next ``n`` matching requests with an error.

        429 gets Telegram's shape ``{"ok": false, "error_code": 429, "description": "Too Many Requests:
        retry after 3", "parameters": {"retry_after": 3}}``; other statuses ignore ``retry_after``.
        ``body`` replaces the JSON with a text/html body (what an nginx in front of Telegram sends on 502).
        ``method`` / ``token`` restrict which requests match (default: any).
        """
        if status == 429 and description is None:
            description = f"Too Many Requests: retry after {_num(retry_after)}" if retry_after is not None else None
        self._faults.append(_Fault("error", n, _low(method), token, status=status,
                                   retry_after=retry_after if status == 429 else None,
                                   description=description, body=body))

    def delay_next(self, seconds: float, n: int = 1, *, method: str | None = None, token: str | None = None) -> None:
        """Hold the next ``n`` matching requests ``seconds`` (real time) before handling them."""
        self._faults.append(_Fault("delay", n, _low(method), token, seconds=seconds))

    def drop_next(self, n: int = 1, *, method: str | None = None, token: str | None = None) -> None:
        """Abort the connection of the next ``n`` matching requests without answering (a network failure)."""
        self._faults.append(_Fault("drop", n, _low(method), token))

    def drop_connections(self) -> int:
        """Abort every open connection now, pending long polls included; returns how many."""
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        return len(writers)

    # ------------------------------------------------------------------ observation
    @property
    def counts(self) -> collections.Counter[str]:
        """Requests per method (``api.counts["getUpdates"]``)."""
        return collections.Counter(r.method for r in self.requests)

    def times(self, method: str | None = None) -> list[float]:
        """Arrival times of the requests for ``method`` (all methods when None)."""
        low = _low(method)
        return [r.at for r in self.requests if low is None or r.method.lower() == low]

    def calls(self, method: str) -> list[BotAPIRequest]:
        """The requests for ``method``, in order."""
        return [r for r in self.requests if r.method.lower() == method.lower()]

    async def wait_until(self, predicate: Callable[["FakeBotAPI"], bool], *, timeout: float = 10.0) -> None:
        """Wait (real time) until ``predicate(api)`` is true; checked after every request and update.

        Raises:
            TimeoutError: it stayed false for ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"FakeBotAPI condition still false after {timeout}s")
            event = self._activity
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.05))

    async def wait_for_requests(self, method: str, n: int = 1, *, timeout: float = 10.0) -> None:
        """Wait until ``method`` was requested at least ``n`` times."""
        await self.wait_until(lambda api: len(api.calls(method)) >= n, timeout=timeout)

    async def wait_for_sent(self, n: int = 1, *, timeout: float = 10.0) -> None:
        """Wait until at least ``n`` messages were sent."""
        await self.wait_until(lambda api: len(api.sent) >= n, timeout=timeout)

    # ------------------------------------------------------------------ internals
    def _bot(self, token: str | None) -> _Bot:
        key = token or self.token
        if key not in self._bots:
            raise KeyError("unknown bot token (add it with add_token)")
        return self._bots[key]

    def _now(self) -> float:
        return self._clock.monotonic() if self._clock is not None else time.monotonic()

    def _wall(self) -> float:
        return self._clock.wall() if self._clock is not None else time.time()

    def _bump(self) -> None:
        event, self._activity = self._activity, asyncio.Event()
        event.set()

    def _take_fault(self, method: str, token: str) -> list[_Fault]:
        taken: list[_Fault] = []
        kinds: set[str] = set()
        for fault in self._faults:
            if fault.kind not in kinds and fault.remaining > 0 and fault.matches(method, token):
                fault.remaining -= 1
                kinds.add(fault.kind)
                taken.append(fault)
        self._faults = [f for f in self._faults if f.remaining > 0]
        return taken

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    break
                target, method, body, headers = request
                try:
                    status, payload, raw = await self._respond(target, method, body, headers)
                except _Drop:
                    writer.transport.abort()
                    return
                data = raw.encode() if raw is not None else json.dumps(payload).encode()
                ctype = b"text/html" if raw is not None else b"application/json"
                out = conn.send(h11.Response(status_code=status, headers=[
                    (b"content-type", ctype), (b"content-length", str(len(data)).encode()), (b"server", b"FakeBotAPI"),
                ]))
                out = (out or b"") + (conn.send(h11.Data(data=data)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
                writer.write(out)
                await writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            self._handlers.discard(task)

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader
                            ) -> tuple[str, str, bytes, dict[str, str]] | None:
        req: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data and req is None:
                    return None
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request):
                req = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > _MAX_BODY:
                    raise ConnectionError("request body too large")
            elif isinstance(event, h11.EndOfMessage):
                assert req is not None
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in req.headers}
                return req.target.decode("latin-1"), req.method.decode(), bytes(body), headers

    async def _respond(self, target: str, http_method: str, body: bytes, headers: dict[str, str]
                       ) -> tuple[int, Any, str | None]:
        path, _, query = target.partition("?")
        parts = path.strip("/").split("/")
        if len(parts) != 2 or not parts[0].startswith("bot"):
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}, None
        token, method = urllib.parse.unquote(parts[0][3:]), parts[1]
        method = _CANONICAL.get(method.lower(), method)
        try:
            params = _params(query, body, headers.get("content-type", ""))
        except ValueError as exc:
            params = {}
            bad: str | None = str(exc)
        else:
            bad = None
        authorized = token in self._bots and token not in self._revoked
        self.requests.append(BotAPIRequest(method, params, self._now(), authorized))
        self._bump()
        try:
            for fault in self._take_fault(method, token):
                if fault.kind == "delay":
                    await asyncio.sleep(fault.seconds)
                elif fault.kind == "drop":
                    raise _Drop()
                else:
                    if fault.body is not None:
                        raise _Reply(fault.status, raw=fault.body)
                    raise _error(fault.status, fault.description, retry_after=_num(fault.retry_after))
            if not authorized:
                raise _error(401)
            if bad is not None:
                raise _error(400, f"Bad Request: {bad}")
            bot = self._bots[token]
            handler = getattr(self, f"_m_{method.lower()}", None)
            if handler is None:
                raise _error(404)
            result = await handler(bot, params)
            return 200, {"ok": True, "result": result}, None
        except _Reply as reply:
            return reply.status, reply.body, reply.raw

    async def _m_getme(self, bot: _Bot, params: Mapping[str, Any]) -> Any:
        return {"id": bot.id, "is_bot": True, "first_name": "Tether Fake Bot", "username": bot.username,
                "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}

    async def _m_getupdates(self, bot: _Bot, params: Mapping[str, Any]) -> Any:
        offset = _number(params, "offset", 0)
        limit = min(100, max(1, _number(params, "limit", 100)))
        timeout = min(self._max_poll, max(0.0, _number(params, "timeout", 0.0, float)))
        if bot.webhook_url:
            raise _error(409, _WEBHOOK_CONFLICT)
        if offset > 0:  # confirm: Telegram forgets every update below offset
            bot.updates = [u for u in bot.updates if u["update_id"] >= offset]
        elif offset < 0:
            bot.updates = bot.updates[offset:]
        bot.poll_generation += 1
        generation = bot.poll_generation
        bot.wake()  # an older poll sees the new generation and ends with 409
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = bot.changed
            if generation != bot.poll_generation:
                raise _error(409)
            if bot.webhook_url:
                raise _error(409, _WEBHOOK_CONFLICT)
            ready = bot.updates[:limit]
            remaining = deadline - loop.time()
            if ready or remaining <= 0 or self._closing:
                return ready
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    async def _m_sendmessage(self, bot: _Bot, params: Mapping[str, Any]) -> Any:
        chat_id = params.get("chat_id")
        if chat_id in (None, ""):
            raise _error(400, "Bad Request: chat_id is empty")
        chat_id = _chat_id(chat_id)
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _error(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            raise _error(400, "Bad Request: message is too long")
        if chat_id in self._blocked:
            raise _error(403, "Forbidden: bot was blocked by the user")
        message: dict[str, Any] = {
            "message_id": bot.next_message_id,
            "from": {"id": bot.id, "is_bot": True, "first_name": "Tether Fake Bot", "username": bot.username},
            "chat": _chat(chat_id),
            "date": int(self._wall()),
            "text": text,
        }
        for key in ("parse_mode", "reply_to_message_id", "reply_markup", "disable_notification"):
            if key in params:
                message[key] = params[key]
        bot.next_message_id += 1
        self.sent.append(message)
        self._bump()
        return message

    async def _m_deletewebhook(self, bot: _Bot, params: Mapping[str, Any]) -> Any:
        bot.webhook_url = ""
        if _truthy(params.get("drop_pending_updates")):
            bot.updates.clear()
        return True

    async def _m_setwebhook(self, bot: _Bot, params: Mapping[str, Any]) -> Any:
        url = params.get("url") or ""
        bot.webhook_url = str(url)
        bot.wake()
        return True

    async def _m_getwebhookinfo(self, bot: _Bot, params: Mapping[str, Any]) -> Any:
        return {"url": bot.webhook_url, "has_custom_certificate": False, "pending_update_count": len(bot.updates)}


def _params(query: str, body: bytes, content_type: str) -> dict[str, Any]:
    params: dict[str, Any] = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    if not body:
        return params
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "application/json":
        try:
            data = json.loads(body)
        except ValueError:
            raise ValueError("can't parse JSON body") from None
        if not isinstance(data, dict):
            raise ValueError("JSON body must be an object")
        params.update(data)
    elif ctype == "application/x-www-form-urlencoded":
        params.update(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    elif ctype == "multipart/form-data":  # aiogram and others send forms this way
        msg = email.message_from_bytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body,
                                       policy=email.policy.HTTP)
        if not msg.is_multipart():
            raise ValueError("can't parse multipart body")
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name:
                params[str(name)] = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    else:
        raise ValueError(f"unsupported content type {ctype or 'none'}; send JSON or a form")
    return params


def _number(params: Mapping[str, Any], key: str, default: Any, kind: type = int) -> Any:
    try:
        return kind(params.get(key, default))
    except (TypeError, ValueError):
        raise _error(400, f"Bad Request: invalid {key}") from None


def _chat_id(value: Any) -> int | str:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)
    return value


def _chat(chat_id: int | str) -> dict[str, Any]:
    if isinstance(chat_id, int) and chat_id > 0:
        return {"id": chat_id, "type": "private", "first_name": "Tester"}
    if isinstance(chat_id, str):
        return {"id": chat_id, "type": "channel", "username": chat_id.lstrip("@")}
    return {"id": chat_id, "type": "supergroup", "title": "Test group"}


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _num(value: float | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


def _low(method: str | None) -> str | None:
    return method.lower() if method else None


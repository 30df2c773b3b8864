"""A small Telegram Bot API client with typed errors and a token that never leaks.

Re-exported by :mod:`tether.service.connectors.telegram`; the alert engine's Telegram action and the
``telegram-bot`` connector both use it. Errors translate Telegram's ``{"ok": false, "error_code",
"description", "parameters": {"retry_after"}}`` answers and httpx's transport errors at this boundary::

    LinkError
    └── BotAPIError                status_code, error_code, description, retry_after, method
        ├── BotAPIUnauthorized     401: the token is wrong or revoked (also a tether.AuthError): never retried
        ├── BotAPIForbidden        403: e.g. "bot was blocked by the user" (about one chat, not the token;
        │                          also a tether MessageRejected: the service dead-letters that message)
        ├── BotAPIBadRequest       400 and other 4xx: the request can never succeed as it is
        │   └── InvalidBotPayload  rejected locally before sending (classified like a 400)
        ├── BotAPIConflict         409: another getUpdates consumer, or a webhook is set
        ├── BotAPIRateLimited      429: wait ``retry_after`` seconds, exactly, or longer
        ├── BotAPIServerError      5xx or an unreadable answer: transient
        └── BotAPIConnectionError  network failure (also a ConnectionError)
            └── BotAPITimeout      no answer in time (also a TimeoutError)

Every error carries ``status_code`` (None for network errors) and, with a wait, ``retry_after`` and
``headers = {"Retry-After": ...}``, so :func:`tether._classify.classify_exception` and the recovery
engine classify them like any HTTP failure: 401 AUTH, 429 RATE_LIMIT with the wait, 5xx TEMPORARY,
network CONNECTION.

The token is a secret that Telegram puts in the URL path, so it is masked as ``bot***`` in every
message, repr and log line produced here, including httpx's own request log.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Mapping

import httpx

from ..._clock import SYSTEM_CLOCK, Clock
from ..._errors import AuthError, ConfigError, LinkError, MessageRejected

__all__ = [
    "DEFAULT_API_BASE",
    "BotAPIClient",
    "BotAPIError",
    "BotAPIUnauthorized",
    "BotAPIForbidden",
    "BotAPIBadRequest",
    "InvalidBotPayload",
    "BotAPIConflict",
    "BotAPIRateLimited",
    "BotAPIServerError",
    "BotAPIConnectionError",
    "BotAPITimeout",
    "mask_token",
]

DEFAULT_API_BASE = "https://api.telegram.org"
MASK = "bot***"

# ``/bot<anything>/`` in a URL path: the token, whatever its shape.
_URL_TOKEN_RE = re.compile(r"/bot[^/\s\"'?#]+")
# A Telegram-shaped token in free text: ``<bot id>:<secret>``.
_TEXT_TOKEN_RE = re.compile(r"\b(?:bot)?\d{5,}:[A-Za-z0-9_\-]{20,}")


def mask_token(text: Any, token: str | None = None) -> str:
    """Return ``text`` with a bot token masked as ``bot***`` (the given one, and any in a Bot API URL)."""
    s = text if isinstance(text, str) else str(text)
    if token:
        s = s.replace(f"bot{token}", MASK).replace(token, MASK)
    s = _URL_TOKEN_RE.sub("/" + MASK, s)
    return _TEXT_TOKEN_RE.sub(MASK, s)


class _MaskTokens(logging.Filter):
    """httpx logs every request URL at INFO, and Telegram's URLs hold the token: mask it at the source."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(mask_token(a) if isinstance(a, (str, httpx.URL)) else a for a in record.args)
        if isinstance(record.msg, str) and "/bot" in record.msg:
            record.msg = mask_token(record.msg)
        return True


def _install_log_mask() -> None:
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _MaskTokens) for f in logger.filters):
            logger.addFilter(_MaskTokens())


_install_log_mask()


class BotAPIError(LinkError):
    """The Bot API refused a request or could not be reached.

    Attributes:
        method: the Bot API method (``getUpdates``).
        status_code: the HTTP status (None for network errors).
        error_code: Telegram's ``error_code`` (usually the status).
        description: Telegram's ``description`` ("Too Many Requests: retry after 3").
        retry_after: seconds Telegram asked us to wait, exactly as it said, or None.
        parameters: Telegram's ``parameters`` object (``retry_after``, ``migrate_to_chat_id``).
        headers: ``{"Retry-After": ...}`` when there is a wait, so generic HTTP classifiers see it.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        status_code: int | None = None,
        error_code: int | None = None,
        description: str = "",
        retry_after: float | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.status_code = status_code
        self.error_code = error_code if error_code is not None else status_code
        self.description = description
        self.retry_after = retry_after
        self.parameters = dict(parameters or {})
        self.headers: dict[str, str] | None = (
            {"Retry-After": _fmt(retry_after)} if retry_after is not None else None
        )


class BotAPIUnauthorized(BotAPIError, AuthError):
    """401: the token is wrong or was revoked. Retrying cannot help, so nothing retries it."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        BotAPIError.__init__(self, message, **kwargs)
        self.status = self.status_code  # AuthError's attribute
        self.code = self.error_code


class BotAPIForbidden(BotAPIError, MessageRejected):
    """403: the bot may not do this (blocked by the user, kicked from the group): about one chat.

    A :class:`tether._errors.MessageRejected` too, so the service dead-letters the one message instead
    of retrying it (and holding up the session's other chats) until its attempts run out.
    """


class BotAPIBadRequest(BotAPIError):
    """400 (and other 4xx): the request can never succeed as it is; ``description`` says why."""

    @property
    def migrate_to_chat_id(self) -> int | None:
        """The new id when a group became a supergroup (Telegram's ``migrate_to_chat_id``)."""
        value = self.parameters.get("migrate_to_chat_id")
        return value if isinstance(value, int) else None


class InvalidBotPayload(BotAPIBadRequest, ValueError):
    """The payload was rejected before sending (no chat_id, no text, not JSON); classified like a 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message, method="sendMessage", status_code=400, description=message)


class BotAPIConflict(BotAPIError):
    """409: another process polls getUpdates with this token, or a webhook is set."""


class BotAPIRateLimited(BotAPIError):
    """429: flood control. Wait :attr:`retry_after` seconds (never less) before the next request."""


class BotAPIServerError(BotAPIError):
    """5xx, or an answer that is not Bot API JSON: transient, retried with backoff."""


class BotAPIConnectionError(BotAPIError, ConnectionError):
    """The Bot API could not be reached or the connection broke: retried with backoff."""


class BotAPITimeout(BotAPIConnectionError, TimeoutError):
    """No answer within the timeout."""


def _fmt(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def error_from_answer(method: str, status: int, body: Any) -> BotAPIError:
    """Build the typed error for a non-ok Bot API answer (``body`` is the decoded JSON, or None)."""
    if not isinstance(body, dict):
        kind = BotAPIServerError if status >= 500 or status < 400 else BotAPIBadRequest
        return kind(f"{method} failed: HTTP {status} (not a Bot API answer)", method=method, status_code=status)
    code = body.get("error_code")
    error_code = code if isinstance(code, int) and not isinstance(code, bool) else status
    description = str(body.get("description") or f"HTTP {status}")
    params = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    retry_after = params.get("retry_after")
    if not isinstance(retry_after, (int, float)) or isinstance(retry_after, bool) or retry_after < 0:
        retry_after = None
    effective = status if status >= 400 else error_code
    kind: type[BotAPIError]
    if effective == 401:
        kind = BotAPIUnauthorized
    elif effective == 403:
        kind = BotAPIForbidden
    elif effective == 409:
        kind = BotAPIConflict
    elif effective == 429:
        kind = BotAPIRateLimited
    elif effective >= 500:
        kind = BotAPIServerError
    else:
        kind = BotAPIBadRequest
    message = f"{method} failed: {error_code} {description}"
    return kind(message, method=method, status_code=effective, error_code=error_code, description=description,
                retry_after=float(retry_after) if retry_after is not None else None, parameters=params)


class BotAPIClient:
    """Calls Telegram Bot API methods and raises typed :class:`BotAPIError` subclasses.

    Example::

        async with BotAPIClient("https://api.telegram.org", token) as bot:
            me = await bot.get_me()
            await bot.send_message(42, "deploy finished")

    Args:
        api_base: the server, without ``/bot<token>`` (a local Bot API server or a FakeBotAPI ``url``).
        token: the bot token from @BotFather. Never shown: reprs and errors say ``bot***``.
        clock: the clock for :attr:`last_request_at`.
        http_client: an ``httpx.AsyncClient`` to share (not closed by :meth:`aclose`); one is made otherwise.
        timeout: seconds for connect, write and read of ordinary calls (long polls add their own wait).
    """

    def __init__(
        self,
        api_base: str = DEFAULT_API_BASE,
        token: str = "",
        *,
        clock: Clock | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not isinstance(token, str) or not token or any(c in token for c in "/?# \t\r\n"):
            raise ConfigError("the bot token is missing or malformed: it looks like '123456:ABC-DEF...' (@BotFather)")
        base = str(api_base).rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ConfigError(f"api_base must start with http:// or https://, got {mask_token(base, token)!r}")
        self.api_base = base
        self._token = token
        self._clock = clock or SYSTEM_CLOCK
        self._timeout = timeout
        self._own_client = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self.last_request_at: float | None = None

    def __repr__(self) -> str:
        return f"BotAPIClient(api_base={self.api_base!r}, token={MASK!r})"

    async def __aenter__(self) -> "BotAPIClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._own_client:
            await self._http.aclose()

    def mask(self, text: Any) -> str:
        """``text`` with this client's token masked."""
        return mask_token(text, self._token)

    async def call(self, method: str, params: Mapping[str, Any] | None = None, *, read_timeout: float | None = None) -> Any:
        """Call ``method`` with ``params`` (sent as JSON) and return its ``result``.

        Raises:
            BotAPIError: a subclass saying what went wrong (see the module docstring).
        """
        url = f"{self.api_base}/bot{self._token}/{method}"
        timeout = httpx.Timeout(self._timeout, read=read_timeout if read_timeout is not None else self._timeout)
        self.last_request_at = self._clock.wall()
        try:
            response = await self._http.post(url, json=dict(params or {}), timeout=timeout)
        except httpx.TimeoutException as exc:
            raise self._translate(BotAPITimeout, method, f"no answer in time ({type(exc).__name__})", exc) from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise ConfigError(f"api_base {self.api_base!r} is not a usable URL: {self.mask(exc)}") from None
        except httpx.TransportError as exc:
            raise self._translate(BotAPIConnectionError, method, f"{type(exc).__name__}: {exc}", exc) from None
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if response.status_code == 200 and isinstance(body, dict) and body.get("ok") is True:
            return body.get("result")
        raise error_from_answer(method, response.status_code, body)

    def _translate(self, kind: type[BotAPIError], method: str, text: str, exc: BaseException) -> BotAPIError:
        error = kind(f"{method} failed: {self.mask(text)}", method=method)
        # Keep the cause for debugging only when it cannot reveal the token (httpx errors hold the URL).
        if self._token not in str(exc) and self._token not in repr(exc):
            error.__cause__ = exc
        return error

    async def get_me(self) -> dict[str, Any]:
        """The bot's User object (a cheap token check)."""
        return await self.call("getMe")

    async def get_updates(
        self,
        offset: int | None = None,
        *,
        limit: int = 100,
        timeout: float = 0,
        allowed_updates: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Long-poll for updates from ``offset`` on (confirming everything below it).

        Args:
            offset: the first update_id wanted (last seen + 1); None on the very first call.
            limit: at most this many updates (1-100).
            timeout: seconds Telegram may hold the request open waiting for an update.
            allowed_updates: update types to receive (None: Telegram's current setting).
        """
        params: dict[str, Any] = {"limit": limit, "timeout": _fmt_number(timeout)}
        if offset is not None:
            params["offset"] = offset
        if allowed_updates is not None:
            params["allowed_updates"] = list(allowed_updates)
        result = await self.call("getUpdates", params, read_timeout=self._timeout + max(0.0, float(timeout)))
        if not isinstance(result, list):
            raise BotAPIServerError("getUpdates failed: the result is not a list", method="getUpdates", status_code=200)
        return result

    async def send_message(self, chat_id: int | str, text: str, **kw: Any) -> dict[str, Any]:
        """Send a text message; extra keywords are sendMessage parameters (``parse_mode``, ...)."""
        return await self.call("sendMessage", {"chat_id": chat_id, "text": text, **kw})

    async def delete_webhook(self, *, drop_pending_updates: bool = False) -> bool:
        """Remove the webhook so getUpdates works (pending updates are kept unless asked)."""
        return bool(await self.call("deleteWebhook", {"drop_pending_updates": drop_pending_updates}))


def _fmt_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def parse_payload(payload: Any) -> dict[str, Any]:
    """sendMessage parameters from an outbox payload: a dict, or JSON text/bytes of one.

    Raises:
        InvalidBotPayload: not a JSON object, or without ``chat_id`` / a non-empty ``text``.
    """
    data = payload
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidBotPayload("telegram-bot payload must be UTF-8 JSON like {\"chat_id\": 42, \"text\": \"hi\"}") from None
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            raise InvalidBotPayload("telegram-bot payload must be JSON like {\"chat_id\": 42, \"text\": \"hi\"}") from None
    if not isinstance(data, Mapping):
        raise InvalidBotPayload("telegram-bot payload must be an object like {\"chat_id\": 42, \"text\": \"hi\"}")
    chat_id = data.get("chat_id")
    if chat_id is None or isinstance(chat_id, bool) or not isinstance(chat_id, (int, str)) or chat_id == "":
        raise InvalidBotPayload("telegram-bot payload needs 'chat_id' (an integer id or '@channelname')")
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InvalidBotPayload("telegram-bot payload needs a non-empty 'text'")
    return dict(data)

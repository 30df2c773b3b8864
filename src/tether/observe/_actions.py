"""Alert actions: where notifications go. Each is ``async send(notification)``; failures raise
:class:`tether.DeliveryError` with a redacted message (a bot token in a URL never leaks).

* :class:`WebhookAction`: JSON POST, retried with backoff on network errors, 5xx and 429; optional
  HMAC-SHA256 signature in ``X-Tether-Signature``.
* :class:`EmailAction`: SMTP via the stdlib in a worker thread (STARTTLS / SSL / login optional).
* :class:`TelegramAction`: ``sendMessage`` through the Bot API (``api_base`` configurable).
* :class:`RestartAction`: calls an injected ``async restart(session)`` for each firing alert with a
  ``session`` label.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence, runtime_checkable

import httpx

from .._backoff import Backoff
from .._classify import parse_retry_after
from .._clock import SYSTEM_CLOCK, Clock
from .._errors import DeliveryError
from ._engine import FIRING, Notification
from ._redact import redact, register_secret

__all__ = ["AlertAction", "WebhookAction", "EmailAction", "TelegramAction", "RestartAction"]


@runtime_checkable
class AlertAction(Protocol):
    """Something that delivers a :class:`Notification`. ``name`` is what rules refer to."""

    name: str

    async def send(self, notification: Notification) -> None: ...


async def _post_with_retry(
    client: httpx.AsyncClient, url: str, *, content: bytes, headers: Mapping[str, str], attempts: int,
    backoff: Backoff, clock: Clock, what: str,
) -> httpx.Response:
    """POST until a 2xx; retry transport errors, 5xx and 429 (honouring Retry-After); 4xx fail at once."""
    backoff = backoff.clone()
    last = ""
    for attempt in range(1, attempts + 1):
        wait: float | None = None
        try:
            resp = await client.post(url, content=content, headers=dict(headers))
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if resp.is_success:
                return resp
            last = f"HTTP {resp.status_code}"
            if resp.status_code != 429 and resp.status_code < 500:
                raise DeliveryError(redact(f"{what} refused the notification: {last} {resp.text[:200]}"), action=what)
            wait = parse_retry_after(resp.headers.get("retry-after"), now=clock.wall()) or _body_retry_after(resp)
        if attempt == attempts:
            break
        delay = next(backoff, backoff.cap)
        await clock.sleep(max(delay, min(wait or 0.0, 300.0)))  # never sooner than the server asked
    raise DeliveryError(redact(f"{what} failed after {attempts} attempts: {last}"), action=what)


def _body_retry_after(resp: httpx.Response) -> float | None:
    """Telegram names its flood wait in the body: ``{"parameters": {"retry_after": 3}}``."""
    try:
        value = resp.json().get("parameters", {}).get("retry_after")
        return float(value) if value is not None else None
    except (ValueError, AttributeError, TypeError):
        return None


class WebhookAction:
    """POST the notification as JSON to ``url``.

    Args:
        url: the receiver.
        secret: when set, ``X-Tether-Signature: sha256=<hex HMAC of the body>`` is added.
        headers: extra headers (values are registered as secrets when their name looks secret).
        attempts: total tries per notification.
        backoff: delays between tries (default 0.5 s doubling to 30 s, full jitter).
        timeout: seconds per request.
        clock: sleeps between tries run on it.
        client: an httpx.AsyncClient to reuse (not closed by us).
        name: the action name rules refer to.
    """

    def __init__(self, url: str, *, secret: str | None = None, headers: Mapping[str, str] | None = None,
                 attempts: int = 5, backoff: Backoff | None = None, timeout: float = 5.0, clock: Clock | None = None,
                 client: httpx.AsyncClient | None = None, name: str = "webhook") -> None:
        self.url = url
        self.name = name
        self._secret = secret.encode() if secret else None
        self._headers = dict(headers or {})
        self.attempts = max(1, attempts)
        self.backoff = backoff or Backoff(base=0.5, cap=30.0)
        self.timeout = timeout
        self.clock = clock or SYSTEM_CLOCK
        self._client = client
        register_secret(secret)

    def body(self, notification: Notification) -> bytes:
        """The JSON body sent for ``notification`` (redacted)."""
        return json.dumps(notification.to_dict(), default=str, sort_keys=True).encode()

    def sign(self, body: bytes) -> str | None:
        """The signature header value for ``body``, or None without a secret."""
        if self._secret is None:
            return None
        return "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()

    async def send(self, notification: Notification) -> None:
        body = redact(self.body(notification).decode()).encode()
        headers = {"content-type": "application/json", "user-agent": "tether-alerts", **self._headers}
        sig = self.sign(body)
        if sig:
            headers["x-tether-signature"] = sig
        client = self._client or httpx.AsyncClient(timeout=self.timeout)
        try:
            await _post_with_retry(client, self.url, content=body, headers=headers, attempts=self.attempts,
                                   backoff=self.backoff, clock=self.clock, what=self.name)
        finally:
            if self._client is None:
                await client.aclose()

    def __repr__(self) -> str:
        return f"WebhookAction({redact(self.url)!r}, name={self.name!r})"


class EmailAction:
    """Send the notification by SMTP (stdlib ``smtplib`` in a worker thread).

    Args:
        host / port: the SMTP server.
        sender: the From address.
        to: recipients.
        username / password: login, when the server needs it (the password is registered as a secret).
        starttls: upgrade with STARTTLS; ``use_ssl``: implicit TLS (port 465).
        timeout: socket timeout in seconds.
        subject_prefix: put before the notification title.
        name: the action name rules refer to.
    """

    def __init__(self, host: str, port: int = 25, *, sender: str, to: Sequence[str], username: str | None = None,
                 password: str | None = None, starttls: bool = False, use_ssl: bool = False, timeout: float = 10.0,
                 subject_prefix: str = "[tether] ", name: str = "email") -> None:
        self.host, self.port, self.sender, self.to = host, int(port), sender, list(to)
        self.username = username
        self._password = password
        self.starttls, self.use_ssl, self.timeout = starttls, use_ssl, timeout
        self.subject_prefix = subject_prefix
        self.name = name
        register_secret(password)

    def message(self, notification: Notification) -> EmailMessage:
        """The email for ``notification`` (text redacted)."""
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg["Subject"] = redact(self.subject_prefix + notification.title())
        msg.set_content(redact(notification.text()) + "\n\n" + redact(json.dumps(notification.to_dict(), indent=2, default=str)))
        return msg

    def _send_sync(self, msg: EmailMessage) -> None:
        cls = smtplib.SMTP_SSL if self.use_ssl else smtplib.SMTP
        with cls(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls and not self.use_ssl:
                smtp.starttls(context=ssl.create_default_context())
            if self.username and self._password:
                smtp.login(self.username, self._password)
            smtp.send_message(msg)

    async def send(self, notification: Notification) -> None:
        try:
            await asyncio.to_thread(self._send_sync, self.message(notification))
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(redact(f"{self.name} to {self.host}:{self.port} failed: {exc}"), action=self.name) from None

    def __repr__(self) -> str:
        return f"EmailAction({self.host!r}, {self.port}, to={self.to!r}, name={self.name!r})"


class TelegramAction:
    """Send the notification text to a chat through the Telegram Bot API.

    The token is registered as a secret, so it is masked in every log line, error and response;
    ``repr`` never shows it.

    Args:
        token: the bot token.
        chat_id: where to send.
        api_base: the Bot API root (a local fake in tests).
        attempts / backoff / clock / timeout / client: as for :class:`WebhookAction`.
        name: the action name rules refer to.
    """

    def __init__(self, token: str, chat_id: int | str, *, api_base: str = "https://api.telegram.org", attempts: int = 3,
                 backoff: Backoff | None = None, timeout: float = 10.0, clock: Clock | None = None,
                 client: httpx.AsyncClient | None = None, name: str = "telegram") -> None:
        self._token = token
        self.chat_id = chat_id
        self.api_base = api_base.rstrip("/")
        self.attempts = max(1, attempts)
        self.backoff = backoff or Backoff(base=1.0, cap=30.0)
        self.timeout = timeout
        self.clock = clock or SYSTEM_CLOCK
        self._client = client
        self.name = name
        register_secret(token)

    async def send(self, notification: Notification) -> None:
        url = f"{self.api_base}/bot{self._token}/sendMessage"
        body = json.dumps({"chat_id": self.chat_id, "text": redact(notification.text())[:4000],
                           "disable_web_page_preview": True}).encode()
        client = self._client or httpx.AsyncClient(timeout=self.timeout)
        try:
            await _post_with_retry(client, url, content=body, headers={"content-type": "application/json"},
                                   attempts=self.attempts, backoff=self.backoff, clock=self.clock, what=self.name)
        finally:
            if self._client is None:
                await client.aclose()

    def __repr__(self) -> str:
        return f"TelegramAction(chat_id={self.chat_id!r}, api_base={self.api_base!r}, name={self.name!r})"


class RestartAction:
    """Restart the session of every firing, unsilenced alert that carries a ``session`` label.

    Args:
        restart: ``async restart(session_id)``, injected by the service (e.g. SessionManager.restart).
        label: the label holding the session id.
        name: the action name rules refer to.
    """

    #: rules get a restart only when they name this action: it is never a default destination
    default = False

    def __init__(self, restart: Callable[[str], Awaitable[Any]], *, label: str = "session", name: str = "restart") -> None:
        self._restart = restart
        self.label = label
        self.name = name
        self.restarted: list[str] = []

    async def send(self, notification: Notification) -> None:
        if notification.status != FIRING:
            return
        failed: list[str] = []
        for alert in notification.firing:
            session = alert["labels"].get(self.label)
            if not session:
                continue
            try:
                await self._restart(session)
                self.restarted.append(session)
            except Exception as exc:  # noqa: BLE001 - one failed restart must not stop the others
                failed.append(f"{session}: {type(exc).__name__}: {exc}")
        if failed:
            raise DeliveryError(redact(f"{self.name} failed for " + "; ".join(failed)), action=self.name)

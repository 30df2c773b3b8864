"""The ``telegram-bot`` connector: a Telegram bot over Bot API long polling that loses nothing.

Options (``{"kind": "telegram-bot", "options": {...}}``)::

    token             the bot token from @BotFather (required; secret: masked as bot***, cleared on logout)
    api_base          default https://api.telegram.org; a local Bot API server or FakeBotAPI.url
    poll_timeout      seconds Telegram may hold a getUpdates open (default 25; whole seconds for Telegram)
    limit             updates per getUpdates (1-100, default 100)
    allowed_updates   update types to receive (default: Telegram's current setting)
    delete_webhook    call deleteWebhook (keeping pending updates) before the first poll (default true)
    request_timeout   seconds for connect/write/read of every call, added to poll_timeout for polls
    max_attempts  backoff_base  backoff_cap   default to the service's [sessions] settings
    backoff_jitter    full | equal | decorrelated | none (default equal)
    retry_after_jitter  at most this many seconds added to a 429 retry_after (never subtracted; default 0.5)
    conflict_delay    the shortest wait after a 409 Conflict (default 5 s)

Delivery: updates are delivered in update_id order with the stable id ``tg:{update_id}``; the next
offset is saved (``{"offset": n, "epoch": "bot:<id>"}``) only after ``ctx.deliver()`` returned for
them, and only then sent to Telegram (which forgets what is below it). A crash between the two
re-delivers; the inbox drops the duplicate by id. Nothing is confirmed to Telegram before it is stored.

Failures: 401 puts the session in FAILED with no retry (the token is refused); 429 waits exactly
``retry_after`` plus a small added jitter; 5xx, network errors and timeouts back off and retry;
409 Conflict (another getUpdates consumer, or a webhook) says so and backs off at least
``conflict_delay``. ``stop()`` is intentional: it never reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, ClassVar, Literal, Mapping

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from ..._backoff import Backoff
from ..._classify import classify_exception
from ..._decision import ErrorClass
from ..._errors import AuthError, ConfigError, GaveUpError, LinkClosedError
from ..._events import BackingOff, Closed, Connected, Connecting, Disconnected, GaveUp
from ..._state import State, check_transition
from .._connector import ConnectorContext, InboundMessage, register_connector
from ._telegram_api import (
    DEFAULT_API_BASE,
    MASK,
    BotAPIBadRequest,
    BotAPIClient,
    BotAPIConflict,
    BotAPIConnectionError,
    BotAPIError,
    BotAPIForbidden,
    BotAPIRateLimited,
    BotAPIServerError,
    BotAPITimeout,
    BotAPIUnauthorized,
    InvalidBotPayload,
    mask_token,
    parse_payload,
)

__all__ = [
    "TelegramBotConnector",
    "TelegramBotOptions",
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
    "DEFAULT_API_BASE",
    "mask_token",
]

log = logging.getLogger("tether.service")

_STOP_TIMEOUT = 5.0


class TelegramBotOptions(BaseModel):
    """Options of a ``telegram-bot`` session (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    token: SecretStr = Field(..., description="bot token from @BotFather (123456:ABC-DEF...)")
    api_base: str = Field(DEFAULT_API_BASE, description="Bot API server, without /bot<token>")
    poll_timeout: float = Field(25.0, ge=0, le=50, description="seconds a getUpdates long poll may wait")
    limit: int = Field(100, ge=1, le=100, description="updates per getUpdates")
    allowed_updates: list[str] | None = Field(None, description="update types to receive")
    delete_webhook: bool = Field(True, description="deleteWebhook (keeping pending updates) before polling")
    request_timeout: float = Field(10.0, gt=0, description="seconds for connect/write/read of a call")
    max_attempts: int | None = Field(None, ge=1, description="failed attempts in a row before giving up")
    backoff_base: float | None = Field(None, gt=0)
    backoff_cap: float | None = Field(None, gt=0)
    backoff_jitter: Literal["full", "equal", "decorrelated", "none"] = "equal"
    retry_after_jitter: float = Field(0.5, ge=0, description="at most this many seconds added to a retry_after")
    conflict_delay: float = Field(5.0, ge=0, description="shortest wait after a 409 Conflict")

    @field_validator("token")
    @classmethod
    def _token_shape(cls, v: SecretStr) -> SecretStr:
        raw = v.get_secret_value()
        if not raw or any(c in raw for c in "/?# \t\r\n"):
            raise ValueError("must be the bot token from @BotFather, like 123456:ABC-DEF...")
        return v

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


def _options(raw: Mapping[str, Any] | TelegramBotOptions) -> TelegramBotOptions:
    if isinstance(raw, TelegramBotOptions):
        return raw
    try:
        return TelegramBotOptions.model_validate(dict(raw))
    except ValidationError as exc:
        # Name the field and say what is wrong; never echo the input (it may be the token).
        parts = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "options"
            msg = "unknown option (check the spelling)" if e["type"] == "extra_forbidden" else e["msg"]
            parts.append(f"{loc}: {msg}")
        raise ConfigError("telegram-bot options: " + "; ".join(parts)) from None


class TelegramBotConnector:
    """One session on one Telegram bot, kept polling through every failure that can heal.

    Args:
        ctx: what the service hands a connector (clock, deliver, emit, cursor).
        http_client: an ``httpx.AsyncClient`` to use (tests, shared pools); one is made otherwise.
    """

    kind: ClassVar[str] = "telegram-bot"

    def __init__(self, ctx: ConnectorContext, *, http_client: httpx.AsyncClient | None = None) -> None:
        self._ctx = ctx
        opts = _options(ctx.options)
        self._opts = opts
        d = ctx.defaults

        def pick(name: str, fallback: Any) -> Any:
            value = getattr(opts, name)
            if value is not None:
                return value
            return getattr(d, name, fallback) if d is not None else fallback

        self.max_attempts: int | None = pick("max_attempts", None)
        base = pick("backoff_base", 1.0)
        self._backoff = Backoff(base=base, factor=2.0, cap=max(pick("backoff_cap", 60.0), base), jitter=opts.backoff_jitter)
        self._token = opts.token.get_secret_value()
        self._client = BotAPIClient(opts.api_base, self._token, clock=ctx.clock, http_client=http_client,
                                    timeout=opts.request_timeout)
        self._rng = random.Random()
        self._state = State.IDLE
        self._task: asyncio.Task[None] | None = None
        self._offset: int | None = None
        self._epoch: str | None = None
        self._cursor_epoch: str | None = None
        self._webhook_checked = False
        self._attempt = 0
        self._down_since: float | None = None
        self._flood: dict[str, float] = {}  # chat_id -> monotonic time before which Telegram said wait
        self._failure: BaseException | None = None  # why the session is FAILED
        self._stats: dict[str, Any] = {
            "attempts": 0, "connects": 0, "disconnects": 0, "polls": 0, "updates_received": 0,
            "delivered": 0, "sent": 0, "send_errors": 0, "last_error": None, "last_error_at": None,
            "last_close_code": None, "last_close_reason": None, "last_poll_at": None, "up_since": None,
            "retry_after": None, "bot_username": None,
        }

    # ------------------------------------------------------------------ protocol
    @property
    def state(self) -> State:
        """Where the connector is: IDLE, CONNECTING, CONNECTED, BACKING_OFF, FAILED, CLOSING, CLOSED."""
        return self._state

    def stats(self) -> Mapping[str, Any]:
        """Counters and facts; ``last_poll_at`` (also ``last_heartbeat_at``) is the wall time of the last
        successful getUpdates. Never holds the token."""
        out = dict(self._stats)
        out["last_heartbeat_at"] = out["last_poll_at"]
        out["offset"] = self._offset
        out["max_attempts"] = self.max_attempts
        out["api_base"] = self._client.api_base
        return out

    def __repr__(self) -> str:
        return (f"TelegramBotConnector(session={self._ctx.session!r}, api_base={self._client.api_base!r}, "
                f"token={MASK!r}, state={self._state.value})")

    async def start(self) -> None:
        """Load the cursor and start polling in the background; returns at once."""
        if self._state is not State.IDLE:
            raise LinkClosedError(f"[{self._ctx.session}] telegram-bot connector was already started")
        cursor = await self._ctx.load_cursor()
        if cursor:
            offset = cursor.get("offset")
            if isinstance(offset, int) and not isinstance(offset, bool):
                self._offset = offset
            epoch = cursor.get("epoch")
            self._cursor_epoch = epoch if isinstance(epoch, str) else None
        self._spawn()

    async def send(self, payload: Any) -> None:
        """Send one message: ``payload`` is ``{"chat_id": ..., "text": ...}`` (plus sendMessage
        parameters), as a dict or JSON text.

        Raises:
            InvalidBotPayload: the payload can never be sent (no chat_id or text, not JSON).
            BotAPIError: Telegram refused (429 carries ``retry_after``) or could not be reached. After a
                429 a send to that chat fails at once, without a request, until ``retry_after`` passed.
            AuthError: the token is refused (the session is FAILED).
            LinkClosedError: the connector was stopped.
        """
        if self._state in (State.CLOSING, State.CLOSED):
            raise LinkClosedError(f"[{self._ctx.session}] telegram-bot session is stopped")
        if self._state is State.FAILED and isinstance(self._failure, AuthError):
            raise AuthError(f"[{self._ctx.session}] the bot token was refused (401); set a new token and restart",
                            status=401)
        params = parse_payload(payload)
        chat_id, text = params.pop("chat_id"), params.pop("text")
        now = self._ctx.clock.monotonic()
        not_before = self._flood.get(str(chat_id), 0.0)
        if now < not_before:
            # Whoever retries us (the outbox, a user) may come back early: never send before Telegram allowed.
            wait = not_before - now
            raise BotAPIRateLimited(f"sendMessage held: Telegram asked to wait {wait:.1f}s more for this chat",
                                    method="sendMessage", status_code=429, error_code=429, retry_after=wait)
        try:
            await self._client.send_message(chat_id, text, **params)
        except BotAPIError as exc:
            self._stats["send_errors"] += 1
            self._note_error(exc)
            if exc.retry_after is not None:
                now = self._ctx.clock.monotonic()
                if len(self._flood) > 1024:  # bounded: forget holds that are over
                    self._flood = {k: t for k, t in self._flood.items() if t > now}
                self._flood[str(chat_id)] = now + exc.retry_after
            if isinstance(exc, BotAPIUnauthorized):
                await self._fail_from_outside(exc)
            raise
        self._flood.pop(str(chat_id), None)
        self._stats["sent"] += 1

    async def stop(self) -> None:
        """Intentional close: cancel and await the poller, close the HTTP client. Never reconnects."""
        if self._state in (State.CLOSING, State.CLOSED):
            return
        self._set(State.CLOSING)
        await self._cancel_task()
        await self._client.aclose()
        self._set(State.CLOSED)
        log.info("[%s] telegram-bot stopped", self._ctx.session)
        self._emit(Closed(at=self._ctx.clock.wall()))

    async def reconnect(self) -> None:
        """Start polling again now: from FAILED (a new token was set by hand) or to force a fresh cycle."""
        if self._state in (State.CLOSING, State.CLOSED):
            raise LinkClosedError(f"[{self._ctx.session}] telegram-bot session is stopped")
        await self._cancel_task()
        if self._state is State.CONNECTED or self._state is State.CONNECTING:
            self._set(State.BACKING_OFF)
        self._backoff.reset()
        self._attempt = 0
        self._spawn()

    # ------------------------------------------------------------------ the loop
    def _spawn(self) -> None:
        self._failure = None
        self._task = asyncio.create_task(self._run(), name=f"tether-telegram-poller[{self._ctx.session}]")

    async def _cancel_task(self) -> None:
        task, self._task = self._task, None
        if task is None or task.done() or task is asyncio.current_task():
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=_STOP_TIMEOUT)
        if not done:  # pragma: no cover - deliver() ignoring cancellation
            log.error("[%s] telegram-bot poller did not stop within %ss", self._ctx.session, _STOP_TIMEOUT)
        else:
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        clock = self._ctx.clock
        while True:
            self._attempt += 1
            self._stats["attempts"] = self._attempt
            self._set(State.CONNECTING)
            self._emit(Connecting(self._attempt, at=clock.wall()))
            try:
                await self._connect()
                await self._poll_forever()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure is classified below; nothing escapes the task
                error = exc
            was_up = self._state is State.CONNECTED
            if was_up:
                self._stats["disconnects"] += 1
                self._down_since = clock.monotonic()
            elif self._down_since is None:
                self._down_since = clock.monotonic()
            self._note_error(error)
            code = getattr(error, "status_code", None)
            self._emit(Disconnected(code, self._reason(error), error, at=clock.wall()))
            delay, fatal = self._decide(error)
            if fatal is not None:
                self._give_up(fatal)
                return
            reason = self._reason(error)
            # A server-named wait (429) does not count as a failed attempt, but events and logs
            # number attempts from 1. The service logs the BackingOff event; this line is for debugging.
            shown = max(1, self._attempt + 1)
            log.debug("[%s] %s in %.1fs (attempt %d%s): %s", self._ctx.session,
                      "retrying" if isinstance(error, BotAPIRateLimited) else "reconnecting", delay,
                      shown, f"/{self.max_attempts}" if self.max_attempts else "", reason)
            self._set(State.BACKING_OFF)
            self._emit(BackingOff(shown, delay, reason, at=clock.wall()))
            await clock.sleep(delay)

    async def _connect(self) -> None:
        me = await self._client.get_me()
        bot_id = me.get("id") if isinstance(me, dict) else None
        self._epoch = f"bot:{bot_id}" if bot_id is not None else None
        self._stats["bot_username"] = me.get("username") if isinstance(me, dict) else None
        if self._cursor_epoch is not None and self._epoch is not None and self._cursor_epoch != self._epoch:
            # A different bot now: its update ids are another sequence, the old offset means nothing.
            log.warning("[%s] the token belongs to another bot than the saved cursor; polling from its start",
                        self._ctx.session)
            self._offset = None
        self._cursor_epoch = self._epoch
        if self._opts.delete_webhook and not self._webhook_checked:
            await self._client.delete_webhook(drop_pending_updates=False)
            self._webhook_checked = True
        clock = self._ctx.clock
        downtime = clock.monotonic() - self._down_since if self._down_since is not None else 0.0
        self._set(State.CONNECTED)
        self._stats["connects"] += 1
        self._stats["up_since"] = clock.wall()
        log.info("[%s] connected as @%s", self._ctx.session, self._stats["bot_username"])
        self._emit(Connected(self._attempt, downtime, at=clock.wall()))

    async def _poll_forever(self) -> None:
        opts, ctx = self._opts, self._ctx
        while True:
            updates = await self._client.get_updates(self._offset, limit=opts.limit, timeout=opts.poll_timeout,
                                                     allowed_updates=opts.allowed_updates)
            self._stats["polls"] += 1
            self._stats["last_poll_at"] = ctx.clock.wall()
            if self._attempt:  # a poll that worked ends the outage: backoff starts from its first step again
                self._attempt = 0
                self._stats["attempts"] = 0
                self._down_since = None
                self._stats["retry_after"] = None
                self._backoff.reset()
            next_offset = self._offset
            for update in sorted((u for u in updates if _update_id(u) is not None), key=_update_id):  # type: ignore[arg-type,return-value]
                uid: int = update["update_id"]
                if next_offset is not None and uid < next_offset:
                    continue  # confirmed already: a duplicate from a server that did not drop it
                self._stats["updates_received"] += 1
                await ctx.deliver(InboundMessage(
                    session=ctx.session, id=f"tg:{uid}", payload=update, received_at=ctx.clock.wall(),
                    cursor={"offset": uid + 1, "epoch": self._epoch}, meta=_meta(update),
                ))
                self._stats["delivered"] += 1
                next_offset = uid + 1
            if next_offset != self._offset:
                # Saved before Telegram hears the new offset: the position on disk never runs ahead
                # of what is stored, and Telegram never forgets an update we have not stored.
                await ctx.save_cursor({"offset": next_offset, "epoch": self._epoch})
                self._offset = next_offset

    # ------------------------------------------------------------------ decisions
    def _decide(self, error: BaseException) -> tuple[float, BaseException | None]:
        """The wait before the next attempt, or a fatal error (FAILED, no retry)."""
        c = classify_exception(error, now=self._ctx.clock.wall())
        if isinstance(error, (ConfigError, BotAPIUnauthorized)) or c.error_class is ErrorClass.AUTH:
            return 0.0, error
        if isinstance(error, BotAPIBadRequest) and not isinstance(error, InvalidBotPayload):
            # 400/404 on getMe/getUpdates: a wrong api_base, token format or option; retrying repeats it
            return 0.0, error
        retry_after = getattr(error, "retry_after", None)
        if retry_after is None and c.error_class in (ErrorClass.RATE_LIMIT, ErrorClass.FLOOD_WAIT):
            retry_after = c.retry_after
        if retry_after is not None:
            # The server named the wait: never less, jitter only adds (spreads a fleet's comeback).
            self._attempt -= 1  # a mandated wait is not a failed attempt of ours
            self._stats["retry_after"] = retry_after
            return retry_after + self._rng.uniform(0.0, self._opts.retry_after_jitter), None
        if self.max_attempts is not None and self._attempt >= self.max_attempts:
            return 0.0, GaveUpError(f"[{self._ctx.session}] gave up after {self._attempt} attempts: "
                                    f"{self._reason(error)}", attempts=self._attempt)
        try:
            delay = next(self._backoff)
        except StopIteration:
            return 0.0, GaveUpError(f"[{self._ctx.session}] gave up: backoff exhausted", attempts=self._attempt)
        if isinstance(error, BotAPIConflict):
            delay = max(delay, self._opts.conflict_delay)
        return delay, None

    def _reason(self, error: BaseException) -> str:
        if isinstance(error, BotAPIConflict):
            return (f"{error} (another process polls this bot, or a webhook is set: stop the other "
                    f"instance or call deleteWebhook)")
        if isinstance(error, BotAPIUnauthorized):
            return f"{error} (the bot token is wrong or revoked: get a new one from @BotFather)"
        text = str(error) or type(error).__name__
        return self._client.mask(text)

    def _note_error(self, error: BaseException) -> None:
        self._stats["last_error"] = self._reason(error)
        self._stats["last_error_at"] = self._ctx.clock.wall()
        self._stats["last_close_code"] = getattr(error, "status_code", None)
        self._stats["last_close_reason"] = self._stats["last_error"]

    def _give_up(self, error: BaseException) -> None:
        self._failure = error
        self._set(State.FAILED)
        log.error("[%s] gave up: %s", self._ctx.session, self._reason(error))
        self._emit(GaveUp(error, at=self._ctx.clock.wall()))

    async def _fail_from_outside(self, error: BaseException) -> None:
        """A send saw 401: the poller would see it too; stop it and fail once."""
        if self._state in (State.FAILED, State.CLOSING, State.CLOSED, State.IDLE):
            return
        await self._cancel_task()
        if self._state not in (State.FAILED, State.CLOSING, State.CLOSED):
            self._give_up(error)

    # ------------------------------------------------------------------ plumbing
    def _set(self, new: State) -> None:
        if new is self._state:
            return
        check_transition(self._state, new)
        self._state = new

    def _emit(self, event: Any) -> None:
        try:
            self._ctx.emit(event)
        except Exception:  # an observer's bug must not stop the bot
            log.exception("[%s] event observer failed", self._ctx.session)


def _update_id(update: Any) -> int | None:
    uid = update.get("update_id") if isinstance(update, dict) else None
    return uid if isinstance(uid, int) and not isinstance(uid, bool) else None


def _meta(update: Mapping[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"update_id": update["update_id"]}
    for kind, value in update.items():
        if kind != "update_id" and isinstance(value, dict):
            meta["type"] = kind
            chat = value.get("chat") or (value.get("message") or {}).get("chat")
            if isinstance(chat, dict) and "id" in chat:
                meta["chat_id"] = chat["id"]
            break
    return meta


register_connector("telegram-bot", TelegramBotConnector, options=TelegramBotOptions, secrets=("token",))

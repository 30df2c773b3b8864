"""The shipped rule packs: ``telegram``, ``websockets``, ``http``, ``generic`` and ``hints``.

The ``websockets``, ``http`` and ``generic`` packs delegate to the pure functions of
``tether._classify``, the same ones the Link's classifier uses, so one classification serves both.
Order matters: library-specific packs come before the generic OSError/timeout rules, because
several library errors subclass ``OSError`` or ``TimeoutError`` (python-socks proxy errors,
python-telegram-bot's ``BadRequest`` is a ``NetworkError``).
"""

from __future__ import annotations

from typing import Iterable

from .._classify import DEFAULT_AUTH_CODES, classify_connection_error, classify_http_error, classify_websockets_error
from .._decision import Classification, ErrorClass
from ._rules import Rule, RulePack, class_names, describe

__all__ = [
    "TELEGRAM",
    "WEBSOCKETS",
    "HTTP",
    "GENERIC",
    "HINTS",
    "DEFAULT_PACKS",
    "default_packs",
    "websockets_pack",
]

_RPC_CODE_ATTRS = ("code", "CODE")
_WAIT_ATTRS = ("seconds", "value", "x", "retry_after", "timeout")


def _rpc_code(exc: BaseException) -> int | None:
    for name in _RPC_CODE_ATTRS:
        value = getattr(exc, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _rpc_code_in(*codes: int):
    wanted = frozenset(codes)

    def predicate(exc: BaseException) -> bool:
        return _rpc_code(exc) in wanted

    return predicate


# python-socks / aiohttp-socks (ProxyError, ProxyConnectionError, ProxyTimeoutError; older SocksError),
# aiohttp's ClientProxyConnectionError / ClientHttpProxyError, httpx.ProxyError.
PROXY_RULE = Rule(
    ErrorClass.PROXY,
    names=frozenset(
        {
            "ProxyError",
            "ProxyConnectionError",
            "ProxyTimeoutError",
            "ProxyException",
            "SocksError",
            "SocksConnectionError",
            "ClientProxyConnectionError",
            "ClientHttpProxyError",
        }
    ),
)

_RPC = frozenset({"RPCError", "RpcError"})

#: Telethon, Pyrogram, aiogram and python-telegram-bot exceptions, recognised by class name and attributes.
TELEGRAM: RulePack = (
    PROXY_RULE,
    # the server named a wait: Telethon FloodWaitError.seconds, Pyrogram FloodWait.value (v1: .x),
    # aiogram 3 TelegramRetryAfter.retry_after (aiogram 2 RetryAfter.timeout), PTB RetryAfter.retry_after
    Rule(
        ErrorClass.FLOOD_WAIT,
        names=frozenset(
            {
                "FloodWaitError",
                "FloodPremiumWaitError",
                "SlowModeWaitError",
                "FloodTestPhoneWaitError",
                "FloodWait",
                "FloodPremiumWait",
                "SlowmodeWait",
                "TelegramRetryAfter",
                "RetryAfter",
            }
        ),
        retry_after=_WAIT_ATTRS,
    ),
    Rule(
        ErrorClass.AUTH,
        names=frozenset(
            {
                "AuthKeyUnregistered",
                "AuthKeyUnregisteredError",
                "AuthKeyInvalid",
                "AuthKeyInvalidError",
                "AuthKeyDuplicated",
                "AuthKeyDuplicatedError",
                "SessionRevoked",
                "SessionRevokedError",
                "SessionExpired",
                "SessionExpiredError",
                "UserDeactivated",
                "UserDeactivatedError",
                "UserDeactivatedBan",
                "UserDeactivatedBanError",
                "UserBanned",
                "Unauthorized",  # Pyrogram's 401 base class
                "UnauthorizedError",  # Telethon's 401 base class
                "TelegramUnauthorizedError",  # aiogram
                "InvalidToken",  # python-telegram-bot
            }
        ),
    ),
    # Flood without a named wait (Telethon FloodError, Pyrogram Flood, code 420) and RPC 429
    Rule(ErrorClass.RATE_LIMIT, names=frozenset({"FloodError", "Flood"}), retry_after=_WAIT_ATTRS),
    Rule(ErrorClass.TEMPORARY, names=frozenset({"TelegramServerError"})),
    Rule(ErrorClass.TEMPORARY, names=frozenset({"InternalServerError", "ServerError", "ServiceUnavailable"}) | _RPC,
         match=_rpc_code_in(500, 502, 503, 504, -500, -503)),
    Rule(ErrorClass.RATE_LIMIT, names=_RPC, match=_rpc_code_in(429, 420), retry_after=_WAIT_ATTRS),
    Rule(ErrorClass.AUTH, names=_RPC, match=_rpc_code_in(401)),
    Rule(
        ErrorClass.PERMANENT,
        names=frozenset(
            {
                "TelegramBadRequest",
                "TelegramNotFound",
                "TelegramForbiddenError",  # aiogram: the bot was blocked by this user (not our credentials)
                "TelegramEntityTooLarge",
                "BadRequest",  # PTB; must precede NetworkError, its parent class
                "Forbidden",
                "ChatMigrated",
            }
        ),
    ),
    Rule(ErrorClass.CONNECTION, names=frozenset({"TelegramNetworkError", "TimedOut", "NetworkError"})),
    # any other RPC error is a request Telegram will always refuse (seed: "other RPC errors: fail")
    Rule(ErrorClass.PERMANENT, names=_RPC),
)


def websockets_pack(*, auth_codes: Iterable[int] = DEFAULT_AUTH_CODES) -> RulePack:
    """The websockets pack (close codes, handshake statuses) with the given application auth codes."""
    codes = frozenset(auth_codes)

    def _ws(exc: BaseException, now: float) -> Classification | None:
        return classify_websockets_error(exc, now=now, auth_codes=codes)

    return (Rule(classify=_ws),)


#: ``websockets`` close codes and rejected handshakes (shared with the Link's classifier).
WEBSOCKETS: RulePack = websockets_pack()


def _http(exc: BaseException, now: float) -> Classification | None:
    return classify_http_error(exc, now=now)


#: HTTP statuses from httpx ``HTTPStatusError`` and aiohttp ``ClientResponseError``, with Retry-After.
HTTP: RulePack = (Rule(classify=_http),)


def _network(exc: BaseException, now: float) -> Classification | None:
    return classify_connection_error(exc)


def _tether_error(exc: BaseException, now: float) -> Classification | None:
    from .._errors import AuthError, RecoveryError

    if isinstance(exc, AuthError):
        return Classification(ErrorClass.AUTH, describe(exc), code=exc.status or exc.code)
    if isinstance(exc, RecoveryError):
        # an inner layer already retried and gave up: retrying here would multiply the outage
        return Classification(ErrorClass.PERMANENT, f"inner recovery gave up: {describe(exc)}")
    return None


#: OSError family, timeouts, asyncio/ssl errors, transport errors of httpx/aiohttp, programming errors.
GENERIC: RulePack = (
    PROXY_RULE,
    Rule(classify=_tether_error, names=frozenset({"TetherError"})),
    Rule(ErrorClass.PERMANENT, names=frozenset({"UnsupportedProtocol", "InvalidURL", "InvalidUrlClientError"})),
    Rule(classify=_network),
    Rule(
        ErrorClass.CONNECTION,
        names=frozenset({"TransportError", "TimeoutException", "ClientConnectionError", "ServerDisconnectedError", "ClientPayloadError"}),
    ),
    # a bug in the caller's code cannot be fixed by calling it again
    Rule(
        ErrorClass.PERMANENT,
        names=frozenset({"TypeError", "AttributeError", "NameError", "AssertionError", "NotImplementedError", "ImportError", "SyntaxError"}),
    ),
)


def _message_has(*words: str):
    def predicate(exc: BaseException) -> bool:
        text = f"{' '.join(class_names(exc))} {exc}".lower()
        return any(w in text for w in words)

    return predicate


#: Last-resort hints from the message text, as the seed did ("proxy", "connection"). Drop it for strictness.
HINTS: RulePack = (
    Rule(ErrorClass.PROXY, match=_message_has("proxy", "socks")),
    Rule(ErrorClass.CONNECTION, match=_message_has("connection", "disconnected")),
)


def default_packs(*, auth_codes: Iterable[int] = DEFAULT_AUTH_CODES) -> tuple[RulePack, ...]:
    """The default pack order, with ``auth_codes`` applied to the websockets pack."""
    ws = WEBSOCKETS if frozenset(auth_codes) == DEFAULT_AUTH_CODES else websockets_pack(auth_codes=auth_codes)
    return (TELEGRAM, ws, HTTP, GENERIC, HINTS)


#: telegram → websockets → http → generic → hints.
DEFAULT_PACKS: tuple[RulePack, ...] = default_packs()

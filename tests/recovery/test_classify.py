"""Rule packs: every Telegram library's exception shapes, HTTP errors, Retry-After forms, cause chains."""

from __future__ import annotations

import asyncio
import email.utils
import ssl
from datetime import timedelta

import aiohttp
import httpx
import pytest

from tether import ErrorClass
from tether.recovery import DEFAULT_PACKS, HINTS, Rule, classify, read_seconds

NOW = 1_800_000_000.0
E = ErrorClass


# ---- exception shapes of the Telegram libraries, built locally with the same names and attributes ----
# Telethon: errors carry .code (instance), FloodWaitError carries .seconds
class RPCError(Exception):
    code: int | None = None

    def __init__(self, message: str = "", code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class FloodError(RPCError):
    code = 420


class FloodWaitError(FloodError):
    def __init__(self, seconds: int):
        super().__init__(f"A wait of {seconds} seconds is required")
        self.seconds = seconds


class SlowModeWaitError(FloodError):
    def __init__(self, seconds: int):
        super().__init__("slow mode")
        self.seconds = seconds


class UnauthorizedError(RPCError):
    code = 401


class AuthKeyUnregisteredError(UnauthorizedError):
    pass


class SessionRevokedError(UnauthorizedError):
    pass


class UserDeactivatedError(UnauthorizedError):
    pass


class ServerError(RPCError):
    code = 500


class BadRequestError(RPCError):
    code = 400


class MessageTooLongError(BadRequestError):
    pass


# Pyrogram: RPCError subclasses carry CODE (class) and .value; v1 FloodWait used .x
class PyroRPCError(Exception):
    CODE: int | None = None

    def __init__(self, value=None):
        super().__init__(f"[{self.CODE}] {value}")
        self.value = value


PyroRPCError.__name__ = "RPCError"


class Flood(PyroRPCError):
    CODE = 420


class FloodWait(Flood):
    pass


class FloodWaitV1(Flood):
    def __init__(self, x):
        super().__init__(None)
        self.x = x


FloodWaitV1.__name__ = "FloodWait"


class Unauthorized(PyroRPCError):
    CODE = 401


class AuthKeyUnregistered(Unauthorized):
    pass


class AuthKeyInvalid(Unauthorized):
    pass


class UserDeactivated(Unauthorized):
    pass


class InternalServerError(PyroRPCError):
    CODE = 500


class ServiceUnavailable(PyroRPCError):
    CODE = 503


class BadGateway(PyroRPCError):
    CODE = 502


class GatewayTimeout(PyroRPCError):
    CODE = 504


class TooManyRequests(PyroRPCError):
    CODE = 429


class PeerIdInvalid(PyroRPCError):
    CODE = 400


# aiogram 3: TelegramAPIError family, TelegramRetryAfter(.retry_after)
class TelegramAPIError(Exception):
    pass


class TelegramRetryAfter(TelegramAPIError):
    def __init__(self, retry_after: int):
        super().__init__(f"Flood control exceeded. Retry in {retry_after} seconds.")
        self.retry_after = retry_after


class TelegramUnauthorizedError(TelegramAPIError):
    pass


class TelegramServerError(TelegramAPIError):
    pass


class TelegramNetworkError(TelegramAPIError):
    pass


class TelegramBadRequest(TelegramAPIError):
    pass


class TelegramForbiddenError(TelegramAPIError):
    pass


# python-telegram-bot: TelegramError family; BadRequest is a NetworkError; RetryAfter(.retry_after)
class TelegramError(Exception):
    pass


class NetworkError(TelegramError):
    pass


class BadRequest(NetworkError):
    pass


class TimedOut(NetworkError):
    pass


class Forbidden(TelegramError):
    pass


class InvalidToken(TelegramError):
    pass


class RetryAfter(TelegramError):
    def __init__(self, retry_after):
        super().__init__("Flood control exceeded")
        self.retry_after = retry_after


# python-socks / aiohttp-socks
class ProxyException(Exception):
    pass


class ProxyError(ProxyException):
    def __init__(self, message, error_code=None):
        super().__init__(message)
        self.error_code = error_code


class ProxyConnectionError(ProxyException, OSError):
    pass


class ProxyTimeoutError(ProxyException, TimeoutError):
    pass


TELEGRAM_TABLE = [
    # (exception, class, server wait)
    (FloodWaitError(42), E.FLOOD_WAIT, 42),
    (SlowModeWaitError(7), E.FLOOD_WAIT, 7),
    (FloodWait(31), E.FLOOD_WAIT, 31),
    (FloodWaitV1(13), E.FLOOD_WAIT, 13),
    (TelegramRetryAfter(17), E.FLOOD_WAIT, 17),
    (RetryAfter(9), E.FLOOD_WAIT, 9),
    (RetryAfter(timedelta(seconds=12.5)), E.FLOOD_WAIT, 12.5),
    (FloodError("flood"), E.RATE_LIMIT, None),
    (Flood(None), E.RATE_LIMIT, None),
    (TooManyRequests("x"), E.RATE_LIMIT, None),
    (RPCError("too many", code=429), E.RATE_LIMIT, None),
    (ServerError("internal"), E.TEMPORARY, None),
    (RPCError("bad gateway", code=502), E.TEMPORARY, None),
    (RPCError("unavailable", code=503), E.TEMPORARY, None),
    (RPCError("timeout", code=504), E.TEMPORARY, None),
    (InternalServerError("x"), E.TEMPORARY, None),
    (BadGateway("x"), E.TEMPORARY, None),
    (ServiceUnavailable("x"), E.TEMPORARY, None),
    (GatewayTimeout("x"), E.TEMPORARY, None),
    (TelegramServerError("bad gateway"), E.TEMPORARY, None),
    (AuthKeyUnregisteredError("x"), E.AUTH, None),
    (SessionRevokedError("x"), E.AUTH, None),
    (UserDeactivatedError("x"), E.AUTH, None),
    (UnauthorizedError("x"), E.AUTH, None),
    (AuthKeyUnregistered("x"), E.AUTH, None),
    (AuthKeyInvalid("x"), E.AUTH, None),
    (UserDeactivated("x"), E.AUTH, None),
    (Unauthorized("x"), E.AUTH, None),
    (TelegramUnauthorizedError("x"), E.AUTH, None),
    (InvalidToken("x"), E.AUTH, None),
    (RPCError("whatever", code=401), E.AUTH, None),
    (MessageTooLongError("x"), E.PERMANENT, None),
    (PeerIdInvalid("x"), E.PERMANENT, None),
    (TelegramBadRequest("chat not found"), E.PERMANENT, None),
    (TelegramForbiddenError("bot was blocked by the user"), E.PERMANENT, None),
    (BadRequest("message is too long"), E.PERMANENT, None),
    (Forbidden("blocked"), E.PERMANENT, None),
    (TelegramNetworkError("cannot connect"), E.CONNECTION, None),
    (TimedOut("x"), E.CONNECTION, None),
    (NetworkError("x"), E.CONNECTION, None),
    (ProxyError("general SOCKS server failure", 1), E.PROXY, None),
    (ProxyConnectionError("could not connect to proxy"), E.PROXY, None),
    (ProxyTimeoutError("proxy timeout"), E.PROXY, None),
]


@pytest.mark.parametrize("exc, cls, wait", TELEGRAM_TABLE, ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None)
def test_telegram_shapes(exc, cls, wait):
    """Each Telegram library's exception is recognised by name and attributes, with the exact server wait."""
    c = classify(exc, now=NOW)
    assert c.error_class is cls, c
    assert c.retry_after == wait


def test_rpc_code_reported():
    """The RPC code of a Telegram error is kept in the classification."""
    assert classify(ServerError("x"), now=NOW).code == 500
    assert classify(ServiceUnavailable("x"), now=NOW).code == 503


def http_error(status: int, **headers: str) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "https://api.example/send")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError(f"status {status}", request=request, response=response)


def aiohttp_error(status: int, **headers: str) -> aiohttp.ClientResponseError:
    return aiohttp.ClientResponseError(None, (), status=status, message="x", headers=headers or None)  # type: ignore[arg-type]


HTTP_DATE = email.utils.formatdate(NOW + 90, usegmt=True)


@pytest.mark.parametrize("make", [http_error, aiohttp_error], ids=["httpx", "aiohttp"])
@pytest.mark.parametrize(
    "status, headers, cls, wait",
    [
        (429, {"Retry-After": "30"}, E.RATE_LIMIT, 30),
        (429, {"Retry-After": HTTP_DATE}, E.RATE_LIMIT, 90),
        (429, {}, E.RATE_LIMIT, None),
        (503, {"Retry-After": "5"}, E.FLOOD_WAIT, 5),
        (503, {"Retry-After": HTTP_DATE}, E.FLOOD_WAIT, 90),
        (503, {}, E.TEMPORARY, None),
        (500, {}, E.TEMPORARY, None),
        (502, {}, E.TEMPORARY, None),
        (401, {}, E.AUTH, None),
        (403, {}, E.AUTH, None),
        (407, {}, E.PROXY, None),
        (400, {}, E.PERMANENT, None),
        (404, {}, E.PERMANENT, None),
    ],
)
def test_http_errors(make, status, headers, cls, wait):
    """httpx and aiohttp status errors map to classes; Retry-After is read in seconds and HTTP-date form."""
    c = classify(make(status, **headers), now=NOW)
    assert c.error_class is cls and c.code == status
    if wait is None:
        assert c.retry_after is None
    else:
        assert c.retry_after == pytest.approx(wait, abs=1)


@pytest.mark.parametrize(
    "exc, cls",
    [
        (ConnectionResetError("reset"), E.CONNECTION),
        (ConnectionRefusedError(), E.CONNECTION),
        (TimeoutError(), E.CONNECTION),
        (asyncio.TimeoutError(), E.CONNECTION),
        (asyncio.IncompleteReadError(b"", 10), E.CONNECTION),
        (ssl.SSLError("bad record"), E.CONNECTION),
        (ssl.SSLCertVerificationError("cert"), E.PERMANENT),
        (httpx.ConnectError("refused"), E.CONNECTION),
        (httpx.ReadTimeout("slow"), E.CONNECTION),
        (httpx.ProxyError("proxy said no"), E.PROXY),
        (aiohttp.ServerDisconnectedError(), E.CONNECTION),
        (TypeError("bad argument"), E.PERMANENT),
        (ValueError("odd"), E.UNKNOWN),
        (RuntimeError("proxy handshake went wrong"), E.PROXY),
        (RuntimeError("connection dropped"), E.CONNECTION),
    ],
)
def test_generic_pack(exc, cls):
    """Network, TLS, transport and programming errors get their class; message hints are a last resort."""
    assert classify(exc, now=NOW).error_class is cls


def test_tether_errors():
    """tether's AuthError is AUTH; an inner RecoveryError is PERMANENT, so layers never multiply retries."""
    from tether import AuthError, BudgetExhausted

    assert classify(AuthError("no", status=401), now=NOW).error_class is E.AUTH
    assert classify(BudgetExhausted("inner gave up"), now=NOW).error_class is E.PERMANENT


def test_cause_chain_one_level():
    """A wrapper raised `from` a FloodWait is classified by its cause, wait included."""
    class SendFailed(Exception):
        pass

    try:
        try:
            raise FloodWaitError(25)
        except FloodWaitError as inner:
            raise SendFailed("could not send") from inner
    except SendFailed as outer:
        c = classify(outer, now=NOW)
    assert c.error_class is E.FLOOD_WAIT and c.retry_after == 25
    assert "SendFailed" in c.reason and "FloodWaitError" in c.reason


def test_suppressed_context_not_used():
    """`raise X from None` hides the context: the outer exception alone decides."""
    class Opaque(Exception):
        pass

    try:
        try:
            raise FloodWaitError(25)
        except FloodWaitError:
            raise Opaque("no details") from None
    except Opaque as outer:
        assert classify(outer, now=NOW).error_class is E.UNKNOWN


def test_user_pack_first():
    """A user pack placed before the defaults overrides them; rules are plain data with attribute specs."""
    class BillingError(Exception):
        def __init__(self, kind, wait):
            super().__init__(kind)
            self.kind, self.wait_for = kind, wait

    mine = (Rule(E.FLOOD_WAIT, names={"BillingError"}, attrs={"kind": ("quota", "burst")}, retry_after="wait_for"),)
    c = classify(BillingError("quota", 12), packs=[mine, *DEFAULT_PACKS], now=NOW)
    assert c.error_class is E.FLOOD_WAIT and c.retry_after == 12
    assert classify(BillingError("card", 0), packs=[mine, *DEFAULT_PACKS], now=NOW).error_class is E.UNKNOWN
    # without the hints pack, message text is ignored
    strict = [p for p in DEFAULT_PACKS if p is not HINTS]
    assert classify(RuntimeError("connection dropped"), packs=strict, now=NOW).error_class is E.UNKNOWN


def test_broken_predicate_is_no_match():
    """A user predicate that raises is treated as 'no match' instead of breaking error handling."""
    rule = Rule(E.AUTH, match=lambda e: 1 / 0)
    assert classify(ValueError("x"), packs=[(rule,), *DEFAULT_PACKS], now=NOW).error_class is E.UNKNOWN


@pytest.mark.parametrize(
    "value, expected",
    [(5, 5.0), (2.5, 2.5), (timedelta(seconds=3), 3.0), ("7", 7.0), (-1, None), (True, None), (None, None), (float("nan"), None)],
)
def test_read_seconds(value, expected):
    """Waits are read from ints, floats, timedeltas and strings; junk and negatives are ignored."""
    assert read_seconds(value, now=NOW) == expected

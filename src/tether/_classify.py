"""Pure classification of connection outcomes: close codes, HTTP statuses, Retry-After, network errors.

These functions do no I/O and read no clock except through the ``now`` argument. The Link's default
classifier and the recovery engine's ``websockets``/``http``/``generic`` rule packs are both built on them.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import ssl
from typing import Any, Callable, Iterable, Mapping

from ._decision import Action, Classification, Decision, ErrorClass

__all__ = [
    "DEFAULT_AUTH_CODES",
    "parse_retry_after",
    "classify_close",
    "classify_status",
    "classify_connection_error",
    "LinkClassifier",
    "default_link_classifier",
    "decision_for_link",
]

#: Application close codes that mean "your credentials are refused" by convention.
DEFAULT_AUTH_CODES: frozenset[int] = frozenset({4001, 4003, 4401, 4403})


def parse_retry_after(value: str | float | int | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date.

    Args:
        value: the header value (``"120"``, ``"1.5"``, ``"Wed, 21 Oct 2015 07:28:00 GMT"``) or a number.
        now: the current wall-clock time (epoch seconds), used for the HTTP-date form.

    Returns:
        Seconds >= 0, or None when the value is missing or unreadable.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return max(0.0, float(value)) if math.isfinite(value) else None
    text = str(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        return max(0.0, when.timestamp() - now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    try:
        value = headers.get(name)
        if value is None:
            value = headers.get(name.lower())
        return value
    except AttributeError:
        for key, value in headers:
            if str(key).lower() == name.lower():
                return value
    return None


def classify_close(
    code: int | None,
    reason: str = "",
    *,
    auth_codes: Iterable[int] = DEFAULT_AUTH_CODES,
    retry_after: float | None = None,
) -> Classification:
    """Classify a WebSocket close received from the peer (``None`` or 1006: no close frame)."""
    text = f"close {code}" + (f" {reason}" if reason else "")
    if code is None or code == 1006:
        return Classification(ErrorClass.CONNECTION, f"connection lost without close frame ({code or 1006})", code=1006)
    if code == 1008 or code in frozenset(auth_codes):
        return Classification(ErrorClass.AUTH, text, code=code)
    if code == 1013:
        return Classification(ErrorClass.FLOOD_WAIT, text, retry_after=retry_after, code=code)
    if code in (1001, 1012):
        return Classification(ErrorClass.TEMPORARY, text, code=code, reset_backoff=True)
    if code == 1000:
        return Classification(ErrorClass.CONNECTION, text, code=code)
    if code in (1011, 1014):
        return Classification(ErrorClass.TEMPORARY, text, code=code)
    if code in (1002, 1003, 1007, 1009, 1010):
        # protocol/payload errors: reconnecting gives a fresh protocol state, so treat as temporary
        return Classification(ErrorClass.TEMPORARY, text, code=code)
    return Classification(ErrorClass.UNKNOWN, text, code=code)


def classify_status(status: int, headers: Any = None, *, now: float) -> Classification:
    """Classify an HTTP status (a rejected WebSocket handshake or an HTTP API reply)."""
    retry_after = parse_retry_after(_header(headers, "Retry-After"), now=now)
    text = f"HTTP {status}"
    if status in (401, 403):
        return Classification(ErrorClass.AUTH, text, code=status)
    if status == 407:
        return Classification(ErrorClass.PROXY, text + " proxy authentication required", code=status)
    if status == 429:
        return Classification(ErrorClass.RATE_LIMIT, text, retry_after=retry_after, code=status)
    if status == 503 and retry_after is not None:
        return Classification(ErrorClass.FLOOD_WAIT, text, retry_after=retry_after, code=status)
    if status >= 500 or status in (408, 425):
        return Classification(ErrorClass.TEMPORARY, text, retry_after=retry_after, code=status)
    if 400 <= status < 500:
        return Classification(ErrorClass.PERMANENT, text, code=status)
    # 1xx/2xx/3xx where a WebSocket upgrade (101) was expected: the URL is wrong or redirected
    return Classification(ErrorClass.PERMANENT, text + " (expected a WebSocket upgrade)", code=status)


def classify_connection_error(exc: BaseException) -> Classification | None:
    """Classify network-level exceptions (OSError family, timeouts, TLS). None if not one."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Classification(ErrorClass.PERMANENT, f"TLS certificate rejected: {exc}")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return Classification(ErrorClass.CONNECTION, f"timed out{': ' + str(exc) if str(exc) else ''}")
    if isinstance(exc, (ssl.SSLError, ConnectionError, OSError, EOFError)):
        name = type(exc).__name__
        return Classification(ErrorClass.CONNECTION, f"{name}: {exc}" if str(exc) else name)
    return None


def _classify_websockets(exc: BaseException, *, now: float, auth_codes: Iterable[int]) -> Classification | None:
    try:
        from websockets import exceptions as wse
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, wse.ConnectionClosed):
        rcvd = exc.rcvd
        if rcvd is None:
            return classify_close(None, auth_codes=auth_codes)
        return classify_close(rcvd.code, rcvd.reason, auth_codes=auth_codes, retry_after=_retry_after_from_reason(rcvd.reason, now))
    if isinstance(exc, wse.InvalidStatus):
        return classify_status(exc.response.status_code, exc.response.headers, now=now)
    if isinstance(exc, wse.InvalidURI):
        return Classification(ErrorClass.PERMANENT, f"invalid URI: {exc}")
    if isinstance(exc, (wse.InvalidHandshake, wse.ProtocolError)):
        return Classification(ErrorClass.CONNECTION, f"handshake failed: {exc}")
    return None


def _retry_after_from_reason(reason: str, now: float) -> float | None:
    """Servers sending 1013 often put the wait in the reason ("retry after 30" or "30")."""
    if not reason:
        return None
    for token in reason.replace("=", " ").replace(":", " ").split():
        value = parse_retry_after(token.rstrip("s"), now=now)
        if value is not None:
            return value
    return None


def classify_exception(exc: BaseException, *, now: float, auth_codes: Iterable[int] = DEFAULT_AUTH_CODES) -> Classification:
    """Classify any exception a connection attempt or a live connection can end with."""
    found = _classify_websockets(exc, now=now, auth_codes=auth_codes)
    if found is not None:
        return found
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        headers = getattr(getattr(exc, "response", None), "headers", None) or getattr(exc, "headers", None)
        return classify_status(status, headers, now=now)
    found = classify_connection_error(exc)
    if found is not None:
        return found
    return Classification(ErrorClass.UNKNOWN, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


#: A Link classifier: a pure function from the exception that ended an attempt or a connection to a Decision.
LinkClassifier = Callable[[BaseException], Decision]


def decision_for_link(c: Classification, *, reconnect_on_normal_close: bool = True) -> Decision:
    """Map a classification to what a self-healing connection does."""
    if c.error_class is ErrorClass.AUTH:
        return Decision(Action.FAIL, 0.0, c.reason, c.error_class, c.code)
    if c.error_class is ErrorClass.PERMANENT and c.code is not None and c.code >= 400 and c.code not in (404,):
        # a handshake the server will always refuse (400, 405, ...): stop instead of hammering it
        return Decision(Action.FAIL, 0.0, c.reason, c.error_class, c.code)
    if c.code == 1000 and not reconnect_on_normal_close:
        return Decision(Action.FAIL, 0.0, c.reason, c.error_class, c.code)
    if c.retry_after is not None:
        return Decision(Action.WAIT, c.retry_after, c.reason, c.error_class, c.code)
    return Decision(Action.RECONNECT, 0.0, c.reason, c.error_class, c.code, c.reset_backoff)


def default_link_classifier(
    exc: BaseException,
    *,
    now: float | None = None,
    auth_codes: Iterable[int] = DEFAULT_AUTH_CODES,
    reconnect_on_normal_close: bool = True,
) -> Decision:
    """The Link's default classifier (issue #3 rules).

    * network errors, resets, timeouts, close 1006/1011, HTTP 5xx: RECONNECT with backoff;
    * close 1001/1012: RECONNECT with the backoff started from its first step;
    * close 1013, HTTP 429 or 503 with Retry-After: WAIT at least the server's time;
    * HTTP 401/403, close 1008, application auth codes: FAIL (AuthError);
    * close 1000 from the peer: RECONNECT (or FAIL with ``reconnect_on_normal_close=False``).
    """
    import time

    c = classify_exception(exc, now=time.time() if now is None else now, auth_codes=auth_codes)
    return decision_for_link(c, reconnect_on_normal_close=reconnect_on_normal_close)


def headers_to_dict(headers: Mapping[str, str] | None) -> dict[str, str]:
    return dict(headers or {})


def http_status_of(exc: BaseException) -> tuple[int, Any] | None:
    """The HTTP status and headers an exception carries, or None.

    Reads httpx ``HTTPStatusError`` (``.response.status_code``/``.response.headers``), anything with a
    ``status_code`` attribute, and aiohttp ``ClientResponseError`` (``.status``/``.headers``).
    """
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
    headers = getattr(response, "headers", None) or getattr(exc, "headers", None)
    if not isinstance(status, int) and any(k.__name__ == "ClientResponseError" for k in type(exc).__mro__):
        status = getattr(exc, "status", None)
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
        return status, headers
    return None


def classify_http_error(exc: BaseException, *, now: float) -> Classification | None:
    """Classify an exception that carries an HTTP status (httpx, aiohttp, websockets handshakes); None if none."""
    found = http_status_of(exc)
    if found is None:
        return None
    return classify_status(found[0], found[1], now=now)


def classify_websockets_error(
    exc: BaseException, *, now: float, auth_codes: Iterable[int] = DEFAULT_AUTH_CODES
) -> Classification | None:
    """Classify a ``websockets`` exception (close codes, handshake statuses); None if not one."""
    return _classify_websockets(exc, now=now, auth_codes=auth_codes)

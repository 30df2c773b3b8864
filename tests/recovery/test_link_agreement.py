"""link_classifier (rule packs) gives the same decisions as the Link's default classifier (issue #3 table)."""

from __future__ import annotations

import email.utils

import httpx
import pytest
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus, InvalidURI
from websockets.frames import Close
from websockets.http11 import Response

from tether import Action, default_link_classifier
from tether.recovery import link_classifier

NOW = 1_800_000_000.0


def closed(code, reason="", *, ok=False):
    cls = ConnectionClosedOK if ok else ConnectionClosedError
    return cls(Close(code, reason), None)


def no_close():
    return ConnectionClosedError(None, None)


def status(code, **headers):
    return InvalidStatus(Response(code, "x", Headers(headers)))


def http_error(code, **headers):
    req = httpx.Request("GET", "https://x.example")
    return httpx.HTTPStatusError("x", request=req, response=httpx.Response(code, headers=headers, request=req))


OUTCOMES = [
    ConnectionResetError("reset"),
    ConnectionRefusedError(),
    OSError("network unreachable"),
    TimeoutError(),
    EOFError(),
    no_close(),
    closed(1006),
    closed(1011),
    closed(1001),
    closed(1012),
    closed(1013),
    closed(1013, "retry after 7"),
    closed(1008),
    closed(4001),
    closed(4003),
    closed(4401),
    closed(4403),
    closed(4999),
    closed(1000, ok=True),
    closed(1002),
    status(500),
    status(502),
    status(503),
    status(503, **{"Retry-After": "2"}),
    status(503, **{"Retry-After": email.utils.formatdate(NOW + 60, usegmt=True)}),
    status(429, **{"Retry-After": "3"}),
    status(429),
    status(401),
    status(403),
    status(400),
    status(404),
    status(200),
    http_error(503, **{"Retry-After": "4"}),
    http_error(401),
    InvalidURI("ws//x", "no scheme"),
    ValueError("odd"),
]


@pytest.mark.parametrize("exc", OUTCOMES, ids=lambda e: f"{type(e).__name__}-{e}"[:60])
@pytest.mark.parametrize("normal_close", [True, False])
def test_same_decisions(exc, normal_close):
    """For every outcome issue #3 lists, the engine's Link classifier decides exactly like the default."""
    ours = link_classifier(now=lambda: NOW, reconnect_on_normal_close=normal_close)(exc)
    theirs = default_link_classifier(exc, now=NOW, reconnect_on_normal_close=normal_close)
    assert (ours.action, ours.delay, ours.error_class, ours.code, ours.reset_backoff) == (
        theirs.action,
        theirs.delay,
        theirs.error_class,
        theirs.code,
        theirs.reset_backoff,
    )


def test_custom_auth_codes_agree():
    """A custom set of application auth codes is honoured the same way by both classifiers."""
    ours = link_classifier(now=lambda: NOW, auth_codes={4242})
    for code in (4242, 4001):
        exc = closed(code)
        assert ours(exc).action is default_link_classifier(exc, now=NOW, auth_codes={4242}).action
    assert ours(closed(4242)).action is Action.FAIL and ours(closed(4001)).action is not Action.FAIL


def test_telegram_flood_wait_on_a_link():
    """Beyond issue #3: a Telegram flood wait reaching a Link becomes WAIT with the server's time."""

    class FloodWait(Exception):
        def __init__(self, value):
            super().__init__("flood")
            self.value = value

    d = link_classifier(now=lambda: NOW)(FloodWait(11))
    assert d.action is Action.WAIT and d.delay == 11

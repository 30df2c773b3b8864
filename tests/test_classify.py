"""Pure classification of connection outcomes (issue #3 rules)."""

import email.utils

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.frames import Close
from websockets.http11 import Response

from tether import Action, ErrorClass, default_link_classifier, parse_retry_after

NOW = 1_800_000_000.0


def closed(code, reason="", *, ok=False):
    cls = ConnectionClosedOK if ok else ConnectionClosedError
    return cls(Close(code, reason), None)


def status(code, **headers):
    return InvalidStatus(Response(code, "x", Headers(headers)))


@pytest.mark.parametrize(
    "exc, action, delay",
    [
        (ConnectionResetError("reset"), Action.RECONNECT, 0),
        (TimeoutError(), Action.RECONNECT, 0),
        (closed(1006), Action.RECONNECT, 0),
        (closed(1011), Action.RECONNECT, 0),
        (status(502), Action.RECONNECT, 0),
        (closed(1013), Action.RECONNECT, 0),
        (closed(1013, "retry after 7"), Action.WAIT, 7),
        (status(429, **{"Retry-After": "3"}), Action.WAIT, 3),
        (status(503, **{"Retry-After": "2"}), Action.WAIT, 2),
        (status(401), Action.FAIL, 0),
        (status(403), Action.FAIL, 0),
        (closed(1008), Action.FAIL, 0),
        (closed(4001), Action.FAIL, 0),
        (closed(4403), Action.FAIL, 0),
        (closed(1000, ok=True), Action.RECONNECT, 0),
    ],
)
def test_default_link_rules(exc, action, delay):
    """Each outcome of issue #3's table maps to its action and minimum delay."""
    d = default_link_classifier(exc, now=NOW)
    assert d.action is action
    assert d.delay == delay


def test_1001_and_1012_restart_backoff():
    """Planned restarts (1001, 1012) reset the backoff to its first step."""
    for code in (1001, 1012):
        d = default_link_classifier(closed(code), now=NOW)
        assert d.action is Action.RECONNECT and d.reset_backoff


def test_peer_normal_close_can_be_final():
    """reconnect_on_normal_close=False makes a peer's 1000 final."""
    d = default_link_classifier(closed(1000, ok=True), now=NOW, reconnect_on_normal_close=False)
    assert d.action is Action.FAIL


def test_auth_classified_as_auth():
    """401 is the AUTH class."""
    assert default_link_classifier(status(401), now=NOW).error_class is ErrorClass.AUTH


def test_retry_after_http_date():
    """Retry-After as an HTTP-date gives the seconds until that date."""
    date = email.utils.formatdate(NOW + 90, usegmt=True)
    assert parse_retry_after(date, now=NOW) == pytest.approx(90, abs=1)
    d = default_link_classifier(status(503, **{"Retry-After": date}), now=NOW)
    assert d.action is Action.WAIT and d.delay == pytest.approx(90, abs=1)


@pytest.mark.parametrize("value, expected", [("120", 120), ("1.5", 1.5), ("-4", 0), ("soon", None), ("", None), (None, None), (7, 7)])
def test_retry_after_forms(value, expected):
    """Seconds, negatives, junk and numbers are read safely."""
    assert parse_retry_after(value, now=NOW) == expected

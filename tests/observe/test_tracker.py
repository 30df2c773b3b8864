"""ErrorTracker: redaction, queries, statistics, retention; redact() itself."""

from __future__ import annotations

import pytest

from tether import ConfigError
from tether.observe import ErrorTracker, redact, register_secret, unregister_secret
from tether.testing import FakeClock

TG = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


@pytest.mark.parametrize("text,secret", [
    (f"GET https://api.telegram.org/bot{TG}/getUpdates", TG.split(":")[1]),
    ("Authorization: Bearer eyJhbGciOi.abc.def", "eyJhbGciOi.abc.def"),
    ("https://user:hunter2pw@example.com/x", "hunter2pw"),
    ("https://example.com/x?a=1&token=s3cr3t-tok&b=2", "s3cr3t-tok"),
    ("https://example.com/x?api_key=k3y-v4lue", "k3y-v4lue"),
    ('{"password": "pa55word!", "user": "bob"}', "pa55word!"),
    ("{'client_secret': 'cl13nt'}", "cl13nt"),
    ("redis://:r3dispw@localhost:6379/0", "r3dispw"),
])
def test_redact_masks_known_secret_shapes(text: str, secret: str) -> None:
    """redact() masks bearer tokens, bot tokens, userinfo, secret params and JSON fields."""
    out = redact(text)
    assert secret not in out and "[REDACTED]" in out


def test_redact_masks_registered_values_and_keeps_plain_text() -> None:
    """A registered value is masked anywhere; ordinary text passes unchanged."""
    register_secret("plain-config-value-42")
    try:
        assert redact("x plain-config-value-42 y") == "x [REDACTED] y"
    finally:
        unregister_secret("plain-config-value-42")
    assert redact("token expired for session sess_1 after 3 attempts") == "token expired for session sess_1 after 3 attempts"


def test_record_redacts_message_traceback_context_and_metadata(tmp_path) -> None:
    """Stored errors hold no secret in message, traceback, context or metadata."""
    t = ErrorTracker(tmp_path / "e.db")
    try:
        raise ConnectionError(f"cannot reach https://api.telegram.org/bot{TG}/getMe")
    except ConnectionError as exc:
        rid = t.record(exc, "high", "telegram", "sess_1", {"url": f"https://x/bot{TG}/", "token": "abc123456"},
                       {"headers": {"Authorization": "Bearer zzzzzzzzzz"}})
    (rec,) = t.query()
    assert rec.id == rid and rec.error_class == "ConnectionError" and rec.session == "sess_1"
    blob = repr(rec.to_dict())
    assert TG.split(":")[1] not in blob and "abc123456" not in blob and "zzzzzzzzzz" not in blob
    assert rec.traceback and "ConnectionError" in rec.traceback
    t.close()


async def test_query_filters_and_stats(tmp_path, clock: FakeClock) -> None:
    """Queries filter by severity, component, session and time; stats count per class."""
    t = ErrorTracker(tmp_path / "e.db", clock=clock, log=False)
    t.record(ValueError("a"), "low", "link", "s1")
    await clock.advance(10)
    t.record(KeyError("b"), "high", "store", "s2")
    await clock.advance(10)
    t.record(ValueError("c"), "critical", "link", "s1")
    assert [r.message for r in t.query(severity="high")] == ["'b'"]
    assert [r.message for r in t.query(component="link")] == ["c", "a"]
    assert [r.message for r in t.query(session="s2")] == ["'b'"]
    start = clock.wall() - 15
    assert [r.message for r in t.query(since=start)] == ["c", "'b'"]
    assert [r.message for r in t.query(until=start)] == ["a"]
    assert [r.message for r in t.query(severity=["low", "critical"], limit=1)] == ["c"]
    stats = t.stats()
    assert stats["total"] == 3 and stats["by_class"]["ValueError"]["count"] == 2
    assert stats["by_severity"] == {"low": 1, "high": 1, "critical": 1}
    with pytest.raises(ConfigError, match="severity"):
        t.record(ValueError("x"), "urgent")
    with pytest.raises(ConfigError, match="severity"):
        t.query(severity="nope")
    t.close()


async def test_retention_bounds_count_and_age(tmp_path, clock: FakeClock) -> None:
    """Old rows age out and the table never holds more than max_records."""
    t = ErrorTracker(tmp_path / "e.db", max_records=5, max_age=100, clock=clock, log=False)
    for i in range(12):
        t.record(f"e{i}")
    assert [r.message for r in t.query()] == [f"e{i}" for i in range(11, 6, -1)]
    await clock.advance(101)
    t.record("fresh")
    assert [r.message for r in t.query()] == ["fresh"]
    await clock.advance(101)
    assert t.prune() == 1 and t.count() == 0
    t.close()

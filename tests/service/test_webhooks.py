"""Webhook signing and the retry decisions (recovery engine's classify + plan)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tether.service._db import ServiceDB
from tether.service._settings import WebhookSettings
from tether.service._webhooks import WebhookDispatcher, sign, verify_signature
from tether.testing import FakeClock


def dispatcher(tmp_path: Path, **settings: float) -> WebhookDispatcher:
    return WebhookDispatcher(ServiceDB(tmp_path / "s.db"), emit=lambda e: None, secret_for=lambda s: b"k",
                             settings=WebhookSettings(**settings), clock=FakeClock())


def status_error(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    req = httpx.Request("POST", "http://127.0.0.1/hook")
    return httpx.HTTPStatusError("x", request=req, response=httpx.Response(status, headers=headers, request=req))


def test_signature_roundtrip_and_tamper() -> None:
    """A signature verifies; a changed body, key or an old timestamp does not."""
    now = int(time.time())
    header = sign(b"key", b'{"a":1}', now)
    assert verify_signature(b"key", b'{"a":1}', header)
    assert not verify_signature(b"key", b'{"a":2}', header)
    assert not verify_signature(b"other", b'{"a":1}', header)
    assert not verify_signature(b"key", b'{"a":1}', sign(b"key", b'{"a":1}', now - 3600))
    assert not verify_signature(b"key", b"x", "garbage")


def test_permanent_and_auth_failures_stop_at_once(tmp_path: Path) -> None:
    """404 and 401 from a webhook are final on the first attempt: retrying cannot help."""
    d = dispatcher(tmp_path)
    assert d._decide(status_error(404), 1)[0] is True
    assert d._decide(status_error(401), 1)[0] is True


def test_server_errors_retry_until_max_attempts(tmp_path: Path) -> None:
    """503 and connection errors retry with growing delays, and stop at max_attempts."""
    d = dispatcher(tmp_path, max_attempts=4, backoff_base=1.0, backoff_cap=60.0)
    decisions = [d._decide(status_error(503), n) for n in (1, 2, 3)]
    assert [final for final, _, _ in decisions] == [False, False, False]
    assert decisions[2][1] >= 2.0  # 4 s step, equal jitter: at least half of it
    assert d._decide(status_error(503), 4)[0] is True
    assert d._decide(httpx.ConnectError("refused"), 1)[0] is False


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    """A 429 with Retry-After: 7 waits at least 7 s."""
    d = dispatcher(tmp_path, backoff_base=0.1)
    final, delay, _ = d._decide(status_error(429, {"Retry-After": "7"}), 1)
    assert not final and delay >= 7.0

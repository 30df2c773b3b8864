"""A cluster node on a password-protected redis-server never shows the password (API, logs, errors)."""

from __future__ import annotations

import logging
import subprocess
import time

import pytest

from tether import TetherError
from tests.conftest import free_port, require_binary
from tests.service.conftest import eventually, start_service, stop_service
from tests.service.test_cluster import CountingUpstream, node_settings

pytestmark = pytest.mark.system

PASSWORD = "redis-pass-Zq81xk"


@pytest.fixture
def locked_redis(tmp_path):
    binary = require_binary("redis-server")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--requirepass", PASSWORD, "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # bounded wait for the port
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.02)
    yield port
    proc.terminate()
    proc.wait(5)


async def test_password_never_shown(tmp_path, locked_redis, caplog):
    """Sessions, health, config and logs of a node never contain the Redis password."""
    caplog.set_level(logging.DEBUG)
    up = await CountingUpstream().start()
    url = f"redis://:{PASSWORD}@127.0.0.1:{locked_redis}/0"
    node = await start_service(node_settings(tmp_path, url, "p1"))
    try:
        r = await node.client.post("/api/sessions", json={"id": "p", "kind": "websocket",
                                                          "options": {"url": f"ws://127.0.0.1:{up.port}/p"}})
        assert r.status_code == 201, r.text
        await eventually(lambda: up.open["p"] == 1, what="connected")
        assert (await node.client.post("/api/sessions/p/messages", json={"payload": "x"})).status_code == 202
        bodies = [(await node.client.get(path)).text for path in
                  ("/health", "/api/sessions", "/api/sessions/p", "/api/config", "/health/errors",
                   "/api/events/history")]
        assert all(PASSWORD not in b for b in bodies)
        assert "***" in bodies[3]  # the store URL is shown masked in the config
    finally:
        await stop_service(node)
        await up.stop()
    assert PASSWORD not in caplog.text


async def test_wrong_password_is_a_clear_error_without_it(tmp_path, locked_redis):
    """A wrong password fails the start with a StoreUnavailable that names Redis, not the password."""
    url = f"redis://:wrong-{PASSWORD}@127.0.0.1:{locked_redis}/0"
    with pytest.raises(TetherError) as err:
        await start_service(node_settings(tmp_path, url, "p2"))
    assert PASSWORD not in str(err.value) and "Redis" in str(err.value)

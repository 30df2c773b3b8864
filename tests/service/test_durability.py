"""A message accepted with 202 survives SIGKILL of the service and is delivered exactly once after restart;
SIGTERM shuts down cleanly with exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.service.conftest import Upstream, eventually, free_port

CONFIG = """
restart_delay = 0.05
shutdown_timeout = 3.0
[sessions]
backoff_base = 0.05
backoff_cap = 0.3
connect_timeout = 2.0
"""


def spawn(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    cfg = tmp_path / "tether.toml"
    cfg.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return subprocess.Popen(
        [sys.executable, "-m", "tether.cli", "serve", "--config", str(cfg), "--port", str(port),
         "--data-dir", str(tmp_path / "data")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


async def wait_up(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    async def up() -> bool:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            return (await client.get("/health")).status_code in (200, 503)
        except httpx.TransportError:
            return False

    await eventually(up, timeout=20, what="service up")


async def test_durable_send_survives_sigkill_and_is_delivered_once(tmp_path: Path) -> None:
    """202 means on disk: kill -9 before delivery, restart, the upstream receives it exactly once."""
    port, up_port = free_port(), free_port()
    proc = spawn(tmp_path, port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as c:
        try:
            await wait_up(c, proc)
            resp = await c.post("/api/sessions", json={"id": "durable", "kind": "websocket",
                                                       "options": {"url": f"ws://127.0.0.1:{up_port}/"}})
            assert resp.status_code == 201
            resp = await c.post("/api/sessions/durable/messages", json={"payload": "keep me"},
                                headers={"Idempotency-Key": "order-1"})
            assert resp.status_code == 202
            mid = resp.json()["id"]
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        upstream = await Upstream(port=up_port).start()
        proc = spawn(tmp_path, port)
        try:
            await wait_up(c, proc)
            await eventually(lambda: upstream.received == ["keep me"], timeout=15, what="delivery after restart")
            # a retry by the client after the crash keeps the same id and sends nothing new
            again = await c.post("/api/sessions/durable/messages", json={"payload": "keep me"},
                                 headers={"Idempotency-Key": "order-1"})
            assert again.json()["id"] == mid
            delivered = (await c.get("/api/sessions/durable/messages", params={"status": "delivered"})).json()
            assert [m["id"] for m in delivered["messages"]] == [mid]
            await asyncio.sleep(0.5)
            assert upstream.received == ["keep me"]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
            out = proc.stdout.read().decode() if proc.stdout else ""
            assert "shutting down (SIGTERM)" in out and "Traceback" not in out
            assert "[durable] connected" in out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            await upstream.stop()


async def test_second_signal_forces_exit(tmp_path: Path) -> None:
    """While a graceful shutdown waits for an in-flight request, a second SIGTERM exits at once (130)."""
    port = free_port()
    proc = spawn(tmp_path, port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as c:
        try:
            await wait_up(c, proc)
            # an in-flight request: headers promise a body that never finishes arriving
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"kind\":")
            await writer.drain()
            await asyncio.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert proc.poll() is None  # still draining the in-flight request
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 10) == 130
            writer.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

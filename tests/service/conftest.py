"""Fixtures for the service: a real WebSocket upstream, a real uvicorn server, a webhook receiver."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
import websockets
from websockets.asyncio.server import serve as ws_serve

from tests.conftest import eventually  # noqa: F401  (service tests import it from here)
from tether.service._server import serve
from tether.service._service import Service
from tether.service._settings import Settings, load_settings

TOKEN = "s3cret-token-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




@dataclass
class Upstream:
    """A WebSocket server that records what it receives and can push or drop."""

    port: int = 0
    received: list[str] = field(default_factory=list)
    connections: int = 0
    clients: set[Any] = field(default_factory=set)
    handshake_headers: list[dict[str, str]] = field(default_factory=list)
    server: Any = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def handler(self, ws: Any) -> None:
        self.connections += 1
        self.handshake_headers.append(dict(ws.request.headers))
        self.clients.add(ws)
        try:
            async for msg in ws:
                self.received.append(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.clients.discard(ws)

    async def start(self, port: int = 0) -> "Upstream":
        self.server = await ws_serve(self.handler, "127.0.0.1", port or self.port or 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def push(self, message: str) -> None:
        for ws in list(self.clients):
            await ws.send(message)

    async def drop_all(self, code: int = 1011) -> None:
        for ws in list(self.clients):
            await ws.close(code, "dropped by test")

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = await Upstream().start()
    yield up
    await up.stop()


def fast_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings with small real intervals for loopback tests."""
    base: dict[str, Any] = dict(
        port=0, data_dir=tmp_path / "data", restart_delay=0.05, sweep_interval=3600.0, shutdown_timeout=3.0,
        max_message_bytes=64 * 1024,
        sessions=dict(backoff_base=0.05, backoff_cap=0.2, heartbeat_interval=5.0, heartbeat_timeout=5.0,
                      connect_timeout=2.0, max_attempts=None),
        webhook=dict(backoff_base=0.05, backoff_cap=0.2, timeout=2.0),
    )
    base.update(overrides)
    return load_settings(None, **base)


@dataclass
class Running:
    url: str
    service: Service
    client: httpx.AsyncClient
    stop: asyncio.Event
    task: asyncio.Task[int]

    async def wait_state(self, sid: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        async def check() -> Any:
            r = await self.client.get(f"/api/sessions/{sid}")
            return r.json() if r.status_code == 200 and r.json()["state"] == state else None

        return await eventually(check, timeout=timeout, what=f"{sid} {state}")


async def start_service(settings: Settings, token: str | None = None) -> Running:
    ready: asyncio.Future[tuple[Service, str]] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    def on_ready(service: Service, url: str) -> None:
        ready.set_result((service, url))

    task = asyncio.create_task(serve(settings, on_ready=on_ready, handle_signals=False, stop=stop))
    done, _ = await asyncio.wait({task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the startup error
    service, url = ready.result()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpx.AsyncClient(base_url=url, headers=headers, timeout=10.0, trust_env=False)
    return Running(url, service, client, stop, task)


async def stop_service(r: Running) -> None:
    await r.client.aclose()
    r.stop.set()
    assert await asyncio.wait_for(r.task, 20) == 0


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    r = await start_service(fast_settings(tmp_path))
    yield r
    await stop_service(r)


@dataclass
class WebhookReceiver:
    """A tiny HTTP server collecting POSTs (real sockets, no framework)."""

    port: int = 0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    fail_first: int = 0
    server: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if self.fail_first > 0:
                self.fail_first -= 1
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            else:
                self.requests.append((headers, body))
                writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> "WebhookReceiver":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookReceiver]:
    w = await WebhookReceiver().start()
    yield w
    await w.stop()

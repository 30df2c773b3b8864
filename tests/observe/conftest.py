"""Fixtures for tether.observe tests."""

from __future__ import annotations

from typing import Any

import pytest

from tether.observe import AlertManager, AlertRule
from tether.testing import FakeClock


class Recorder:
    """An alert action that keeps every notification it is given."""

    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.got: list[Any] = []

    async def send(self, notification: Any) -> None:
        self.got.append(notification)

    @property
    def statuses(self) -> list[str]:
        return [n.status for n in self.got]


class Source:
    """A mutable sample source: ``source.set("m", 1, session="s1")``."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def set(self, name: str, value: float, **labels: str) -> None:
        self.values[(name, tuple(sorted(labels.items())))] = value

    def drop(self, name: str, **labels: str) -> None:
        self.values.pop((name, tuple(sorted(labels.items()))), None)

    def __call__(self) -> list[tuple[str, dict[str, str], float]]:
        return [(n, dict(l), v) for (n, l), v in self.values.items()]


@pytest.fixture
def source() -> Source:
    return Source()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def manager(clock: FakeClock, source: Source, recorder: Recorder):
    m = AlertManager(source, rules=[], actions=[recorder], clock=clock, interval=1.0)
    m.start()
    yield m
    await m.close()


def down_rule(**kw: Any) -> AlertRule:
    opts: dict[str, Any] = dict(name="SessionDown", metric="tether_session_up", op="==", threshold=0, for_=120,
                                group_wait=0, group_interval=60, repeat_interval=3600)
    opts.update(kw)
    return AlertRule(**opts)


# ---- real local servers ----------------------------------------------------------------------
import asyncio  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402

import socket  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A tiny real HTTP server on 127.0.0.1 that records POSTs and answers with scripted statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses = list(statuses or [])
        self.got_one = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body, "status": status})
                payload = json.dumps({"ok": status < 400}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                if status < 400:
                    receiver.got_one.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    async def wait(self, n: int = 1, timeout: float = 10.0) -> None:
        """Wait until n successful requests arrived."""
        for _ in range(int(timeout / 0.01)):
            if sum(1 for r in self.requests if r["status"] < 400) >= n:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"expected {n} successful requests, got {self.requests}")


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


class SMTPSink:
    """A real aiosmtpd server on 127.0.0.1 that keeps every message."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Any] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                sink.messages.append(envelope)
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    async def wait(self, n: int = 1, timeout: float = 10.0) -> None:
        for _ in range(int(timeout / 0.01)):
            if len(self.messages) >= n:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"expected {n} emails, got {len(self.messages)}")


@pytest.fixture
def smtp():
    sink = SMTPSink()
    sink.controller.start()
    try:
        yield sink
    finally:
        sink.controller.stop()


class Served:
    """A FastAPI app served by a real uvicorn on 127.0.0.1."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off", access_log=False))
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "Served":
        self.task = asyncio.create_task(self.server.serve())
        for _ in range(1000):
            if self.server.started:
                return self
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        raise AssertionError("uvicorn did not start")

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)

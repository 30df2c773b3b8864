"""A real redis-server on a free loopback port (one per test module), and a fresh key prefix per test."""

from __future__ import annotations

import itertools
import socket
import subprocess
import time
from typing import Iterator

import pytest

from tests.conftest import free_port, require_binary

_prefixes = itertools.count()


class RedisServer:
    """A throwaway ``redis-server`` (no persistence) on 127.0.0.1."""

    def __init__(self, binary: str, port: int, workdir: str) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # bounded wait for the port
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not listen within 10 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = require_binary("redis-server")
    server = RedisServer(binary, free_port(), str(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    """A key namespace nobody else in this module uses."""
    return f"t{next(_prefixes)}"

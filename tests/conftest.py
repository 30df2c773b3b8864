"""Shared fixtures. Tests mirror src/tether/."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from typing import Any, Awaitable, Callable

import pytest

from tether.testing import FakeClock

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str) -> str:
    """Return the path of a system binary; in CI it must exist, elsewhere skip with a printed reason."""
    path = shutil.which(name)
    if path:
        return path
    if IN_CI:
        pytest.fail(f"{name} is required in CI; .ci/run must install it")
    print(f"SKIP: {name} not installed (run .ci/run or apt-get install it)")
    pytest.skip(f"{name} not installed; .ci/run installs it in CI")
    raise AssertionError  # unreachable


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def eventually(check: Callable[[], Awaitable[Any] | Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``check`` every 20 ms until it returns something truthy (generous timeout, no timing asserts)."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")

"""Shared pieces of the benchmark harness: result rows, ports, limits, child processes, tether probe.

Every scenario module exposes ``run(**options) -> Scenario`` and can be run alone with
``python -m bench.<scenario>``; ``python -m bench`` runs them all and writes BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HOST = "127.0.0.1"  # every byte of benchmark traffic stays on loopback


@dataclass
class Row:
    """One system's figures in one scenario.

    ``figures`` keeps insertion order (it becomes the table's columns); ``primary`` names the figure
    the ratio is computed on; ``group`` separates sub-tables (e.g. ``N=1000``) so ratios compare like
    with like; ``baseline`` marks the tether row the ratios are taken against.
    """

    system: str
    figures: dict[str, Any]
    group: str = ""
    baseline: bool = False
    note: str = ""


@dataclass
class Scenario:
    """The outcome of one scenario: rows plus how to read them."""

    name: str
    title: str
    primary: str
    lower_is_better: bool
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "primary": self.primary,
            "lower_is_better": self.lower_is_better,
            "rows": [r.__dict__ for r in self.rows],
            "notes": self.notes,
            "seconds": self.seconds,
            "error": self.error,
        }


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def raise_nofile(want: int = 65536) -> int:
    """Raise RLIMIT_NOFILE as far as the hard limit allows (thousands of sockets); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def tether_api() -> Any:
    """The module that provides ``connect`` and ``Admission``: ``tether`` itself, or ``tether.link``
    while the top-level re-export has not landed yet."""
    import tether

    if hasattr(tether, "connect") and hasattr(tether, "Admission"):
        return tether
    from tether import link

    return link


def tether_link_available() -> bool:
    """True once the Link has landed; scenarios mark tether rows n/a otherwise."""
    try:
        api = tether_api()
        return hasattr(api, "connect") and hasattr(api, "Admission")
    except Exception:  # an in-progress checkout may not import at all
        return False


def na_row(system: str, why: str, group: str = "", baseline: bool = False) -> Row:
    return Row(system, {"status": f"n/a: {why}"}, group=group, baseline=baseline)


def fmt(v: Any) -> str:
    """Human figure formatting for tables."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if v != v:  # NaN
            return "n/a"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def print_scenario(sc: Scenario) -> None:
    from .report import scenario_markdown

    print(scenario_markdown(sc))


class Child:
    """A helper process speaking JSON lines: we write commands to stdin, it answers on stdout.

    Used for servers (so the server's CPU is not the client's) and for isolated client processes
    (so RSS deltas are not polluted by a previous run). Always stopped in ``close()``.
    """

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = [PY, "-m", *args]
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, ready_timeout: float = 30.0) -> dict[str, Any]:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            cwd=str(ROOT),
            env=self.env,
            limit=1 << 24,
        )
        return await self.read(ready_timeout)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def read(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        for _ in range(10_000):  # skip stray non-JSON lines, bounded
            left = deadline - time.monotonic()
            if left <= 0:
                break
            line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            if not line:
                raise RuntimeError(f"{self.args[2:]} exited (rc={self.proc.returncode})")
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict):
                    return msg
        raise TimeoutError(f"{self.args[2:]} did not answer within {timeout} s")

    async def ask(self, cmd: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        await self.send(cmd)
        return await self.read(timeout)

    async def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)

    async def close(self, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.kill()
                await asyncio.wait_for(self.proc.wait(), timeout)
        else:
            await self.proc.wait()
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()


async def stdin_lines() -> asyncio.StreamReader:
    """An asyncio reader on this process's stdin (for Child processes)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def peak_per_second(stamps: list[float], bucket: float = 0.1) -> float:
    """Highest count of events in any sliding 1-second window (buckets of ``bucket`` seconds)."""
    if not stamps:
        return 0.0
    stamps = sorted(stamps)
    best = 0
    j = 0
    for i, t in enumerate(stamps):
        while stamps[j] < t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return float(best)


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    box = [time.monotonic()]
    yield box
    box.append(time.monotonic() - box[0])


def lib_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"

"""``tether serve`` in its own process, with a temp data dir, a loopback port and a bearer token."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

from ._common import HOST, free_port


def tether_cli() -> list[str]:
    exe = Path(sys.executable).with_name("tether")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("tether")
    return [found] if found else [sys.executable, "-m", "tether.cli"]


class ServeProcess:
    """``async with ServeProcess(data_dir) as svc: svc.client.get("/api/sessions")``."""

    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.token = secrets.token_urlsafe(16)
        self.env = {**os.environ, "TETHER_TOKEN": self.token, "TETHER_LOG_LEVEL": "warning", **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        self.client: Any = None
        self.exit_code: int | None = None
        self._log: Any = None

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def start(self, timeout: float = 30.0) -> "ServeProcess":
        import httpx

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.data_dir / "serve.log", "wb")
        self.proc = await asyncio.create_subprocess_exec(
            *tether_cli(), "serve", "--host", HOST, "--port", str(self.port), "--data-dir", str(self.data_dir),
            stdout=self._log, stderr=self._log, env=self.env)
        self.client = httpx.AsyncClient(base_url=self.base, headers={"Authorization": f"Bearer {self.token}"},
                                        timeout=60)
        for _ in range(int(timeout * 10)):
            with contextlib.suppress(httpx.HTTPError):
                if (await self.client.get("/health")).status_code in (200, 503):
                    return self
            if self.proc.returncode is not None:
                raise RuntimeError(f"tether serve exited with {self.proc.returncode}: {self.log_tail()}")
            await asyncio.sleep(0.1)
        await self.close()
        raise TimeoutError(f"tether serve did not answer /health within {timeout} s")

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return (self.data_dir / "serve.log").read_text(errors="replace")[-n:]
        return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def close(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the service drains and exits), SIGKILL after ``timeout``; returns the exit code."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()
        if self.proc is not None:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.terminate()
                try:
                    await asyncio.wait_for(self.proc.wait(), timeout)
                except asyncio.TimeoutError:
                    self.proc.kill()
                    await self.proc.wait()
            self.exit_code = self.proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.exit_code

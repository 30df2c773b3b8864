"""A real nginx reverse proxy for WebSockets, started with its own temp prefix on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ._common import HOST, free_port

CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://{host}:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout {timeout}s;
            proxy_send_timeout {timeout}s;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    """The nginx binary on PATH (or in /usr/sbin, which is not on every PATH), else None."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


class Nginx:
    """``async with Nginx(upstream_port, read_timeout=2) as ngx: ngx.port``."""

    def __init__(self, upstream_port: int, *, read_timeout: float = 2.0) -> None:
        self.upstream_port = upstream_port
        self.read_timeout = read_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    async def start(self) -> "Nginx":
        binary = nginx_binary()
        if binary is None:
            raise FileNotFoundError("nginx is not installed (apt-get install nginx-light)")
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-nginx-")
        prefix = Path(self._tmp.name)
        self.port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(CONF.format(prefix=prefix, host=HOST, port=self.port, upstream=self.upstream_port,
                                    timeout=f"{self.read_timeout:g}"))
        self.proc = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"nginx exited: {err.strip()}")
            try:
                _, w = await asyncio.open_connection(HOST, self.port)
                w.close()
                return self
            except OSError:
                await asyncio.sleep(0.05)
        await self.close()
        raise TimeoutError("nginx did not start listening within 10 s")

    async def __aenter__(self) -> "Nginx":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            for _ in range(100):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None

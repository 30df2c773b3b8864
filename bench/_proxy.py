"""A fault-injecting TCP proxy on 127.0.0.1.

``blackhole()`` stops forwarding in both directions without closing either socket: bytes (and EOFs)
are read but held back, exactly what a peer behind a dead NAT entry or a pulled cable looks like from
the client: nothing comes back, and nothing says so. New connections made while blackholed are
accepted by the kernel but never reach the upstream. ``heal()`` releases everything held, in order, so
a short partition does not corrupt the byte stream; ``heal(drop=True)`` instead resets every
connection that lived through the partition and discards what it held (a NAT or load balancer that
lost its flow table: whatever was in flight is gone, and only an acknowledgement protocol notices). ``reset_all()`` aborts every connection with a
TCP RST.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from ._common import HOST

__all__ = ["BlackholeProxy"]


class _Pipe:
    """One client connection and its upstream twin."""

    def __init__(self, proxy: "BlackholeProxy", creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.creader = creader
        self.cwriter = cwriter
        self.uwriter: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        try:
            await self.proxy._open.wait()  # a connection opened during a blackhole never gets through
            ureader, self.uwriter = await asyncio.open_connection(self.proxy.target_host, self.proxy.target_port)
        except (OSError, asyncio.CancelledError):
            self.abort()
            return
        up = asyncio.create_task(self._pump(self.creader, self.uwriter))
        down = asyncio.create_task(self._pump(ureader, self.cwriter))
        self.tasks = [up, down]
        try:
            await asyncio.gather(up, down, return_exceptions=True)
        finally:
            self.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(100_000_000):  # bounded: ends on EOF, error or abort
            try:
                data = await reader.read(65536)
            except (OSError, asyncio.IncompleteReadError):
                data = b""
            if not self.proxy._open.is_set():
                await self.proxy._open.wait()  # hold what was read (and an EOF) until heal
            if not data:
                with contextlib.suppress(OSError, RuntimeError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            try:
                writer.write(data)
                await writer.drain()
            except (OSError, RuntimeError):
                return

    def abort(self, rst: bool = False) -> None:
        for w in (self.cwriter, self.uwriter):
            if w is None:
                continue
            if rst:
                sock = w.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(Exception):
                w.transport.abort()
        for t in self.tasks:
            t.cancel()


class BlackholeProxy:
    """``async with BlackholeProxy(target_port) as proxy: proxy.port``; then blackhole/heal/reset_all."""

    def __init__(self, target_port: int, target_host: str = HOST) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._pipes: set[_Pipe] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = asyncio.Event()
        self._open.set()
        self.accepted = 0

    async def start(self) -> "BlackholeProxy":
        self._server = await asyncio.start_server(self._on_client, HOST, 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aenter__(self) -> "BlackholeProxy":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        pipe = _Pipe(self, reader, writer)
        self._pipes.add(pipe)
        try:
            await pipe.run()
        finally:
            self._pipes.discard(pipe)

    @property
    def blackholed(self) -> bool:
        return not self._open.is_set()

    @property
    def connections(self) -> int:
        return len(self._pipes)

    def blackhole(self) -> None:
        self._open.clear()

    def heal(self, drop: bool = False) -> int:
        """End the blackhole; with ``drop`` the connections that lived through it are reset and
        what they held is discarded. Returns how many were dropped."""
        dropped = self.reset_all() if drop and self.blackholed else 0
        self._open.set()
        return dropped

    def reset_all(self) -> int:
        """Abort every proxied connection with a TCP RST on both sides; returns how many."""
        pipes = list(self._pipes)
        for p in pipes:
            p.abort(rst=True)
        return len(pipes)

    async def close(self) -> None:
        self.heal()
        if self._server is not None:
            self._server.close()
        for p in list(self._pipes):
            p.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
        # let pump tasks observe the aborts
        for _ in range(50):
            if not self._pipes:
                break
            await asyncio.sleep(0.02)

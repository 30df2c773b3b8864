"""FlakyServer: a real local WebSocket server you can tell to misbehave, for testing reconnecting clients."""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Awaitable, Callable

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

__all__ = ["FlakyServer"]

Handler = Callable[[ServerConnection], Awaitable[None]]


class FlakyServer:
    """A ``websockets`` server on 127.0.0.1 that a test can break on demand.

    By default it echoes every message back and records it. Tell it to:

    * ``await drop()``: abort every TCP connection now (no close frame: the client sees 1006);
    * ``blackhole()``: stop reading, writing and answering pings on every connection, old and new,
      without closing anything (a half-open peer); ``heal()`` undoes it for new connections;
    * ``reject(status, retry_after=...)``: refuse handshakes with an HTTP status (and ``Retry-After``);
    * ``close_on_accept(code, reason)``: accept each handshake, then close at once;
    * ``await close_all(code, reason)``: close every open connection with a close frame;
    * ``await restart(down_for=...)``: stop listening (aborting connections), then listen again on
      the same port; ``await stop()`` / ``await start()`` do the halves;
    * ``accept()``: behave normally again.

    It counts ``handshakes`` (monotonic timestamps of every handshake attempt, so tests can check
    spacing and rates), ``connections`` (accepted), ``open_connections`` and ``max_concurrent``,
    ``rejected``, ``messages`` (received, in order), ``request_headers`` (one dict per attempt) and
    ``close_codes`` (how each accepted connection ended: the client's close code, or 1006/None).

    Example::

        async with FlakyServer() as server, tether.connect(server.url) as link:
            await link.wait_connected(5)
            await server.drop()
            await server.wait_until(lambda s: s.connections == 2)

    Args:
        handler: an ``async def handler(connection)`` replacing the echo (messages are then not
            recorded unless it calls ``server.record(message)``).
        echo: with the default handler, send every message back (False: only record it).
        host: where to listen (loopback by default).
        port: the port (0: pick a free one; ``restart()`` keeps it).
    """

    def __init__(self, handler: Handler | None = None, *, echo: bool = True, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.echo = echo
        self._handler = handler
        self._server: Server | None = None
        self._conns: weakref.WeakSet[ServerConnection] = weakref.WeakSet()  # every connection, even mid-handshake
        self._open: set[ServerConnection] = set()
        self._reject: tuple[int, float | str | None, str] | None = None
        self._close_on_accept: tuple[int, str] | None = None
        self._blackholed = False
        self._healed = asyncio.Event()
        self._changed = asyncio.Event()
        self.handshakes: list[float] = []
        self.request_headers: list[dict[str, str]] = []
        self.connections = 0
        self.rejected = 0
        self.max_concurrent = 0
        self.messages: list[str | bytes] = []
        self.close_codes: list[int | None] = []

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>/`` (valid once started)."""
        return f"ws://{self.host}:{self.port}/"

    @property
    def open_connections(self) -> int:
        """Connections open right now."""
        return len(self._open)

    async def start(self) -> None:
        """Listen (again) on ``port``."""
        if self._server is not None:
            return
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            ping_interval=None,  # the server never pings: the client's heartbeat is under test
            close_timeout=1.0,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and abort every connection (like a crashed server); a blackhole ends with it."""
        server, self._server = self._server, None
        if server is None:
            return
        self._abort_all()
        self.heal()  # handshakes parked by blackhole() must finish so the server can shut down
        server.close(close_connections=False)
        try:
            await asyncio.wait_for(server.wait_closed(), 5.0)
        except asyncio.TimeoutError:  # pragma: no cover - handlers are all aborted above
            pass

    async def restart(self, down_for: float = 0.0) -> None:
        """Stop, stay down ``down_for`` seconds, then listen again on the same port."""
        await self.stop()
        if down_for > 0:
            await asyncio.sleep(down_for)
        await self.start()

    async def __aenter__(self) -> "FlakyServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- misbehaviour ------------------------------------------------------------------------------

    def accept(self) -> None:
        """Behave normally again for new handshakes (undo reject / close_on_accept / blackhole)."""
        self._reject = None
        self._close_on_accept = None
        self.heal()

    def reject(self, status: int = 503, *, retry_after: float | str | None = None, body: str = "") -> None:
        """Refuse every new handshake with HTTP ``status`` (and a ``Retry-After`` header when given)."""
        self._reject = (status, retry_after, body or f"rejected with {status}\n")

    def close_on_accept(self, code: int = 1000, reason: str = "") -> None:
        """Accept each new handshake, then close it at once with ``code`` (an accept-then-close peer)."""
        self._close_on_accept = (code, reason)

    def blackhole(self) -> None:
        """Go silent on every connection without closing it: no reads, no writes, no pongs.

        New connections get a TCP accept but no handshake answer until :meth:`heal`.
        """
        self._blackholed = True
        self._healed.clear()
        for conn in list(self._conns):
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.pause_reading()

    def heal(self) -> None:
        """Stop blackholing new connections (existing blackholed ones stay silent: drop them)."""
        self._blackholed = False
        self._healed.set()

    async def drop(self) -> None:
        """Abort every TCP connection now: the clients see an abnormal closure (1006)."""
        self._abort_all()
        await asyncio.sleep(0)

    async def close_all(self, code: int = 1000, reason: str = "") -> None:
        """Close every open connection with a close frame ``code``/``reason``."""
        conns = list(self._open)
        if conns:
            await asyncio.gather(*(c.close(code, reason) for c in conns), return_exceptions=True)

    async def send_all(self, message: str | bytes) -> int:
        """Send ``message`` to every open connection; returns how many got it."""
        sent = 0
        for conn in list(self._open):
            try:
                await conn.send(message)
                sent += 1
            except ConnectionClosed:
                pass
        return sent

    def record(self, message: str | bytes) -> None:
        """Record a received message (for custom handlers that want ``messages`` kept)."""
        self.messages.append(message)
        self._notify()

    async def wait_until(self, predicate: Callable[["FlakyServer"], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate(server)`` is true; raises TimeoutError after ``timeout`` seconds."""

        async def poll() -> None:
            while not predicate(self):
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), 0.05)
                except asyncio.TimeoutError:
                    pass

        await asyncio.wait_for(poll(), timeout)

    # -- internals ---------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()

    def _abort_all(self) -> None:
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.abort()

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes.append(time.monotonic())
        self.request_headers.append({k: v for k, v in request.headers.raw_items()})
        self._conns.add(connection)
        self._notify()
        if self._reject is not None:
            status, retry_after, body = self._reject
            self.rejected += 1
            response = connection.respond(status, body)
            if retry_after is not None:
                response.headers["Retry-After"] = str(retry_after)
            return response
        if self._blackholed:
            if connection.transport is not None:
                connection.transport.pause_reading()
            await self._healed.wait()  # until heal() or stop(); the client times out first
            if connection.transport is None or connection.transport.is_closing():
                return connection.respond(503, "blackholed\n")
            connection.transport.resume_reading()
        return None

    async def _handle(self, conn: ServerConnection) -> None:
        self.connections += 1
        self._open.add(conn)
        self.max_concurrent = max(self.max_concurrent, len(self._open))
        self._notify()
        try:
            if self._close_on_accept is not None:
                code, reason = self._close_on_accept
                await conn.close(code, reason)
                return
            if self._handler is not None:
                await self._handler(conn)
                return
            while True:
                message = await conn.recv()
                if self._blackholed:
                    await conn.wait_closed()
                    return
                self.record(message)
                if self.echo:
                    await conn.send(message)
        except ConnectionClosed:
            pass
        finally:
            self.close_codes.append(conn.close_code)
            self._open.discard(conn)
            self._conns.discard(conn)
            self._notify()

    def __repr__(self) -> str:
        return f"FlakyServer({self.url}, connections={self.connections}, open={self.open_connections})"

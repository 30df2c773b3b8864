"""tether.testing.FlakyServer: each misbehaviour and counter, checked with a plain websockets client."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from tether.testing import FlakyServer


async def test_echoes_and_records_in_order() -> None:
    """By default it echoes every message and records them in order; it counts connections."""
    async with FlakyServer() as server:
        async with connect(server.url) as ws:
            for m in ["a", b"b", "c"]:
                await ws.send(m)
                assert await ws.recv() == m
        assert server.messages == ["a", b"b", "c"]
        assert server.connections == 1 and len(server.handshakes) == 1


async def test_drop_aborts_without_close_frame() -> None:
    """drop() aborts TCP: the client sees an abnormal closure (no close frame)."""
    async with FlakyServer() as server:
        async with connect(server.url) as ws:
            await server.wait_until(lambda s: s.open_connections == 1)
            await server.drop()
            with pytest.raises(ConnectionClosedError) as info:
                await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd is None


async def test_reject_with_status_and_retry_after() -> None:
    """reject(503, retry_after=2) refuses the handshake with that status and a Retry-After header."""
    async with FlakyServer() as server:
        server.reject(503, retry_after=2)
        with pytest.raises(InvalidStatus) as info:
            await connect(server.url)
        assert info.value.response.status_code == 503
        assert info.value.response.headers["Retry-After"] == "2"
        assert server.rejected == 1 and server.connections == 0 and len(server.handshakes) == 1
        server.accept()
        async with connect(server.url):
            pass
        assert server.connections == 1


async def test_close_on_accept_and_close_all_codes() -> None:
    """close_on_accept(code) closes right after the handshake; close_all(code, reason) closes open ones."""
    async with FlakyServer() as server:
        server.close_on_accept(4001, "bye")
        async with connect(server.url) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd.code == 4001 and info.value.rcvd.reason == "bye"
        server.accept()
        async with connect(server.url) as ws:
            await server.wait_until(lambda s: s.open_connections == 1)
            await server.close_all(1012, "restart")
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd.code == 1012


async def test_blackhole_stops_pongs_and_parks_handshakes() -> None:
    """blackhole(): open connections stop answering pings; new handshakes get no answer until heal()."""
    async with FlakyServer() as server:
        async with connect(server.url, ping_interval=None, close_timeout=0.2) as ws:
            pong = await ws.ping()
            await asyncio.wait_for(pong, 5)
            server.blackhole()
            pong = await ws.ping()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(pong), 0.3)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(connect(server.url, open_timeout=None), 0.3)
            server.heal()
            async with connect(server.url, open_timeout=5):
                pass


async def test_restart_keeps_port_and_counts_concurrency() -> None:
    """restart() stops listening (aborting clients) and listens again on the same port; max_concurrent is kept."""
    async with FlakyServer() as server:
        port = server.port
        a = await connect(server.url)
        b = await connect(server.url)
        await server.wait_until(lambda s: s.open_connections == 2)
        await server.restart(down_for=0.05)
        assert server.port == port
        for ws in (a, b):
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        async with connect(server.url):
            pass
        assert server.max_concurrent == 2 and server.connections == 3


async def test_stopped_server_refuses_connections() -> None:
    """stop() closes the listening socket: connecting is refused until start()."""
    async with FlakyServer() as server:
        await server.stop()
        with pytest.raises(OSError):
            await connect(server.url)
        await server.start()
        async with connect(server.url):
            pass


async def test_custom_handler_and_send_all() -> None:
    """A custom handler replaces the echo; send_all pushes to every open connection; record() keeps messages."""

    async def handler(conn) -> None:
        async for message in conn:
            server.record(message)
            await conn.send(message.upper())

    server = FlakyServer(handler)
    async with server:
        async with connect(server.url) as ws:
            await ws.send("hi")
            assert await ws.recv() == "HI"
            assert await server.send_all("push") == 1
            assert await ws.recv() == "push"
        assert server.messages == ["hi"]

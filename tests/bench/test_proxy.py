"""bench._proxy.BlackholeProxy: the fault injector the detection scenario and the chaos soak rely on."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from bench._proxy import BlackholeProxy

WAIT = 10.0


async def _echo(ws):  # type: ignore[no-untyped-def]
    async for msg in ws:
        await ws.send(msg)


@pytest.fixture
async def upstream():
    async with serve(_echo, "127.0.0.1", 0, ping_interval=None) as server:
        yield server.sockets[0].getsockname()[1]


async def test_forwards_both_ways(upstream: int) -> None:
    """Without faults the proxy is transparent."""
    async with BlackholeProxy(upstream) as proxy:
        async with connect(f"ws://127.0.0.1:{proxy.port}/", ping_interval=None) as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), WAIT) == "hello"


async def test_blackhole_holds_without_closing_then_heal_delivers_in_order(upstream: int) -> None:
    """A blackhole answers nothing and closes nothing; heal() releases what was held, in order."""
    async with BlackholeProxy(upstream) as proxy:
        async with connect(f"ws://127.0.0.1:{proxy.port}/", ping_interval=None) as ws:
            proxy.blackhole()
            for i in range(3):
                await ws.send(f"m{i}")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.3)
            assert ws.close_code is None  # nothing told the client
            proxy.heal()
            got = [await asyncio.wait_for(ws.recv(), WAIT) for _ in range(3)]
            assert got == ["m0", "m1", "m2"]


async def test_heal_with_drop_resets_the_flows_that_lived_through_it(upstream: int) -> None:
    """heal(drop=True) resets old connections and loses what they held; new ones work."""
    async with BlackholeProxy(upstream) as proxy:
        ws = await connect(f"ws://127.0.0.1:{proxy.port}/", ping_interval=None, close_timeout=1)
        proxy.blackhole()
        await ws.send("lost")
        assert proxy.heal(drop=True) == 1
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT)
        async with connect(f"ws://127.0.0.1:{proxy.port}/", ping_interval=None) as ws2:
            await ws2.send("fresh")
            assert await asyncio.wait_for(ws2.recv(), WAIT) == "fresh"


async def test_reset_all_aborts_every_connection(upstream: int) -> None:
    """reset_all() cuts every proxied connection and reports how many."""
    async with BlackholeProxy(upstream) as proxy:
        ws = await connect(f"ws://127.0.0.1:{proxy.port}/", ping_interval=None, close_timeout=1)
        await ws.send("x")
        await asyncio.wait_for(ws.recv(), WAIT)
        assert proxy.reset_all() == 1
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT)

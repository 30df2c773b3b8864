"""The Link's compression= option ("lean" permessage-deflate with lazy zlib contexts) and its idle footprint."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate
from websockets.frames import Frame, Opcode

import tether
from tether import ConfigError
from tether.link._deflate import LazyPerMessageDeflate

WAIT = 10.0


async def echo_server(**kw: Any) -> Any:
    async def handler(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    return await serve(handler, "127.0.0.1", 0, **kw)


def url_of(server: Any) -> str:
    return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


def link_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("tether.link[")]


def extension(link: tether.Link) -> Any:
    exts = link._ws.protocol.extensions  # type: ignore[union-attr]
    return exts[0] if exts else None


@pytest.mark.parametrize("bad", ["gzip", "", 5, True, [], ["deflate"], object()])
def test_bad_compression_raises_config_error(bad: Any) -> None:
    """compression= takes "lean", "websockets", None or extension factories; anything else is a ConfigError naming the choices."""
    with pytest.raises(ConfigError, match="compression must be"):
        tether.connect("ws://127.0.0.1:1/", compression=bad)


def test_lazy_deflate_encodes_like_websockets() -> None:
    """Lazy contexts give the same bytes as websockets' own PerMessageDeflate, and decode them back."""
    eager = PerMessageDeflate(False, False, 12, 12, {"memLevel": 4})
    lazy = LazyPerMessageDeflate(False, False, 12, 12, {"memLevel": 4})
    peer = LazyPerMessageDeflate(False, False, 12, 12, {"memLevel": 4})
    assert "encoder" not in vars(lazy) and "decoder" not in vars(lazy)
    for i in range(20):
        body = json.dumps({"update_id": i, "message": {"text": "hello " * i}}).encode()
        a, b = eager.encode(Frame(Opcode.TEXT, body)), lazy.encode(Frame(Opcode.TEXT, body))
        assert a.data == b.data and b.rsv1
        assert peer.decode(b).data == body
    assert lazy.encode(Frame(Opcode.PING, b"x")).data == b"x"


async def test_default_is_lean_and_makes_contexts_on_first_use() -> None:
    """By default the link negotiates 12-bit windows and holds no zlib context until a message needs one."""
    async with await echo_server() as server, tether.connect(url_of(server)) as link:
        await link.wait_connected(WAIT)
        ext = extension(link)
        assert isinstance(ext, LazyPerMessageDeflate)
        assert (ext.local_max_window_bits, ext.remote_max_window_bits) == (12, 12)
        assert "encoder" not in vars(ext) and "decoder" not in vars(ext)
        await link.send('{"text": "hi"}')
        assert await asyncio.wait_for(link.recv(), WAIT) == '{"text": "hi"}'
        assert "encoder" in vars(ext) and "decoder" in vars(ext)


@pytest.mark.parametrize(
    ("compression", "expect"),
    [(None, None), ("websockets", PerMessageDeflate), ("default", PerMessageDeflate)],
)
async def test_compression_off_or_websockets_defaults(compression: Any, expect: type | None) -> None:
    """compression=None negotiates nothing; "websockets" (alias "default") uses websockets' own eager extension."""
    async with await echo_server() as server, tether.connect(url_of(server), compression=compression) as link:
        await link.wait_connected(WAIT)
        ext = extension(link)
        assert (ext is None) if expect is None else (type(ext) is expect)
        await link.send("ping me")
        assert await asyncio.wait_for(link.recv(), WAIT) == "ping me"


async def test_explicit_extension_factories_are_used() -> None:
    """A list of websockets extension factories is offered as given."""
    factory = ClientPerMessageDeflateFactory(client_max_window_bits=10, compress_settings={"memLevel": 3})
    async with await echo_server() as server, tether.connect(url_of(server), compression=[factory]) as link:
        await link.wait_connected(WAIT)
        assert extension(link).local_max_window_bits == 10


async def test_server_ignoring_server_window_still_gets_compression() -> None:
    """A server that answers without server_max_window_bits (not declining, as it should) still connects, compressed."""

    def strip(connection: Any, request: Any, response: Any) -> None:
        if "Sec-WebSocket-Extensions" in response.headers:
            del response.headers["Sec-WebSocket-Extensions"]
            response.headers["Sec-WebSocket-Extensions"] = "permessage-deflate; client_max_window_bits=12"

    async with await echo_server(process_response=strip) as server, tether.connect(url_of(server)) as link:
        await link.wait_connected(WAIT)
        ext = extension(link)
        assert isinstance(ext, LazyPerMessageDeflate) and ext.remote_max_window_bits == 15
        for i in range(3):
            await link.send(json.dumps({"n": i, "text": "compressed " * 20}))
            assert json.loads(await asyncio.wait_for(link.recv(), WAIT))["n"] == i


async def test_idle_link_runs_one_task_and_writer_only_while_queued() -> None:
    """An idle connected link keeps one task (its reader); a writer exists only while messages are queued."""
    async with await echo_server() as server:
        link = tether.connect(url_of(server))
        for i in range(3):
            await link.send(f"m{i}")  # not started: buffered
        async with link:
            await link.wait_connected(WAIT)
            got = [await asyncio.wait_for(link.recv(), WAIT) for _ in range(3)]
            assert got == ["m0", "m1", "m2"]
            await asyncio.sleep(0.05)
            assert [t.get_name().rsplit(".", 1)[-1] for t in link_tasks()] == ["reader"]
        assert link_tasks() == []


def test_link_instance_dict_stays_key_shared() -> None:
    """A Link keeps at most 29 attributes, so CPython shares its dict keys (past that each idle link pays ~1.3 KiB)."""
    import sys

    links = [tether.connect("ws://127.0.0.1:1/") for _ in range(2)]
    assert len(vars(links[1])) <= 29, list(vars(links[1]))
    assert sys.getsizeof(vars(links[1])) < 600

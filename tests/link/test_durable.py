"""Durable mode: a Link backed by a tether.store Outbox (real SQLite in tmp_path) against FlakyServer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import tether
from tether import Backoff, ConfigError, MessageTypeError
from tether.link import JsonAck
from tether.store import Outbox
from tether.testing import FlakyServer

WAIT = 10.0


def fast(**kw: Any) -> dict[str, Any]:
    opts: dict[str, Any] = dict(heartbeat_interval=0.1, heartbeat_timeout=0.2, connect_timeout=2.0, backoff=Backoff(base=0.02, cap=0.1))
    opts.update(kw)
    return opts


async def until(pred: Any, timeout: float = WAIT) -> None:
    async def poll() -> None:
        while not await pred():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def test_send_is_on_disk_then_delivered_in_order(tmp_path: Any) -> None:
    """send() returns once the message is in the outbox; after connecting they are written in order and acked."""
    async with FlakyServer(echo=False) as server, Outbox(tmp_path / "o.db", synchronous="NORMAL") as outbox:
        await server.stop()
        async with tether.connect(server.url, outbox=outbox, session="s1", **fast()) as link:
            for i in range(20):
                await link.send(f"m{i}")
            assert await outbox.depth("s1") == 20 and link.stats.buffered == 20
            await server.start()
            await server.wait_until(lambda s: len(s.messages) == 20)

            async def drained() -> bool:
                return await outbox.depth("s1") == 0

            await until(drained)
        assert server.messages == [f"m{i}" for i in range(20)]
        assert link.stats.sent == 20 and link.stats.buffered == 0


async def test_messages_survive_the_process(tmp_path: Any) -> None:
    """Messages sent while down by a link that then goes away are delivered by the next link on the same file."""
    path = tmp_path / "o.db"
    async with FlakyServer(echo=False) as server:
        await server.stop()
        async with Outbox(path, synchronous="NORMAL") as outbox:
            async with tether.connect(server.url, outbox=outbox, session="s", **fast()) as link:
                await link.send("first")
                await link.send("second")
        await server.start()
        async with Outbox(path, synchronous="NORMAL") as outbox:
            async with tether.connect(server.url, outbox=outbox, session="s", **fast()):
                await server.wait_until(lambda s: s.messages == ["first", "second"])


async def test_json_ack_resends_unacked_after_reconnect(tmp_path: Any) -> None:
    """With JsonAck, a message the peer never acked is sent again after a reconnect; acks never reach recv()."""
    acking = False

    async def handler(conn: Any) -> None:
        async for message in conn:
            server.record(message)
            if acking:
                await conn.send(json.dumps({"type": "ack", "id": json.loads(message)["id"]}))
                await conn.send("app-data")

    server = FlakyServer(handler)
    async with server, Outbox(tmp_path / "o.db", synchronous="NORMAL") as outbox:
        async with tether.connect(server.url, outbox=outbox, session="s", ack=JsonAck(), **fast()) as link:
            await link.send('{"text":"hello"}')
            await server.wait_until(lambda s: len(s.messages) == 1)
            assert await outbox.depth("s") == 1  # written but not acknowledged
            acking = True
            await server.drop()
            await server.wait_until(lambda s: len(s.messages) == 2)
            first, again = (json.loads(m) for m in server.messages)
            assert first == again and first["text"] == "hello" and first["id"]
            assert await asyncio.wait_for(link.recv(), WAIT) == "app-data"

            async def drained() -> bool:
                return await outbox.depth("s") == 0

            await until(drained)


async def test_json_ack_needs_json_objects(tmp_path: Any) -> None:
    """With ack=JsonAck(), send() of a non-JSON payload raises MessageTypeError and stores nothing."""
    async with Outbox(tmp_path / "o.db", synchronous="NORMAL") as outbox:
        link = tether.connect("ws://127.0.0.1:1/", outbox=outbox, session="s", ack=JsonAck())
        with pytest.raises(MessageTypeError, match="JSON object"):
            await link.send("plain text")
        assert await outbox.depth("s") == 0


def test_durable_options_go_together() -> None:
    """outbox= without session=, or ack= without outbox=, raises ConfigError saying what is missing."""
    with pytest.raises(ConfigError, match="session"):
        tether.connect("ws://127.0.0.1:1/", outbox=object())
    with pytest.raises(ConfigError, match="outbox"):
        tether.connect("ws://127.0.0.1:1/", ack=JsonAck())
    with pytest.raises(ConfigError, match="outbox"):
        tether.connect("ws://127.0.0.1:1/", outbox=object(), session="s")


def test_json_ack_stamps_and_reads_ids() -> None:
    """JsonAck stamps the id into outgoing objects (keeping an existing one) and reads single or batch acks."""
    ack = JsonAck(id_field="mid", type_field="op", ack_type="ok", ack_id_field="ids")
    assert json.loads(ack.stamp('{"a":1}', "7")) == {"a": 1, "mid": "7"}
    assert ack.stamp('{"mid":"x"}', "7") == '{"mid":"x"}'
    assert ack.acked_ids('{"op":"ok","ids":["1","2"]}') == ["1", "2"]
    assert ack.acked_ids(b'{"op":"ok","ids":"3"}') == ["3"]
    assert ack.acked_ids('{"op":"data","ids":"3"}') is None
    assert ack.acked_ids("not json") is None
    with pytest.raises(ConfigError):
        JsonAck(id_field="")

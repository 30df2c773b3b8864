"""websocket sessions with the ``ack`` option: delivered only when the upstream acknowledges the id,
sent again (in order, same id) when the connection ends or the ack does not come."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, ClassVar, Mapping

import pytest
import websockets
from websockets.asyncio.server import serve as ws_serve

from tether import NotConnectedError, State
from tether.service._connector import ConnectorContext, register_connector
from tether.service._manager import InvalidOptions, SessionManager
from tether.service._service import Service
from tether.testing import FakeClock
from tests.service.conftest import eventually, fast_settings

# --- option validation ---------------------------------------------------------------------------


def test_ack_option_validated_with_the_field_named() -> None:
    """``ack: true`` and an ack object are accepted; a typo or a bad timeout is a 422 naming the field."""
    from tether.service.connectors import load_builtin

    load_builtin()
    url = "ws://127.0.0.1:1/"
    assert SessionManager.validate_options("websocket", {"url": url, "ack": True})["ack"] is True
    SessionManager.validate_options("websocket", {"url": url, "ack": {"id_field": "mid", "timeout": 5}})
    with pytest.raises(InvalidOptions) as exc:
        SessionManager.validate_options("websocket", {"url": url, "ack": {"idfield": "mid"}})
    assert exc.value.errors == [("options.ack.idfield", "unknown option (check the spelling)")]
    with pytest.raises(InvalidOptions) as exc:
        SessionManager.validate_options("websocket", {"url": url, "ack": {"timeout": 0}})
    assert exc.value.errors[0][0] == "options.ack.timeout"


# --- decisions of the delivery loop, on a FakeClock ------------------------------------------------


class AckingConnector:
    """Connected at once; every send gets a receipt the test resolves (True: acked, False: lost)."""

    kind: ClassVar[str] = "acking"
    live: ClassVar[list["AckingConnector"]] = []
    acks: ClassVar[bool] = True
    ack_timeout: ClassVar[float | None] = 5.0

    def __init__(self, ctx: ConnectorContext) -> None:
        self._state = State.IDLE
        self.sent: list[tuple[str, Any, asyncio.Future[bool]]] = []
        AckingConnector.live.append(self)

    @property
    def state(self) -> State:
        return self._state

    def stats(self) -> Mapping[str, Any]:
        return {}

    async def start(self) -> None:
        self._state = State.CONNECTED

    async def send(self, payload: Any) -> None:
        raise AssertionError("an acking connector is sent to with send_acked")

    async def send_acked(self, message_id: str, payload: Any) -> asyncio.Future[bool]:
        if self._state is not State.CONNECTED:
            raise NotConnectedError("down")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.sent.append((message_id, payload, fut))
        return fut

    def settle(self, value: bool, payloads: set[str] | None = None) -> None:
        for _, payload, fut in self.sent:
            if not fut.done() and (payloads is None or payload in payloads):
                fut.set_result(value)

    async def stop(self) -> None:
        self._state = State.CLOSED
        self.settle(False)


register_connector("acking", AckingConnector)


@pytest.fixture
async def fake_service(tmp_path: Path) -> AsyncIterator[tuple[Service, FakeClock]]:
    AckingConnector.live.clear()
    clock = FakeClock()
    service = Service(fast_settings(tmp_path, sweep_interval=10_000.0), clock=clock)
    await service.start()
    try:
        yield service, clock
    finally:
        await service.close()


async def _statuses(mgr: Any, sid: str) -> dict[Any, str]:
    return {m.payload: m.status for m in await mgr.messages(sid)}


async def test_delivered_only_after_the_ack(fake_service: tuple[Service, FakeClock]) -> None:
    """Written is not delivered: the outbox row stays leased until the receipt says acked."""
    service, clock = fake_service
    mgr = service.manager
    await mgr.create(session_id="a", kind="acking", options={})
    conn = AckingConnector.live[-1]
    await mgr.send("a", "m0")
    await eventually(lambda: len(conn.sent) == 1, what="written")
    await clock.settle()
    assert await _statuses(mgr, "a") == {"m0": "leased"}
    conn.settle(True)
    await eventually(lambda: _delivered(mgr, "a", 1), what="delivered after the ack")


async def _delivered(mgr: Any, sid: str, n: int) -> bool:
    return len(await mgr.messages(sid, status="delivered")) == n


async def test_lost_connection_resends_the_unacked_in_order(fake_service: tuple[Service, FakeClock]) -> None:
    """Receipts settled False (the connection ended) send those messages again, same id, in order, each once."""
    service, clock = fake_service
    mgr = service.manager
    await mgr.create(session_id="a", kind="acking", options={}, enabled=False)
    ids = [await mgr.send("a", f"m{i}") for i in range(4)]
    await mgr.update("a", enabled=True)  # one batch of four
    conn = AckingConnector.live[-1]
    await eventually(lambda: len(conn.sent) == 4, what="batch written")
    conn.settle(True, {"m0"})  # the first was acked, then the connection died
    conn.settle(False)
    await eventually(lambda: len(conn.sent) == 7, what="the three unacked sent again")
    assert [(mid, p) for mid, p, _ in conn.sent[4:]] == list(zip(ids[1:], ["m1", "m2", "m3"]))
    conn.settle(True)
    await eventually(lambda: _delivered(mgr, "a", 4), what="all delivered")
    await clock.settle()
    assert len(conn.sent) == 7


async def test_silent_upstream_resent_after_the_ack_timeout(fake_service: tuple[Service, FakeClock]) -> None:
    """No ack within ack_timeout on a live connection: nacked with a backoff, then sent again with the same id."""
    service, clock = fake_service
    mgr = service.manager
    await mgr.create(session_id="a", kind="acking", options={})
    conn = AckingConnector.live[-1]
    mid = await mgr.send("a", "m0")
    await eventually(lambda: len(conn.sent) == 1, what="written")
    await clock.advance(4.9)
    assert len(conn.sent) == 1  # still waiting within the timeout
    await clock.advance(0.2)
    await eventually(lambda: "message.send_failed" in [r.type for r in service.events.since(0, session="a")],
                     what="nacked after the timeout")
    for _ in range(100):  # past the backoff step (not past the next ack timeout)
        if len(conn.sent) == 2:
            break
        await clock.advance(0.5)
        await asyncio.sleep(0.01)
    assert len(conn.sent) == 2
    assert conn.sent[1][0] == mid
    conn.settle(True)
    await eventually(lambda: _delivered(mgr, "a", 1), what="delivered")


async def test_stop_while_waiting_for_acks_gives_the_leases_back(fake_service: tuple[Service, FakeClock]) -> None:
    """A restart mid-batch nacks what was unacknowledged at once: the next connection sends it, no lease wait."""
    service, clock = fake_service
    mgr = service.manager
    await mgr.create(session_id="a", kind="acking", options={})
    first = AckingConnector.live[-1]
    await mgr.send("a", "m0")
    await eventually(lambda: len(first.sent) == 1, what="written")
    restart = asyncio.create_task(mgr.restart("a"))
    for _ in range(200):  # restart_delay runs on the FakeClock
        if restart.done():
            break
        await clock.advance(0.05)
        await asyncio.sleep(0.01)
    await restart
    second = AckingConnector.live[-1]
    await eventually(lambda: len(second.sent) == 1, what="sent on the new connector without waiting for a lease")
    second.settle(True)
    await eventually(lambda: _delivered(mgr, "a", 1), what="delivered")


# --- end to end on loopback with the websocket connector -------------------------------------------


@dataclass
class AckUpstream:
    """A WebSocket upstream that acks ``{"type": "ack", "id": ...}`` when ``acking`` (idempotent: it
    applies each id once)."""

    acking: bool = True
    received: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    connections: int = 0
    clients: set[Any] = field(default_factory=set)
    server: Any = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def handler(self, ws: Any) -> None:
        self.connections += 1
        conn = self.connections
        self.clients.add(ws)
        try:
            async for raw in ws:
                obj = json.loads(raw)
                self.received.append((conn, obj))
                if obj["id"] not in self.applied:
                    self.applied.append(obj["id"])
                if self.acking:
                    await ws.send(json.dumps({"type": "ack", "id": obj["id"]}))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.clients.discard(ws)

    async def start(self) -> "AckUpstream":
        self.server = await ws_serve(self.handler, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def drop_all(self) -> None:
        for ws in list(self.clients):
            ws.transport.abort()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def ack_upstream() -> AsyncIterator[AckUpstream]:
    up = await AckUpstream().start()
    yield up
    await up.stop()


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    svc = Service(fast_settings(tmp_path))
    await svc.start()
    try:
        yield svc
    finally:
        await svc.close()


async def test_websocket_unacked_sent_again_after_reconnect(service: Service, ack_upstream: AckUpstream) -> None:
    """Unacked messages go out again on the next connection, in order, with their ids; applied once each."""
    mgr = service.manager
    await mgr.create(session_id="w", kind="websocket", options={"url": ack_upstream.url, "ack": True}, enabled=False)
    ack_upstream.acking = False
    ids = [await mgr.send("w", json.dumps({"n": i})) for i in range(3)]
    await mgr.update("w", enabled=True)
    await eventually(lambda: len(ack_upstream.received) == 3, what="written once")
    assert [o["id"] for _, o in ack_upstream.received] == ids  # the outbox id is stamped in
    assert await mgr.depth("w") == 3  # written, not acknowledged: not delivered
    assert mgr.get("w").stats()["awaiting_ack"] == 3
    ack_upstream.acking = True
    await ack_upstream.drop_all()
    await eventually(lambda: _delivered(mgr, "w", 3), what="delivered after the reconnect")
    again = [o["id"] for c, o in ack_upstream.received if c == 2]
    assert again == ids and ack_upstream.applied == ids
    assert [o["n"] for c, o in ack_upstream.received if c == 2] == [0, 1, 2]
    # acks are consumed by the connector: nothing reached the inbox
    assert mgr.get("w").received == 0


async def test_websocket_payload_id_kept_and_non_object_dead_lettered(service: Service, ack_upstream: AckUpstream) -> None:
    """A payload's own id is the wire id; a text payload (no place for an id) is dead-lettered with the reason."""
    mgr = service.manager
    await mgr.create(session_id="w", kind="websocket", options={"url": ack_upstream.url, "ack": {"id_field": "id"}})
    await eventually(lambda: mgr.get("w").state is State.CONNECTED, what="connected")
    bad = await mgr.send("w", "plain text")
    await mgr.send("w", json.dumps({"id": "order-7", "text": "hi"}))
    await eventually(lambda: _delivered(mgr, "w", 1), what="the object delivered")
    assert ack_upstream.applied == ["order-7"]
    dead = await service.stores.outbox.dead_letters("w")
    assert [d.id for d in dead] == [bad] and "JSON object" in dead[0].reason

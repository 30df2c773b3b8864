"""tether.Link end to end on loopback against FlakyServer (small real intervals, generous waits)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

import pytest

import tether
from tether import AuthError, Backoff, BufferFullError, ConfigError, LinkClosedError, NotConnectedError, State
from tether.events import Closed, Connected, Disconnected, Dropped, GaveUp, HeartbeatAck, HeartbeatMissed
from tether.testing import FakeClock, FlakyServer

WAIT = 10.0


def fast(**kw: Any) -> dict[str, Any]:
    opts: dict[str, Any] = dict(
        heartbeat_interval=0.1, heartbeat_timeout=0.2, connect_timeout=2.0, backoff=Backoff(base=0.02, cap=0.1)
    )
    opts.update(kw)
    return opts


async def until(pred: Callable[[], bool], timeout: float = WAIT) -> None:
    async def poll() -> None:
        while not pred():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def link_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("tether.link[")]


@pytest.fixture
async def server():
    async with FlakyServer() as s:
        yield s


async def test_reconnects_after_drop(server: FlakyServer) -> None:
    """A dropped TCP connection (1006) is replaced by a new one and the link is CONNECTED again."""
    events: list = []
    async with tether.connect(server.url, **fast()) as link:
        link.subscribe(events.append)
        await link.wait_connected(WAIT)
        await server.drop()
        await server.wait_until(lambda s: s.connections == 2)
        await until(lambda: link.state is State.CONNECTED and link.stats.connects == 2)
        assert Disconnected(1006, "connection lost without close frame (1006)") in events
        assert link.stats.disconnects == 1 and link.stats.last_close_code == 1006


async def test_blackholed_peer_detected_and_replaced(server: FlakyServer) -> None:
    """A silent peer (no pongs, no close) is declared dead by the heartbeat and a new connection is made."""
    events: list = []
    async with tether.connect(server.url, **fast(connect_timeout=0.5)) as link:
        link.subscribe(events.append)
        await link.wait_connected(WAIT)
        await until(lambda: any(isinstance(e, HeartbeatAck) for e in events))
        server.blackhole()
        await until(lambda: any(isinstance(e, Disconnected) for e in events))
        assert any(isinstance(e, HeartbeatMissed) for e in events)
        assert Disconnected(1006, "heartbeat timeout") in events
        server.heal()
        await until(lambda: link.stats.connects == 2)
        assert link.state is State.CONNECTED


async def test_401_gives_exactly_one_attempt_then_failed(server: FlakyServer) -> None:
    """HTTP 401: exactly one handshake, then FAILED with AuthError; nothing more is tried."""
    server.reject(401)
    events: list = []
    link = tether.connect(server.url, **fast())
    link.subscribe(events.append)
    async with link:
        with pytest.raises(AuthError) as info:
            await link.wait_connected(WAIT)
        assert info.value.status == 401
        assert link.state is State.FAILED
        await asyncio.sleep(0.3)  # ten backoff periods: any retry would have shown up
        assert len(server.handshakes) == 1
        assert [type(e) for e in events if isinstance(e, GaveUp)] == [GaveUp]
        with pytest.raises(AuthError):
            await link.recv()
        with pytest.raises(AuthError):
            await link.send("x")


async def test_503_retry_after_2_no_attempt_before_2s(server: FlakyServer) -> None:
    """503 with Retry-After: 2 -> no new attempt before 2 s on the link's clock (FakeClock), one soon after."""
    clock = FakeClock()
    server.reject(503, retry_after=2)
    link = tether.connect(server.url, clock=clock, backoff=Backoff(base=0.01, cap=0.05), heartbeat_interval=None)
    async with link:
        await server.wait_until(lambda s: len(s.handshakes) == 1)
        await until(lambda: link.state is State.BACKING_OFF)
        server.accept()
        await clock.advance(1.99)
        await asyncio.sleep(0.3)  # real time for a (wrong) attempt to reach the server
        assert len(server.handshakes) == 1 and link.state is State.BACKING_OFF
        await clock.advance(0.25)  # 2.24 s: past 2 s plus the at most 10 % extra jitter
        await server.wait_until(lambda s: len(s.handshakes) == 2)
        await link.wait_connected(WAIT)


async def test_close_stops_attempts_and_leaves_no_task(server: FlakyServer) -> None:
    """After close() nothing is retried, every link task is gone, the peer saw 1000, and events end with Closed."""
    async with tether.connect(server.url, **fast()) as link:
        stream = link.events()
        await link.wait_connected(WAIT)
    assert link.state is State.CLOSED
    assert link_tasks() == []
    await server.wait_until(lambda s: s.close_codes == [1000])
    seen = [e async for e in stream]
    assert isinstance(seen[-1], Closed)
    await asyncio.sleep(0.3)
    assert len(server.handshakes) == 1
    with pytest.raises(LinkClosedError):
        await link.send("late")
    assert [m async for m in link] == []


async def test_close_while_backing_off_stops_retrying(server: FlakyServer) -> None:
    """close() in the middle of a retry storm (503s) makes no further attempt and leaves no task."""
    server.reject(503)
    link = tether.connect(server.url, **fast())
    await link.start()
    await server.wait_until(lambda s: len(s.handshakes) >= 3)
    await link.close()
    count = len(server.handshakes)
    await asyncio.sleep(0.3)
    assert len(server.handshakes) == count
    assert link_tasks() == [] and link.state is State.CLOSED


async def test_messages_sent_while_down_arrive_in_order_once(server: FlakyServer) -> None:
    """Messages sent while the server is down arrive after the reconnect, in order, each exactly once, before newer ones."""
    server.echo = False
    async with tether.connect(server.url, **fast()) as link:
        await link.wait_connected(WAIT)
        await link.send("before")
        await server.wait_until(lambda s: s.messages == ["before"])
        await server.stop()
        await until(lambda: link.state is not State.CONNECTED)
        for i in range(50):
            await link.send(f"m{i}")
        assert link.stats.buffered == 50
        await server.start()
        await link.wait_connected(WAIT)
        await link.send("after")
        await server.wait_until(lambda s: len(s.messages) >= 52)
        await asyncio.sleep(0.2)
        assert server.messages == ["before", *[f"m{i}" for i in range(50)], "after"]
        assert link.stats.buffered == 0


async def test_accept_then_close_peer_sees_backoff_spacing(server: FlakyServer) -> None:
    """A peer that accepts then closes at once gets attempts spaced by the growing backoff, not a tight loop."""
    server.close_on_accept(1000)
    backoff = Backoff(base=0.05, factor=2.0, cap=1.0, jitter="none")
    async with tether.connect(server.url, **fast(backoff=backoff, stable_after=30.0)):
        await server.wait_until(lambda s: len(s.handshakes) >= 5)
    t = server.handshakes
    gaps = [b - a for a, b in zip(t, t[1:])][:4]
    assert all(gap >= want for gap, want in zip(gaps, [0.05, 0.1, 0.2, 0.4])), gaps


async def test_admission_caps_rate_of_200_links_after_restart(server: FlakyServer) -> None:
    """200 links sharing Admission(rate=100, burst=10): after a restart the server never sees more than 110 handshakes in any 1 s."""
    gate = tether.Admission(rate=100, burst=10)
    links = [tether.connect(server.url, admission=gate, heartbeat_interval=None, backoff=Backoff(base=0.05, cap=0.5)) for _ in range(200)]
    try:
        for link in links:
            await link.start()
        await server.wait_until(lambda s: s.open_connections == 200, 30)
        before = len(server.handshakes)
        await server.restart(down_for=0.2)
        await server.wait_until(lambda s: s.open_connections == 200, 30)
        after = server.handshakes[before:]
        assert len(after) >= 200
        # 10 % slack for loopback scheduling that can bunch arrivals which left the gate spaced
        worst = max(sum(1 for u in after if t <= u < t + 1.0) for t in after)
        assert worst <= (10 + 100) * 1.1, worst
    finally:
        await asyncio.gather(*(link.close() for link in links))
    assert link_tasks() == []


async def test_headers_callable_runs_before_every_attempt(server: FlakyServer) -> None:
    """An async headers callable is evaluated before every attempt (e.g. to refresh a token)."""
    calls = 0

    async def headers() -> dict[str, str]:
        nonlocal calls
        calls += 1
        return {"Authorization": f"Bearer t{calls}"}

    async with tether.connect(server.url, headers=headers, subprotocols=["v1.chat"], **fast()) as link:
        await link.wait_connected(WAIT)
        await server.drop()
        await server.wait_until(lambda s: s.connections == 2)
    assert [h.get("Authorization") for h in server.request_headers[:2]] == ["Bearer t1", "Bearer t2"]
    assert server.request_headers[0].get("Sec-WebSocket-Protocol") == "v1.chat"


async def test_app_ping_pongs_are_consumed() -> None:
    """With AppPing the link sends JSON pings; the server's pongs ack them and never reach recv()."""

    async def handler(conn: Any) -> None:
        async for message in conn:
            if json.loads(message).get("type") == "ping":
                await conn.send('{"type":"pong"}')
            else:
                await conn.send(message)

    events: list = []
    async with FlakyServer(handler) as server, tether.connect(server.url, heartbeat=tether.AppPing(), **fast(heartbeat_interval=0.05)) as link:
        link.subscribe(events.append)
        await link.wait_connected(WAIT)
        await until(lambda: sum(isinstance(e, HeartbeatAck) for e in events) >= 3)
        await link.send('{"type":"data"}')
        assert await asyncio.wait_for(link.recv(), WAIT) == '{"type":"data"}'
        assert link.stats.last_heartbeat_rtt is not None and link.stats.connects == 1


async def test_slow_reader_does_not_get_healthy_connection_killed(server: FlakyServer) -> None:
    """An app that stops reading (queue full) keeps its connection: the heartbeat waits, nothing is lost."""
    events: list = []
    async with tether.connect(server.url, buffer_limit=5, **fast(heartbeat_interval=0.05, heartbeat_timeout=0.1)) as link:
        link.subscribe(events.append)
        await link.wait_connected(WAIT)
        for i in range(40):
            await server.send_all(f"push{i}")
        await asyncio.sleep(1.0)  # ten heartbeat timeouts without reading a thing
        got = [await asyncio.wait_for(link.recv(), WAIT) for _ in range(40)]
        assert got == [f"push{i}" for i in range(40)]
        assert not any(isinstance(e, Disconnected) for e in events) and server.connections == 1
        await until(lambda: any(isinstance(e, HeartbeatAck) for e in events))


async def test_overflow_raise_and_drop_oldest(server: FlakyServer) -> None:
    """While down, buffer_limit is enforced: "raise" -> BufferFullError, "drop_oldest" -> Dropped and the newest kept."""
    await server.stop()
    async with tether.connect(server.url, buffer_limit=2, **fast()) as link:
        await link.send("a")
        await link.send("b")
        with pytest.raises(BufferFullError, match="buffer_limit"):
            await link.send("c")
    server.echo = False
    events: list = []
    async with tether.connect(server.url, buffer_limit=2, on_overflow="drop_oldest", **fast()) as link:
        link.subscribe(events.append)
        for m in "abc":
            await link.send(m)
        assert Dropped(1) in events and link.stats.dropped == 1 and link.stats.buffered == 2
        await server.start()
        await server.wait_until(lambda s: s.messages == ["b", "c"])


async def test_send_rejects_non_text_payloads(server: FlakyServer) -> None:
    """send() of something other than str/bytes raises MessageTypeError (a TetherError and a TypeError)."""
    async with tether.connect(server.url, **fast()) as link:
        with pytest.raises(tether.MessageTypeError) as info:
            await link.send({"a": 1})  # type: ignore[arg-type]
        assert isinstance(info.value, TypeError) and isinstance(info.value, tether.TetherError)


async def test_events_many_consumers_and_unsubscribe(server: FlakyServer) -> None:
    """Two events() consumers see the same events; an unsubscribed callback sees no more."""
    seen: list = []
    link = tether.connect(server.url, **fast())
    a, b = link.events(), link.events()
    unsubscribe = link.subscribe(seen.append)
    async with link:
        await link.wait_connected(WAIT)
        unsubscribe()
        await server.drop()
        await server.wait_until(lambda s: s.connections == 2)
        await link.wait_connected(WAIT)
    ea, eb = [e async for e in a], [e async for e in b]
    assert ea == eb and isinstance(ea[-1], Closed) and sum(isinstance(e, Connected) for e in ea) == 2
    assert not any(isinstance(e, Disconnected) for e in seen)


async def test_manual_reconnect_from_failed(server: FlakyServer) -> None:
    """reconnect() retries a FAILED link once the cause is fixed."""
    server.reject(403)
    async with tether.connect(server.url, **fast()) as link:
        with pytest.raises(AuthError):
            await link.wait_connected(WAIT)
        server.accept()
        await link.reconnect()
        await link.wait_connected(WAIT)
        await link.reconnect()  # forced: a fresh connection replaces the live one
        await server.wait_until(lambda s: s.connections == 2)


async def test_auth_close_code_fails_and_restart_code_reconnects(server: FlakyServer) -> None:
    """Close 1012 from the peer reconnects; close 4001 (an auth code) fails with AuthError."""
    async with tether.connect(server.url, **fast()) as link:
        await link.wait_connected(WAIT)
        await server.close_all(1012, "restart")
        await server.wait_until(lambda s: s.connections == 2)
        await link.wait_connected(WAIT)
        await server.close_all(4001, "token revoked")
        await until(lambda: link.state is State.FAILED)
        with pytest.raises(AuthError):
            await link.wait_connected(WAIT)
        assert link.stats.last_close_code == 4001 and server.connections == 2


async def test_wait_connected_timeout(server: FlakyServer) -> None:
    """wait_connected(timeout) raises NotConnectedError when the peer never accepts."""
    server.reject(503)
    async with tether.connect(server.url, **fast()) as link:
        with pytest.raises(NotConnectedError):
            await link.wait_connected(0.2)


async def test_hot_configure_changes_heartbeat_without_reconnect(server: FlakyServer) -> None:
    """configure(heartbeat_interval=...) takes effect on the live connection; no reconnect happens."""
    events: list = []
    async with tether.connect(server.url, **fast(heartbeat_interval=60.0)) as link:
        link.subscribe(events.append)
        await link.wait_connected(WAIT)
        await asyncio.sleep(0.2)
        assert not any(isinstance(e, HeartbeatAck) for e in events)
        link.configure(heartbeat_interval=0.05, backoff=Backoff(base=0.5))
        await until(lambda: sum(isinstance(e, HeartbeatAck) for e in events) >= 2)
        assert server.connections == 1 and link.stats.connects == 1


async def test_secrets_in_url_never_shown(server: FlakyServer) -> None:
    """A token in the URL query does not appear in the link name, repr or errors."""
    server.reject(401)
    async with tether.connect(server.url + "?token=SECRET123", **fast()) as link:
        with pytest.raises(AuthError) as info:
            await link.wait_connected(WAIT)
    assert "SECRET123" not in link.name + repr(link) + str(info.value) + str(link.stats)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("heartbeat_interval", -1),
        ("heartbeat_timeout", 0),
        ("connect_timeout", 0),
        ("max_attempts", 0),
        ("stable_after", -5),
        ("buffer_limit", 0),
        ("on_overflow", "block"),
        ("backoff", 1.5),
        ("admission", 10),
        ("classifier", "default"),
        ("headers", "Authorization: x"),
        ("subprotocols", "v1"),
        ("heartbeat", "ping"),
        ("auth_codes", ["x"]),
    ],
)
def test_bad_options_raise_config_error_naming_them(option: str, value: object) -> None:
    """Every bad option raises ConfigError whose message names the option."""
    with pytest.raises(ConfigError, match=option):
        tether.connect("ws://127.0.0.1:1/", **{option: value})


def test_bad_url_raises_config_error() -> None:
    """A URL that is not ws:// or wss:// raises ConfigError naming url."""
    with pytest.raises(ConfigError, match="url"):
        tether.connect("http://example.org/")


async def test_blocked_event_loop_is_not_a_dead_peer() -> None:
    """A loop blocked past heartbeat_timeout right after a ping (pong waiting in the socket) keeps the connection."""
    import threading
    import time

    from websockets.sync.server import serve as sync_serve

    def echo(conn: Any) -> None:
        for message in conn:
            conn.send(message)

    # The peer runs in its own thread: blocking our loop must not block its pongs.
    with sync_serve(echo, "127.0.0.1", 0) as peer:
        thread = threading.Thread(target=peer.serve_forever, daemon=True)
        thread.start()
        url = f"ws://127.0.0.1:{peer.socket.getsockname()[1]}/"
        events: list = []
        blocks = 0
        async with tether.connect(url, **fast(heartbeat_interval=0.05, heartbeat_timeout=0.05)) as link:
            original = link._ping

            def ping_then_block(conn: int, ws: Any) -> None:
                nonlocal blocks
                original(conn, ws)  # the ping frame is written
                if blocks < 3:
                    blocks += 1
                    time.sleep(0.3)  # a blocking call in the application: six heartbeat timeouts

            link._ping = ping_then_block  # type: ignore[method-assign]
            link.subscribe(events.append)
            await link.wait_connected(WAIT)
            await until(lambda: blocks == 3 and sum(isinstance(e, HeartbeatAck) for e in events) >= 5)
            assert not any(isinstance(e, HeartbeatMissed) for e in events) and link.stats.connects == 1
        peer.shutdown()
        thread.join(5)


async def test_close_releases_senders_waiting_for_a_write(server: FlakyServer) -> None:
    """A send() waiting on a write that never completes returns when the link is closed (no hang)."""
    async with tether.connect(server.url, **fast(heartbeat_interval=None)) as link:
        await link.wait_connected(WAIT)
        server.blackhole()
        import os

        big = os.urandom(1_000_000)  # incompressible (permessage-deflate would shrink "xxx...")
        senders = [asyncio.create_task(link.send(big)) for _ in range(30)]  # 30 MB: the socket fills
        await asyncio.sleep(0.3)
        await asyncio.wait_for(link.close(flush_timeout=0.1), WAIT)
        await asyncio.wait_for(asyncio.gather(*senders), WAIT)


async def test_write_failing_midway_goes_back_to_front() -> None:
    """A message whose write fails stays first in the buffer: the next connection sends the rest in order, each once."""
    from websockets.exceptions import ConnectionClosedError

    class Socket:
        def __init__(self, fail_at: int | None) -> None:
            self.sent: list[str] = []
            self.fail_at = fail_at
            self.transport = None

        async def send(self, data: str) -> None:
            if len(self.sent) + 1 == self.fail_at:
                raise ConnectionClosedError(None, None)
            self.sent.append(data)

    link = tether.connect("ws://127.0.0.1:1/")
    for i in range(5):
        await link.send(f"m{i}")  # not started: buffered
    broken, good = Socket(fail_at=3), Socket(fail_at=None)
    await link._writer(1, broken)  # type: ignore[arg-type]
    assert broken.sent == ["m0", "m1"] and link.stats.buffered == 3
    task = asyncio.create_task(link._writer(2, good))  # type: ignore[arg-type]
    await until(lambda: link.stats.buffered == 0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert broken.sent + good.sent == [f"m{i}" for i in range(5)] and link.stats.sent == 5


async def test_unbuffered_send_is_written_now_or_raises(server: FlakyServer) -> None:
    """send(buffer=False) writes while connected; down, or a write that fails, raises NotConnectedError and keeps nothing."""
    from websockets.exceptions import ConnectionClosedError

    link = tether.connect(server.url, **fast())
    with pytest.raises(NotConnectedError):
        await link.send("early", buffer=False)  # not started: a buffered send would keep it
    assert link.stats.buffered == 0
    async with link:
        await link.wait_connected(WAIT)
        await link.send("now", buffer=False)
        await server.wait_until(lambda s: s.messages == ["now"])

        async def broken(data: Any) -> None:
            raise ConnectionClosedError(None, None)

        link._ws.send = broken  # type: ignore[union-attr,method-assign]  # the connection dies during the write
        with pytest.raises(NotConnectedError):
            await link.send("lost", buffer=False)
        assert link.stats.buffered == 0 and link.stats.sent == 1


async def test_custom_classifier_decides(server: FlakyServer) -> None:
    """A custom classifier replaces the rules: here HTTP 500 means give up (GaveUpError) after one attempt."""
    from tether import Action, Decision, ErrorClass, GaveUpError

    seen: list[BaseException] = []

    def classifier(exc: BaseException) -> Decision:
        seen.append(exc)
        return Decision(Action.FAIL, 0.0, "no retries here", ErrorClass.PERMANENT)

    server.reject(500)
    async with tether.connect(server.url, classifier=classifier, headers={"X-Bot": "7"}, **fast()) as link:
        with pytest.raises(GaveUpError, match="no retries here"):
            await link.wait_connected(WAIT)
    assert len(server.handshakes) == 1 and len(seen) == 1
    assert server.request_headers[0].get("X-Bot") == "7"


async def test_heartbeat_stamps_event_and_stats(server: FlakyServer) -> None:
    """A HeartbeatAck carries its wall time, and stats report the same rtt and time as the last one."""
    events: list = []
    async with tether.connect(server.url, **fast(heartbeat_interval=0.05)) as link:
        link.subscribe(events.append)
        await link.wait_connected(WAIT)
        await until(lambda: sum(isinstance(e, HeartbeatAck) for e in events) >= 2)
        acks = [e for e in events if isinstance(e, HeartbeatAck)]
        stats = link.stats
        assert all(e.at > 0 for e in acks) and acks[1].at >= acks[0].at
        assert (stats.last_heartbeat_rtt, stats.last_heartbeat_at) == (acks[-1].rtt, acks[-1].at)
        with pytest.raises(AttributeError):
            acks[0].at = 0.0  # type: ignore[misc]  # still frozen for users


async def test_ping_that_suspends_is_finished_in_a_task(server: FlakyServer) -> None:
    """A ping whose write has to wait (paused socket) is finished in a task and its pong still counts."""
    events: list = []
    async with tether.connect(server.url, **fast(heartbeat_interval=0.05)) as link:
        link.subscribe(events.append)
        await link.wait_connected(WAIT)
        ws = link._ws
        real_ping = ws.ping
        suspended = 0

        async def slow_ping(data: Any = None) -> Any:
            nonlocal suspended
            suspended += 1
            await asyncio.sleep(0.01)  # as websockets' drain() waits while the socket is paused
            return await real_ping(data)

        ws.ping = slow_ping  # type: ignore[method-assign]
        before = sum(isinstance(e, HeartbeatAck) for e in events)
        await until(lambda: suspended >= 3 and sum(isinstance(e, HeartbeatAck) for e in events) >= before + 3)
        assert not any(isinstance(e, HeartbeatMissed) for e in events) and link.stats.connects == 1


async def test_resumed_coroutine_gets_results_and_cancellation() -> None:
    """A coroutine stepped once by hand and finished via _Resumed sees the awaited result, and a cancel."""
    from tether.link._support import _Resumed

    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    cleaned: list[str] = []

    async def work() -> int:
        try:
            return await fut + 1
        finally:
            cleaned.append("done")

    coro = work()
    task = asyncio.ensure_future(_Resumed(coro, coro.send(None)))
    fut.set_result(41)
    assert await asyncio.wait_for(task, WAIT) == 42 and cleaned == ["done"]

    fut = loop.create_future()
    coro = work()
    task = asyncio.ensure_future(_Resumed(coro, coro.send(None)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fut.cancelled() and cleaned == ["done", "done"]

"""The dashboard in real headless Chromium against a real service (uvicorn on 127.0.0.1).

The live channel's server end is restarted by stopping and starting uvicorn while the same ``Service``
(and so the same event log) keeps running: that is what a deploy does to the page (uvicorn closes the
socket with 1012, then the service is gone for a while) and it needs no test-only hook in the service.
The page reaches the service through :class:`Front`, what a load balancer is during a deploy: it always
listens, forwards while the service is up and answers 503 while it is down, and it timestamps every
live-channel attempt where it arrives, so the backoff is checked at the server, attempts made while the
service is down included. The service counts its accepted live sockets itself (``app.state.live``).
Set ``TETHER_SCREENSHOTS=<dir>`` to keep screenshots of each step.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import uvicorn

from tests.conftest import require_binary
from tests.service.conftest import eventually, fast_settings, free_port
from tether.service._api import create_app
from tether.service._demo import demo_sessions, demo_token
from tether.service._server import _Server, bind_socket
from tether.service._service import Service
from tether.testing import FakeBotAPI, FlakyServer

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RESTARTS = 20
# Attempts the page must make against the closed service in each outage before it comes back: the
# outage lasts a number of attempts, not a wall-clock time, so the backoff is exercised on any machine.
REFUSED_PER_OUTAGE = 2
# Small real intervals for the page's client (the defaults are seconds): a cap of 400 ms keeps 20
# restarts short, a stable period longer than the test keeps the backoff growing across them.
FAST_LIVE = {"baseDelay": 50, "maxDelay": 400, "stableAfter": 600_000, "connectDelay": 0}
# Counts the page's own WebSocket objects that are not closed yet (connecting ones included).
COUNT_SOCKETS = """(() => {
  const Native = window.WebSocket, live = new Set();
  window.socketCount = { peak: 0, created: 0 };
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      live.add(this); window.socketCount.created += 1;
      window.socketCount.peak = Math.max(window.socketCount.peak, live.size);
      this.addEventListener("close", () => live.delete(this));
    }
  };
})();"""


def step_ms(attempt: int) -> float:
    """The full-jitter ceiling of the wait after attempt ``attempt``: min(cap, base * 2^(attempt-1))."""
    return min(FAST_LIVE["maxDelay"], FAST_LIVE["baseDelay"] * 2 ** max(0, attempt - 1))


class LiveServer:
    """One Service and its app, served by a uvicorn that can be stopped and started on the same port."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.app = create_app(service)
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def live(self) -> Any:
        return self.app.state.live

    async def up(self) -> None:
        self._sock = bind_socket("127.0.0.1", self.port)
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=3, ws_ping_interval=20, ws_ping_timeout=20)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        await eventually(lambda: self._server.started or self._task.done(), what="uvicorn started")
        assert self._server.started

    async def down(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        await asyncio.wait_for(self._task, 10)
        self._sock.close()
        self._server = None


@dataclass(eq=False)  # identity, so attempts can sit in a set
class Attempt:
    """One live-channel connection as the server side saw it (monotonic seconds)."""

    at: float
    outcome: str = "pending"  # "refused" (503 while the service was down) or "served"
    ended: float | None = None  # when the server side refused or started closing it


class Front:
    """The service's edge during a deploy: always listening, forwarding while up, 503 while down.

    Every connection whose request is ``GET /api/live`` is an attempt of the page's live channel:
    ``attempts`` has each one's arrival time and outcome, ``open``/``peak`` count the live connections
    that neither side has closed yet (a page that held two would show ``peak == 2`` here).
    """

    def __init__(self, backend: LiveServer) -> None:
        self.backend = backend
        self.port = free_port()
        self.up = False
        self.attempts: list[Attempt] = []
        self.open = self.peak = 0
        self._served: set[Attempt] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def refused(self) -> int:
        return sum(a.outcome == "refused" for a in self.attempts)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.up = True

    async def service_down(self) -> None:
        """Stop the service behind the front: from now on the front answers 503."""
        self.up = False
        now = time.monotonic()
        for a in self._served:  # the server ends these now (uvicorn closes them with 1012)
            a.ended = now if a.ended is None else a.ended
        await self.backend.down()

    async def service_up(self) -> None:
        await self.backend.up()
        self.up = True

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        attempt: Attempt | None = None
        released = False

        def release() -> None:  # once, before the client can see the close
            nonlocal released
            if attempt is not None and not released:
                released = True
                self.open -= 1
                self._served.discard(attempt)

        try:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            if head.startswith(b"GET /api/live"):
                attempt = Attempt(at=time.monotonic())
                self.attempts.append(attempt)
                self.open += 1
                self.peak = max(self.peak, self.open)
            upstream = None
            if self.up:
                try:
                    upstream = await asyncio.open_connection("127.0.0.1", self.backend.port)
                except OSError:
                    upstream = None
            if upstream is None:
                if attempt is not None:
                    attempt.outcome, attempt.ended = "refused", time.monotonic()
                release()
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            if attempt is not None:
                attempt.outcome = "served"
                self._served.add(attempt)
            up_reader, up_writer = upstream
            up_writer.write(head)
            await asyncio.gather(self._pipe(reader, up_writer, release), self._pipe(up_reader, writer, release))
        except ConnectionError:
            pass
        finally:
            release()
            writer.close()
            self._writers.discard(writer)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, on_end: Any) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except ConnectionError:
            pass
        finally:
            on_end()  # either side ending ends the connection for the page too
            dst.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, Front]]:
    """The demo's sessions (``tether demo``'s own list) on a flaky WebSocket and a fake Bot API."""
    flaky = FlakyServer()
    await flaky.start()
    bot = await FakeBotAPI(*(demo_token(sid) for sid, kind, _ in demo_sessions("", "") if kind == "telegram-bot")).start()
    service = Service(fast_settings(tmp_path, restart_delay=0.5))
    await service.start()
    for sid, kind, options in demo_sessions(flaky.url, bot.url):
        if kind == "telegram-bot":
            options["poll_timeout"] = 1  # the demo's 5 s long poll would only slow the teardown
        await service.manager.create(session_id=sid, kind=kind, options=options)
    server = LiveServer(service)
    await server.up()
    front = Front(server)
    await front.start()
    try:
        yield server, front
    finally:
        await front.close()
        await server.down()
        await service.close()
        await bot.close()
        await flaky.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    chromium = require_binary("chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def open_page(browser: Any, url: str, *, init: str = "") -> Any:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    await page.add_init_script(COUNT_SOCKETS + init)
    await page.goto(url + "/")  # the service serves the dashboard at its root
    return page


async def shot(page: Any, name: str) -> None:
    where = os.environ.get("TETHER_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)


def row_state(sid: str) -> str:
    return f"document.querySelector('tr[data-session=\"{sid}\"] .state')?.textContent"


async def test_page_lists_the_sessions_with_their_state(world, browser):
    """The page at / lists every demo session (id, kind) connected, with the live channel open."""
    server, _ = world
    demo = {sid: kind for sid, kind, _ in demo_sessions("", "")}
    page = await open_page(browser, server.url)
    await page.wait_for_function(
        f"{sorted(demo)!r}.every(id => document.querySelector(`tr[data-session='${{id}}'] .state`)"
        "?.textContent === 'connected')", timeout=10_000)
    await page.wait_for_function("window.tetherLive.state === 'open'", timeout=10_000)
    assert await page.text_content("#live-state") == "open"
    assert await page.text_content("[data-stat=sessions] b") == str(len(demo))
    shown = await page.eval_on_selector_all(
        "#sessions tbody tr", "rows => rows.map(r => [r.dataset.session, r.querySelector('.kind').textContent])")
    assert dict(shown) == demo
    await shot(page, "loaded")
    assert page.js_errors == []


async def test_restart_button_changes_the_sessions_state_on_the_page(world, browser):
    """Clicking Restart takes that row out of 'connected' and back, from live events alone."""
    server, _ = world
    page = await open_page(browser, server.url)
    await page.wait_for_function(f"{row_state('ws-1')} === 'connected' && window.tetherLive.state === 'open'",
                                 timeout=10_000)
    # Record every state the row shows, however briefly (watch the whole table's text changes).
    await page.evaluate("""() => {
        window.seen = [];
        const note = () => { const s = document.querySelector('tr[data-session="ws-1"] .state')?.textContent;
                             if (s && window.seen[window.seen.length - 1] !== s) window.seen.push(s); };
        new MutationObserver(note).observe(document.querySelector('#sessions tbody'),
                                           {childList: true, subtree: true, characterData: true});
    }""")
    await page.click("tr[data-session='ws-1'] button.restart")
    await page.wait_for_function("window.seen.some(s => s !== 'connected')", timeout=10_000)
    await shot(page, "restarting")
    await page.wait_for_function(f"{row_state('ws-1')} === 'connected'", timeout=10_000)
    seen = await page.evaluate("window.seen")
    assert seen[-1] == "connected" and any(s != "connected" for s in seen), seen
    assert await page.text_content("tr[data-session='ws-2'] .state") == "connected"  # only that row
    assert page.js_errors == []


async def test_restarting_the_live_channel_20_times_holds_one_socket_and_loses_no_event(world, browser):
    """20 service restarts: one live socket at most, attempts paced by full-jitter backoff at the server, no gap."""
    server, front = world
    mgr = server.service.manager
    page = await open_page(browser, front.url, init=f"window.tetherOptions = {FAST_LIVE!r};".replace("'", '"'))
    await eventually(lambda: server.live.open == 1, what="the page's live socket")
    await page.wait_for_function("window.tetherLive.lastEventId !== null", timeout=10_000)
    first = await page.evaluate("window.tetherLive.lastEventId") + 1  # the cursor the server gave the page
    for n in range(RESTARTS):
        before = server.live.total
        await front.service_down()
        assert server.live.open == 0
        # Events the page cannot see as they happen: it must get them by replay after reconnecting.
        await mgr.send("ws-1", f'{{"n": {n}}}')
        # The outage lasts until the page has tried (and been refused) a few times: its backoff at work.
        refused = front.refused()
        await eventually(lambda: front.refused() >= refused + REFUSED_PER_OUTAGE, timeout=30,
                         what=f"attempts during outage {n + 1}")
        await front.service_up()
        await eventually(lambda: server.live.total > before and server.live.open == 1, what=f"reconnect {n + 1}")
        assert server.live.peak == 1 and front.peak == 1
    await mgr.send("ws-1", '{"n": "last"}')
    last = server.service.events.last_id
    await page.wait_for_function(f"window.tetherDashboard.received.includes({last})", timeout=10_000)
    await shot(page, "after-restarts")

    # Never two sockets: not at the service, not at the front (connecting ones too), not in the page.
    assert server.live.peak == 1 and front.peak == 1
    assert await page.evaluate("window.socketCount.peak") == 1
    # Every attempt reached the server (the page has no hidden sockets), one handshake served per
    # restart plus the first, and the outages cost a bounded number of refused attempts (no storm).
    attempts = front.attempts
    total = await page.evaluate("window.tetherLive.totalAttempts")
    assert len(attempts) == total == await page.evaluate("window.socketCount.created")
    assert sum(a.outcome == "served" for a in attempts) == server.live.total == RESTARTS + 1
    assert len(attempts) <= RESTARTS * (REFUSED_PER_OUTAGE + 2) + 1, len(attempts)
    # Every event from the first one the page saw up to the last, once, in order.
    received = await page.evaluate("window.tetherDashboard.received")
    assert received == list(range(received[0], received[0] + len(received))) and last in received
    assert received[0] <= first, (received[0], first)  # nothing lost before the first restart either

    # The backoff, from the page's side: one wait per ended attempt, the attempt number only grows (no
    # reset without a stable connection), each wait drawn from [0, min(cap, base * 2^(n-1))].
    log = await page.evaluate("window.tetherDashboard.live")
    assert [e["attempt"] for e in log if e["state"] == "connecting"] == list(range(1, total + 1))
    waits = [e for e in log if e["state"] == "backing_off"]
    assert len(waits) == total - 1
    for e in waits:
        assert 0 <= e["delay"] <= step_ms(e["attempt"]), e
    # Full jitter, not a fixed or a "equal jitter" wait: the waits use the whole range (uniform has mean
    # step/2; 60-odd draws land within ±0.25 of it with overwhelming odds) and both ends of it.
    ratio = sum(e["delay"] for e in waits) / sum(step_ms(e["attempt"]) for e in waits)
    assert 0.25 <= ratio <= 0.75, ratio
    fractions = [e["delay"] / step_ms(e["attempt"]) for e in waits]
    assert min(fractions) < 0.25 and max(fractions) > 0.75, fractions

    # The same backoff, seen at the server: the gap between the server ending attempt i (refusing it,
    # or starting to close it) and attempt i+1 arriving is at least the wait the page announced for it
    # (the page cannot know of the end before the server ends it, nor connect before its timer fires),
    # and at most that wait's ceiling plus generous slack for a loaded machine.
    assert all(a.ended is not None for a in attempts[:-1])
    gaps = [(nxt.at - cur.ended) * 1000 for cur, nxt in zip(attempts, attempts[1:])]
    for gap, e in zip(gaps, waits):
        assert e["delay"] - 2 <= gap <= step_ms(e["attempt"]) + 10_000, (gap, e)
    assert sum(gaps) >= 0.25 * sum(step_ms(e["attempt"]) for e in waits), gaps
    print(f"\n{len(attempts)} attempts ({front.refused()} refused) over {RESTARTS} restarts; "
          f"server-side gaps ms: min {min(gaps):.0f}, median {sorted(gaps)[len(gaps) // 2]:.0f}, max {max(gaps):.0f}; "
          f"waits/ceilings {ratio:.2f}; peak open {front.peak}")
    assert page.js_errors == []


async def test_attempt_limit_shows_a_reconnect_button_instead_of_looping(world, browser):
    """With maxAttempts the page stops at the limit, shows Reconnect, and the button connects again."""
    server, front = world
    opts = {**FAST_LIVE, "maxAttempts": 3}
    page = await open_page(browser, front.url, init=f"window.tetherOptions = {opts!r};".replace("'", '"'))
    await page.wait_for_function("window.tetherLive.state === 'open'", timeout=10_000)
    assert not await page.is_visible("#live-reconnect")
    refused = front.refused()
    await front.service_down()
    await page.wait_for_function("window.tetherLive.state === 'failed'", timeout=10_000)
    assert await page.is_visible("#live-reconnect")
    # The limit counts attempts since the last stable connection: the one that was up, then two refused.
    assert front.refused() - refused == 2
    await page.wait_for_timeout(1000)  # many backoff periods: a looping client would show up here
    assert front.refused() - refused == 2 and await page.evaluate("window.tetherLive.state") == "failed"
    await front.service_up()
    before = server.live.total
    await page.click("#live-reconnect")
    await page.wait_for_function("window.tetherLive.state === 'open'", timeout=10_000)
    assert server.live.total == before + 1 and front.peak == 1
    assert not await page.is_visible("#live-reconnect")
    assert page.js_errors == []


async def test_auth_close_stops_reconnecting_and_shows_the_reason(tmp_path, browser):
    """A wrong token: one refused handshake, no retries, the close code and reason on the page."""
    settings = fast_settings(tmp_path, token="right-token-for-browser-tests")
    service = Service(settings)
    await service.start()
    server = LiveServer(service)
    await server.up()
    try:
        page = await open_page(browser, server.url, init=f"window.tetherOptions = {FAST_LIVE!r};".replace("'", '"')
                               + "sessionStorage.setItem('tether.token', 'wrong-token');")
        await page.wait_for_function("window.tetherLive.state === 'failed'", timeout=10_000)
        assert "4401" in await page.text_content("#live-close")
        assert "wrong or missing token" in await page.text_content("#live-close")
        assert await page.is_visible("#token-dialog")
        assert "4401" in await page.text_content("#token-error")
        await shot(page, "auth-refused")
        # Give a storm the time to show (many backoff periods), then count at the server.
        await page.wait_for_timeout(1000)
        assert await page.evaluate("window.tetherLive.state") == "failed"
        assert await page.evaluate("window.tetherLive.totalAttempts") == 1
        assert server.live.total == 1 and server.live.refused == 1
        assert "right-token" not in await page.content()
        assert page.js_errors == []
    finally:
        await server.down()
        await service.close()

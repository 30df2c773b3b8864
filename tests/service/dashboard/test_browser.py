"""The dashboard in real headless Chromium against a real service (uvicorn on 127.0.0.1).

The live channel's server end is restarted by stopping and starting uvicorn on the same port while the
same ``Service`` (and so the same event log) keeps running: that is what a deploy does to the page, it
exercises both close paths (uvicorn's 1012 on shutdown, then refused connects while the port is closed)
and needs no test-only hook in the service. The service counts live connections (``app.state.live``).
Set ``TETHER_SCREENSHOTS=<dir>`` to keep screenshots of each step.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import uvicorn

from tests.conftest import require_binary
from tests.service.conftest import eventually, fast_settings, free_port
from tether.service._api import create_app
from tether.service._server import _Server, bind_socket
from tether.service._service import Service
from tether.testing import FakeBotAPI, FlakyServer

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RESTARTS = 20
# Small real intervals for the page's client (the defaults are seconds): a cap of 400 ms keeps 20
# restarts short, a stable period longer than the test keeps the backoff growing across them.
FAST_LIVE = {"baseDelay": 50, "maxDelay": 400, "stableAfter": 600_000, "connectDelay": 0}


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


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, FlakyServer]]:
    flaky = FlakyServer()
    await flaky.start()
    bot = await FakeBotAPI().start()
    service = Service(fast_settings(tmp_path, restart_delay=0.5))
    await service.start()
    mgr = service.manager
    await mgr.create(session_id="ws-1", kind="websocket", options={"url": flaky.url})
    await mgr.create(session_id="ws-2", kind="websocket", options={"url": flaky.url})
    await mgr.create(session_id="tg-1", kind="telegram-bot",
                     options={"token": bot.token, "api_base": bot.url, "poll_timeout": 1})
    server = LiveServer(service)
    await server.up()
    try:
        yield server, flaky
    finally:
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
    if init:
        await page.add_init_script(init)
    await page.goto(url + "/dashboard/")
    return page


async def shot(page: Any, name: str) -> None:
    where = os.environ.get("TETHER_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)


def row_state(sid: str) -> str:
    return f"document.querySelector('tr[data-session=\"{sid}\"] .state')?.textContent"


async def test_page_lists_the_sessions_with_their_state(world, browser):
    """The page loads, lists every session and shows each one connected, with the live channel open."""
    server, _ = world
    page = await open_page(browser, server.url)
    await page.wait_for_function(
        "['ws-1','ws-2','tg-1'].every(id => document.querySelector(`tr[data-session='${id}'] .state`)"
        "?.textContent === 'connected')", timeout=10_000)
    await page.wait_for_function("window.tetherLive.state === 'open'", timeout=10_000)
    assert await page.text_content("#live-state") == "open"
    assert await page.text_content("[data-stat=sessions] b") == "3"
    await shot(page, "loaded")
    assert page.js_errors == []


async def test_restart_button_changes_the_sessions_state_on_the_page(world, browser):
    """Clicking Restart takes that row out of 'connected' and back, from live events alone."""
    server, _ = world
    page = await open_page(browser, server.url)
    await page.wait_for_function(f"{row_state('ws-1')} === 'connected' && window.tetherLive.state === 'open'",
                                 timeout=10_000)
    # Record every state the row shows (rows are rebuilt on each event, so watch the whole table).
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
    """20 server restarts: one open live socket at most, backoff-paced attempts, contiguous event ids."""
    server, _ = world
    mgr = server.service.manager
    page = await open_page(browser, server.url, init=f"window.tetherOptions = {FAST_LIVE!r};".replace("'", '"'))
    await eventually(lambda: server.live.open == 1, what="the page's live socket")
    await page.wait_for_function("window.tetherLive.lastEventId !== null", timeout=10_000)
    first = await page.evaluate("window.tetherLive.lastEventId") + 1  # the cursor the server gave the page
    for n in range(RESTARTS):
        before = server.live.total
        await server.down()
        assert server.live.open == 0
        # Events the page cannot see as they happen: it must get them by replay after reconnecting.
        await mgr.send("ws-1", f'{{"n": {n}}}')
        await server.up()
        await eventually(lambda: server.live.total > before and server.live.open == 1, what=f"reconnect {n + 1}")
        assert server.live.peak == 1
    await mgr.send("ws-1", '{"n": "last"}')
    last = server.service.events.last_id
    await page.wait_for_function(f"window.tetherDashboard.received.includes({last})", timeout=10_000)
    await shot(page, "after-restarts")

    # Never two sockets, one accepted handshake per restart (plus the first): no storm at the server.
    assert server.live.peak == 1
    assert server.live.total == RESTARTS + 1
    # Every event from the first one the page saw up to the last, once, in order.
    received = await page.evaluate("window.tetherDashboard.received")
    assert received == list(range(received[0], received[0] + len(received))) and last in received
    assert received[0] <= first, (received[0], first)  # nothing lost before the first restart either
    # The page's attempts follow its backoff: full jitter under min(cap, base * 2^(n-1)), the attempt
    # number only grows (no reset without a stable connection), and few attempts hit the closed port.
    log = await page.evaluate("window.tetherDashboard.live")
    waits = [e for e in log if e["state"] == "backing_off"]
    assert len(waits) >= RESTARTS
    for e in waits:
        bound = min(FAST_LIVE["maxDelay"], FAST_LIVE["baseDelay"] * 2 ** max(0, e["attempt"] - 1))
        assert 0 <= e["delay"] <= bound, e
    attempts = [e["attempt"] for e in log if e["state"] == "connecting"]
    assert attempts == list(range(1, len(attempts) + 1))
    total = await page.evaluate("window.tetherLive.totalAttempts")
    assert RESTARTS + 1 <= total <= 4 * (RESTARTS + 1), total
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

"""``tether demo``: a self-contained world on this machine, to watch sessions heal.

A flaky local WebSocket upstream (:class:`tether.testing.FlakyServer`) and a local Telegram Bot API
(:class:`tether.testing.FakeBotAPI`), the service on 127.0.0.1 with three websocket sessions and
one telegram-bot session, SQLite under ``./.tether/demo``, and a fault every few seconds (drops,
server restarts, 1012 closes, a half-open blackhole, Telegram 429 flood waits, 502s), plus a little
traffic both ways so the outbox and the inbound path have something to do.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path
from typing import Any

from .._errors import SessionNotFound, TetherError
from ._service import Service
from ._settings import load_settings

__all__ = ["run_demo"]

log = logging.getLogger("tether.demo")


#: The demo's WebSocket sessions (id, extra options) on the one flaky upstream.
WS_SESSIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("ws-1", {}), ("ws-2", {"heartbeat_interval": 1.0}), ("ws-3", {"backoff_cap": 10.0}))
#: The demo's telegram-bot sessions. Each gets its own FakeBotAPI token (its own bot): two pollers on
#: one token fight with 409 Conflict, as on Telegram.
TG_SESSIONS: tuple[str, ...] = ("tg-1",)


def demo_token(session: str) -> str:
    """The FakeBotAPI token of one demo telegram-bot session (Telegram's ``<bot id>:<secret>`` shape)."""
    return f"{700001 + TG_SESSIONS.index(session)}:tether-demo-{session}-token-000000"


def demo_sessions(ws_url: str, bot_url: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, kind, options) of every demo session."""
    out: list[tuple[str, str, dict[str, Any]]] = [(sid, "websocket", {"url": ws_url, **extra}) for sid, extra in WS_SESSIONS]
    out += [(sid, "telegram-bot", {"token": demo_token(sid), "api_base": bot_url, "poll_timeout": 5}) for sid in TG_SESSIONS]
    return out


async def _ensure(service: Service, sid: str, kind: str, options: dict[str, Any]) -> None:
    """Create the demo session, or point an existing one (from an earlier run) at today's ports."""
    mgr = service.manager
    assert mgr is not None
    try:
        mgr.get(sid)
    except SessionNotFound:
        await mgr.create(session_id=sid, kind=kind, options=options)
        return
    await mgr.update(sid, options=options, enabled=True)


async def _faults(flaky: Any, bot: Any, service: Service, every: float) -> None:
    """Inject one fault every ``every`` seconds, round-robin, and log what it was."""
    async def blackhole() -> None:
        flaky.blackhole()
        await asyncio.sleep(min(8.0, every))
        flaky.heal()

    faults = [
        ("drop every WebSocket connection (no close frame)", flaky.drop),
        ("Telegram answers 429: retry after 2", lambda: bot.fail_next(1, status=429, retry_after=2, method="getUpdates")),
        ("close every WebSocket with 1012 (service restart)", lambda: flaky.close_all(1012, "restarting")),
        ("restart the WebSocket upstream (down 3 s)", lambda: flaky.restart(down_for=3.0)),
        ("Telegram answers 502 twice", lambda: bot.fail_next(2, status=502, method="getUpdates")),
        ("blackhole the WebSocket upstream (half-open; heartbeats notice)", blackhole),
    ]
    for name, fault in itertools.cycle(faults):
        await asyncio.sleep(every)
        log.warning("demo fault: %s", name)
        try:
            result = fault()
            if asyncio.iscoroutine(result):
                await result
        except Exception as exc:  # a fault that fails is just a log line in a demo
            log.info("demo fault failed: %s", exc)


async def _traffic(flaky: Any, bot: Any, service: Service) -> None:
    """Outbound sends through the outbox and inbound messages from both upstreams."""
    for n in itertools.count(1):
        await asyncio.sleep(2.0)
        mgr = service.manager
        if mgr is None or not mgr.accepting:
            return
        try:
            await mgr.send("ws-1", f'{{"type":"ping","n":{n}}}')
            for sid in TG_SESSIONS:
                await mgr.send(sid, f'{{"chat_id": 42, "text": "demo message {n}"}}')
        except TetherError as exc:
            log.info("demo send skipped: %s", exc)
        try:
            await flaky.send_all(f'{{"id":"up-{n}","text":"hello from upstream #{n}"}}')
        except Exception:
            pass
        if n % 3 == 0:
            for sid in TG_SESSIONS:
                bot.push_message(f"user message #{n}", chat_id=42, token=demo_token(sid))


async def run_demo(*, port: int = 8080, data_dir: Path = Path(".tether"), fault_every: float = 6.0) -> int:
    """Run the demo until Ctrl-C; returns the exit code."""
    from rich.console import Console
    from rich.panel import Panel

    from ..testing import FakeBotAPI, FlakyServer
    from ._server import serve

    settings = load_settings(
        None, port=port, data_dir=Path(data_dir) / "demo", sweep_interval=30.0, restart_delay=2.0,
        sessions=dict(heartbeat_interval=2.0, heartbeat_timeout=2.0, backoff_base=0.5, backoff_cap=5.0,
                      max_attempts=None, stuck_after=60.0),
    )
    from ._server import bind_socket

    bind_socket(settings.host, settings.port).close()  # a busy port is a clear error before anything starts
    flaky = FlakyServer()
    await flaky.start()
    bot = FakeBotAPI(*(demo_token(sid) for sid in TG_SESSIONS))  # one bot per session: no 409 between them
    await bot.start()
    tasks: list[asyncio.Task[Any]] = []

    async def on_ready(service: Service, url: str) -> None:
        for sid, kind, options in demo_sessions(flaky.url, bot.url):
            await _ensure(service, sid, kind, options)
        tasks.append(asyncio.create_task(_faults(flaky, bot, service, fault_every), name="demo-faults"))
        tasks.append(asyncio.create_task(_traffic(flaky, bot, service), name="demo-traffic"))
        Console().print(Panel.fit(
            f"[bold]tether demo[/] is running\n\n"
            f"  dashboard   {url}/dashboard/\n"
            f"  API docs    {url}/docs\n"
            f"  sessions    {url}/api/sessions\n"
            f"  events      {url}/api/events  (SSE)\n"
            f"  health      {url}/health\n\n"
            f"  upstreams   {flaky.url} (flaky WebSocket), {bot.url} (fake Telegram Bot API)\n"
            f"  data        {settings.data_dir}/\n\n"
            f"A fault every {fault_every:g} s; watch the sessions heal. [bold]Ctrl-C[/] stops it cleanly.",
            title="tether", border_style="green"))

    from ..observe import service_observability

    try:  # observability as `tether serve` wires it: metrics, error tracker, alerts, log files
        return await serve(settings, on_ready=on_ready, observability=service_observability(settings))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bot.close()
        await flaky.stop()

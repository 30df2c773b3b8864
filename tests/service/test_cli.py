"""`tether sessions list|show|restart|logout` through the API of a running service."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from tether.cli import app
from tests.service.conftest import TOKEN, Upstream, fast_settings, start_service, stop_service


async def test_sessions_commands_through_the_api(tmp_path: Path, upstream: Upstream) -> None:
    """list shows the session, show masks its token, restart and logout act; a wrong token is a clean error."""
    r = await start_service(fast_settings(tmp_path, token=TOKEN), token=TOKEN)
    runner = CliRunner()

    def cli(*args: str, token: str = TOKEN) -> tuple[int, str]:
        res = runner.invoke(app, [*args, "--url", r.url, "--token", token], env={"COLUMNS": "200"})
        return res.exit_code, res.output

    try:
        await r.client.post("/api/sessions", json={"id": "cli-1", "kind": "websocket",
                                                   "options": {"url": upstream.url, "token": "tok-secret-77"}})
        await r.wait_state("cli-1", "connected")
        code, out = await asyncio.to_thread(cli, "sessions", "list")
        assert code == 0 and "cli-1" in out and "connected" in out
        code, out = await asyncio.to_thread(cli, "sessions", "show", "cli-1")
        assert code == 0 and "tok-secret-77" not in out and "***" in out
        code, out = await asyncio.to_thread(cli, "sessions", "restart", "cli-1")
        assert code == 0 and "restarted" in out
        code, out = await asyncio.to_thread(cli, "sessions", "logout", "cli-1")
        assert code == 0 and "logged out" in out
        code, out = await asyncio.to_thread(cli, "sessions", "show", "nope")
        assert code == 1 and "HTTP 404" in out
        code, out = await asyncio.to_thread(cli, "sessions", "list", token="wrong-token-000")
        assert code == 1 and "HTTP 401" in out
    finally:
        await stop_service(r)

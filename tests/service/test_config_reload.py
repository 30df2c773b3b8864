"""Config file hot reload (watchfiles) and `tether config ...` through the API of a running service."""

from __future__ import annotations

import asyncio
import json
import logging
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether.cli import app
from tether.service._settings import load_settings
from tests.service.conftest import TOKEN, Running, eventually, start_service, stop_service

BOT_TOKEN = "555000:CCH-cli-secret-bot-token"

TOML = """\
sweep_interval = 3600.0
restart_delay = 0.05
shutdown_timeout = 3.0

[sessions]
heartbeat_interval = {hb}
backoff_base = 0.05
backoff_cap = 0.2

[alerts.telegram]
api_base = "http://127.0.0.1:9"
bot_token = "{bot}"
chat_id = 42
"""


async def start_from_file(tmp_path: Path, text: str, token: str | None = None) -> tuple[Running, Path]:
    path = tmp_path / "tether.toml"
    path.write_text(text)
    settings = load_settings(path, port=0, data_dir=tmp_path / "data", token=token)
    return await start_service(settings, token=token), path


async def edit_until(path: Path, text: str, done: Any, what: str) -> None:
    """Write ``text``; write it again (a new event) if the watcher has not acted yet (it may still be starting)."""
    for _ in range(20):
        path.write_text(text)
        try:
            await eventually(done, timeout=0.5, what=what)
            return
        except AssertionError:
            continue
    raise AssertionError(f"timed out waiting for {what}")


async def test_file_edit_reloads_and_invalid_edit_is_rejected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A valid edit becomes a version by `file`; an invalid one is logged naming the field and changes nothing."""
    caplog.set_level(logging.INFO, logger="tether.config")
    r, path = await start_from_file(tmp_path, TOML.format(hb=5.0, bot=BOT_TOKEN))
    config = r.service.config
    try:
        assert config.version == 1
        await edit_until(path, TOML.format(hb=2.5, bot=BOT_TOKEN), lambda: config.version == 2, "reload to v2")
        v = config.current
        assert v.user == "file" and [c["path"] for c in v.changes] == ["sessions.heartbeat_interval"]
        assert r.service.settings.sessions.heartbeat_interval == 2.5
        # An API change and a later file edit of another field: both kept (the file applies what it changed).
        assert (await r.client.patch("/api/config?user=ann", json={"sessions": {"send_batch": 9}})).status_code == 200
        await edit_until(path, TOML.format(hb='"fast"', bot=BOT_TOKEN), lambda: config.rejected >= 1, "rejection")
        assert config.version == 3 and r.service.settings.sessions.heartbeat_interval == 2.5
        assert "sessions.heartbeat_interval" in caplog.text and "rejected" in caplog.text
        await edit_until(path, TOML.format(hb=1.5, bot=BOT_TOKEN), lambda: config.version == 4, "reload to v4")
        assert r.service.settings.sessions.heartbeat_interval == 1.5
        assert r.service.settings.sessions.send_batch == 9
    finally:
        await stop_service(r)
    assert BOT_TOKEN not in caplog.text


async def test_config_cli(tmp_path: Path) -> None:
    """get, set, history, rollback, export (TOML/JSON) and import through the API; secrets stay masked."""
    r, _ = await start_from_file(tmp_path, TOML.format(hb=5.0, bot=BOT_TOKEN), token=TOKEN)
    runner = CliRunner()

    def cli(*args: str) -> tuple[int, str]:
        res = runner.invoke(app, ["config", *args, "--url", r.url, "--token", TOKEN], env={"COLUMNS": "200"})
        return res.exit_code, res.output

    try:
        code, out = await asyncio.to_thread(cli, "get", "sessions.heartbeat_interval")
        assert code == 0 and out.strip() == "5.0"
        code, out = await asyncio.to_thread(cli, "set", "sessions.heartbeat_interval=3", "log_level=debug",
                                            "--user", "ann", "--reason", "tune")
        assert code == 0 and "config version 2" in out and "sessions.heartbeat_interval: 5.0 -> 3" in out
        assert "applies after restart: log_level" in out
        code, out = await asyncio.to_thread(cli, "set", "sessions.heartbeat_interval=-2")
        assert code == 1 and "HTTP 422" in out and "sessions.heartbeat_interval" in out
        code, out = await asyncio.to_thread(cli, "set", "sweep_interval=60", "--if-match", "1")
        assert code == 1 and "HTTP 409" in out
        code, out = await asyncio.to_thread(cli, "history")
        assert code == 0 and "ann" in out and "tune" in out and "startup" in out
        code, out = await asyncio.to_thread(cli, "get")
        assert code == 0 and BOT_TOKEN not in out and "**********" in out
        exported = tmp_path / "export.toml"
        code, out = await asyncio.to_thread(cli, "export", "-o", str(exported))
        assert code == 0 and BOT_TOKEN not in exported.read_text()
        doc = tomllib.loads(exported.read_text())
        assert doc["sessions"]["heartbeat_interval"] == 3
        code, out = await asyncio.to_thread(cli, "export", "--format", "json")
        assert code == 0 and json.loads(out)["alerts"]["telegram"]["bot_token"] == "**********"
        code, out = await asyncio.to_thread(cli, "rollback", "1", "--reason", "undo")
        assert code == 0 and "config version 3" in out
        code, out = await asyncio.to_thread(cli, "import", str(exported), "--user", "bob")
        assert code == 0 and "config version 4" in out
        assert r.service.settings.sessions.heartbeat_interval == 3
        # The masked secret in the export kept the stored token.
        assert r.service.settings.alerts.telegram.bot_token.get_secret_value() == BOT_TOKEN
        bad = tmp_path / "bad.json"
        bad.write_text('{"sessions": {"send_batch": 0}}')
        code, out = await asyncio.to_thread(cli, "import", str(bad))
        assert code == 1 and "sessions.send_batch" in out
    finally:
        await stop_service(r)


async def test_cli_export_import_replace_round_trip_and_backup_restore(tmp_path: Path) -> None:
    """export (TOML, JSON) to files, change things, import --replace: the earlier config exactly; a backup file restores secrets too."""
    r, _ = await start_from_file(tmp_path, TOML.format(hb=5.0, bot=BOT_TOKEN), token=TOKEN)
    runner = CliRunner()
    new_bot = "777000:DDI-rotated-secret-token"

    def cli(*args: str) -> tuple[int, str]:
        res = runner.invoke(app, ["config", *args, "--url", r.url, "--token", TOKEN], env={"COLUMNS": "200"})
        return res.exit_code, res.output

    async def masked() -> dict[str, Any]:
        return (await r.client.get("/api/config", headers={"Authorization": f"Bearer {TOKEN}"})).json()["config"]

    try:
        code, out = await asyncio.to_thread(cli, "set", "sessions.max_attempts=null", "sessions.heartbeat_interval=4",
                                            "alerts.rules.MemoryHigh.threshold=5", "--user", "ann")
        assert code == 0 and "config version 2" in out, out
        v2 = await masked()
        as_toml, as_json = tmp_path / "backup.toml", tmp_path / "backup.json"
        assert (await asyncio.to_thread(cli, "export", "-o", str(as_toml)))[0] == 0
        assert (await asyncio.to_thread(cli, "export", "-f", "json", "-o", str(as_json)))[0] == 0
        for f in (as_toml, as_json):
            assert BOT_TOKEN not in f.read_text() and TOKEN not in f.read_text()
        assert "\nmax_attempts" not in as_toml.read_text().split("[sessions]")[1].split("[")[0]  # TOML has no null

        change = ("sessions.max_attempts=7", "sessions.heartbeat_interval=9", "alerts.rules.SessionDown.for=5")
        for f in (as_toml, as_json):
            assert (await asyncio.to_thread(cli, "set", *change))[0] == 0
            assert await masked() != v2
            code, out = await asyncio.to_thread(cli, "import", str(f), "--replace", "--user", "bob")
            assert code == 0 and "sessions.max_attempts: 7 -> null" in out, out
            assert await masked() == v2  # unset again, the added rule tuning removed
        # Exports are masked: importing one keeps the running secret; a backup file restores it too.
        assert (await asyncio.to_thread(cli, "set", f"alerts.telegram.bot_token=\"{new_bot}\""))[0] == 0
        code, out = await asyncio.to_thread(cli, "import", str(as_json), "--replace")
        assert code == 0 and r.service.settings.alerts.telegram.bot_token.get_secret_value() == new_bot
        assert new_bot not in out
        backup = tmp_path / "data" / "config-backups" / "config-v000002.json"
        code, out = await asyncio.to_thread(cli, "import", str(backup), "--replace", "--reason", "restore v2")
        assert code == 0, out
        assert r.service.config.current.document == r.service.config.get(2).document
        assert r.service.settings.alerts.telegram.bot_token.get_secret_value() == BOT_TOKEN
        assert BOT_TOKEN not in out and new_bot not in out
        # --replace with a stale --if-match is refused like any other write.
        code, out = await asyncio.to_thread(cli, "import", str(as_json), "--replace", "--if-match", "1")
        assert code == 1 and "HTTP 409" in out
    finally:
        await stop_service(r)


async def test_file_changed_while_stopped_applies_over_the_latest_version(tmp_path: Path) -> None:
    """At start-up, what changed in the file since the last run is a version by `file`; API changes to other fields stay."""
    r, path = await start_from_file(tmp_path, TOML.format(hb=5.0, bot=BOT_TOKEN))
    assert (await r.client.patch("/api/config?user=ann", json={"sessions": {"send_batch": 9}})).status_code == 200
    await stop_service(r)
    path.write_text(TOML.format(hb=2.5, bot=BOT_TOKEN))
    r = await start_service(load_settings(path, port=0, data_dir=tmp_path / "data"))
    try:
        v = r.service.config.current
        assert (v.version, v.user, v.reason) == (3, "file", "changed while stopped")
        assert [c["path"] for c in v.changes] == ["sessions.heartbeat_interval"]
        assert (r.service.settings.sessions.heartbeat_interval, r.service.settings.sessions.send_batch) == (2.5, 9)
    finally:
        await stop_service(r)

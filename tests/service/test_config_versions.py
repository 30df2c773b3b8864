"""Config versions: If-Match/ETag semantics, versions this tether rejects, the exact stored document, backups."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest

import tether.service._config as config_mod
from tether.service._config import ConfigInvalid, validate
from tether.service._config_doc import to_document
from tether.service._settings import load_settings
from tests.service.conftest import Running, fast_settings, start_service, stop_service


def _poison(db: Path, version: int) -> None:
    """Give a stored version a setting this tether does not know (as an older or newer tether would)."""
    con = sqlite3.connect(db)
    with con:
        doc = json.loads(con.execute("SELECT document FROM versions WHERE version=?", (version,)).fetchone()[0])
        doc["sessions"]["heartbeat_every"] = 5  # a renamed setting
        con.execute("UPDATE versions SET document=? WHERE version=?", (json.dumps(doc), version))
    con.close()


async def test_if_match_absent_present_star_and_etags(running: Running) -> None:
    """No If-Match (or *) applies unconditionally; a current one applies; a stale one is 409; GET and history carry the ETag."""
    c = running.client
    got = await c.get("/api/config")
    assert got.headers["etag"] == '"1"' and got.json()["version"] == 1
    assert (await c.patch("/api/config?user=a", json={"sweep_interval": 61})).headers["etag"] == '"2"'
    assert (await c.patch("/api/config?user=a", json={"sweep_interval": 62}, headers={"If-Match": "*"})).status_code == 200
    ok = await c.patch("/api/config?user=a", json={"sweep_interval": 63}, headers={"If-Match": 'W/"3"'})
    assert ok.status_code == 200 and ok.json()["version"] == 4
    stale = await c.patch("/api/config?user=a", json={"sweep_interval": 64}, headers={"If-Match": '"3"'})
    assert stale.status_code == 409 and stale.headers["etag"] == '"4"'
    assert "GET /api/config" in stale.json()["error"]["message"]
    assert running.service.settings.sweep_interval == 63
    rb = await c.post("/api/config/rollback", json={"version": 1}, headers={"If-Match": '"2"'})
    assert rb.status_code == 409
    hist = await c.get("/api/config/history")
    assert hist.headers["etag"] == '"4"' and [v["version"] for v in hist.json()["versions"]] == [4, 3, 2, 1]
    assert running.service.sweep.interval == 63  # the running sweep took it too
    assert (await c.get("/health/sweeps")).json()["interval"] == 63


async def test_rollback_to_a_version_this_tether_rejects_is_a_clear_422(running: Running) -> None:
    """A stored version that no longer validates is refused naming the version and the field; nothing changes."""
    c = running.client
    assert (await c.patch("/api/config?user=a", json={"sweep_interval": 61})).status_code == 200
    _poison(Path(running.service.settings.data_dir) / "config.db", 1)
    r = await c.post("/api/config/rollback", json={"version": 1, "user": "ann"})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert "version 1 cannot be restored" in err["message"] and "nothing changed" in err["message"]
    assert err["fields"] == [{"field": "sessions.heartbeat_every", "message": "unknown setting (check the spelling)"}]
    got = await c.get("/api/config")
    assert got.json()["version"] == 2 and got.json()["config"]["sweep_interval"] == 61


async def test_start_with_a_latest_version_this_tether_rejects(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The service still starts: from the file + environment as a new version, with an error naming the field."""
    caplog.set_level(logging.ERROR, logger="tether.config")
    r = await start_service(fast_settings(tmp_path))
    assert (await r.client.patch("/api/config?user=a", json={"sweep_interval": 61})).status_code == 200
    await stop_service(r)
    _poison(tmp_path / "data" / "config.db", 2)
    r = await start_service(fast_settings(tmp_path))
    try:
        got = (await r.client.get("/api/config")).json()
        assert got["version"] == 3 and got["config"]["sweep_interval"] == 3600.0
        hist = (await r.client.get("/api/config/history")).json()["versions"]
        assert hist[0]["user"] == "startup" and "version 2 invalid: sessions.heartbeat_every" == hist[0]["reason"]
        assert "stored config version 2 is not valid" in caplog.text and "heartbeat_every" in caplog.text
    finally:
        await stop_service(r)


def test_a_stored_document_is_taken_without_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """validate() builds from the document alone: a TETHER_* map entry cannot come back after it was removed."""
    doc = to_document(load_settings(None))
    monkeypatch.setenv("TETHER_ALERTS__RULES__MEMORYHIGH__THRESHOLD", "5")
    monkeypatch.setenv("TETHER_SWEEP_INTERVAL", "7")
    s = validate(doc)
    assert s.alerts.rules == {} and s.sweep_interval == 300.0
    assert to_document(s) == doc
    with pytest.raises(ConfigInvalid) as info:
        validate({**doc, "port": "eighty"})
    assert info.value.fields[0]["field"] == "port"


async def test_every_version_is_backed_up_to_a_private_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config-backups/config-v<N>.json holds each full document (0600, folder 0700); only the newest BACKUP_KEEP stay."""
    monkeypatch.setattr(config_mod, "BACKUP_KEEP", 3)
    r = await start_service(fast_settings(tmp_path, token="backup-token-123"), token="backup-token-123")
    try:
        for i in range(4):
            assert (await r.client.patch("/api/config?user=a", json={"sweep_interval": 60 + i})).status_code == 200
        folder = tmp_path / "data" / "config-backups"
        files = sorted(p.name for p in folder.iterdir())
        assert files == ["config-v000003.json", "config-v000004.json", "config-v000005.json"]
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        newest = folder / files[-1]
        assert stat.S_IMODE(os.stat(newest).st_mode) == 0o600
        backup = json.loads(newest.read_text())
        assert backup["version"] == 5 and backup["user"] == "a"
        assert backup["config"] == r.service.config.current.document  # whole: the token is restorable
        assert backup["config"]["token"] == "backup-token-123"
    finally:
        await stop_service(r)


async def test_a_url_with_a_password_is_a_secret_and_scale_out_needs_a_restart(running: Running) -> None:
    """store = redis://:pw@... is masked in answers and diffs, kept when sent back masked, and applies after restart."""
    c = running.client
    url = "redis://:redis-pa55-not-shown@127.0.0.1:6390/0"
    p = await c.patch("/api/config?user=ann", json={"store": url, "node_id": "n1"})
    assert p.status_code == 200, p.text
    assert sorted(p.json()["restart_required"]) == ["node_id", "store"]
    assert {"path": "store", "old": None, "new": "**********", "secret": True} in p.json()["changes"]
    got = await c.get("/api/config")
    assert got.json()["config"]["store"] == "**********" and sorted(got.json()["pending_restart"]) == ["node_id", "store"]
    back = await c.patch("/api/config?user=ann", json=got.json()["config"])
    assert back.status_code == 200 and back.json()["version"] == 2  # the masked URL kept the stored one
    assert running.service.config.current.document["store"] == url
    for text in (p.text, got.text, back.text, (await c.get("/api/config/history")).text):
        assert "redis-pa55" not in text
    assert (await c.get("/health/sweeps")).json()["interval"] == running.service.settings.sweep_interval

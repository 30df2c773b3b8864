"""Settings: defaults, TOML, TETHER_* environment, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether import ConfigError
from tether.service._settings import load_settings


def test_defaults_are_safe() -> None:
    """Loopback on 8080, data in ./.tether, sweep every 300 s, restart delay 2 s, no token."""
    s = load_settings(None)
    assert (s.host, s.port, s.data_dir, s.sweep_interval, s.restart_delay) == ("127.0.0.1", 8080, Path(".tether"), 300.0, 2.0)
    assert s.token is None and s.loopback_only


def test_toml_then_env_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides beat TETHER_* variables, which beat the TOML file; nested fields merge."""
    cfg = tmp_path / "t.toml"
    cfg.write_text('port = 9000\nsweep_interval = 60\n[sessions]\nmax_attempts = 5\nbackoff_base = 1.0\n')
    monkeypatch.setenv("TETHER_SWEEP_INTERVAL", "30")
    monkeypatch.setenv("TETHER_SESSIONS__BACKOFF_BASE", "2.5")
    monkeypatch.setenv("TETHER_TOKEN", "a-long-enough-token")
    s = load_settings(cfg, port=9100)
    assert (s.port, s.sweep_interval, s.sessions.max_attempts, s.sessions.backoff_base) == (9100, 30.0, 5, 2.5)
    assert s.token is not None and "a-long-enough-token" not in repr(s)


def test_env_reaches_every_section_with_double_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    """TETHER_<SECTION>__<FIELD> (``__`` at each level) sets nested fields; lists and maps take JSON."""
    monkeypatch.setenv("TETHER_ALERTS__TELEGRAM__BOT_TOKEN", "123:env-bot-token")
    monkeypatch.setenv("TETHER_ALERTS__TELEGRAM__CHAT_ID", "42")
    monkeypatch.setenv("TETHER_ALERTS__WEBHOOKS", '[{"name": "ops", "url": "https://hooks.example/k"}]')
    monkeypatch.setenv("TETHER_ALERTS__RULES__SessionDown__FOR", "60")
    monkeypatch.setenv("TETHER_RECOVERY__CLASSES__FLOOD_WAIT__ACTION", "wait")
    monkeypatch.setenv("TETHER_SUPERVISOR__MAX_RESTARTS", "3")
    monkeypatch.setenv("TETHER_SESSIONS__MAX_ATTEMPTS", "null")
    s = load_settings(None)
    assert s.alerts.telegram.bot_token is not None and s.alerts.telegram.bot_token.get_secret_value() == "123:env-bot-token"
    assert str(s.alerts.telegram.chat_id) == "42" and s.alerts.webhooks[0].name == "ops"  # the Bot API takes either
    assert s.alerts.rules["sessiondown"].for_ == 60  # names arrive lower-cased; the alert wiring matches them so
    assert s.recovery.classes["flood_wait"].action == "wait"
    assert (s.supervisor.max_restarts, s.sessions.max_attempts) == (3, None)
    monkeypatch.setenv("TETHER_SUPERVISOR__MAX_RESTARTS", "0")
    with pytest.raises(ConfigError, match=r"supervisor\.max_restarts"):
        load_settings(None)


def test_errors_name_the_field(tmp_path: Path) -> None:
    """A bad value, a typo and a missing file each give a ConfigError naming what to fix."""
    with pytest.raises(ConfigError, match=r"port: .*less than or equal to 65535"):
        load_settings(None, port=70000)
    with pytest.raises(ConfigError, match=r"sessions\.max_attempts"):
        load_settings(None, sessions={"max_attempts": 0})
    cfg = tmp_path / "t.toml"
    cfg.write_text("sweep_intervall = 5\n")
    with pytest.raises(ConfigError, match=r"sweep_intervall: unknown setting"):
        load_settings(cfg)
    cfg.write_text("port = [\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="token: .*at least 8"):
        load_settings(None, token="short")


def test_beyond_loopback_needs_token() -> None:
    """0.0.0.0 without a token refuses; with one it is allowed; ::1 and localhost count as loopback."""
    with pytest.raises(ConfigError, match="TETHER_TOKEN"):
        load_settings(None, host="0.0.0.0").check_can_serve()
    load_settings(None, host="0.0.0.0", token="a-long-enough-token").check_can_serve()
    for host in ("::1", "localhost", "127.0.0.2"):
        load_settings(None, host=host).check_can_serve()


def test_errors_never_echo_a_secret(tmp_path: Path) -> None:
    """A rejected secret (a webhook URL with its key, a short token, a mistyped bot token) is named, never shown."""
    cfg = tmp_path / "t.toml"
    cfg.write_text('token = "shortpw"\n[alerts.telegram]\nbot_token = 123456789\n'
                   '[[alerts.webhooks]]\nurl = "ftp://hooks.example/key-5b1c9e-secret"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    message = str(info.value)
    for field in ("token:", "alerts.telegram.bot_token", "alerts.webhooks.0.url"):
        assert field in message
    for secret in ("shortpw", "123456789", "key-5b1c9e-secret"):
        assert secret not in message

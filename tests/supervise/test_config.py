"""SupervisorConfig validation, TOML loading, precedence, the systemd unit, log rotation, state file."""

from __future__ import annotations

import json
import signal
import threading

import pytest

from tether import ConfigError, SupervisorError
from tether.supervise import (
    SupervisorConfig,
    load_toml_section,
    parse_duration,
    parse_size,
    read_state,
    systemd_unit,
)
from tether.supervise._logs import LogSink
from tether.supervise._state import write_state


def test_parse_duration_and_size():
    """Durations and sizes accept numbers and PM2-style strings."""
    assert parse_duration("4s", "x") == 4.0
    assert parse_duration("500ms", "x") == 0.5
    assert parse_duration("5m", "x") == 300.0
    assert parse_duration(2, "x") == 2.0
    assert parse_size("1G", "x") == 1024**3
    assert parse_size("512MiB", "x") == 512 * 1024**2
    assert parse_size(1000, "x") == 1000


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"restart": "sometimes"}, "restart"),
        ({"memory_soft": "lots"}, "memory_soft"),
        ({"memory_soft": "2G", "memory_hard": "1G"}, "memory_soft"),
        ({"kill_timeout": "-1"}, "kill_timeout"),
        ({"max_restarts": 0}, "max_restarts"),
        ({"cron": "at three"}, "cron"),
        ({"health_url": "localhost:8080"}, "health_url"),
        ({"stop_signal": "SIGNOPE"}, "stop_signal"),
        ({"backoff_initial": 10, "backoff_max": 1}, "backoff_max"),
        ({"instances": 0}, "instances"),
    ],
)
def test_invalid_values_name_the_option(kwargs, option):
    """Every invalid value raises ConfigError whose message starts with the option's name."""
    with pytest.raises(ConfigError) as err:
        SupervisorConfig(command=("x",), **kwargs)
    assert str(err.value).startswith(option)


def test_defaults_and_normalisation():
    """Strings are parsed; error_file follows log_file; the name defaults to the program."""
    cfg = SupervisorConfig(command="python bot.py", memory_soft="1G", kill_timeout="1600ms",
                           stop_signal="int", log_file="out.log")
    assert cfg.command == ("python", "bot.py")
    assert cfg.name == "python"
    assert cfg.memory_soft == 1024**3
    assert cfg.kill_timeout == 1.6
    assert cfg.stop_signal is signal.SIGINT
    assert cfg.error_file == cfg.log_file


def test_toml_then_cli_precedence(tmp_path):
    """The [supervise] section fills options; CLI values win; None means "not given"; unknown keys fail."""
    path = tmp_path / "tether.toml"
    path.write_text('[supervise]\ncommand = ["python", "bot.py"]\nrestart = "never"\nmax-restarts = 4\n'
                    'memory_soft = "1G"\n')
    toml = load_toml_section(path)
    cfg = SupervisorConfig.from_mapping(toml, {"restart": "on-failure", "max_restarts": None})
    assert (cfg.restart, cfg.max_restarts, cfg.memory_soft) == ("on-failure", 4, 1024**3)
    with pytest.raises(ConfigError, match="unknown option 'max_restart'"):
        SupervisorConfig.from_mapping({"command": ["x"], "max_restart": 3}, source="[supervise]")
    with pytest.raises(ConfigError, match="command"):
        SupervisorConfig.from_mapping({})
    bad = tmp_path / "bad.toml"
    bad.write_text("[supervise\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml_section(bad)


def test_systemd_unit_maps_the_options():
    """The emitted unit carries restart, backoff growth, start limits, memory and watchdog settings."""
    cfg = SupervisorConfig(command=("/usr/bin/node", "server.js", "100%"), restart="on-failure",
                           backoff_initial="4s", backoff_max="60s", backoff_factor=2, max_restarts=10,
                           window="1m", memory_soft="800M", memory_hard="1G", kill_timeout="1600ms",
                           health_url="http://127.0.0.1:3000/health", health_interval=10, health_failures=3,
                           cron="0 3 * * *")
    unit = systemd_unit(cfg)
    for line in ("Restart=on-failure", "RestartSec=4s", "RestartSteps=4", "RestartMaxDelaySec=60s",
                 "StartLimitIntervalSec=60s", "StartLimitBurst=10", "MemoryHigh=800M", "MemoryMax=1G",
                 "TimeoutStopSec=1600ms", "KillMode=control-group", "WatchdogSec=30s",
                 "ExecStart=/usr/bin/node server.js 100%%"):
        assert line in unit.splitlines(), line
    assert "sd_notify" in unit and "OnCalendar" in unit
    assert "WatchdogSec" not in systemd_unit(SupervisorConfig(command=("/bin/true",)))


def test_log_rotation_keeps_every_line(tmp_path):
    """Rotation shifts files (log.1 newest) and loses no line while backups last."""
    path = tmp_path / "out.log"
    sink = LogSink(path, max_bytes=2000, backups=10, wall=lambda: 0.0)
    threads = [threading.Thread(target=lambda k=k: [sink.write("bot:0", "out", f"t{k} line {i}") for i in range(50)])
               for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close()
    files = [path, *sorted(tmp_path.glob("out.log.*"))]
    assert len(files) > 2
    lines = [ln for f in files for ln in f.read_text().splitlines()]
    assert len(lines) == 100
    assert all(ln.startswith("1970-01-01T00:00:00.000Z [bot:0] out | t") for ln in lines)
    assert all(f.stat().st_size <= 2000 for f in files)


def test_state_file_roundtrip_and_errors(tmp_path):
    """The state file is replaced whole; a missing one gives a SupervisorError saying what to do."""
    path = tmp_path / "state.json"
    write_state(path, {"name": "bot", "instances": []})
    assert read_state(path)["name"] == "bot"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind
    with pytest.raises(SupervisorError, match="--state-file"):
        read_state(tmp_path / "missing.json")
    (tmp_path / "junk.json").write_text(json.dumps([1, 2]))
    with pytest.raises(SupervisorError, match="not a tether supervise state file"):
        read_state(tmp_path / "junk.json")

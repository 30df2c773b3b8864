"""`tether supervise` through the installed entry point: `--`, the `status` name clash, signals, TOML."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from tether.cli import app

TETHER = str(Path(sys.executable).parent / "tether")
TIMEOUT = 15.0


def tether(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([TETHER, *args], cwd=cwd, capture_output=True, text=True, timeout=30,
                          env=env)


def wait_until(pred, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_sigterm_to_supervisor_stops_children_gracefully(tmp_path):
    """SIGTERM to `tether supervise`: both instances get SIGTERM, clean up (logged), supervisor exits 0."""
    (tmp_path / "bot.py").write_text(textwrap.dedent("""
        import os, signal, sys, time
        def cleanup(*_):
            print("cleanup done by", os.environ["TETHER_INSTANCE"])
            sys.exit(0)
        signal.signal(signal.SIGTERM, cleanup)
        signal.signal(signal.SIGHUP, lambda *_: print("reloading config"))
        print("ready", os.environ["TETHER_INSTANCE"])
        while True:
            time.sleep(0.05)
    """))
    log = tmp_path / "bot.log"
    sup = subprocess.Popen([TETHER, "supervise", "--instances", "2", "--log-file", str(log),
                            "--state-file", "st.json", "--", sys.executable, "-S", "-u", "bot.py"],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: log.exists() and "ready 0" in log.read_text() and "ready 1" in log.read_text())
        status = tether("supervise", "status", "--state-file", "st.json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert f"supervisor pid {sup.pid}" in status.stdout and status.stdout.count("running, pid") == 2
        raw = json.loads(tether("supervise", "status", "--json", "--state-file", "st.json", cwd=tmp_path).stdout)
        pids = [i["pid"] for i in raw["instances"]]
        assert all(psutil.pid_exists(p) for p in pids) and all(i["uptime"] >= 0 for i in raw["instances"])
        second = tether("supervise", "--state-file", "st.json", "--", "true", cwd=tmp_path)
        assert second.returncode == 1 and f"another tether supervise (pid {sup.pid})" in second.stderr
        sup.send_signal(signal.SIGHUP)  # forwarded to the children
        wait_until(lambda: log.read_text().count("reloading config") == 2)
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=TIMEOUT) == 0
    finally:
        if sup.poll() is None:
            sup.kill()
        sup.communicate()
    text = log.read_text()
    assert "cleanup done by 0" in text and "cleanup done by 1" in text
    assert "stopping: received SIGTERM" in text
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    after = tether("supervise", "status", "--state-file", "st.json", cwd=tmp_path)
    assert "supervisor exited (code 0)" in after.stdout


def test_children_die_with_a_killed_supervisor(tmp_path):
    """SIGKILL to the supervisor (no chance to clean up) still takes its children down: no orphan bot."""
    (tmp_path / "bot.py").write_text("import time\nprint('ready')\ntime.sleep(60)\n")
    log = tmp_path / "bot.log"
    sup = subprocess.Popen([TETHER, "supervise", "--log-file", str(log), "--state-file", "st.json", "--",
                            sys.executable, "-S", "-u", "bot.py"], cwd=tmp_path)
    try:
        wait_until(lambda: log.exists() and "out | ready" in log.read_text())
        pid = json.loads((tmp_path / "st.json").read_text())["instances"][0]["pid"]
        sup.kill()
        sup.wait(timeout=TIMEOUT)
    finally:
        if sup.poll() is None:
            sup.kill()

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    try:
        wait_until(gone)
    finally:
        if not gone():
            os.kill(pid, signal.SIGKILL)


def test_double_dash_runs_a_program_named_status(tmp_path):
    """`tether supervise -- status` runs a program called status; the exhausted budget exits 75."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    prog = bindir / "status"
    prog.write_text("#!/bin/sh\necho i am the status program\nexit 1\n")
    prog.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    res = tether("supervise", "--max-restarts", "2", "--on-exhausted", "exit", "--backoff-initial", "0.05",
                 "--log-file", "s.log", "--", "status", cwd=tmp_path, env=env)
    assert res.returncode == 75, res.stderr
    text = (tmp_path / "s.log").read_text()
    assert text.count("i am the status program") == 3
    assert "crash (exit code 1)" in text


def test_status_without_state_file_says_what_to_do(tmp_path, monkeypatch):
    """`tether supervise status` with no state file: exit 1 and a hint, no traceback."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["supervise", "status"])
    assert res.exit_code == 1
    assert "--state-file" in res.stderr
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_emit_systemd_from_toml_with_cli_override(tmp_path):
    """--emit-systemd prints the unit; TOML [supervise] supplies options, the CLI overrides them."""
    (tmp_path / "tether.toml").write_text(textwrap.dedent("""
        [supervise]
        command = ["/usr/bin/node", "server.js"]
        restart = "always"
        memory_hard = "1G"
        max_restarts = 10
        window = "60s"
        backoff_initial = "4s"
        health_url = "http://127.0.0.1:3000/health"
    """))
    res = tether("supervise", "--config", "tether.toml", "--restart", "on-failure", "--emit-systemd", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    for expected in ("ExecStart=/usr/bin/node server.js", "Restart=on-failure", "RestartSec=4s",
                     "MemoryMax=1G", "StartLimitBurst=10", "StartLimitIntervalSec=60s"):
        assert expected in lines, expected
    assert any(ln.startswith("WatchdogSec=") for ln in lines) and "sd_notify" in res.stdout


def test_supervisor_section_of_the_settings_file_is_read_under_supervise(tmp_path):
    """tether.toml's [supervisor] (the service's settings tree) gives defaults; [supervise] and the CLI win."""
    (tmp_path / "tether.toml").write_text(textwrap.dedent("""
        [supervisor]
        max_restarts = 7
        window = 90.0
        restart = "on-failure"

        [supervise]
        command = ["tether", "serve"]
        window = "120s"
    """))
    res = tether("supervise", "--config", "tether.toml", "--emit-systemd", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    for expected in ("Restart=on-failure", "StartLimitBurst=7", "StartLimitIntervalSec=120s"):
        assert expected in lines, expected
    (tmp_path / "bad.toml").write_text("[supervisor]\nmax_restart = 3\n[supervise]\ncommand = ['x']\n")
    bad = tether("supervise", "--config", "bad.toml", "--emit-systemd", cwd=tmp_path)
    assert bad.returncode == 2 and "max_restart" in bad.stderr and "[supervisor]" in bad.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--memory-soft", "lots", "--", "x"], "--memory-soft (memory_soft in TOML): expected a size"),
        (["--restart", "sometimes", "--", "x"], "--restart (restart in TOML): expected one of always"),
        (["--emit-systemd"], "nothing to run"),
        (["--config", "missing.toml", "--", "x"], "missing.toml"),
    ],
)
def test_bad_options_are_named(tmp_path, monkeypatch, args, needle):
    """Invalid options exit 2 with a message naming the option, never a traceback."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["supervise", *args])
    assert res.exit_code == 2
    assert needle in res.stderr
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_status_subcommand_with_options_before_or_after(tmp_path, monkeypatch):
    """`status --state-file F`, `--state-file F status` and `... status --json` all read the state."""
    from tether.supervise._state import write_state

    monkeypatch.chdir(tmp_path)
    write_state(tmp_path / "s.json", {
        "name": "bot", "supervisor_pid": None, "exit_code": 0, "started_at": 0.0, "instances": [
            {"index": 0, "pid": None, "state": "stopped", "restarts": 2, "started_at": None,
             "last_exit": {"reason": "crash", "code": 1, "signal": None, "detail": "", "text": "crash (exit code 1)"}}]})
    for args in (["status", "--state-file", "s.json"], ["--state-file", "s.json", "status"]):
        res = CliRunner().invoke(app, ["supervise", *args])
        assert res.exit_code == 0, res.output
        assert "bot: supervisor exited (code 0)" in res.stdout
        assert "restarts 2, last exit: crash (exit code 1)" in res.stdout
    res = CliRunner().invoke(app, ["supervise", "--state-file", "s.json", "status", "--json"])
    assert json.loads(res.stdout)["instances"][0]["restarts"] == 2

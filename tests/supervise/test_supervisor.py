"""The asyncio supervisor with real child processes (small Python scripts) and short real intervals."""

from __future__ import annotations

import asyncio
import http.server
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from tether.supervise import (
    BudgetExhausted,
    ChildExited,
    ChildStarted,
    ExitKind,
    RestartScheduled,
    StopCause,
    StopRequested,
    Supervisor,
    SupervisorConfig,
)

TIMEOUT = 15.0


def script(tmp_path: Path, name: str, body: str) -> tuple[str, ...]:
    """Write a child script; -S skips site imports (faster start on a busy machine), -u unbuffers."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return (sys.executable, "-S", "-u", str(path))


class Recorder:
    """Collects a supervisor's events and waits (bounded) for one that matches."""

    def __init__(self, sup: Supervisor) -> None:
        self.events: list = []
        sup.subscribe(self.events.append)

    def of(self, kind) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait(self, pred, timeout: float = TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if pred(e):
                    return e
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching event within {timeout}s; got {self.events}")


def config(tmp_path: Path, command, **kw) -> SupervisorConfig:
    kw.setdefault("log_file", tmp_path / "out.log")
    kw.setdefault("state_file", tmp_path / "state.json")
    kw.setdefault("backoff_initial", 0.05)
    kw.setdefault("backoff_max", 0.4)
    kw.setdefault("jitter", "none")
    kw.setdefault("kill_timeout", 5.0)
    return SupervisorConfig(command=command, **kw)


@pytest.fixture
async def start():
    """Start supervisors; teardown stops any still running (even when the test failed) so no child leaks."""
    running: list[tuple[Supervisor, asyncio.Task]] = []

    async def _start(cfg: SupervisorConfig) -> tuple[Supervisor, Recorder, asyncio.Task]:
        sup = Supervisor(cfg)
        rec = Recorder(sup)
        task = asyncio.create_task(sup.run())
        running.append((sup, task))
        return sup, rec, task

    yield _start
    for sup, task in running:
        if not task.done():
            sup.stop("test teardown")
            try:
                await asyncio.wait_for(task, TIMEOUT)
            except BaseException:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


async def finish(sup: Supervisor, task: asyncio.Task) -> int:
    """Stop gracefully; the supervisor must leave no task behind (pipes, watchers, alert hooks)."""
    sup.stop("test over")
    code = await asyncio.wait_for(task, TIMEOUT)
    leftovers = [t for t in asyncio.all_tasks() if not t.done() and t is not asyncio.current_task()]
    assert not leftovers, leftovers
    return code


async def test_crash_loop_is_throttled_by_backoff_and_budget(tmp_path, start):
    """A child that exits at once: growing delays, then the budget stops the restarts (cool-down), no tight loop."""
    cmd = script(tmp_path, "crash", r"""
        import sys
        for i in range(2000):  # ~200 KB: more than a pipe buffer still in flight at exit
            sys.stdout.write(f"line {i} " + "x" * 100 + "\n")
        sys.exit(3)
    """)
    alert = tmp_path / "alert.txt"
    cfg = config(tmp_path, cmd, max_restarts=4, window=60, cooldown=60,
                 alert_command=f'echo "$TETHER_SUPERVISE_RESTARTS $TETHER_SUPERVISE_LAST_EXIT" > {alert}')
    sup, rec, task = await start(cfg)
    exhausted = await rec.wait(lambda e: isinstance(e, BudgetExhausted))
    assert (exhausted.restarts, exhausted.cooldown) == (4, 60.0)
    await asyncio.sleep(0.5)  # cooling down: nothing new starts
    assert len(rec.of(ChildStarted)) == 5
    assert [e.delay for e in rec.of(RestartScheduled)] == [0.05, 0.1, 0.2, 0.4]
    assert all(e.exit.kind is ExitKind.CRASH and e.exit.code == 3 for e in rec.of(ChildExited))
    assert sup.status()["instances"][0]["state"] == "cooldown"
    assert await finish(sup, task) == 0
    log = (tmp_path / "out.log").read_text()
    # Nothing lost across restarts: every run's last line is in the log before the next start.
    runs = log.split("started pid")[1:]
    assert len(runs) == 5 and all("out | line 1999 " in run for run in runs)
    assert "ALERT: 4 restarts within 60s" in log
    assert alert.read_text().strip() == "4 crash (exit code 3)"  # the alert hook ran, with the reason


async def test_cron_restart_is_graceful(tmp_path, start):
    """A cron schedule (here every second) restarts the child with the stop signal; it drains first."""
    cmd = script(tmp_path, "nightly", """
        import signal, sys, time
        def drain(*_):
            print("finishing in-flight work")
            sys.exit(0)
        signal.signal(signal.SIGTERM, drain)
        time.sleep(60)
    """)
    cfg = config(tmp_path, cmd, cron="* * * * * *", max_restarts=1)  # 6 fields: croniter's seconds
    sup, rec, task = await start(cfg)
    await rec.wait(lambda e: isinstance(e, ChildStarted) and len(rec.of(ChildStarted)) >= 3)
    await finish(sup, task)
    scheduled = [e for e in rec.of(ChildExited) if e.exit.kind is ExitKind.SCHEDULED]
    assert len(scheduled) >= 2
    assert not rec.of(BudgetExhausted)  # scheduled restarts don't use the crash budget
    # Each child that got the stop signal after installing its handler drained and exited 0. (A tick
    # can land while a child is still starting, before the handler exists: that one dies of SIGTERM.)
    drained = [e for e in rec.of(ChildExited) if e.exit.code == 0]  # the final stop drains too
    assert (tmp_path / "out.log").read_text().count("out | finishing in-flight work") == len(drained)
    assert all(e.exit.code == 0 or e.exit.signal == signal.SIGTERM for e in scheduled)


async def test_stable_run_resets_the_backoff(tmp_path, start):
    """Three quick crashes grow the delay; a run longer than min_uptime starts the backoff over."""
    counter = tmp_path / "runs"
    cmd = script(tmp_path, "flaky", f"""
        import pathlib, sys, time
        p = pathlib.Path({str(counter)!r})
        n = int(p.read_text()) + 1 if p.exists() else 1
        p.write_text(str(n))
        if n == 4:
            time.sleep(0.6)   # longer than min_uptime: a stable run
        elif n >= 6:
            time.sleep(60)
        sys.exit(1)
    """)
    cfg = config(tmp_path, cmd, min_uptime=0.3, max_restarts=50, backoff_max=5)
    sup, rec, task = await start(cfg)
    await rec.wait(lambda e: isinstance(e, ChildStarted) and len(rec.of(ChildStarted)) >= 6)
    await finish(sup, task)
    assert [(e.attempt, e.delay) for e in rec.of(RestartScheduled)][:5] == [
        (1, 0.05), (2, 0.1), (3, 0.2), (1, 0.05), (2, 0.1)]


async def test_soft_memory_limit_restarts_gracefully_after_k_samples(tmp_path, start):
    """Above the soft limit for K samples in a row: the child gets SIGTERM, drains, and is restarted."""
    cmd = script(tmp_path, "hog", """
        import signal, sys, time
        def drain(*_):
            print("draining in-flight work")
            time.sleep(0.1)
            print("drain complete")
            sys.exit(0)
        signal.signal(signal.SIGTERM, drain)
        hog = b"x" * (80 * 1024 * 1024)
        print("allocated")
        time.sleep(60)
    """)
    cfg = config(tmp_path, cmd, memory_soft="48M", memory_samples=3, memory_interval=0.1)
    sup, rec, task = await start(cfg)
    exited = await rec.wait(lambda e: isinstance(e, ChildExited))
    await rec.wait(lambda e: isinstance(e, ChildStarted) and e.pid != exited.pid)
    await finish(sup, task)
    stop = rec.of(StopRequested)[0]
    assert stop.cause is StopCause.MEMORY_SOFT and "for 3 samples" in stop.detail
    assert exited.exit.kind is ExitKind.MEMORY and exited.exit.code == 0  # drained, exited on its own
    log = (tmp_path / "out.log").read_text()
    assert log.index("out | draining in-flight work") < log.index("out | drain complete") < log.index("memory limit")


async def test_hard_memory_limit_counts_the_tree_and_kills_at_once(tmp_path, start):
    """RSS is summed over the process tree: a grandchild's 80 MB trips the hard limit; SIGKILL, no drain."""
    gpid_file = tmp_path / "hog.pid"
    cmd = script(tmp_path, "parent", f"""
        import pathlib, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        g = subprocess.Popen([sys.executable, "-S", "-c",
                              "import time; hog = b'x' * (80 * 1024 * 1024); time.sleep(60)"])
        pathlib.Path({str(gpid_file)!r}).write_text(str(g.pid))
        time.sleep(60)
    """)
    cfg = config(tmp_path, cmd, memory_hard="48M", memory_interval=0.1, kill_timeout=30)
    sup, rec, task = await start(cfg)
    exited = await rec.wait(lambda e: isinstance(e, ChildExited))
    await finish(sup, task)
    assert exited.exit.kind is ExitKind.MEMORY and exited.exit.signal == signal.SIGKILL
    stop = rec.of(StopRequested)[0]
    assert stop.cause is StopCause.MEMORY_HARD and "hard limit" in stop.detail
    gpid = int(gpid_file.read_text())
    try:
        assert psutil.Process(gpid).status() == psutil.STATUS_ZOMBIE  # the hog died with its group
    except psutil.NoSuchProcess:
        pass


class _Health:
    """A tiny health endpoint on 127.0.0.1 whose answer the test flips."""

    def __init__(self) -> None:
        self.status = 200
        health = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(health.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_failing_health_probe_restarts_the_child(tmp_path, start):
    """While the probe passes nothing happens; failing it `health_failures` times restarts the child."""
    health = _Health()
    try:
        cmd = script(tmp_path, "sleepy", """
            import signal, sys, time
            signal.signal(signal.SIGTERM, lambda *_: (print("stopping on request"), sys.exit(0)))
            time.sleep(60)
        """)
        cfg = config(tmp_path, cmd, health_url=health.url, health_interval=0.05, health_timeout=1,
                     health_failures=3, health_grace=0.1)
        sup, rec, task = await start(cfg)
        first = await rec.wait(lambda e: isinstance(e, ChildStarted))
        await asyncio.sleep(0.5)
        assert not rec.of(ChildExited)
        health.status = 503
        exited = await rec.wait(lambda e: isinstance(e, ChildExited))
        health.status = 200
        second = await rec.wait(lambda e: isinstance(e, ChildStarted) and e.pid != first.pid)
        await asyncio.sleep(0.3)
        assert not [e for e in rec.of(ChildExited) if e.pid == second.pid]
        await finish(sup, task)
        assert exited.exit.kind is ExitKind.HEALTH and "HTTP 503" in exited.exit.detail
        assert "failed 3 times in a row" in exited.exit.detail
    finally:
        health.close()


async def test_sigkill_follows_kill_timeout_for_the_whole_group(tmp_path, start):
    """A child that ignores SIGTERM is SIGKILLed after kill_timeout, with its grandchild."""
    gpid_file = tmp_path / "grandchild.pid"
    cmd = script(tmp_path, "stubborn", f"""
        import pathlib, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        g = subprocess.Popen([sys.executable, "-S", "-c", "import signal, time; "
                              "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        pathlib.Path({str(gpid_file)!r}).write_text(str(g.pid))
        print("ignoring SIGTERM")
        time.sleep(60)
    """)
    cfg = config(tmp_path, cmd, kill_timeout=0.3)
    sup, rec, task = await start(cfg)
    await rec.wait(lambda e: isinstance(e, ChildStarted))
    deadline = time.monotonic() + TIMEOUT
    while not gpid_file.exists() or not gpid_file.read_text():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    gpid = int(gpid_file.read_text())
    assert await finish(sup, task) == 0
    exited = rec.of(ChildExited)[0]
    assert exited.exit.kind is ExitKind.STOPPED and exited.exit.signal == signal.SIGKILL
    assert "SIGKILL to its process group" in (tmp_path / "out.log").read_text()
    try:
        assert psutil.Process(gpid).status() == psutil.STATUS_ZOMBIE  # dead, awaiting its reaper
    except psutil.NoSuchProcess:
        pass


async def test_status_file_tracks_pid_restarts_and_last_exit(tmp_path, start):
    """The state file names the running pid, the restart count and the last exit reason."""
    cmd = script(tmp_path, "once", """
        import os, sys, time
        if os.environ["TETHER_INSTANCE"] == "0" and not os.path.exists("crashed"):
            open("crashed", "w").close()
            sys.exit(7)
        time.sleep(60)
    """)
    cfg = config(tmp_path, cmd, cwd=tmp_path, instances=2)
    sup, rec, task = await start(cfg)
    await rec.wait(lambda e: isinstance(e, ChildStarted) and len(rec.of(ChildStarted)) == 3)
    await asyncio.sleep(0.1)
    state = __import__("json").loads((tmp_path / "state.json").read_text())
    await finish(sup, task)
    inst0, inst1 = state["instances"]
    assert inst0["state"] == "running" and inst0["restarts"] == 1
    assert inst0["last_exit"]["reason"] == "crash" and inst0["last_exit"]["code"] == 7
    assert inst0["pid"] == rec.of(ChildStarted)[-1].pid and psutil.pid_exists(inst0["pid"]) is False
    assert inst1["restarts"] == 0 and inst1["last_exit"] is None
    assert state["supervisor_pid"] == os.getpid()
    final = __import__("json").loads((tmp_path / "state.json").read_text())
    assert final["supervisor_pid"] is None and final["exit_code"] == 0
    assert {i["state"] for i in final["instances"]} == {"stopped"}


async def test_missing_program_backs_off_and_exit_mode_returns_distinct_code(tmp_path, start):
    """A program that cannot start is a crash (127); with on_exhausted=exit the supervisor returns 75."""
    cfg = config(tmp_path, (str(tmp_path / "no-such-program"),), max_restarts=2, on_exhausted="exit")
    sup, rec, task = await start(cfg)
    code = await asyncio.wait_for(task, TIMEOUT)
    assert code == 75
    assert [e.exit.code for e in rec.of(ChildExited)] == []  # never started: no ChildExited, no pid
    assert "cannot start" in (tmp_path / "out.log").read_text()


async def test_cooldown_runs_on_the_injected_clock(tmp_path):
    """Real children, fake time: a 5-minute cool-down passes when the FakeClock is advanced, not before."""
    from tether.testing import FakeClock

    clock = FakeClock()
    cmd = (sys.executable, "-S", "-c", "raise SystemExit(2)")
    cfg = config(tmp_path, cmd, backoff_initial=1, backoff_max=4, max_restarts=3, window=60, cooldown=300)
    sup = Supervisor(cfg, clock=clock)
    rec = Recorder(sup)
    task = asyncio.create_task(sup.run())

    async def drive_until(pred, step: float) -> None:
        for _ in range(500):  # bounded: real exits arrive on their own, fake time moves by `step`
            if pred():
                return
            await asyncio.sleep(0.02)
            await clock.advance(step)
        raise AssertionError(rec.events)

    await drive_until(lambda: rec.of(BudgetExhausted), 0.5)
    assert len(rec.of(ChildStarted)) == 4
    started_at = clock.monotonic()
    await drive_until(lambda: len(rec.of(ChildStarted)) == 5, 10.0)
    assert clock.monotonic() - started_at >= 300  # it waited the cool-down, in fake time
    sup.stop()
    await drive_until(task.done, 0.5)
    assert task.result() == 0


async def test_without_log_file_output_goes_to_own_streams_and_policy_never_passes_code(tmp_path, capsys):
    """No --log-file: timestamped lines on the supervisor's stdout/stderr; restart=never returns the child's code."""
    cmd = script(tmp_path, "once", """
        import sys
        print("hello")
        print("oops", file=sys.stderr)
        sys.exit(4)
    """)
    cfg = config(tmp_path, cmd, log_file=None, restart="never")
    code = await asyncio.wait_for(Supervisor(cfg).run(), TIMEOUT)
    assert code == 4
    out, err = capsys.readouterr()
    assert "out | hello" in out and "not restarting: restart policy 'never'" in out
    assert "err | oops" in err and "oops" not in out

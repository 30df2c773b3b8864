"""The asyncio shell: spawn children in their own process group, watch them, do what the core says."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shlex
import signal
from typing import Any, Callable

from .._backoff import Backoff
from .._clock import SYSTEM_CLOCK, Clock, wait_for
from ._config import SupervisorConfig
from ._core import (
    ChildState,
    CoolDown,
    CronSchedule,
    ExitInfo,
    ExitSupervisor,
    HealthWatch,
    MemoryVerdict,
    MemoryWatch,
    Restart,
    RestartCore,
    StayDown,
    StopCause,
    check_child_transition,
    classify_exit,
)
from ._events import (
    BudgetExhausted,
    ChildExited,
    ChildStarted,
    RestartScheduled,
    StopRequested,
    SupervisorEvent,
    SupervisorStopping,
)
from ._logs import LogSink, pump
from ._proc import FORWARDED_SIGNALS, die_with_parent, fmt_bytes, killpg, refuse_if_running, tree_rss
from ._state import write_state

__all__ = ["Supervisor"]

class Supervisor:
    """Keeps ``config.command`` running (``config.instances`` copies) until stopped.

    ``await supervisor.run()`` returns the exit code: 0 after a graceful stop, the configured
    ``exhausted_exit_code`` if the restart budget ran out with ``on_exhausted="exit"``, or the child's
    own status if the restart policy let every instance stay down.

    Args:
        config: what to run and how.
        clock: time source (tests pass a FakeClock).
        rng: randomness for jitter and cron splay (tests pass a seeded ``random.Random``).
    """

    def __init__(self, config: SupervisorConfig, *, clock: Clock | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self._clock = clock or SYSTEM_CLOCK
        self._rng = rng or random.Random()
        self._subscribers: list[Callable[[SupervisorEvent], None]] = []
        self._stopping: asyncio.Event | None = None
        self._exit_code: int | None = None
        self._started_wall = 0.0
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._out: LogSink | None = None
        self._err: LogSink | None = None
        self.instances = [_Instance(self, i) for i in range(config.instances)]

    # ------------------------------------------------------------------ hooks
    def subscribe(self, callback: Callable[[SupervisorEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns a function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def _emit(self, event: SupervisorEvent) -> None:
        object.__setattr__(event, "at", self._clock.wall())
        for cb in list(self._subscribers):
            try:
                cb(event)
            except Exception as exc:  # a broken observer must not break supervision
                self.log(f"subscriber {cb!r} raised {exc!r}")

    def log(self, text: str, instance: int | None = None) -> None:
        """A supervisor line in the child's log (stream ``tether``)."""
        label = self.config.name if instance is None else f"{self.config.name}:{instance}"
        if self._out is not None:
            self._out.write(label, "tether", text)

    # ------------------------------------------------------------------ lifecycle
    @property
    def stopping(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    def stop(self, reason: str = "stop requested") -> None:
        """Stop every child gracefully; ``run()`` then returns. Safe to call from a signal handler."""
        if self._stopping is None or self._stopping.is_set():
            return
        self._stopping.set()
        self.log(f"stopping: {reason}")
        self._emit(SupervisorStopping(reason))
        for inst in self.instances:
            inst.request_stop(StopCause.SHUTDOWN, reason)

    def _exit_with(self, code: int) -> None:
        if self._exit_code is None:
            self._exit_code = code
        self.stop(f"exiting with code {code}")

    def forward_signal(self, sig: int) -> None:
        """Send ``sig`` to every running child (SIGHUP and SIGUSR1 are forwarded this way)."""
        for inst in self.instances:
            if inst.proc is not None and inst.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(inst.proc.pid, sig)
        self.log(f"forwarded {signal.Signals(sig).name} to the children")

    async def run(self, *, handle_signals: bool = False) -> int:
        """Run until stopped. With ``handle_signals``, SIGTERM/SIGINT stop gracefully (exit 0) and
        SIGHUP/SIGUSR1 are forwarded to the children."""
        cfg = self.config
        refuse_if_running(cfg.state_file)
        self._stopping = asyncio.Event()
        self._started_wall = self._clock.wall()
        self._out = LogSink(cfg.log_file, stream="stdout", max_bytes=cfg.log_max_bytes,
                            backups=cfg.log_backups, wall=self._clock.wall)
        if cfg.error_file is not None and cfg.error_file == cfg.log_file:
            self._err = self._out
        else:
            self._err = LogSink(cfg.error_file, stream="stderr", max_bytes=cfg.log_max_bytes,
                                backups=cfg.log_backups, wall=self._clock.wall)
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop, f"received {sig.name}")
                installed.append(sig)
            for sig in FORWARDED_SIGNALS:
                loop.add_signal_handler(sig, self.forward_signal, sig)
                installed.append(sig)
        self.log(f"supervising {shlex.join(cfg.command)} x{cfg.instances} (pid {os.getpid()})")
        self.write_state()
        tasks = [asyncio.create_task(inst.loop(), name=f"supervise-{i}") for i, inst in enumerate(self.instances)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for sig in installed:
                loop.remove_signal_handler(sig)
            if self._side_tasks:
                await asyncio.wait(self._side_tasks, timeout=cfg.kill_timeout)
                for t in self._side_tasks:
                    t.cancel()
            code = self._final_code()
            self.write_state(final=True, code=code)
            self.log(f"supervisor exited with code {code}")
            self._out.close()
            self._err.close()
        return code

    def _final_code(self) -> int:
        if self._exit_code is not None:
            return self._exit_code
        if self.stopping:
            return 0
        # Every instance stayed down on its own: report the last child's status, as a shell would.
        last = [i.last_exit for i in self.instances if i.last_exit is not None]
        if not last:
            return 0
        worst = max(last, key=lambda e: (e.signal or 0) + (e.code or 0))
        return 128 + worst.signal if worst.signal else (worst.code or 0)

    def _spawn_side(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # ------------------------------------------------------------------ state
    def status(self) -> dict[str, Any]:
        """What the state file holds: supervisor pid, and per instance pid, state, restarts, last exit."""
        return {
            "name": self.config.name,
            "command": list(self.config.command),
            "supervisor_pid": os.getpid(),
            "started_at": self._started_wall,
            "updated_at": self._clock.wall(),
            "stopping": self.stopping,
            "instances": [inst.status() for inst in self.instances],
        }

    def write_state(self, *, final: bool = False, code: int | None = None) -> None:
        state = self.status()
        if final:
            state["supervisor_pid"] = None
            state["exit_code"] = code
        try:
            write_state(self.config.state_file, state)
        except OSError as exc:
            self.log(f"cannot write state file {str(self.config.state_file)!r}: {exc.strerror}")

    async def _alert(self, inst: int, restarts: int, last: ExitInfo | None) -> None:
        cfg = self.config
        if not cfg.alert_command:
            return
        env = dict(os.environ, TETHER_SUPERVISE_NAME=cfg.name, TETHER_SUPERVISE_INSTANCE=str(inst),
                   TETHER_SUPERVISE_RESTARTS=str(restarts), TETHER_SUPERVISE_WINDOW=str(cfg.window),
                   TETHER_SUPERVISE_COOLDOWN=str(cfg.cooldown),
                   TETHER_SUPERVISE_LAST_EXIT=last.describe() if last else "")
        try:
            proc = await asyncio.create_subprocess_shell(
                cfg.alert_command, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            self.log(f"alert command failed to start: {exc}", inst)
            return
        assert proc.stdout is not None
        await pump(proc.stdout, self._out, f"{cfg.name}:alert", "out")  # type: ignore[arg-type]
        code = await proc.wait()
        if code != 0:
            self.log(f"alert command exited with {code}", inst)


class _Instance:
    """One supervised copy: its restart core, watches, and current process."""

    def __init__(self, sup: Supervisor, index: int) -> None:
        cfg = sup.config
        self.sup = sup
        self.index = index
        self.label = f"{cfg.name}:{index}"
        backoff = Backoff(base=cfg.backoff_initial, factor=cfg.backoff_factor, cap=cfg.backoff_max,
                          jitter=cfg.jitter, rng=random.Random(sup._rng.random()))
        self.core = RestartCore(policy=cfg.restart, backoff=backoff, min_uptime=cfg.min_uptime,
                                max_restarts=cfg.max_restarts, window=cfg.window, cooldown=cfg.cooldown,
                                on_exhausted=cfg.on_exhausted, exhausted_exit_code=cfg.exhausted_exit_code)
        self.memory = (MemoryWatch(soft=cfg.memory_soft, hard=cfg.memory_hard, samples=cfg.memory_samples)
                       if cfg.memory_soft or cfg.memory_hard else None)
        self.health = (HealthWatch(failures=cfg.health_failures, grace=cfg.health_grace)
                       if cfg.health_url else None)
        self.cron = (CronSchedule(cfg.cron, splay=cfg.cron_splay, rng=random.Random(sup._rng.random()))
                     if cfg.cron else None)
        self.proc: asyncio.subprocess.Process | None = None
        self.state = ChildState.STARTING
        self.cause: StopCause | None = None
        self.cause_detail = ""
        self.started_wall: float | None = None
        self.next_start_wall: float | None = None
        self.last_exit: ExitInfo | None = None
        self.last_rss: int | None = None
        self._terminator: asyncio.Task[None] | None = None

    def status(self) -> dict[str, Any]:
        running = self.proc is not None and self.proc.returncode is None
        return {
            "index": self.index,
            "pid": self.proc.pid if running and self.proc else None,
            "state": self.state.value,
            "restarts": self.core.restarts,
            "started_at": self.started_wall if running else None,
            "next_start_at": self.next_start_wall,
            "last_exit": self.last_exit.as_dict() if self.last_exit else None,
            "rss": self.last_rss,
            "health_failures": self.health.consecutive if self.health else None,
        }

    def _set(self, state: ChildState) -> None:
        if state is not self.state:
            check_child_transition(self.state, state)
            self.state = state
        self.sup.write_state()

    # ------------------------------------------------------------------ stop
    def request_stop(self, cause: StopCause, detail: str = "", *, kill: bool = False) -> None:
        """Stop the current child: the stop signal, ``kill_timeout``, then SIGKILL of its group.
        ``kill`` skips the grace (hard memory limit)."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if self.cause is None or cause is StopCause.MEMORY_HARD:
            self.cause, self.cause_detail = cause, detail
        self.sup._emit(StopRequested(self.index, cause, detail))
        if cause is not StopCause.SHUTDOWN:
            self.sup.log(f"restarting pid {proc.pid}: {detail}", self.index)
        if kill:
            killpg(proc.pid, signal.SIGKILL)
            return
        if self._terminator is None or self._terminator.done():
            self._terminator = asyncio.create_task(self._terminate(proc))

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        cfg = self.sup.config
        self._set(ChildState.STOPPING)
        killpg(proc.pid, cfg.stop_signal)
        try:
            await wait_for(proc.wait(), cfg.kill_timeout, self.sup._clock)
        except TimeoutError:
            self.sup.log(f"pid {proc.pid} still running {cfg.kill_timeout:g}s after "
                         f"{cfg.stop_signal.name}: SIGKILL to its process group", self.index)
            killpg(proc.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ the loop
    async def loop(self) -> None:
        sup = self.sup
        try:
            while not sup.stopping:
                decision = await self._run_once()
                if sup.stopping or decision is None:
                    break
                if isinstance(decision, StayDown):
                    self.sup.log(f"not restarting: {decision.reason}", self.index)
                    self._set(ChildState.DOWN)
                    return
                if isinstance(decision, ExitSupervisor):
                    sup._emit(BudgetExhausted(self.index, decision.restarts, decision.window, None,
                                              decision.code))
                    sup.log(f"ALERT: {decision.restarts} restarts within {decision.window:g}s; "
                            f"exiting with code {decision.code} (on_exhausted=exit)", self.index)
                    sup._spawn_side(sup._alert(self.index, decision.restarts, self.last_exit))
                    sup._exit_with(decision.code)
                    break
                if isinstance(decision, CoolDown):
                    sup._emit(BudgetExhausted(self.index, decision.restarts, decision.window, decision.delay))
                    sup.log(f"ALERT: {decision.restarts} restarts within {decision.window:g}s; "
                            f"cooling down {decision.delay:g}s before trying again", self.index)
                    sup._spawn_side(sup._alert(self.index, decision.restarts, self.last_exit))
                    delay, state = decision.delay, ChildState.COOLDOWN
                else:
                    assert isinstance(decision, Restart)
                    sup._emit(RestartScheduled(self.index, decision.delay, decision.attempt))
                    if decision.delay > 0:
                        sup.log(f"restarting in {decision.delay:.2f}s (attempt {decision.attempt})", self.index)
                    delay, state = decision.delay, ChildState.BACKOFF
                self.next_start_wall = sup._clock.wall() + delay
                self._set(state)
                if await self._pause(delay):
                    break
                self.next_start_wall = None
            self._set(ChildState.STOPPED)
        finally:
            # Cancelled (or crashed): never leave a child behind.
            if self.proc is not None and self.proc.returncode is None:
                killpg(self.proc.pid, signal.SIGKILL)

    async def _pause(self, seconds: float) -> bool:
        """Sleep unless the supervisor is stopping; True if it is."""
        assert self.sup._stopping is not None
        try:
            await wait_for(self.sup._stopping.wait(), seconds, self.sup._clock)
            return True
        except TimeoutError:
            return False

    async def _spawn(self) -> asyncio.subprocess.Process | ExitInfo:
        cfg = self.sup.config
        env = dict(os.environ, TETHER_INSTANCE=str(self.index), TETHER_INSTANCES=str(cfg.instances))
        try:
            return await asyncio.create_subprocess_exec(
                *cfg.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, cwd=cfg.cwd, env=env,
                preexec_fn=die_with_parent(os.getpid()),
                start_new_session=True)  # own process group: we stop the whole tree, never just the leader
        except OSError as exc:
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            return classify_exit(code, detail=f"cannot start {cfg.command[0]!r}: {exc.strerror}")

    async def _run_once(self) -> Any:
        sup, clock = self.sup, self.sup._clock
        self.cause, self.cause_detail = None, ""
        self._set(ChildState.STARTING)
        spawned = await self._spawn()
        now = clock.monotonic()
        self.core.started(now)
        if isinstance(spawned, ExitInfo):
            sup.log(spawned.describe(), self.index)
            self.last_exit = spawned
            return self.core.exited(clock.monotonic(), spawned)
        proc = self.proc = spawned
        self.started_wall = clock.wall()
        sup._emit(ChildStarted(self.index, proc.pid))
        sup.log(f"started pid {proc.pid}", self.index)
        self._set(ChildState.RUNNING)
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [asyncio.create_task(pump(proc.stdout, sup._out, self.label, "out")),  # type: ignore[arg-type]
                 asyncio.create_task(pump(proc.stderr, sup._err, self.label, "err"))]  # type: ignore[arg-type]
        watchers = []
        if self.memory:
            self.memory.reset()
            watchers.append(asyncio.create_task(self._watch_memory(proc)))
        if self.health:
            self.health.started(now)
            watchers.append(asyncio.create_task(self._watch_health(proc)))
        if self.cron:
            watchers.append(asyncio.create_task(self._watch_cron()))
        if sup.stopping:  # stop() raced with the spawn
            self.request_stop(StopCause.SHUTDOWN, "supervisor stopping")
        try:
            returncode = await proc.wait()
        finally:
            for w in watchers:
                w.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        uptime = self.core.uptime(clock.monotonic())
        await self._reap_group(proc, pumps)
        if self._terminator is not None:
            await asyncio.gather(self._terminator, return_exceptions=True)
            self._terminator = None
        info = classify_exit(returncode, self.cause, self.cause_detail)
        self.last_exit = info
        sup._emit(ChildExited(self.index, proc.pid, info, uptime))
        sup.log(f"pid {proc.pid} exited after {uptime:.2f}s: {info.describe()}", self.index)
        decision = self.core.exited(clock.monotonic(), info)
        self.started_wall = None
        return decision

    async def _reap_group(self, proc: asyncio.subprocess.Process, pumps: list[asyncio.Task[int]]) -> None:
        """The leader is gone; stop what is left of its group, then drain the pipes to EOF."""
        cfg, clock = self.sup.config, self.sup._clock
        done, _ = await asyncio.wait(pumps, timeout=0.05)
        if len(done) < len(pumps) and killpg(proc.pid, 0):
            # Leftover members (grandchildren) hold the pipes: they go with their parent, like
            # systemd's KillMode=control-group; PM2 leaves them running.
            self.sup.log("stopping leftover processes of the group", self.index)
            killpg(proc.pid, cfg.stop_signal)
            try:
                await wait_for(asyncio.gather(*pumps), cfg.kill_timeout, clock)
            except TimeoutError:
                killpg(proc.pid, signal.SIGKILL)
        try:
            await wait_for(asyncio.gather(*pumps), max(cfg.kill_timeout, 1.0), clock)
        except TimeoutError:  # a descendant left the group but kept our pipe: don't hang on it
            self.sup.log("output pipe still open after the group stopped; detaching", self.index)
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    # ------------------------------------------------------------------ watches
    async def _watch_memory(self, proc: asyncio.subprocess.Process) -> None:
        cfg, clock = self.sup.config, self.sup._clock
        assert self.memory is not None
        while proc.returncode is None:
            await clock.sleep(cfg.memory_interval)
            rss = tree_rss(proc.pid)
            if rss is None:
                continue
            self.last_rss = rss
            verdict = self.memory.observe(rss)
            if verdict is MemoryVerdict.HARD:
                self.request_stop(StopCause.MEMORY_HARD,
                                  f"RSS {fmt_bytes(rss)} above the hard limit {fmt_bytes(cfg.memory_hard or 0)}",
                                  kill=True)
                return
            if verdict is MemoryVerdict.SOFT:
                self.request_stop(StopCause.MEMORY_SOFT,
                                  f"RSS {fmt_bytes(rss)} above the soft limit {fmt_bytes(cfg.memory_soft or 0)} "
                                  f"for {self.memory.over} samples")
                return

    async def _watch_health(self, proc: asyncio.subprocess.Process) -> None:
        import httpx

        cfg, clock = self.sup.config, self.sup._clock
        assert self.health is not None and cfg.health_url is not None
        url = cfg.health_url.replace("{instance}", str(self.index))
        # trust_env=False: a probe of the local app must not go through an HTTP(S)_PROXY.
        async with httpx.AsyncClient(timeout=cfg.health_timeout, trust_env=False) as client:
            while proc.returncode is None:
                await clock.sleep(cfg.health_interval)
                try:
                    resp = await client.get(url)
                    ok, why = resp.status_code < 400, f"HTTP {resp.status_code}"
                except httpx.HTTPError as exc:
                    ok, why = False, type(exc).__name__
                if self.health.observe(clock.monotonic(), ok):
                    self.request_stop(StopCause.HEALTH,
                                      f"health probe failed {self.health.consecutive} times in a row ({why})")
                    return

    async def _watch_cron(self) -> None:
        clock = self.sup._clock
        assert self.cron is not None
        due = self.cron.next_after(clock.wall())
        await clock.sleep(max(0.0, due - clock.wall()))
        self.request_stop(StopCause.SCHEDULED, f"cron {self.cron.expr!r}")

"""``tether supervise [options] -- CMD ARGS...`` and ``tether supervise status``.

Click cannot have both a command that takes arbitrary trailing arguments and a subcommand of the
same group: a group would read ``tether supervise python bot.py`` as an unknown subcommand
``python``. So ``supervise`` is one command whose ``parse_args`` peels off a leading ``status``
(before any ``--``) and hands the rest to the status command. A program literally called
``status`` runs with ``tether supervise -- status``; without ``--``, ``status`` after options
(``tether supervise --state-file F status``) is the subcommand too. Options are not interspersed: everything after
the program name belongs to the program, so ``--`` is optional unless the program starts with ``-``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from typer.core import TyperCommand

from .._errors import ConfigError, SupervisorError
from ._config import SupervisorConfig, load_toml_section
from ._state import read_state

__all__ = ["register"]

_STATUS_META = "tether.supervise.status_args"
_DASHDASH_META = "tether.supervise.dashdash"
_PANEL_RESTART = "Restart policy and budget"
_PANEL_STOP = "Stopping"
_PANEL_MEM = "Memory"
_PANEL_HEALTH = "Health probe and schedule"
_PANEL_LOG = "Logs and state"


class _SuperviseCommand(TyperCommand):
    """``supervise`` with a ``status`` subcommand in front, and a free-form command after."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] == "status":
            ctx.meta[_STATUS_META] = list(args[1:])
            args = []
        ctx.meta[_DASHDASH_META] = "--" in args
        return super().parse_args(ctx, args)


def _fail(message: str, code: int) -> None:
    typer.echo(f"tether supervise: error: {message}", err=True)
    raise typer.Exit(code)


def _cli_message(message: str) -> str:
    """Name the option both ways: ``--memory-soft (memory_soft in TOML): expected ...``."""
    head, sep, rest = message.partition(":")
    if sep and head in SupervisorConfig.option_names():
        return f"--{head.replace('_', '-')} ({head} in TOML):{rest}"
    return message


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d}d{h}h"
    if h:
        return f"{h}h{m}m"
    return f"{m}m{s}s" if m else f"{s}s"


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def render_status(state: dict[str, Any], now: float | None = None) -> str:
    """A human summary of a state file: one line for the supervisor, one per instance."""
    now = time.time() if now is None else now
    sup_pid = state.get("supervisor_pid")
    if sup_pid is None:
        head = f"{state.get('name')}: supervisor exited (code {state.get('exit_code')})"
    elif _pid_alive(sup_pid):
        head = f"{state.get('name')}: supervisor pid {sup_pid}, up {_fmt_duration(now - state.get('started_at', now))}"
    else:
        head = f"{state.get('name')}: supervisor pid {sup_pid} is gone (stale state file)"
    lines = [head]
    for inst in state.get("instances", []):
        parts = [f"  [{inst.get('index')}] {inst.get('state')}"]
        if inst.get("pid"):
            parts.append(f"pid {inst['pid']}")
        if inst.get("started_at"):
            parts.append(f"uptime {_fmt_duration(now - inst['started_at'])}")
        if inst.get("next_start_at"):
            parts.append(f"next start in {_fmt_duration(inst['next_start_at'] - now)}")
        parts.append(f"restarts {inst.get('restarts', 0)}")
        if inst.get("rss"):
            parts.append(f"rss {inst['rss'] / 1048576:.1f} MiB")
        last = inst.get("last_exit")
        parts.append(f"last exit: {last.get('text') if last else '-'}")
        lines.append(", ".join(parts))
    return "\n".join(lines)


def _status(state_file: Path, as_json: bool) -> None:
    try:
        state = read_state(state_file)
    except SupervisorError as exc:
        _fail(str(exc), 1)
    if as_json:
        now = time.time()
        for inst in state.get("instances", []):
            inst["uptime"] = (now - inst["started_at"]) if inst.get("started_at") else None
        typer.echo(json.dumps(state, indent=2, sort_keys=True))
    else:
        typer.echo(render_status(state))


_status_app = typer.Typer(add_completion=False)


@_status_app.command()
def _status_command(
    state_file: Annotated[Path, typer.Option("--state-file", help="The state file the supervisor writes.")]
    = Path("tether-supervise.json"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw state (with uptime) as JSON.")] = False,
) -> None:
    """Show pid, restarts, last exit reason and uptime of a running `tether supervise`."""
    _status(state_file, as_json)


def _run_status(args: list[str]) -> None:
    cmd = typer.main.get_command(_status_app)
    cmd.main(args=args, prog_name="tether supervise status", standalone_mode=True)


def supervise(
    ctx: typer.Context,
    command: Annotated[Optional[list[str]], typer.Argument(help="The program to keep alive and its arguments (after --).", show_default=False)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file: its \\[supervisor] section (tether's settings file), then \\[supervise]; command-line options override both.")] = None,
    emit_systemd: Annotated[bool, typer.Option("--emit-systemd", help="Print the equivalent systemd unit and exit.")] = False,
    name: Annotated[Optional[str], typer.Option(help="Label for logs and status (default: the program's name).")] = None,
    instances: Annotated[Optional[int], typer.Option("--instances", "-i", help="How many copies to run (default: 1); each gets TETHER_INSTANCE=i.")] = None,
    cwd: Annotated[Optional[Path], typer.Option(help="Working directory of the child.")] = None,
    restart: Annotated[Optional[str], typer.Option(help="always | on-failure | never (default: always).", rich_help_panel=_PANEL_RESTART)] = None,
    backoff_initial: Annotated[Optional[str], typer.Option(help="First restart delay (default: 1s).", rich_help_panel=_PANEL_RESTART)] = None,
    backoff_factor: Annotated[Optional[float], typer.Option(help="Delay growth per quick restart (default: 2).", rich_help_panel=_PANEL_RESTART)] = None,
    backoff_max: Annotated[Optional[str], typer.Option(help="Largest restart delay (default: 60s).", rich_help_panel=_PANEL_RESTART)] = None,
    jitter: Annotated[Optional[str], typer.Option(help="equal | full | none (default: equal).", rich_help_panel=_PANEL_RESTART)] = None,
    min_uptime: Annotated[Optional[str], typer.Option(help="Running this long resets the backoff (default: 30s).", rich_help_panel=_PANEL_RESTART)] = None,
    max_restarts: Annotated[Optional[int], typer.Option(help="Restarts allowed per --window (default: 10).", rich_help_panel=_PANEL_RESTART)] = None,
    window: Annotated[Optional[str], typer.Option(help="Sliding window of the restart budget (default: 60s).", rich_help_panel=_PANEL_RESTART)] = None,
    cooldown: Annotated[Optional[str], typer.Option(help="Pause after the budget is used up (default: 5m).", rich_help_panel=_PANEL_RESTART)] = None,
    on_exhausted: Annotated[Optional[str], typer.Option(help="cooldown | exit (default: cooldown).", rich_help_panel=_PANEL_RESTART)] = None,
    exhausted_exit_code: Annotated[Optional[int], typer.Option(help="Exit code for --on-exhausted exit (default: 75).", rich_help_panel=_PANEL_RESTART)] = None,
    alert_command: Annotated[Optional[str], typer.Option(help="Shell command run when the budget is used up.", rich_help_panel=_PANEL_RESTART)] = None,
    stop_signal: Annotated[Optional[str], typer.Option(help="Graceful stop signal (default: SIGTERM).", rich_help_panel=_PANEL_STOP)] = None,
    kill_timeout: Annotated[Optional[str], typer.Option(help="Wait after the stop signal before SIGKILL of the group (default: 10s).", rich_help_panel=_PANEL_STOP)] = None,
    memory_soft: Annotated[Optional[str], typer.Option(help="Graceful restart above this RSS (e.g. 1G).", rich_help_panel=_PANEL_MEM)] = None,
    memory_hard: Annotated[Optional[str], typer.Option(help="Immediate restart above this RSS.", rich_help_panel=_PANEL_MEM)] = None,
    memory_samples: Annotated[Optional[int], typer.Option(help="Consecutive samples above the soft limit (default: 3).", rich_help_panel=_PANEL_MEM)] = None,
    memory_interval: Annotated[Optional[str], typer.Option(help="Seconds between memory samples (default: 5s).", rich_help_panel=_PANEL_MEM)] = None,
    cron: Annotated[Optional[str], typer.Option(help="Scheduled graceful restart, e.g. '0 3 * * *'.", rich_help_panel=_PANEL_HEALTH)] = None,
    cron_splay: Annotated[Optional[str], typer.Option(help="Random extra delay 0..splay for cron restarts.", rich_help_panel=_PANEL_HEALTH)] = None,
    health_url: Annotated[Optional[str], typer.Option(help="HTTP URL to probe; failing it restarts the child.", rich_help_panel=_PANEL_HEALTH)] = None,
    health_interval: Annotated[Optional[str], typer.Option(help="Between probes (default: 10s).", rich_help_panel=_PANEL_HEALTH)] = None,
    health_timeout: Annotated[Optional[str], typer.Option(help="Per probe (default: 2s).", rich_help_panel=_PANEL_HEALTH)] = None,
    health_failures: Annotated[Optional[int], typer.Option(help="Consecutive failures that restart (default: 3).", rich_help_panel=_PANEL_HEALTH)] = None,
    health_grace: Annotated[Optional[str], typer.Option(help="Start-up grace period (default: 30s).", rich_help_panel=_PANEL_HEALTH)] = None,
    log_file: Annotated[Optional[Path], typer.Option(help="Child stdout (and stderr unless --error-file) (default: supervisor's stdout).", rich_help_panel=_PANEL_LOG)] = None,
    error_file: Annotated[Optional[Path], typer.Option(help="Child stderr (default: --log-file).", rich_help_panel=_PANEL_LOG)] = None,
    log_max_bytes: Annotated[Optional[str], typer.Option(help="Rotate log files at this size (default: 10M).", rich_help_panel=_PANEL_LOG)] = None,
    log_backups: Annotated[Optional[int], typer.Option(help="Rotated files kept (default: 5).", rich_help_panel=_PANEL_LOG)] = None,
    state_file: Annotated[Optional[Path], typer.Option(help="JSON state for `tether supervise status` (default: tether-supervise.json).", rich_help_panel=_PANEL_LOG)] = None,
) -> None:
    """Keep a command alive: restarts with backoff and a budget, memory and health limits, cron.

    Usage: tether supervise \\[OPTIONS] -- CMD ARGS...   |   tether supervise status \\[--state-file F] \\[--json]
    """
    if _STATUS_META in ctx.meta:
        _run_status(ctx.meta[_STATUS_META])
        return
    if command and command[0] == "status" and not ctx.meta.get(_DASHDASH_META):
        # `tether supervise --state-file F status [--json]`: options before the subcommand.
        _run_status([*(["--state-file", str(state_file)] if state_file else []), *command[1:]])
        return
    cli = {k: v for k, v in ctx.params.items() if k not in ("command", "config", "emit_systemd")}
    cli["command"] = tuple(command) if command else None
    try:
        # [supervisor] is the section of tether's own settings file (validated and versioned by the
        # service's config manager); [supervise] holds this command's own options and wins over it.
        shared = load_toml_section(config, "supervisor") if config is not None else {}
        toml = load_toml_section(config) if config is not None else {}
        source = f"[supervisor]/[supervise] of {str(config)!r}" if config is not None else "options"
        cfg = SupervisorConfig.from_mapping(shared, toml, cli, source=source)
    except ConfigError as exc:
        _fail(_cli_message(str(exc)), 2)
    if emit_systemd:
        from ._systemd import systemd_unit

        typer.echo(systemd_unit(cfg), nl=False)
        return
    from ._supervisor import Supervisor

    try:
        code = asyncio.run(Supervisor(cfg).run(handle_signals=True))
    except SupervisorError as exc:
        _fail(str(exc), 1)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``tether supervise`` (and its ``status``) to the root app."""
    app.command(
        "supervise",
        cls=_SuperviseCommand,
        context_settings={"allow_interspersed_args": False, "help_option_names": ["-h", "--help"]},
    )(supervise)

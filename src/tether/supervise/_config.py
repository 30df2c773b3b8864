"""SupervisorConfig: every option of ``tether supervise``, validated, from Python, CLI or TOML.

Precedence is defaults < ``[supervise]`` section of a TOML file < command-line options. Every
invalid value raises :class:`tether.ConfigError` whose message names the option and says what to use.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import signal
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from .._errors import ConfigError

__all__ = ["SupervisorConfig", "RestartPolicy", "parse_duration", "parse_size", "load_toml_section"]

RestartPolicy = Literal["always", "on-failure", "never"]
_POLICIES = ("always", "on-failure", "never")
_JITTERS = ("full", "equal", "none")
_ON_EXHAUSTED = ("cooldown", "exit")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_duration(value: Any, option: str) -> float:
    """Seconds from a number or a string like ``"500ms"``, ``"4s"``, ``"5m"``, ``"1h"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{option}: expected a duration like 4, '500ms', '4s' or '5m', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        seconds = float(m.group(1)) * _DURATION_UNITS[unit]
    else:
        raise ConfigError(f"{option}: expected a duration like 4, '500ms', '4s' or '5m', got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{option}: a duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def parse_size(value: Any, option: str) -> int:
    """Bytes from a number or a string like ``"1G"``, ``"512M"``, ``"300MiB"`` (powers of 1024, as PM2)."""
    if isinstance(value, bool):
        raise ConfigError(f"{option}: expected a size like '1G', '512M' or a number of bytes, got {value!r}")
    if isinstance(value, (int, float)) and value > 0:
        return int(value)
    if isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
        if size > 0:
            return size
    raise ConfigError(f"{option}: expected a size > 0 like '1G', '512M' or a number of bytes, got {value!r}")


def _parse_signal(value: Any, option: str) -> signal.Signals:
    if isinstance(value, signal.Signals):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal.Signals(value)
        except ValueError:
            pass
    if isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name in signal.Signals.__members__ and name != "SIGKILL":
            return signal.Signals[name]
    raise ConfigError(f"{option}: expected a signal name like SIGTERM, SIGINT or SIGQUIT, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class SupervisorConfig:
    """Everything ``tether supervise`` needs to keep a command alive.

    Durations are seconds, sizes are bytes. Build it directly, or with :meth:`from_mapping` from
    TOML/CLI values (which accepts ``"4s"``, ``"1G"``, ``"SIGINT"``...).

    Attributes:
        command: the program and its arguments.
        name: a label for logs and the state file (defaults to the program's file name).
        instances: how many copies to run; each gets ``TETHER_INSTANCE=i`` in its environment.
        cwd: working directory of the child (None: the supervisor's).
        restart: ``"always"``, ``"on-failure"`` (not after exit code 0) or ``"never"``.
        backoff_initial / backoff_factor / backoff_max / jitter: restart delay: the n-th quick
            restart waits about ``min(backoff_max, backoff_initial * backoff_factor**n)``.
        min_uptime: a child that ran at least this long was stable: the backoff starts over.
        max_restarts / window: at most this many restarts in any sliding ``window`` seconds ...
        cooldown: ... after which the supervisor waits this long and alerts, then tries again,
        on_exhausted: ``"cooldown"`` (default) or ``"exit"`` with ``exhausted_exit_code``.
        alert_command: a shell command run when the budget is used up (TETHER_* variables describe why).
        stop_signal / kill_timeout: graceful stop, then SIGKILL of the whole process group.
        memory_soft / memory_samples: graceful restart after this many consecutive samples above it.
        memory_hard: immediate restart when the process tree's RSS goes above it.
        memory_interval: seconds between memory samples.
        cron / cron_splay: scheduled graceful restarts, delayed by a random 0..splay seconds.
        health_url / health_interval / health_timeout / health_failures / health_grace: HTTP probe;
            ``health_failures`` consecutive failures after the start-up grace restart the child.
        log_file / error_file: where the child's stdout / stderr go (error_file defaults to log_file;
            None writes to the supervisor's own stdout / stderr), timestamped, rotated at
            ``log_max_bytes`` keeping ``log_backups`` old files.
        state_file: JSON written atomically on every change; read by ``tether supervise status``.
    """

    command: tuple[str, ...]
    name: str = ""
    instances: int = 1
    cwd: Path | None = None
    restart: RestartPolicy = "always"
    backoff_initial: float = 1.0
    backoff_factor: float = 2.0
    backoff_max: float = 60.0
    jitter: Literal["full", "equal", "none"] = "equal"
    min_uptime: float = 30.0
    max_restarts: int = 10
    window: float = 60.0
    cooldown: float = 300.0
    on_exhausted: Literal["cooldown", "exit"] = "cooldown"
    exhausted_exit_code: int = 75
    alert_command: str | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    kill_timeout: float = 10.0
    memory_soft: int | None = None
    memory_hard: int | None = None
    memory_samples: int = 3
    memory_interval: float = 5.0
    cron: str | None = None
    cron_splay: float = 0.0
    health_url: str | None = None
    health_interval: float = 10.0
    health_timeout: float = 2.0
    health_failures: int = 3
    health_grace: float = 30.0
    log_file: Path | None = None
    error_file: Path | None = None
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5
    state_file: Path = field(default_factory=lambda: Path("tether-supervise.json"))

    def __post_init__(self) -> None:
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        if isinstance(self.command, str):
            fix("command", tuple(shlex.split(self.command)))
        fix("command", tuple(str(a) for a in self.command))
        if not self.command:
            raise ConfigError("command: nothing to run; use `tether supervise [options] -- CMD ARGS...`")
        if not self.name:
            fix("name", os.path.basename(self.command[0]) or "child")
        _int_at_least(self.instances, 1, "instances")
        if self.restart not in _POLICIES:
            raise ConfigError(f"restart: expected one of {', '.join(_POLICIES)}, got {self.restart!r}")
        if self.jitter not in _JITTERS:
            raise ConfigError(f"jitter: expected one of {', '.join(_JITTERS)}, got {self.jitter!r}")
        if self.on_exhausted not in _ON_EXHAUSTED:
            raise ConfigError(f"on_exhausted: expected one of {', '.join(_ON_EXHAUSTED)}, got {self.on_exhausted!r}")
        for name in ("backoff_initial", "backoff_max", "min_uptime", "window", "cooldown", "kill_timeout",
                     "memory_interval", "cron_splay", "health_interval", "health_timeout", "health_grace"):
            fix(name, parse_duration(getattr(self, name), name))
        for name in ("backoff_initial", "window", "memory_interval", "health_interval", "health_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be > 0 seconds, got {getattr(self, name)!r}")
        if isinstance(self.backoff_factor, bool) or not isinstance(self.backoff_factor, (int, float)) \
                or not self.backoff_factor >= 1:
            raise ConfigError(f"backoff_factor: must be a number >= 1, got {self.backoff_factor!r}")
        if self.backoff_max < self.backoff_initial:
            raise ConfigError(f"backoff_max: must be >= backoff_initial ({self.backoff_initial}), "
                              f"got {self.backoff_max!r}")
        _int_at_least(self.max_restarts, 1, "max_restarts")
        _int_at_least(self.memory_samples, 1, "memory_samples")
        _int_at_least(self.health_failures, 1, "health_failures")
        _int_at_least(self.log_backups, 0, "log_backups")
        _int_at_least(self.exhausted_exit_code, 1, "exhausted_exit_code")
        if self.exhausted_exit_code > 255:
            raise ConfigError(f"exhausted_exit_code: must be 1..255, got {self.exhausted_exit_code!r}")
        fix("log_max_bytes", parse_size(self.log_max_bytes, "log_max_bytes"))
        fix("stop_signal", _parse_signal(self.stop_signal, "stop_signal"))
        for name in ("memory_soft", "memory_hard"):
            if getattr(self, name) is not None:
                fix(name, parse_size(getattr(self, name), name))
        if self.memory_soft and self.memory_hard and self.memory_soft > self.memory_hard:
            raise ConfigError(f"memory_soft: must be <= memory_hard ({self.memory_hard} bytes), "
                              f"got {self.memory_soft} bytes")
        if self.cron is not None:
            from croniter import croniter  # local: only needed when configured

            if not isinstance(self.cron, str) or not croniter.is_valid(self.cron):
                raise ConfigError(f"cron: expected a cron expression like '0 3 * * *', got {self.cron!r}")
        if self.health_url is not None:
            if not isinstance(self.health_url, str) or not re.match(r"^https?://", self.health_url):
                raise ConfigError(f"health_url: expected an http:// or https:// URL, got {self.health_url!r}")
        for name in ("cwd", "log_file", "error_file", "state_file"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                if not isinstance(value, (str, os.PathLike)) or not str(value):
                    raise ConfigError(f"{name}: expected a file path, got {value!r}")
                fix(name, Path(value))
        if self.error_file is None and self.log_file is not None:
            fix("error_file", self.log_file)

    # ------------------------------------------------------------------ building
    @classmethod
    def option_names(cls) -> list[str]:
        """Every option name (as in TOML; the CLI spells them with dashes)."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls, *layers: Mapping[str, Any], source: str = "options") -> "SupervisorConfig":
        """Merge ``layers`` (later wins; ``None`` values are skipped) and validate.

        Keys may use dashes or underscores. Unknown keys raise ConfigError naming them and ``source``.
        """
        known = set(cls.option_names())
        merged: dict[str, Any] = {}
        for layer in layers:
            for key, value in layer.items():
                norm = key.replace("-", "_")
                if norm not in known:
                    raise ConfigError(f"unknown option {key!r} in {source}; known: {', '.join(sorted(known))}")
                if value is not None:
                    merged[norm] = value
        if "command" not in merged:
            raise ConfigError("command: nothing to run; use `tether supervise [options] -- CMD ARGS...` "
                              "or `command = [...]` in the [supervise] section")
        return cls(**merged)


def _int_at_least(value: Any, low: int, option: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{option}: must be a whole number >= {low}, got {value!r}")


def load_toml_section(path: str | os.PathLike[str], section: str = "supervise") -> dict[str, Any]:
    """The ``[section]`` table of a TOML file (``{}`` if absent); errors name the file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"config: file {os.fspath(path)!r} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {os.fspath(path)!r} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"config: cannot read {os.fspath(path)!r}: {exc.strerror}") from exc
    table = data.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"config: [{section}] in {os.fspath(path)!r} must be a table")
    return table

"""Logging: rotating files under the data directory, session ids on every line, secrets never.

Files (each a RotatingFileHandler):

* ``tether.log``: everything at ``level`` and above, from every ``tether.*`` logger except the
  periodic performance samples;
* ``errors.log``: WARNING and above;
* ``performance.log``: the ``tether.performance`` logger (periodic samples, reports);
* ``alerts.log``: the ``tether.alerts`` logger (transitions, notifications, deliveries).

A line carries the session id when one applies: pass ``extra={"session": sid}``, use
:func:`session_logger`, or run inside ``with session_context(sid):``. Every handler has a
:class:`RedactFilter`, so a token that slips into a message, an argument or a traceback is masked.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import logging.handlers
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, MutableMapping

from .. import _events as ev
from .._errors import ConfigError
from ._redact import redact

__all__ = [
    "setup_logging", "LoggingSetup", "session_context", "session_logger", "current_session", "RedactFilter",
    "SessionFilter", "HumanFormatter", "JsonFormatter", "log_link_event", "LOG_FILES",
]

LOG_FILES = ("tether.log", "errors.log", "performance.log", "alerts.log")
_session: contextvars.ContextVar[str | None] = contextvars.ContextVar("tether_session", default=None)


def current_session() -> str | None:
    """The session id bound by :func:`session_context` in this task, or None."""
    return _session.get()


@contextlib.contextmanager
def session_context(session: str | None) -> Iterator[None]:
    """Every log line inside this block (in this task and tasks it creates) carries ``session``."""
    token = _session.set(session)
    try:
        yield
    finally:
        _session.reset(token)


class _SessionAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def session_logger(session: str, name: str = "tether") -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """A logger whose every line carries ``session``."""
    return _SessionAdapter(logging.getLogger(name), {"session": session})


class SessionFilter(logging.Filter):
    """Sets ``record.session`` from ``extra``, else from :func:`session_context`, else None."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "session", None) is None:
            record.session = _session.get()
        return True


class RedactFilter(logging.Filter):
    """Masks secrets in the message, its arguments, the traceback and the stack (idempotent)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_tether_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not hide the line
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.exc_info = None if record.exc_text else record.exc_info
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._tether_redacted = True
        return True


class HumanFormatter(logging.Formatter):
    """``2026-01-01 00:00:00.123 INFO  [sess_1] connected (attempt 2)``; the session part only when set."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        session = getattr(record, "session", None)
        prefix = f"[{session}] " if session else ""
        line = f"{ts} {record.levelname:<5} {prefix}{record.getMessage()}"
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return redact(line)  # belt and braces: the filter already masked the parts


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, session, msg (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
            "session": getattr(record, "session", None), "msg": record.getMessage(),
        }
        if record.exc_text:
            data["exc"] = record.exc_text
        return redact(json.dumps(data, ensure_ascii=False, default=str))


class _RedactAll(logging.Handler):
    """Writes nothing: its filter masks secrets in every record before any other handler sees it."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.addFilter(RedactFilter())

    def emit(self, record: logging.LogRecord) -> None:
        pass


class _OnlyLogger(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == self.prefix or record.name.startswith(self.prefix + ".")


@dataclass
class LoggingSetup:
    """What :func:`setup_logging` installed; ``close()`` removes and closes it all."""

    directory: Path
    handlers: list[logging.Handler] = field(default_factory=list)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("tether"))
    previous_level: int = logging.NOTSET
    targets: list[logging.Logger] = field(default_factory=list)
    perf_propagate: bool = True

    def path(self, name: str) -> Path:
        """The path of one log file (``"errors.log"``...)."""
        return self.directory / name

    def flush(self) -> None:
        """Flush every handler."""
        for h in self.handlers:
            h.flush()

    def close(self) -> None:
        """Detach and close the handlers (idempotent)."""
        if not self.handlers:
            return
        for h, target in zip(self.handlers, self.targets):
            target.removeHandler(h)
            h.close()
        self.handlers.clear()
        self.targets.clear()
        self.logger.setLevel(self.previous_level)
        perf = logging.getLogger(f"{self.logger.name}.performance")
        perf.propagate = self.perf_propagate
        perf.setLevel(logging.NOTSET)


def setup_logging(data_dir: str | Path, *, fmt: Literal["human", "json"] = "human", max_bytes: int = 10 * 1024 * 1024,
                  backups: int = 5, level: int | str = logging.INFO, logger: str = "tether") -> LoggingSetup:
    """Attach the four rotating log files to the ``tether`` logger.

    Args:
        data_dir: the directory; log files go to ``<data_dir>/logs/``.
        fmt: ``"human"`` lines or ``"json"`` lines.
        max_bytes: rotate a file when it reaches this size.
        backups: how many rotated files to keep per log.
        level: the minimum level for tether.log (errors.log is always WARNING+).
        logger: the root logger name to attach to.

    Raises:
        ConfigError: an unknown format, level or a non-positive size.
    """
    if fmt not in ("human", "json"):
        raise ConfigError(f"log format must be 'human' or 'json', got {fmt!r}")
    if max_bytes <= 0 or backups < 0:
        raise ConfigError(f"log max_bytes must be > 0 and backups >= 0; got {max_bytes!r}, {backups!r}")
    lvl = logging.getLevelName(level.upper()) if isinstance(level, str) else int(level)
    if not isinstance(lvl, int):
        raise ConfigError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")
    directory = Path(data_dir) / "logs"
    directory.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger(logger)
    setup = LoggingSetup(directory, logger=root, previous_level=root.level)
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else HumanFormatter()
    plan: list[tuple[str, int, logging.Filter | None]] = [
        ("tether.log", lvl, None),
        ("errors.log", logging.WARNING, None),
        ("performance.log", logging.DEBUG, _OnlyLogger(f"{logger}.performance")),
        ("alerts.log", logging.DEBUG, _OnlyLogger(f"{logger}.alerts")),
    ]
    perf = logging.getLogger(f"{logger}.performance")
    # Runs first for every record whatever its level, so handlers further up (the console on the
    # root logger) only ever see the redacted message.
    guard = _RedactAll()
    root.addHandler(guard)
    setup.handlers.append(guard)
    setup.targets.append(root)
    for name, hlevel, only in plan:
        h = logging.handlers.RotatingFileHandler(directory / name, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        h.setLevel(hlevel)
        h.addFilter(RedactFilter())
        if only is not None:
            h.addFilter(only)
        h.addFilter(SessionFilter())
        h.setFormatter(formatter)
        # Periodic samples would drown tether.log and the console: they live in performance.log only.
        target = perf if name == "performance.log" else root
        target.addHandler(h)
        setup.handlers.append(h)
        setup.targets.append(target)
    setup.perf_propagate = perf.propagate
    perf.propagate = False
    perf.setLevel(logging.INFO)
    root.setLevel(min(lvl, logging.INFO))
    return setup


_link_log = logging.getLogger("tether.link")


def log_link_event(session: str, event: ev.Event, logger: logging.Logger | None = None) -> None:
    """Log one link event as a human line: ``[sess_1] connected (attempt 2, down 3.2s)``."""
    log = logger or _link_log
    extra = {"session": session}
    match event:
        case ev.Connecting(attempt=a):
            log.debug("connecting (attempt %d)", a, extra=extra)
        case ev.Connected(attempt=a, downtime=d):
            log.info("connected (attempt %d%s)", a, f", down {d:.1f}s" if d > 0 else "", extra=extra)
        case ev.Disconnected(code=code, reason=reason):
            log.warning("disconnected: %s%s", reason or "no reason", f" (code {code})" if code is not None else "", extra=extra)
        case ev.BackingOff(attempt=a, delay=d, reason=r):
            log.info("reconnecting in %.1fs (attempt %d): %s", d, a, r, extra=extra)
        case ev.HeartbeatMissed(waited=w):
            log.warning("heartbeat missed after %.1fs", w, extra=extra)
        case ev.GaveUp(error=e):
            log.error("gave up: %s: %s", type(e).__name__, e, extra=extra)
        case ev.Closed():
            log.info("closed", extra=extra)
        case ev.Dropped(count=n):
            log.warning("dropped %d buffered message(s): buffer full", n, extra=extra)
        case _:
            pass

"""Process-level helpers: process-group signals, tree RSS, parent-death signal, single-owner check."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any, Callable

import psutil

from .._errors import SupervisorError
from ._state import read_state

__all__ = ["FORWARDED_SIGNALS", "die_with_parent", "fmt_bytes", "killpg", "refuse_if_running", "tree_rss"]

FORWARDED_SIGNALS = (signal.SIGHUP, signal.SIGUSR1)


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> Callable[[], None] | None:
    """A preexec_fn so a child never outlives a supervisor that was SIGKILLed (or OOM-killed).

    Children run in their own session, so nothing else would stop them; an orphaned bot plus the
    copy a restarted supervisor starts would poll the same Telegram token twice (409 Conflict).
    """
    if _PRCTL is None:
        return None
    prctl = _PRCTL

    def setup() -> None:  # runs in the child between fork and exec: keep it tiny
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return setup


def tree_rss(pid: int) -> int | None:
    """Resident memory of ``pid`` and all its descendants, in bytes (None if it is gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            total += p.memory_info().rss
    return total


def refuse_if_running(state_file: Any) -> None:
    """Two supervisors sharing a state file would run the bot twice: refuse to start the second."""
    try:
        state = read_state(state_file)
    except SupervisorError:
        return
    pid = state.get("supervisor_pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return
    try:
        # A pid reused by an unrelated, newer process is not a supervisor.
        alive = psutil.Process(pid).create_time() <= float(state.get("started_at") or 0) + 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        alive = False
    if alive:
        raise SupervisorError(
            f"another tether supervise (pid {pid}) is running with state file {str(state_file)!r}; "
            "stop it first or pass a different --state-file"
        )


def fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def killpg(pgid: int, sig: int) -> bool:
    """Signal a whole process group; False if nothing is left in it."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False

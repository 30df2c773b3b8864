"""The JSON state file that ``tether supervise status`` reads, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .._errors import SupervisorError

__all__ = ["write_state", "read_state"]


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` as JSON so a reader sees the old or the new file, never half of one.

    A temporary file in the same directory, fsync, then ``os.replace`` (atomic on POSIX).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_state(path: Path) -> dict[str, Any]:
    """Read a state file; a missing or unreadable one raises SupervisorError saying what to do."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as exc:
        raise SupervisorError(
            f"no state file at {str(path)!r}: is `tether supervise` running here? "
            "Pass --state-file to point at the one it writes"
        ) from exc
    except (OSError, ValueError) as exc:
        raise SupervisorError(f"cannot read state file {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict) or "instances" not in data:
        raise SupervisorError(f"{str(path)!r} is not a tether supervise state file")
    return data

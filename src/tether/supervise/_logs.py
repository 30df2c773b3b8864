"""Child output to rotating, timestamped log files; nothing lost across restarts.

Each line is ``<UTC ISO time> [<name>:<instance>] <stream> | <text>``. The pipe readers drain to
EOF before the supervisor starts the next child, so the last words of a crashing child (and its
drain output on SIGTERM) are always in the file.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable

from .._errors import SupervisorError

__all__ = ["LogSink", "pump"]

_MAX_LINE = 64 * 1024


def _stamp(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LogSink:
    """One destination (a file with size rotation, or a stream such as the supervisor's stdout).

    Several instances and both pipes may share a sink; writes are whole lines under a lock.

    Args:
        path: the log file (parent directories are created); None writes to ``stream``.
        stream: used when ``path`` is None: a binary stream, or ``"stdout"`` / ``"stderr"`` (looked
            up on :mod:`sys` at each write, so redirection such as pytest's capture is honoured).
        max_bytes: rotate when the file would grow past this (0: never).
        backups: how many rotated files to keep (``file.1`` is the newest).
        wall: source of timestamps.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        stream: BinaryIO | str = "stdout",
        max_bytes: int = 10 * 1024 * 1024,
        backups: int = 5,
        wall: Callable[[], float],
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._wall = wall
        self._lock = threading.Lock()
        self._stream = stream
        self._file: BinaryIO | None = None
        self._size = 0
        if path is not None:
            self._open()

    def _open(self) -> None:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")
        except OSError as exc:
            raise SupervisorError(f"cannot open log file {str(self.path)!r}: {exc.strerror}") from exc
        self._size = self._file.tell()

    def _rotate(self) -> None:
        assert self.path is not None and self._file is not None
        self._file.close()
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._open()

    def write(self, label: str, stream: str, text: str) -> None:
        """Write one line (``text`` without its newline) with a timestamp and labels."""
        self.write_lines(label, stream, [text])

    def write_lines(self, label: str, stream: str, texts: list[str]) -> None:
        """Write several lines with one timestamp and one flush (a pipe chunk at a time)."""
        if not texts:
            return
        prefix = f"{_stamp(self._wall())} [{label}] {stream} | "
        lines = [f"{prefix}{t}\n".encode("utf-8", "replace") for t in texts]
        with self._lock:
            if self._file is not None:
                for line in lines:
                    if self.max_bytes and self._size and self._size + len(line) > self.max_bytes:
                        self._rotate()
                    self._file.write(line)
                    self._size += len(line)
                self._file.flush()
            else:
                out = getattr(sys, self._stream) if isinstance(self._stream, str) else self._stream
                data = b"".join(lines)
                if hasattr(out, "buffer"):
                    out.buffer.write(data)
                    out.buffer.flush()
                elif isinstance(self._stream, str):  # a text stream without a buffer
                    out.write(data.decode("utf-8", "replace"))
                    out.flush()
                else:
                    out.write(data)
                    out.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


async def pump(reader: asyncio.StreamReader, sink: LogSink, label: str, stream: str) -> int:
    """Copy ``reader`` to ``sink`` line by line until EOF; returns the number of lines written.

    A line longer than 64 KiB is split rather than dropped; a last line without newline is kept.
    """
    buf = b""
    lines = 0
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        buf += chunk
        *complete, buf = buf.split(b"\n")
        texts = [raw.rstrip(b"\r").decode("utf-8", "replace") for raw in complete]
        while len(buf) > _MAX_LINE:
            texts.append(buf[:_MAX_LINE].decode("utf-8", "replace"))
            buf = buf[_MAX_LINE:]
        sink.write_lines(label, stream, texts)
        lines += len(texts)
    if buf:
        sink.write(label, stream, buf.decode("utf-8", "replace"))
        lines += 1
    return lines

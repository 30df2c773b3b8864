"""The durable stores a service runs on: ``tether.store`` Outbox, Inbox and Cursors on one file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .._clock import Clock
from ..store import Cursor, Cursors, Inbox, Outbox

__all__ = ["Stores", "open_stores"]


@dataclass
class Stores:
    """Outbox, inbox and cursors of every session (one SQLite file, one group-commit writer)."""

    outbox: Any
    inbox: Any
    cursors: Any

    @staticmethod
    def make_cursor(c: Mapping[str, Any]) -> Cursor:
        """A store Cursor from a connector's mapping (offset, seq, epoch; other keys ignored)."""
        def as_int(v: Any) -> int | None:
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        epoch = c.get("epoch")
        return Cursor(offset=as_int(c.get("offset")), seq=as_int(c.get("seq")),
                      epoch=None if epoch is None else str(epoch))

    async def close(self) -> None:
        # Reverse order of opening; each close flushes its pending commits first.
        for store in (self.cursors, self.inbox, self.outbox):
            await store.close()


async def open_stores(data_dir: Path, *, clock: Clock, outbox_max_attempts: int | None) -> Stores:
    """Open (creating if needed) ``<data_dir>/store.db``; raises StoreUnavailable naming the file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "store.db"
    outbox = Outbox(path, clock=clock, max_attempts=outbox_max_attempts)
    inbox = Inbox(path, clock=clock)
    await outbox.open()
    await inbox.open()
    return Stores(outbox=outbox, inbox=inbox, cursors=inbox.cursors)

"""tether.store: durable delivery on SQLite (Outbox, Inbox, Cursors) and the store Protocols.

The Protocols (:class:`OutboxStore`, :class:`InboxStore`, :class:`CursorStore`) are the seam: the
Link and the service depend on them, SQLite implements them here, Redis can follow.
"""

from ._inbox import Cursors, Inbox
from ._outbox import Outbox
from ._types import (
    Cursor,
    CursorStore,
    DeadLetter,
    DeadLettered,
    InboxStore,
    OutboxMessage,
    OutboxStore,
)

__all__ = [
    "Outbox",
    "Inbox",
    "Cursors",
    "Cursor",
    "OutboxMessage",
    "DeadLetter",
    "DeadLettered",
    "OutboxStore",
    "InboxStore",
    "CursorStore",
]

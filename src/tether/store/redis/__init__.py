"""tether.store.redis: Outbox, Inbox and Cursors on Redis, and session ownership for scale-out.

The stores implement the same Protocols as the SQLite ones (:class:`tether.store.OutboxStore`,
``InboxStore``, ``CursorStore``). :class:`LeaseKeeper` gives each session exactly one owner node
through leases with fencing tokens; the stores check the token inside every write (see
:meth:`RedisOutbox.fence`). Needs ``redis`` (redis-py) and a Redis >= 6.2 server.
"""

from ._inbox import RedisCursors, RedisInbox
from ._leases import LeaseKeeper
from ._outbox import RedisOutbox
from ._ownership import Acquire, Drop, Held, OwnershipCore, Release, Renew

__all__ = [
    "RedisOutbox",
    "RedisInbox",
    "RedisCursors",
    "LeaseKeeper",
    "OwnershipCore",
    "Acquire",
    "Renew",
    "Release",
    "Drop",
    "Held",
]

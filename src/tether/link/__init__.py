"""tether.link: the self-healing WebSocket connection.

``_core`` holds every decision (sans-I/O, tested on a FakeClock); ``_link`` is the asyncio shell that
performs them over ``websockets``; ``_admission`` caps attempts across links; ``_options`` holds
AppPing and JsonAck.
"""

from ._admission import Admission
from ._link import Link, LinkStats, connect
from ._options import AppPing, JsonAck

__all__ = ["Admission", "AppPing", "JsonAck", "Link", "LinkStats", "connect"]

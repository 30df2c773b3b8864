"""Durable mode of a Link: messages go through a tether.store Outbox, so a crash or a drop loses nothing.

``send()`` returns once the message is committed to disk. While connected, a per-connection writer
leases the session's messages in order and writes them; a message is acked in the outbox after the
socket write, or, with ``ack=JsonAck(...)``, only when the peer acknowledges its id. Anything leased
but not acknowledged when a connection ends is released and sent again on the next connection:
delivery is at-least-once, and the id carried by JsonAck lets the peer drop duplicates.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from .._errors import ConfigError, MessageTypeError, StoreError
from ._options import JsonAck, Message, _json_object

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from ._link import Link

__all__ = ["DurableSender"]

log = logging.getLogger("tether.link")

BATCH = 100
LEASE_FOR = 30.0  # an unacknowledged message is re-sent after this long even on a live connection
POLL = 1.0  # look again for messages whose nack delay or lease ran out


class DurableSender:
    """The outbox side of one Link (internal; built by Link when ``outbox=`` is given)."""

    def __init__(self, link: "Link", outbox: Any, session: str, ack: JsonAck | None) -> None:
        for method in ("put", "lease", "ack", "release_leases"):
            if not callable(getattr(outbox, method, None)):
                raise ConfigError(f"outbox must be a tether.Outbox (or an OutboxStore with {method}()), got {type(outbox).__name__}")
        self._link = link
        self._outbox = outbox
        self._session = session
        self._ack = ack
        self._wake = asyncio.Event()
        self._awaiting: set[str] = set()
        self.pending = 0

    async def start(self) -> None:
        """Nothing to do before the first connection: each connection's writer releases old leases."""

    async def stop(self) -> None:
        """The outbox belongs to the caller; the link leaves it open."""

    async def send(self, data: Message) -> None:
        if self._ack is not None and _json_object(data) is None:
            raise MessageTypeError("with ack=JsonAck(), send() takes a JSON object as str or bytes, e.g. json.dumps({...})")
        await self._outbox.put(self._session, data)
        self.pending += 1
        self._wake.set()

    async def consume(self, message: Message) -> bool:
        """True when ``message`` is a peer ack (then it is applied to the outbox and not delivered)."""
        if self._ack is None:
            return False
        ids = self._ack.acked_ids(message)
        if ids is None:
            return False
        mine = [i for i in ids if i in self._awaiting]
        if mine:
            await self._outbox.ack(mine)
            self._awaiting.difference_update(mine)
            self.pending = max(0, self.pending - len(mine))
        return True

    async def _idle(self) -> None:
        """Wait for a put or POLL seconds on the link's clock (cancel-safe; no asyncio.wait_for)."""
        self._wake.clear()
        waiter = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._link._clock.sleep(POLL))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()
            await asyncio.gather(waiter, sleeper, return_exceptions=True)

    async def writer(self, conn: int, ws: "ClientConnection") -> None:
        """Write the session's outbox in order on connection ``conn`` until it ends."""
        released = False
        while True:
            try:
                if not released:
                    # Whatever an earlier connection leased and nobody acknowledged goes out again, first.
                    await self._outbox.release_leases(self._session)
                    self._awaiting.clear()
                    released = True
                batch = await self._outbox.lease(self._session, BATCH, lease_for=LEASE_FOR)
            except StoreError as exc:
                log.error("[%s] outbox failed (%s); retrying in %ss", self._link.name, exc, POLL)
                await self._idle()
                continue
            if not batch:
                await self._idle()
                continue
            written: list[str] = []
            try:
                for message in batch:
                    payload, await_peer = message.payload, False
                    if self._ack is not None:
                        try:
                            payload, await_peer = self._ack.stamp(message.payload, message.id), True
                        except ConfigError:
                            log.warning("[%s] outbox message %s is not a JSON object; sent without waiting for an ack", self._link.name, message.id)
                    if await_peer:
                        self._awaiting.add(message.id)
                    await ws.send(payload)
                    if not await_peer:
                        written.append(message.id)
                    self._link._count_sent()
            except ConnectionClosed:
                return  # the reader reports the loss; unacknowledged leases are released next time
            finally:
                if written:
                    # Without peer acks, a socket write is the best proof of delivery we get.
                    await asyncio.shield(self._outbox.ack(written))
                    self.pending = max(0, self.pending - len(written))

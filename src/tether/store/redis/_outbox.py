"""RedisOutbox: the OutboxStore Protocol on Redis Streams, one stream and consumer group per session."""

from __future__ import annotations

import os
import socket
from typing import Any, Iterable

from ..._errors import ConfigError, StoreTypeError
from .._outbox import _check_seconds, _limit, check_payload
from .._types import STATUSES, DeadLetter, OutboxMessage
from . import _scripts
from ._base import RedisBase, check_session, dec

__all__ = ["RedisOutbox"]


def _split_ids(ids: Iterable[str]) -> dict[str, list[str]]:
    """Group opaque ids (``<session>/<stream id>``) by session; foreign ids are ignored."""
    if isinstance(ids, (str, bytes)):
        raise StoreTypeError("ids must be an iterable of ids (e.g. a list), not a single string")
    out: dict[str, list[str]] = {}
    for i in ids:
        if not isinstance(i, str):
            raise StoreTypeError(f"each id must be a str (as returned by put()), got {type(i).__name__}")
        session, sep, sid = i.rpartition("/")
        if sep and session and "-" in sid and sid.replace("-", "").isdecimal():
            out.setdefault(session, []).append(sid)
    return out


def _payload(t: Any, p: Any) -> str | bytes:
    return p.decode() if dec(t) == "s" else bytes(p)


def _opt_float(v: Any) -> float | None:
    s = dec(v) if v is not None else ""
    return float(s) if s else None


class RedisOutbox(RedisBase):
    """Durable outgoing messages on Redis Streams, with the semantics of :class:`tether.Outbox`.

    Each session has one stream and one consumer group; ``lease()`` reads new entries with
    ``XREADGROUP`` (they enter the group's pending entries list), ``ack()`` is ``XACK`` + ``XDEL``,
    ``nack()`` keeps the entry pending with a not-before time. Every operation is one Lua script,
    so it is atomic even with many nodes. Order, strict head-of-line (``ordered=True``), leases,
    attempts, ``ttl``, idempotency keys and dead letters behave as in the SQLite Outbox.

    Differences from the SQLite Outbox: delivered messages are deleted at once (``messages()``
    never lists status ``delivered``; the idempotency key lives on for ``retention``), and there
    is no ``max_messages`` limit (bound Redis with ``maxmemory`` and watch ``depth()``).

    Durability is Redis's: with ``appendonly yes`` and ``appendfsync always`` an acknowledged
    ``put()`` survives a crash of Redis; with the default ``everysec`` up to a second can be lost.

    Args:
        url: ``redis://[:password@]host:port/db`` (or ``client=``).
        client: a shared ``redis.asyncio.Redis`` (``decode_responses=False``).
        prefix: key namespace.
        consumer: this node's consumer name in the groups (default: host name and pid).
        max_attempts: failed attempts before a message is dead-lettered (None: retry forever).
        ordered: strict head-of-line order per session.
        retention: seconds an idempotency key is remembered after delivery.
        clock: time source.
    """

    def __init__(self, url: str | None = None, *, client: Any = None, prefix: str = "tether",
                 consumer: str | None = None, max_attempts: int | None = 10, ordered: bool = True,
                 retention: float = 86_400.0, clock: Any = None) -> None:
        if max_attempts is not None and (not isinstance(max_attempts, int) or isinstance(
                max_attempts, bool) or max_attempts < 1):
            raise ConfigError(f"max_attempts must be an int >= 1 or None, got {max_attempts!r}")
        self._retention_ms = int(_check_seconds("retention", retention) * 1000)
        super().__init__(url, client=client, prefix=prefix, clock=clock)
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._max_attempts = max_attempts or 0
        self._ordered = bool(ordered)

    def _keys(self, session: str) -> list[str]:
        return [self.key("ob", session), self.key("obm", session), self.key("dead", session),
                f"{self.prefix}:dead"]

    def _idem_prefix(self, session: str) -> str:
        return self.key("idem", session, ":")

    async def put(self, session: str, payload: str | bytes, *, key: str | None = None,
                  ttl: float | None = None) -> str:
        """Append ``payload`` to the session's stream; returns its id (the first id again for a repeated ``key``)."""
        check_session(session)
        check_payload(payload, key)
        if key == "":
            raise ConfigError("key must be a non-empty string or None")
        ttl = _check_seconds("ttl", ttl, allow_none=True, positive=True)
        now = self._clock.wall()
        t, p = ("s", payload.encode()) if isinstance(payload, str) else ("b", payload)
        idem = self._idem_prefix(session) + (key or "")
        # Not fenced: any node may queue for any session (only the owner leases, acks, nacks).
        r = await self._script("put", _scripts.PUT, None,
                               [self.key("ob", session), self.key("obm", session), idem, f"{self.prefix}:sessions"],
                               [session, t, p, key or "", repr(now), "" if ttl is None else repr(now + ttl)])
        return f"{session}/{dec(r[0])}"

    async def lease(self, session: str, n: int, *, lease_for: float = 30.0) -> list[OutboxMessage]:
        """Hand out up to ``n`` of the session's oldest deliverable messages, in order."""
        check_session(session)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"n must be an int >= 1, got {n!r}")
        lease_for = _check_seconds("lease_for", lease_for, positive=True)
        now = self._clock.wall()
        rows = await self._script("lease", _scripts.LEASE, session, self._keys(session),
                                  [session, self.consumer, n, repr(now), repr(now + lease_for),
                                   "1" if self._ordered else "0", self._max_attempts,
                                   self._idem_prefix(session), self._retention_ms])
        return [OutboxMessage(id=f"{session}/{dec(r[0])}", session=session, payload=_payload(r[1], r[2]),
                              key=dec(r[3]) or None, status="leased", attempts=int(r[6]),
                              created_at=float(r[4]), expires_at=_opt_float(r[5]),
                              last_error=dec(r[7]) or None) for r in rows]

    async def ack(self, ids: Iterable[str]) -> None:
        """Mark messages delivered (``XACK``, then delete). Unknown or delivered ids are ignored."""
        for session, sids in _split_ids(ids).items():
            await self._script("ack", _scripts.ACK, session, self._keys(session),
                               [self._idem_prefix(session), self._retention_ms, *sids])

    async def nack(self, ids: Iterable[str], delay: float = 0.0, *, reason: str | None = None,
                   count: bool = True) -> None:
        """Give leased messages back for another attempt after ``delay`` seconds (one attempt each;
        ``count=False`` counts none, for a wait the server mandated)."""
        groups = _split_ids(ids)
        delay = _check_seconds("delay", delay)
        if reason is not None and not isinstance(reason, str):
            raise StoreTypeError(f"reason must be a str or None, got {type(reason).__name__}")
        for session, sids in groups.items():
            await self._script("nack", _scripts.NACK, session, self._keys(session),
                               [session, repr(self._clock.wall()), repr(delay), reason or "nacked",
                                "1" if self._ordered else "0", self._max_attempts,
                                self._idem_prefix(session), self._retention_ms, 1 if count else 0, *sids])

    async def dead_letter(self, ids: Iterable[str], *, reason: str) -> int:
        """Move undelivered messages to the dead letters now, with ``reason``; returns how many moved."""
        groups = _split_ids(ids)
        if not isinstance(reason, str) or not reason:
            raise StoreTypeError("reason must be a non-empty str saying why the message is dead")
        moved = 0
        for session, sids in groups.items():
            moved += int(await self._script("dead_letter", _scripts.DEAD_LETTER, session, self._keys(session),
                                            [session, repr(self._clock.wall()), reason,
                                             self._idem_prefix(session), self._retention_ms, *sids]))
        return moved

    async def dead_letter_session(self, session: str, *, reason: str) -> int:
        """Move every undelivered message of ``session`` to the dead letters now, with ``reason``
        (e.g. the session was deleted: they must not go out if the id is used again). Returns the count."""
        check_session(session)
        if not isinstance(reason, str) or not reason:
            raise StoreTypeError("reason must be a non-empty str saying why the messages are dead")
        return int(await self._script("dead_letter_session", _scripts.DEAD_LETTER_SESSION, session,
                                      self._keys(session), [session, repr(self._clock.wall()), reason,
                                                            self._idem_prefix(session), self._retention_ms]))

    async def release_leases(self, session: str) -> int:
        """Take over the session's pending entries from any consumer (``XAUTOCLAIM``) and give
        their leases back now, without counting an attempt. Call it after acquiring a session a
        dead node owned. Returns how many leases were given back."""
        check_session(session)
        return int(await self._script("takeover", _scripts.TAKEOVER, session,
                                      [self.key("ob", session), self.key("obm", session)], [self.consumer]))

    async def depth(self, session: str | None = None) -> int:
        """Undelivered (pending or leased) messages, of one session or of all."""
        if session is not None:
            return int(await self._call(self.redis.xlen(self.key("ob", check_session(session)))))
        sessions = await self._call(self.redis.smembers(f"{self.prefix}:sessions"))
        if not sessions:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for s in sessions:
            pipe.xlen(self.key("ob", dec(s)))
        return sum(int(x) for x in await self._call(pipe.execute()))

    async def messages(self, session: str, *, status: str | None = None,
                       limit: int = 100) -> list[OutboxMessage]:
        """The session's messages, oldest first; ``status`` filters (``dead`` lists dead letters)."""
        check_session(session)
        if status is not None and status not in STATUSES:
            raise ConfigError(f"status must be one of {', '.join(STATUSES)} or None, got {status!r}")
        limit = _limit(limit)
        out: list[OutboxMessage] = []
        if status in (None, "pending", "leased"):
            pipe = self.redis.pipeline(transaction=True)  # one consistent snapshot
            pipe.xrange(self.key("ob", session), count=limit)
            pipe.hgetall(self.key("obm", session))
            entries, meta = await self._call(pipe.execute())
            now = self._clock.wall()
            m = {dec(k): dec(v) for k, v in meta.items()}
            for eid, f in entries:
                eid = dec(eid)
                f = {dec(k): v for k, v in f.items()}
                st = "leased" if float(m.get(f"l:{eid}", 0) or 0) > now else "pending"
                if status is None or status == st:
                    out.append(OutboxMessage(f"{session}/{eid}", session, _payload(f["t"], f["p"]),
                                             dec(f["k"]) or None, st, int(m.get(f"a:{eid}", 0)),
                                             float(f["c"]), _opt_float(f["x"]), m.get(f"e:{eid}") or None))
        if status in (None, "dead") and len(out) < limit:
            for d in await self.dead_letters(session, limit=limit - len(out)):
                out.append(OutboxMessage(d.id, session, d.payload, d.key, "dead", d.attempts,
                                         d.created_at, None, d.reason))
        return out

    async def dead_letters(self, session: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        """Dead letters in the order they died, oldest first."""
        key = self.key("dead", check_session(session)) if session is not None else f"{self.prefix}:dead"
        rows = await self._call(self.redis.xrange(key, count=_limit(limit)))
        out = []
        for _, f in rows:
            f = {dec(k): v for k, v in f.items()}
            s = dec(f["s"])
            out.append(DeadLetter(f"{s}/{dec(f['i'])}", s, _payload(f["t"], f["p"]), dec(f["k"]) or None,
                                  dec(f["r"]), int(f["a"]), float(f["c"]), float(f["d"])))
        return out

    async def dead_count(self, session: str | None = None) -> int:
        """How many dead letters (of one session or all)."""
        key = self.key("dead", check_session(session)) if session is not None else f"{self.prefix}:dead"
        return int(await self._call(self.redis.xlen(key)))

    async def purge(self, session: str) -> None:
        """Delete everything of ``session`` (its stream, state and dead letters)."""
        check_session(session)
        await self._call(self.redis.delete(self.key("ob", session), self.key("obm", session),
                                           self.key("dead", session)))
        await self._call(self.redis.srem(f"{self.prefix}:sessions", session))

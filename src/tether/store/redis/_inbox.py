"""RedisInbox and RedisCursors: the InboxStore and CursorStore Protocols on Redis."""

from __future__ import annotations

from typing import Any

from ..._errors import ConfigError, StoreTypeError
from .._outbox import _check_seconds
from .._types import Cursor
from . import _scripts
from ._base import RedisBase, check_session, dec

__all__ = ["RedisInbox", "RedisCursors"]


def _check_id(message_id: object) -> str:
    if not isinstance(message_id, str):
        raise StoreTypeError(f"message_id must be a str, got {type(message_id).__name__}")
    if not message_id:
        raise ConfigError("message_id must be a non-empty string")
    return message_id


def _cursor_args(cursor: Cursor) -> list[str]:
    # '' is None; a present epoch is prefixed with '=' so an empty-string epoch survives.
    return ["" if cursor.offset is None else str(cursor.offset), "" if cursor.seq is None else str(cursor.seq),
            "" if cursor.epoch is None else "=" + cursor.epoch]


def _check_cursor(cursor: object, *, allow_none: bool) -> None:
    if cursor is None and allow_none:
        return
    if not isinstance(cursor, Cursor):
        raise StoreTypeError(f"cursor must be a tether.Cursor, got {type(cursor).__name__}")


class RedisCursors(RedisBase):
    """Resume positions per session in a Redis hash (``<prefix>:cur:{session}``).

    Same contract as :class:`tether.Cursors`; ``set()`` is fenced like every write (see
    :meth:`fence`), so a node that lost a session cannot move its cursor.
    """

    async def get(self, session: str) -> Cursor | None:
        """The stored cursor of ``session``, or None."""
        raw = await self._call(self.redis.hgetall(self.key("cur", check_session(session))))
        if not raw:
            return None
        f = {dec(k): dec(v) for k, v in raw.items()}
        e = f.get("e", "")
        return Cursor(offset=int(f["o"]) if f.get("o") else None, seq=int(f["s"]) if f.get("s") else None,
                      epoch=e[1:] if e.startswith("=") else None)

    async def set(self, session: str, cursor: Cursor) -> None:
        """Store ``cursor`` for ``session``, replacing the previous one."""
        check_session(session)
        _check_cursor(cursor, allow_none=False)
        await self._script("set_cursor", _scripts.SET_CURSOR, session, [self.key("cur", session)],
                           [repr(self._clock.wall()), *_cursor_args(cursor)])


class RedisInbox(RedisBase):
    """Received message ids per session in a sorted set, with the cursor written in the same script.

    An id is remembered while it is among the last ``window_count`` marks of its session AND
    younger than ``window_age`` seconds (the set is trimmed on every mark, so it stays bounded).
    ``mark(session, id, cursor=c)`` records the id and the cursor atomically (one Lua script);
    a duplicate returns False and writes nothing.

    Args:
        url / client / prefix / clock: as :class:`RedisOutbox`.
        window_count: ids remembered per session.
        window_age: seconds an id is remembered.
    """

    def __init__(self, url: str | None = None, *, client: Any = None, prefix: str = "tether",
                 window_count: int = 10_000, window_age: float = 86_400.0, clock: Any = None) -> None:
        if not isinstance(window_count, int) or isinstance(window_count, bool) or window_count < 1:
            raise ConfigError(f"window_count must be an int >= 1, got {window_count!r}")
        self._window_count = window_count
        self._window_age = _check_seconds("window_age", window_age, positive=True)
        super().__init__(url, client=client, prefix=prefix, clock=clock)
        self.cursors = RedisCursors(client=self.redis, prefix=prefix, clock=clock)
        self.cursors._fences = self._fences  # one fence table: mark() and set() agree on ownership
        """Cursors on the same Redis (the ones ``mark(cursor=...)`` writes)."""

    async def seen(self, session: str, message_id: str) -> bool:
        """True if ``message_id`` was marked for ``session`` within the window."""
        score = await self._call(self.redis.zscore(self.key("in", check_session(session)), _check_id(message_id)))
        return score is not None and float(score) > self._clock.wall() - self._window_age

    async def mark(self, session: str, message_id: str, *, cursor: Cursor | None = None) -> bool:
        """Record ``message_id`` (and ``cursor``, atomically). Returns False for a duplicate."""
        check_session(session)
        _check_id(message_id)
        _check_cursor(cursor, allow_none=True)
        cur = _cursor_args(cursor) if cursor is not None else ["", "", ""]
        r = await self._script("mark", _scripts.MARK, session, [self.key("in", session), self.key("cur", session)],
                               [message_id, repr(self._clock.wall()), self._window_count, repr(self._window_age),
                                "1" if cursor is not None else "0", *cur])
        return bool(r)

    async def purge(self, session: str) -> None:
        """Forget the session's marks and cursor."""
        check_session(session)
        await self._call(self.redis.delete(self.key("in", session), self.key("cur", session)))

    async def close(self) -> None:
        """Release the connection (and ``cursors``). Idempotent."""
        await self.cursors.close()
        await super().close()

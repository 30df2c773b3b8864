"""Connection, key names, fencing and error translation shared by the Redis stores."""

from __future__ import annotations

import re
from typing import Any, Sequence

from ..._clock import SYSTEM_CLOCK, Clock
from ..._errors import ConfigError, LeaseLost, StoreError, StoreTypeError, StoreUnavailable

__all__ = ["RedisBase", "safe_url", "check_session"]

_CRED_RE = re.compile(r"//[^@/]*@")


def safe_url(url: str) -> str:
    """``url`` without credentials (``redis://:***@host``), for messages and logs."""
    return _CRED_RE.sub("//***@", url)


def check_session(session: object) -> str:
    if not isinstance(session, str):
        raise StoreTypeError(f"session must be a str, got {type(session).__name__}")
    if not session or "{" in session or "}" in session:
        raise ConfigError(f"session must be a non-empty string without braces, got {session!r}")
    return session


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{}: "):
        raise ConfigError(f"prefix must be a non-empty string without '{{', '}}', ':' or spaces, got {prefix!r}")
    return prefix


class RedisBase:
    """A Redis client (owned or shared), a key prefix and the session fences of this node.

    Args:
        url: ``redis://[:password@]host:port/db``; or pass ``client``.
        client: an existing ``redis.asyncio.Redis`` (``decode_responses=False``); not closed by us.
        prefix: namespace of every key (several gateways can share one Redis).
        clock: time source for timestamps, leases, delays and windows.
    """

    def __init__(self, url: str | None = None, *, client: Any = None, prefix: str = "tether",
                 clock: Clock | None = None) -> None:
        import redis.asyncio as aioredis

        if (url is None) == (client is None):
            raise ConfigError("pass exactly one of url='redis://host:port/0' or client=redis.asyncio.Redis(...)")
        self.prefix = _check_prefix(prefix)
        self._clock = clock or SYSTEM_CLOCK
        if client is None:
            if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigError(f"url must look like redis://host:6379/0, got {safe_url(str(url))!r}")
            self.url = safe_url(url)
            client = aioredis.Redis.from_url(url, decode_responses=False)
            self._owns_client = True
        else:
            self.url = "client"
            self._owns_client = False
        self.redis = client
        self._fences: dict[str, str] = {}
        self._scripts: dict[str, Any] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, prefix={self.prefix!r})"

    async def __aenter__(self) -> Any:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Check that Redis answers now, surfacing a wrong URL or password at start."""
        await self._call(self.redis.ping())

    async def close(self) -> None:
        """Release the connection pool (when we created it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self.redis.aclose()

    # --- fencing ------------------------------------------------------------------------
    def fence(self, session: str, value: str | None) -> None:
        """Make every write of ``session`` conditional on holding lease ``value`` (None: unfenced).

        The ownership layer calls this when it acquires (value) and loses or releases (None) a
        session; a write after the lease moved on raises :class:`tether.LeaseLost`.
        """
        check_session(session)
        if value is None:
            self._fences.pop(session, None)
        else:
            self._fences[session] = value

    # --- keys -----------------------------------------------------------------------------
    def key(self, kind: str, session: str, suffix: str = "") -> str:
        return f"{self.prefix}:{kind}:{{{session}}}{suffix}"

    def own_key(self, session: str) -> str:
        return self.key("own", session)

    # --- calls ------------------------------------------------------------------------------
    async def _call(self, aw: Any) -> Any:
        import redis.exceptions as rex

        if self._closed:
            aw.close() if hasattr(aw, "close") else None
            raise StoreError(f"store on {self.url} is closed; create a new one")
        try:
            return await aw
        except rex.ResponseError as exc:
            if str(exc).startswith("TETHER_FENCED"):
                raise LeaseLost("this node no longer owns the session (its lease expired or moved); "
                                "stop acting on it") from None
            raise StoreUnavailable(f"Redis at {self.url} refused a command: {exc}") from exc
        except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"cannot reach Redis at {self.url}: {type(exc).__name__}: "
                                   f"{safe_url(str(exc))} (is redis-server running? check the URL)") from exc
        except rex.RedisError as exc:
            raise StoreUnavailable(f"Redis at {self.url} failed: {type(exc).__name__}: {safe_url(str(exc))}") from exc

    async def _script(self, name: str, source: str, session: str | None, keys: Sequence[str],
                      args: Sequence[Any]) -> Any:
        """Run a script with the fence of ``session`` prepended (``KEYS[1]``/``ARGV[1]``)."""
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.redis.register_script(source)
        own = self.own_key(session) if session is not None else f"{self.prefix}:own:-"
        fence = self._fences.get(session, "") if session is not None else ""
        return await self._call(script(keys=[own, *keys], args=[fence, *args]))


def dec(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)

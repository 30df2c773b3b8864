"""Masking of secrets in URLs and messages: proxy passwords and bot tokens never reach logs or errors."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["mask_url", "mask_secrets"]

# scheme://user:password@host  → scheme://user:***@host
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
# Telegram bot tokens: 123456789:AA... (in /bot<token>/ URLs or bare)
_BOT_TOKEN = re.compile(r"(?P<id>\b(?:bot)?\d{5,}):(?P<secret>[A-Za-z0-9_-]{30,})")


def mask_secrets(text: str) -> str:
    """Replace URL passwords and bot tokens in free text with ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _BOT_TOKEN.sub(lambda m: f"{m['id']}:***", text)


def mask_url(url: str) -> str:
    """A URL with its password (if any) replaced by ``***``: ``socks5://bob:***@10.0.0.1:1080``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return mask_secrets(url)
    if parts.password is None:
        return mask_secrets(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

"""One place that knows what a secret looks like. Logs, error records, alerts and API output all
pass text through :func:`redact` before it leaves the process.

What is masked:

* ``Authorization: Bearer <token>`` / ``Bearer <token>`` / ``Basic <b64>``;
* Telegram bot tokens in URLs and text: ``bot123456:AA...`` → ``bot123456:[REDACTED]``;
* query parameters and ``key=value`` pairs named like a secret (``password``, ``token``,
  ``secret``, ``api_key``, ``access_token``, ...), JSON fields with those names;
* userinfo in URLs: ``scheme://user:pass@host`` → ``scheme://[REDACTED]@host``;
* every value registered with :func:`register_secret` (a bot token from config, an SMTP password).
"""

from __future__ import annotations

import re
import threading
from typing import Any, Iterable, Mapping

__all__ = ["REDACTED", "redact", "redact_obj", "register_secret", "unregister_secret", "is_secret_key"]

REDACTED = "[REDACTED]"

_KEY_RE = re.compile(r"(?i)(password|passwd|pwd|token|secret|api[_-]?key|authorization|credential|private[_-]?key|cookie|signature|hmac)")

_BEARER_RE = re.compile(r"(?i)\b(bearer|basic)(\s+)([A-Za-z0-9._~+/=\-]{6,})")
# Telegram: bot<digits>:<35-ish chars>; the digits are the public bot id, the rest is the secret.
_TG_RE = re.compile(r"(?i)\b(bot)?(\d{5,}):([A-Za-z0-9_\-]{20,})")
_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/\s@?#]+)@")
_PARAM_NAMES = r"[A-Za-z0-9_\-]*(?:password|passwd|pwd|token|secret|api[_-]?key|apikey|signature|authorization|credential)[A-Za-z0-9_\-]*"
# key=value in query strings, form bodies and "key=value" log text.
_QUERY_RE = re.compile(r"(?i)\b(" + _PARAM_NAMES + r")=([^&\s\"',;)}\]]+)")
# "key": "value" in JSON text (also 'key': 'value' in Python reprs).
_JSON_RE = re.compile(r"(?i)([\"'])(" + _PARAM_NAMES + r")\1(\s*:\s*)([\"'])((?:\\.|(?!\4).)*)\4")

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()


def register_secret(*values: str | None) -> None:
    """Mask these exact values wherever they appear from now on (config tokens, passwords).

    Values shorter than 4 characters are ignored: masking "ab" everywhere would garble output.
    """
    global _secrets
    with _lock:
        _secrets = _secrets | {v for v in values if v and len(v) >= 4}


def unregister_secret(*values: str) -> None:
    """Stop masking these values (tests; a rotated credential)."""
    global _secrets
    with _lock:
        _secrets = _secrets - set(values)


def is_secret_key(key: str) -> bool:
    """True when a mapping key names a secret (``token``, ``bot_token``, ``X-Api-Key``, ``password``...)."""
    return bool(_KEY_RE.search(key))


def redact(text: Any) -> str:
    """Return ``text`` (made a ``str``) with every secret replaced by ``[REDACTED]``."""
    s = text if isinstance(text, str) else str(text)
    if not s:
        return s
    # Registered values first and longest first, so a token inside a longer secret is fully masked.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in s:
            s = s.replace(secret, REDACTED)
    s = _TG_RE.sub(lambda m: f"{m.group(1) or ''}{m.group(2)}:{REDACTED}", s)
    s = _USERINFO_RE.sub(lambda m: f"{m.group(1)}{REDACTED}@", s)
    s = _JSON_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}{m.group(4)}{REDACTED}{m.group(4)}", s)
    s = _QUERY_RE.sub(lambda m: f"{m.group(1)}={REDACTED}", s)
    s = _BEARER_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", s)
    return s


def redact_obj(obj: Any, *, _depth: int = 0) -> Any:
    """Deep-copy ``obj`` (mappings, sequences, scalars) masking secret keys and secret text.

    Values under a secret-named key become ``[REDACTED]`` whole; strings elsewhere go through
    :func:`redact`; other scalars pass unchanged. Unknown objects become their redacted ``str``.
    """
    if _depth > 20:  # a self-referencing structure: stop rather than recurse forever
        return REDACTED
    if obj is None or isinstance(obj, (bool, int, float)):
        return obj
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            key = str(k)
            if is_secret_key(key) and v is not None and not isinstance(v, (bool, Mapping, list, tuple)):
                out[key] = REDACTED
            else:
                out[key] = redact_obj(v, _depth=_depth + 1)
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [redact_obj(v, _depth=_depth + 1) for v in obj]
    return redact(obj)


def _iter_secrets() -> Iterable[str]:  # for tests and debugging
    return iter(_secrets)

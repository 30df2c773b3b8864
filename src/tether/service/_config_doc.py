"""Pure helpers on configuration documents (plain JSON dicts of the Settings tree).

A *document* is ``Settings`` dumped to JSON-ready values with secrets in clear: it is what a
version stores, so a rollback restores it exactly. What leaves the process is the *masked*
view: every ``SecretStr`` and every secret-named field becomes ``MASK``.
"""

from __future__ import annotations

import copy
import enum
import re
from pathlib import PurePath
from typing import Any, Iterator, Mapping

from pydantic import BaseModel, SecretStr, ValidationError

__all__ = [
    "MASK", "RESTART_PATHS", "to_document", "masked", "secret_paths", "merge_patch", "make_patch", "diff",
    "restart_paths", "field_errors", "get_path",
]

#: what a secret looks like in output (pydantic's own SecretStr rendering)
MASK = "**********"

_SECRET_NAME = re.compile(r"token|secret|password|passwd|api_key|apikey|authorization|credential", re.I)
# A URL carrying a password (store = "redis://:pw@host/0") is a secret as a whole.
_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@?#]*:[^/@?#]*@", re.I)

#: settings read once at start-up: a change is stored and reported as "applies after restart"
RESTART_PATHS = (
    "host", "port", "data_dir", "token", "log_format", "log_level", "event_log_size", "max_message_bytes",
    "webhook", "sessions.connect_rate", "sessions.connect_burst", "sessions.outbox_max_attempts", "supervisor",
    "store", "node_id", "lease_ttl", "public_url",
)

# Free-form maps: a null in a patch removes the entry (elsewhere null is a value: max_attempts = never).
_MAPS = (("alerts", "rules"), ("recovery", "classes"))


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def to_document(settings: BaseModel) -> dict[str, Any]:
    """The full document of ``settings``, secrets in clear (for storage only)."""
    return _plain(settings.model_dump(mode="python", by_alias=True))


def _walk(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _walk(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _walk(v, path + (i,))


def secret_paths(settings: BaseModel) -> set[tuple[Any, ...]]:
    """Paths holding a secret: SecretStr fields (pydantic masks them in JSON mode) and secret names."""
    shown = settings.model_dump(mode="json", by_alias=True)
    out = set()
    for path, value in _walk(shown):
        if value == MASK or (isinstance(value, str) and _URL_PASSWORD.match(value)) or (
                path and isinstance(path[-1], str) and _SECRET_NAME.search(path[-1])
                and value is not None and not isinstance(value, (dict, list, bool))):
            out.add(path)
    return out


def masked(settings: BaseModel) -> dict[str, Any]:
    """The document as it may be shown: every secret replaced by ``MASK``."""
    doc = settings.model_dump(mode="json", by_alias=True)
    for path in secret_paths(settings):
        _set(doc, path, MASK)
    return doc


def get_path(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        if isinstance(doc, dict) and p in doc:
            doc = doc[p]
        elif isinstance(doc, list) and isinstance(p, int) and p < len(doc):
            doc = doc[p]
        else:
            return None
    return doc


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        doc = doc[p]
    doc[path[-1]] = value


def merge_patch(doc: dict[str, Any], patch: Mapping[str, Any], secrets: set[tuple[Any, ...]] = frozenset(),
                _path: tuple[Any, ...] = ()) -> dict[str, Any]:
    """``doc`` with a JSON merge patch applied (a new dict; ``doc`` is not changed).

    Differences from RFC 7396, on purpose: ``null`` sets a value to null (``max_attempts = null``
    means "never give up"), except inside the free-form maps (``alerts.rules``, ``recovery.classes``)
    where it removes the entry; and ``MASK`` at a secret path keeps the stored secret, so a document
    read from ``GET /api/config`` can be sent back unchanged.
    """
    out = copy.deepcopy(doc)
    for key, value in patch.items():
        path = _path + (key,)
        if value == MASK and path in secrets:
            continue
        if value is None and _path in _MAPS:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value, secrets, path)
        else:
            out[key] = _unmask(copy.deepcopy(value), out.get(key), path, secrets)
    return out


def _unmask(new: Any, old: Any, path: tuple[Any, ...], secrets: set[tuple[Any, ...]]) -> Any:
    """Put stored secrets back where ``new`` (a list or value replacing ``old`` whole) holds ``MASK``."""
    if new == MASK and path in secrets:
        return old
    if isinstance(new, dict):
        return {k: _unmask(v, old.get(k) if isinstance(old, dict) else None, path + (k,), secrets)
                for k, v in new.items()}
    if isinstance(new, list):
        return [_unmask(v, old[i] if isinstance(old, list) and i < len(old) else None, path + (i,), secrets)
                for i, v in enumerate(new)]
    return new


def make_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The smallest merge patch that turns ``old`` into ``new``."""
    patch: dict[str, Any] = {}
    for key in set(old) | set(new):
        if key not in new:
            patch[key] = None
        elif key not in old:
            patch[key] = copy.deepcopy(new[key])
        elif isinstance(old[key], Mapping) and isinstance(new[key], Mapping):
            sub = make_patch(old[key], new[key])
            if sub:
                patch[key] = sub
        elif old[key] != new[key]:
            patch[key] = copy.deepcopy(new[key])
    return patch


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], Any]:
    if isinstance(doc, dict) and doc:
        out: dict[tuple[Any, ...], Any] = {}
        for k, v in doc.items():
            out.update(_leaves(v, path + (k,)))
        return out
    return {path: doc}  # lists are compared whole: a webhook list changes as one value


def diff(old_doc: Mapping[str, Any], new_doc: Mapping[str, Any], old_shown: Mapping[str, Any],
         new_shown: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Changed leaves as ``{"path", "old", "new"}``; values come from the masked views."""
    a, b = _leaves(dict(old_doc)), _leaves(dict(new_doc))
    out = []
    for path in sorted(set(a) | set(b), key=lambda p: [str(x) for x in p]):
        if a.get(path) != b.get(path):
            entry = {"path": ".".join(str(p) for p in path), "old": get_path(old_shown, path),
                     "new": get_path(new_shown, path)}
            if MASK in (entry["old"], entry["new"]) or (isinstance(path[-1], str) and _SECRET_NAME.search(path[-1])):
                entry["secret"] = True
                entry["old"] = MASK if entry["old"] is not None else None
                entry["new"] = MASK if entry["new"] is not None else None
            out.append(entry)
    return out


def restart_paths(changes: list[dict[str, Any]]) -> list[str]:
    """The changed paths that take effect only after a restart."""
    return [c["path"] for c in changes
            if any(c["path"] == p or c["path"].startswith(p + ".") for p in RESTART_PATHS)]


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """``[{"field": "sessions.heartbeat_interval", "message": ...}]`` without echoing the input."""
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in err["loc"]]
        msg = str(err["msg"])
        if err["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling)"
        out.append({"field": ".".join(loc) or "config", "message": msg})
    return out

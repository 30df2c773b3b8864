"""Generate the settings table in docs/config.md from the pydantic model (one source of truth).

Run: python docs/config_table.py   (rewrites the part of config.md between the two markers;
tests/service/test_config_docs.py fails when the table is out of date)
"""

from __future__ import annotations

import enum
import types
import typing
from pathlib import Path, PurePath
from typing import Any, Iterator

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from tether.service._config_doc import restart_paths
from tether.service._settings import Settings

DOC = Path(__file__).parent / "config.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def _model(tp: Any) -> type[BaseModel] | None:
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _type(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        names = [_type(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"map of {_type(args[1])}"
    if tp is SecretStr:
        return "secret"
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "path"
    return getattr(tp, "__name__", str(tp))


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return ""
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "null"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (PurePath, str)):
        return f"`{value}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 10_000:
        return f"`{value:_}`".replace("_", "\u202f") if isinstance(value, int) else f"`{value:g}`"
    return f"`{value}`" if value not in ({}, []) else "empty"


def rows(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[tuple[str, str, str, str, str]]:
    """(key, type, default, when it applies, description) for every leaf setting."""
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        tp = field.annotation
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        sub = _model(tp)
        if sub is not None:
            yield from rows(sub, key + ".")
            continue
        item = _model(args[1]) if origin is dict else _model(args[0]) if origin is list else None
        if item is not None:
            what = "NAME" if origin is dict else "N"
            yield (f"{key}", _type(tp), _default(field), _when(key), field.description or "")
            yield from rows(item, f"{key}.<{what}>." if origin is dict else f"{key}[{what}].")
            continue
        yield key, _type(tp), _default(field), _when(key), field.description or ""


# Where "live" needs saying more precisely (see "What applies when" in config.md).
_NEXT_CYCLE = {f"sessions.{k}" for k in ("heartbeat_interval", "heartbeat_timeout", "backoff_base", "backoff_cap")}
_NEW_SESSIONS = {"sessions.connect_timeout", "sessions.max_attempts"}
_DELIVERY = {"recovery.max_wait", "recovery.cap"}  # what the delivery loop reads of [recovery]


def _when(key: str) -> str:
    if key.startswith("recovery.classes") or key in _DELIVERY:
        return "live, next failed send"
    if key.startswith("recovery."):
        return "stored only"
    if key.startswith("supervisor."):
        return "`tether supervise --config` start"
    if key in _NEXT_CYCLE:
        return "live, next cycle"
    if key in _NEW_SESSIONS:
        return "new sessions"
    return "restart" if restart_paths([{"path": key.split("[")[0].split(".<")[0]}]) else "live"


def render() -> str:
    """The Markdown table."""
    out = ["| key | type | default | applies | what it is |", "|---|---|---|---|---|"]
    for key, tp, default, when, desc in rows():
        out.append(f"| `{key}` | {tp} | {default} | {when} | {desc.replace('|', '/')} |")
    return "\n".join(out)


def main() -> None:
    text = DOC.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{START}\n{render()}\n{END}{tail}")


if __name__ == "__main__":
    main()

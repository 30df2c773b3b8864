"""``tether config get|set|history|rollback|export|import``: the running service's configuration via its API.

Secrets stay masked (``**********``) on the way out; a masked value sent back keeps the stored
secret, so ``export`` then ``import`` round-trips without a secret ever leaving the service.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any, Optional

import typer

from ._cli import _TOKEN, _URL, _call, _fail

__all__ = ["register"]

config_app = typer.Typer(no_args_is_help=True, help="Read and change a running service's configuration (via its API).")

_USER = typer.Option(None, "--user", "-u", help="who makes the change (default: your login name)")
_REASON = typer.Option("", "--reason", "-r", help="why (kept in the history)")
_IF_MATCH = typer.Option(None, "--if-match", help="fail with 409 unless the config is still at this version")


_request = _call  # one API call helper for every CLI command (see _cli._call)


def _user(user: str | None) -> str:
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (containers): say so plainly
        return "cli"


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # a bare word is a string: log_level=debug


def _nested(pairs: list[str]) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            _fail(f"{pair!r}: write KEY=VALUE, e.g. sessions.heartbeat_interval=15")
        node = patch
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                _fail(f"{key!r} conflicts with another KEY=VALUE")
        node[parts[-1]] = _value(raw)
    return patch


def _headers(if_match: Optional[int]) -> dict[str, str]:
    return {"If-Match": f'"{if_match}"'} if if_match is not None else {}


def _report(result: dict[str, Any]) -> None:
    changes = result.get("changes") or []
    typer.echo(f"config version {result['version']}" + ("" if changes else " (nothing changed)"))
    for c in changes:
        typer.echo(f"  {c['path']}: {json.dumps(c['old'])} -> {json.dumps(c['new'])}")
    if result.get("restart_required"):
        typer.echo("applies after restart: " + ", ".join(result["restart_required"]))


@config_app.command("get")
def config_get(path: Optional[str] = typer.Argument(None, help="a dotted path, e.g. sessions.heartbeat_interval"),
               url: str = _URL, token: Optional[str] = _TOKEN) -> None:
    """Print the running configuration (secrets masked) or one value of it."""
    data = _request(url, token, "GET", "/api/config")
    value: Any = data["config"]
    if path:
        for p in path.split("."):
            if not isinstance(value, dict) or p not in value:
                _fail(f"no setting {path!r} (tether config get lists them)")
            value = value[p]
    else:
        value = {"version": data["version"], "config": value, "pending_restart": data["pending_restart"]}
    typer.echo(json.dumps(value, indent=2))


@config_app.command("set")
def config_set(pairs: list[str] = typer.Argument(..., help="KEY=VALUE (JSON values: 15, true, null, \"text\")"),
               user: Optional[str] = _USER, reason: str = _REASON, if_match: Optional[int] = _IF_MATCH,
               url: str = _URL, token: Optional[str] = _TOKEN) -> None:
    """Change settings live; the service validates them and stores a new version."""
    result = _request(url, token, "PATCH", "/api/config", body=_nested(pairs),
                      params={"user": _user(user), "reason": reason}, headers=_headers(if_match))
    _report(result)


@config_app.command("history")
def config_history(limit: int = typer.Option(20, "--limit", "-n"), url: str = _URL, token: Optional[str] = _TOKEN,
                   as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List versions, newest first, with who, why and what changed."""
    import datetime

    data = _request(url, token, "GET", "/api/config/history", params={"limit": limit})
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for v in data["versions"]:
        when = datetime.datetime.fromtimestamp(v["at"], datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        paths = ", ".join(c["path"] for c in v["changes"]) or "-"
        typer.echo(f"{v['version']:>5}  {when}  {v['user']:<12} {v['source']:<12} {paths}"
                   + (f"  ({v['reason']})" if v["reason"] else ""))


@config_app.command("rollback")
def config_rollback(version: int = typer.Argument(..., help="the version to restore"), user: Optional[str] = _USER,
                    reason: str = _REASON, if_match: Optional[int] = _IF_MATCH, url: str = _URL,
                    token: Optional[str] = _TOKEN) -> None:
    """Restore the exact document of an earlier version (stored as a new version)."""
    result = _request(url, token, "POST", "/api/config/rollback", headers=_headers(if_match),
                      body={"version": version, "user": _user(user), "reason": reason})
    _report(result)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


@config_app.command("export")
def config_export(output: Optional[Path] = typer.Option(None, "--output", "-o", help="file (default: stdout)"),
                  fmt: str = typer.Option("toml", "--format", "-f", help="toml or json"),
                  url: str = _URL, token: Optional[str] = _TOKEN) -> None:
    """Write the running configuration as TOML or JSON (secrets masked; unset values left out in TOML)."""
    if fmt not in ("toml", "json"):
        _fail("--format must be toml or json")
    doc = _request(url, token, "GET", "/api/config")["config"]
    if fmt == "toml":
        import tomli_w

        text = tomli_w.dumps(_drop_none(doc))
    else:
        text = json.dumps(doc, indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}")


@config_app.command("import")
def config_import(file: Path = typer.Argument(..., help="a TOML or JSON document (full or partial)"),
                  replace: bool = typer.Option(False, "--replace", help="the file is the whole configuration "
                                               "(an export or a backup): what it leaves out becomes unset"),
                  user: Optional[str] = _USER, reason: str = _REASON, if_match: Optional[int] = _IF_MATCH,
                  url: str = _URL, token: Optional[str] = _TOKEN) -> None:
    """Apply a document: by default as a merge patch (what it names changes); with ``--replace`` the
    running config becomes exactly the document. Masked secrets keep their stored value."""
    try:
        text = file.read_text()
    except OSError as exc:
        _fail(f"cannot read {str(file)!r}: {exc.strerror or exc}")
    try:
        if file.suffix.lower() == ".json":
            doc = json.loads(text)
        else:
            import tomllib

            doc = tomllib.loads(text)
    except ValueError as exc:
        _fail(f"{str(file)!r} is not valid {'JSON' if file.suffix.lower() == '.json' else 'TOML'}: {exc}")
    if isinstance(doc, dict) and "config" in doc and "version" in doc:  # `config get` output or a backup file
        doc = doc["config"]
    if replace:
        if not isinstance(doc, dict):
            _fail(f"{str(file)!r} must hold a configuration document (an object)")
        from ._config_doc import make_patch

        # The difference from the running document: a key the file leaves out is sent as null, which
        # unsets it (TOML has no null, so an export omits unset values) or removes a rule/class entry.
        running = _request(url, token, "GET", "/api/config")
        doc = make_patch(running["config"], doc)
        if if_match is None:  # nobody may change it between our read and our write
            if_match = running["version"]
    result = _request(url, token, "PATCH", "/api/config", body=doc,
                      params={"user": _user(user), "reason": reason or f"import {file.name}"},
                      headers=_headers(if_match))
    _report(result)


def register(app: typer.Typer) -> None:
    """Add ``tether config ...`` to the root app."""
    app.add_typer(config_app, name="config")

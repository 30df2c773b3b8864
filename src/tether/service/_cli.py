"""``tether serve``, ``tether demo`` and ``tether sessions ...`` (typer + rich)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Optional

import typer

from .._errors import ConfigError, TetherError

__all__ = ["register"]

sessions_app = typer.Typer(no_args_is_help=True, help="Inspect and steer sessions of a running service (via its API).")

_URL = typer.Option("http://127.0.0.1:8080", "--url", envvar="TETHER_URL", help="the service's base URL")
_TOKEN = typer.Option(None, "--token", envvar="TETHER_TOKEN", help="bearer token (default: $TETHER_TOKEN)",
                      show_default=False)


def _fail(message: str, code: int = 2) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def serve(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file"),
    host: Optional[str] = typer.Option(None, "--host", help="bind address (default 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, "--port", "-p", help="port (default 8080)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="SQLite directory (default ./.tether)"),
    log_format: Optional[str] = typer.Option(None, "--log-format", help="human or json"),
    store: Optional[str] = typer.Option(None, "--store", help="redis://host:6379/0: join a cluster of nodes sharing "
                                        "sessions (a password goes in TETHER_STORE, not argv)", show_default=False),
) -> None:
    """Run the gateway service (API docs at /docs). The token comes from TETHER_TOKEN, never argv."""
    from ._server import serve as run, setup_logging
    from ._settings import load_settings

    try:
        settings = load_settings(config, host=host, port=port, data_dir=data_dir, log_format=log_format,
                                 store=store)
        settings.check_can_serve()
    except ConfigError as exc:
        _fail(str(exc))
    setup_logging(settings.log_format, settings.log_level)
    try:
        from ..observe import service_observability  # metrics, error tracker, alerts, log files

        from ._config_model import alert_actions  # [alerts] destinations; config changes re-apply them live

        obs = service_observability(settings, actions=alert_actions(settings.alerts))
        code = asyncio.run(run(settings, observability=obs))
    except TetherError as exc:  # ConfigError, StoreUnavailable: the message says what to fix
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot use data_dir {str(settings.data_dir)!r}: {exc.strerror or exc} (pass --data-dir or TETHER_DATA_DIR)")
    raise typer.Exit(code)


def demo(
    port: int = typer.Option(8080, "--port", "-p", help="the service port"),
    data_dir: Path = typer.Option(Path(".tether"), "--data-dir", help="where the demo keeps its SQLite files"),
    fault_every: float = typer.Option(6.0, "--fault-every", help="seconds between injected faults"),
    log_format: str = typer.Option("human", "--log-format", help="human or json"),
) -> None:
    """A self-contained world: flaky upstreams, the service with a few sessions, faults to watch heal."""
    from ._demo import run_demo
    from ._server import setup_logging

    setup_logging(log_format)
    try:
        code = asyncio.run(run_demo(port=port, data_dir=data_dir, fault_every=fault_every))
    except TetherError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot use data_dir {str(data_dir)!r}: {exc.strerror or exc} (pass --data-dir)")
    except KeyboardInterrupt:  # pragma: no cover - the demo handles SIGINT itself
        code = 0
    raise typer.Exit(code)


def _client(url: str, token: str | None) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30.0, trust_env=False)


def _call(url: str, token: str | None, method: str, path: str, *, body: Any = None,
          params: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
    """One API call for a CLI command: its JSON, or a clean exit with the service's error message."""
    import httpx

    try:
        with _client(url, token) as c:
            hdrs = {**(headers or {}), **({"content-type": "application/json"} if body is not None else {})}
            r = c.request(method, path, params={k: v for k, v in (params or {}).items() if v is not None},
                          headers=hdrs, content=None if body is None else json.dumps(body))
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the service at {url}: {exc} (is `tether serve` running? --url)")
    if r.status_code >= 400:
        try:
            msg = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            msg = r.text[:200]
        _fail(f"HTTP {r.status_code}: {msg}", 1)
    return r.json() if r.content else None


_STATE_STYLE = {"connected": "green", "backing_off": "yellow", "connecting": "yellow", "failed": "red",
                "closed": "dim", "idle": "dim", "closing": "dim"}


@sessions_app.command("list")
def sessions_list(url: str = _URL, token: Optional[str] = _TOKEN,
                  as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List sessions with state, attempts, queue and last error."""
    from rich.console import Console
    from rich.table import Table

    data = _call(url, token, "GET", "/api/sessions")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    cluster = any(s.get("node") for s in data["sessions"])  # scale-out: say which node runs each
    table = Table("id", "kind", "state", "desired", *(["node"] if cluster else []), "attempts", "sent", "received",
                  "last error")
    for s in data["sessions"]:
        st = s["stats"]
        style = _STATE_STYLE.get(s["state"], "")
        table.add_row(s["id"], s["kind"], f"[{style}]{s['state']}[/]", s["desired"],
                      *([s.get("node") or ""] if cluster else []), str(st.get("attempts") or 0),
                      str(st.get("sent_total", 0)), str(st.get("received_total", 0)), str(st.get("last_error") or ""))
    Console().print(table)


@sessions_app.command("show")
def sessions_show(session_id: str, url: str = _URL, token: Optional[str] = _TOKEN) -> None:
    """Show one session (options with credentials masked, stats, queue depth)."""
    from rich.console import Console

    Console().print_json(json.dumps(_call(url, token, "GET", f"/api/sessions/{session_id}")))


@sessions_app.command("restart")
def sessions_restart(session_id: str, url: str = _URL, token: Optional[str] = _TOKEN) -> None:
    """Close, wait restart_delay, reconnect from the cursor, flush the outbox."""
    s = _call(url, token, "POST", f"/api/sessions/{session_id}/restart")
    typer.echo(f"[{s['id']}] restarted: {s['state']}")


@sessions_app.command("logout")
def sessions_logout(session_id: str, url: str = _URL, token: Optional[str] = _TOKEN) -> None:
    """Close on purpose and clear credentials: the session never reconnects by itself."""
    s = _call(url, token, "POST", f"/api/sessions/{session_id}/logout")
    typer.echo(f"[{s['id']}] logged out: {s['state']}")


def register(app: typer.Typer) -> None:
    """Add the service commands to the root ``tether`` app."""
    app.command("serve")(serve)
    app.command("demo")(demo)
    app.add_typer(sessions_app, name="sessions")

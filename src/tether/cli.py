"""The ``tether`` command line (typer)."""

from __future__ import annotations

import typer

from . import __version__

app = typer.Typer(no_args_is_help=True, add_completion=False, help="tether: connections that heal themselves.")


@app.callback()
def main() -> None:
    """tether: connections that heal themselves and lose nothing."""


@app.command()
def version() -> None:
    """Print tether's version."""
    typer.echo(f"tether {__version__}")


# --- subsystem registration: one line each (see docs/ARCHITECTURE.md, "CLI") ---
# (lines are added here as subsystems land)
from .service._cli import register as _register_service; _register_service(app)  # noqa: E402,E702
from .supervise._cli import register as _register_supervise; _register_supervise(app)  # noqa: E402,E702
from .service._config_cli import register as _register_config; _register_config(app)  # noqa: E402,E702

if __name__ == "__main__":  # pragma: no cover
    app()

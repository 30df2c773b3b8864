"""docs/config.md: the settings table is generated from the model and kept up to date."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_settings_table_matches_the_model() -> None:
    """Every setting is in the table with its current default; run `python docs/config_table.py` to refresh."""
    spec = importlib.util.spec_from_file_location("config_table", DOCS / "config_table.py")
    assert spec is not None and spec.loader is not None
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    text = (DOCS / "config.md").read_text()
    assert table.render() in text, "docs/config.md is stale: run .venv/bin/python docs/config_table.py"
    assert "| `sessions.heartbeat_interval` | float | `20.0` | live, next cycle |" in text
    assert "| `alerts.telegram.bot_token` | secret or null |" in text

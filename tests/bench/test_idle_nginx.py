"""The idle cut-off scenario behind a real nginx: a heartbeat under proxy_read_timeout keeps the link."""

from __future__ import annotations

import pytest

from tests.conftest import require_binary


@pytest.mark.system
async def test_heartbeat_under_the_proxy_timeout_is_cut_less_than_silence() -> None:
    """nginx cuts the silent client; tether's 1 s heartbeat under a 2 s proxy_read_timeout is cut less."""
    require_binary("nginx")
    from bench.idle_cutoff import run_async

    sc = await run_async(window=6.0, per_system=1, include_tether=True)
    assert sc.error is None
    rows = {r.system: r.figures for r in sc.rows}
    silent = next(v for k, v in rows.items() if "no heartbeat" in k)
    tether = next(v for k, v in rows.items() if k.startswith("tether (heartbeat"))
    assert silent["disconnections"] >= 1  # nginx really sits in the path and enforces its timeout
    assert tether["disconnections"] < silent["disconnections"]

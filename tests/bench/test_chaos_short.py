"""The short chaos soak (bench.chaos): random faults, numbered messages, nothing lost or duplicated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_short_chaos_run_loses_nothing_duplicates_nothing_leaks_nothing() -> None:
    """20 durable sessions through kills, blackholes, resets, 1013s and a token outage: zero lost, zero dup, zero leaked."""
    from bench.chaos import durable_link_available

    if not durable_link_available():
        print("SKIP: durable Link mode (outbox=, session=, ack=) has not landed in tether.link")
        pytest.skip("durable Link mode (tether.link._durable) has not landed")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--seconds", "15", "--sessions", "20", "--rate", "4",
         "--fault-every", "2.5", "--seed", "7", "--drain-timeout", "30", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = proc.stdout + proc.stderr[-2000:]
    assert report["produced"] > 0, summary
    assert report["lost"] == 0, summary
    assert report["duplicated"] == 0, summary
    assert report["leaked_tasks"] == 0, summary
    assert sum(report["faults"].values()) >= 3, summary  # the faults really happened
    assert proc.returncode == 0, summary

"""bench.report: the BENCHMARKS.md tables and their ratios against tether."""

from __future__ import annotations

from bench.__main__ import _adapt
from bench._common import Row, Scenario, peak_per_second
from bench.report import scenario_markdown


def _scenario(lower: bool = True) -> Scenario:
    sc = Scenario(name="x", title="X", primary="s", lower_is_better=lower)
    sc.rows = [
        Row("tether", {"s": 10.0}, baseline=True),
        Row("peer fast", {"s": 5.0}),
        Row("peer slow", {"s": 20.0}),
        Row("peer never", {"s": "> 75 (not noticed)"}),
    ]
    return sc


def test_ratio_is_peer_over_tether_and_says_who_wins() -> None:
    """Each row's ratio divides its primary figure by tether's and names the winner."""
    md = scenario_markdown(_scenario(lower=True))
    assert "| tether | 10.0 | 1.00× (baseline) |" in md
    assert "0.50× (tether worse)" in md
    assert "2.00× (tether better)" in md
    assert "> 7.50× (tether better)" in md


def test_higher_is_better_flips_the_verdict() -> None:
    """For throughput-like figures a smaller peer figure means tether wins."""
    md = scenario_markdown(_scenario(lower=False))
    assert "0.50× (tether better)" in md


def test_groups_get_their_own_table_and_baseline() -> None:
    """Rows of one group (e.g. N = 1,000) are compared with that group's tether row only."""
    sc = Scenario(name="r", title="R", primary="t", lower_is_better=True, rows=[
        Row("tether", {"t": 1.0}, group="N = 1", baseline=True),
        Row("peer", {"t": 3.0}, group="N = 1"),
        Row("tether", {"t": 2.0}, group="N = 2", baseline=True),
        Row("peer", {"t": 3.0}, group="N = 2"),
    ])
    md = scenario_markdown(sc)
    assert "**N = 1**" in md and "**N = 2**" in md
    assert "3.00× (tether better)" in md and "1.50× (tether better)" in md


def test_foreign_rows_are_adapted() -> None:
    """A scenario written by someone else may return plain dicts; they still make a table."""
    sc = _adapt("outbox", [{"system": "batched", "msg/s": 200_000.0, "baseline": True}, {"system": "naive", "msg/s": 4_000.0}])
    assert [r.system for r in sc.rows] == ["batched", "naive"]
    assert sc.rows[0].baseline and sc.primary == "msg/s"


def test_peak_per_second_uses_a_sliding_window() -> None:
    """The peak counts events in any 1 s window, not in fixed buckets."""
    stamps = [0.6, 0.7, 0.8, 1.1, 1.2, 3.0]
    assert peak_per_second(stamps) == 5.0
    assert peak_per_second([]) == 0.0

"""Backoff: a pure iterator of delays."""

import itertools
import random

import pytest
from hypothesis import given, strategies as st

from tether import Backoff, ConfigError


def test_seed_000_sequence_without_jitter():
    """jitter="none", base=3, cap=60 yields seed 000's 3, 6, 12, 24, 48, 60, 60."""
    b = Backoff(base=3, cap=60, jitter="none")
    assert list(itertools.islice(b, 8)) == [3, 6, 12, 24, 48, 60, 60, 60]


def test_reset_starts_from_first_step():
    """reset() returns to the first step."""
    b = Backoff(base=1, jitter="none")
    [next(b) for _ in range(5)]
    b.reset()
    assert next(b) == 1 and b.attempt == 1


def test_max_attempts_stops_iteration():
    """The iterator stops after max_attempts delays."""
    assert len(list(Backoff(max_attempts=4, jitter="none"))) == 4


@pytest.mark.parametrize("kwargs", [{"base": 0}, {"factor": 0.5}, {"cap": 0.1, "base": 1}, {"jitter": "wild"}, {"max_attempts": -1}])
def test_invalid_options_raise_config_error(kwargs):
    """Bad options raise ConfigError naming the option."""
    with pytest.raises(ConfigError) as info:
        Backoff(**kwargs)
    assert next(iter(kwargs)) in str(info.value)


def test_huge_attempt_counts_do_not_overflow():
    """Thousands of attempts stay at the cap without OverflowError."""
    b = Backoff(base=1, factor=10, cap=30, jitter="none")
    assert list(itertools.islice(b, 5000))[-1] == 30


@given(
    base=st.floats(0.001, 100),
    factor=st.floats(1, 10),
    extra=st.floats(0, 1000),
    jitter=st.sampled_from(["full", "equal", "decorrelated", "none"]),
    seed=st.integers(0, 2**32),
    n=st.integers(1, 200),
)
def test_every_delay_within_zero_and_cap(base, factor, extra, jitter, seed, n):
    """Property: every delay lies in [0, cap] for every jitter."""
    cap = base + extra
    b = Backoff(base=base, factor=factor, cap=cap, jitter=jitter, rng=random.Random(seed))
    for d in itertools.islice(b, n):
        assert 0 <= d <= cap


def test_full_jitter_spreads_delays():
    """Full jitter gives different delays for different links (no synchronized storm)."""
    delays = {round(next(Backoff(base=10, rng=random.Random(i))), 3) for i in range(50)}
    assert len(delays) > 40

"""tether._clock helpers that are not the clocks themselves."""

from __future__ import annotations

import pytest

from tether import ConfigError
from tether._clock import parse_time


def test_parse_time_accepts_epoch_and_iso_and_names_the_field() -> None:
    """Epoch seconds and ISO 8601 (Z, offset or naive as UTC) parse; anything else names the field."""
    assert parse_time("since", None) is None and parse_time("since", "") is None
    assert parse_time("since", "1700000000.5") == 1700000000.5
    assert parse_time("since", "2026-01-01T00:00:00Z") == 1767225600.0
    assert parse_time("since", "2026-01-01T00:00:00") == 1767225600.0
    assert parse_time("since", "2026-01-01T01:00:00+01:00") == 1767225600.0
    with pytest.raises(ConfigError, match="until must be epoch seconds or an ISO 8601 time"):
        parse_time("until", "yesterday")

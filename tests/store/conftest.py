"""Fixtures for the store tests: real SQLite files under tmp_path, closed after each test."""

from __future__ import annotations

import pytest

from tether.store import Outbox
from tether.testing import FakeClock


@pytest.fixture
async def outbox(tmp_path, clock: FakeClock):
    box = Outbox(tmp_path / "outbox.db", clock=clock, sweep_interval=None)
    yield box
    await box.close()

"""Fixtures for tether.observe tests."""

from __future__ import annotations

from typing import Any

import pytest

from tether.observe import AlertManager, AlertRule
from tether.testing import FakeClock


class Recorder:
    """An alert action that keeps every notification it is given."""

    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.got: list[Any] = []

    async def send(self, notification: Any) -> None:
        self.got.append(notification)

    @property
    def statuses(self) -> list[str]:
        return [n.status for n in self.got]


class Source:
    """A mutable sample source: ``source.set("m", 1, session="s1")``."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def set(self, name: str, value: float, **labels: str) -> None:
        self.values[(name, tuple(sorted(labels.items())))] = value

    def drop(self, name: str, **labels: str) -> None:
        self.values.pop((name, tuple(sorted(labels.items()))), None)

    def __call__(self) -> list[tuple[str, dict[str, str], float]]:
        return [(n, dict(l), v) for (n, l), v in self.values.items()]


@pytest.fixture
def source() -> Source:
    return Source()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def manager(clock: FakeClock, source: Source, recorder: Recorder):
    m = AlertManager(source, rules=[], actions=[recorder], clock=clock, interval=1.0)
    m.start()
    yield m
    await m.close()


def down_rule(**kw: Any) -> AlertRule:
    opts: dict[str, Any] = dict(name="SessionDown", metric="tether_session_up", op="==", threshold=0, for_=120,
                                group_wait=0, group_interval=60, repeat_interval=3600)
    opts.update(kw)
    return AlertRule(**opts)

"""LeaseKeeper against a real redis-server with small real intervals: split, takeover, no overlap."""

from __future__ import annotations

import asyncio

import pytest

from tether.store.redis import LeaseKeeper, RedisOutbox
from tests.service.conftest import eventually

pytestmark = pytest.mark.system

SESSIONS = [f"s{i}" for i in range(12)]


class Node:
    """A keeper plus the set of sessions it runs; records any moment two nodes run one session."""

    def __init__(self, name: str, url: str, prefix: str, running: dict[str, str], overlaps: list[str]) -> None:
        self.name = name
        self.owned: dict[str, str] = {}
        self._running = running
        self._overlaps = overlaps
        self.keeper = LeaseKeeper(name, sessions=lambda: SESSIONS, on_gain=self.gain, on_lose=self.lose,
                                  url=url, prefix=prefix, ttl=0.6, interval=0.1,
                                  base_url=f"http://{name}.invalid")

    async def gain(self, session: str, value: str) -> None:
        if session in self._running:
            self._overlaps.append(f"{session}: {self._running[session]} and {self.name}")
        self._running[session] = self.name
        self.owned[session] = value

    async def lose(self, session: str, reason: str) -> None:
        if self._running.get(session) == self.name:
            del self._running[session]
        self.owned.pop(session, None)


async def test_nodes_split_sessions_and_take_over_a_dead_node(redis_server, prefix):
    """Three nodes own every session exactly once; after one dies the others own all within ttl + sweep."""
    running: dict[str, str] = {}
    overlaps: list[str] = []
    nodes = [Node(n, redis_server.url, prefix, running, overlaps) for n in ("a", "b", "c")]
    for n in nodes:
        n.keeper.start()
    try:
        await eventually(lambda: len(running) == len(SESSIONS) and all(1 <= len(n.owned) <= 5 for n in nodes),
                         what="an even split")
        tokens = {n.name: dict(n.owned) for n in nodes}
        dead = nodes[2]
        await dead.keeper.close(release=False)  # dies: no release, leases run out
        for s in dead.owned:  # what it ran is gone with the process
            running.pop(s, None)
        survivors = nodes[:2]
        await eventually(lambda: len(running) == len(SESSIONS)
                         and sum(len(n.owned) for n in survivors) == len(SESSIONS), what="takeover")
        # every taken-over session got a higher fencing token
        for s, v in tokens["c"].items():
            new = next(n.owned[s] for n in survivors if s in n.owned)
            assert int(new.rsplit(":", 1)[1]) > int(v.rsplit(":", 1)[1])
        assert overlaps == []
    finally:
        for n in nodes[:2]:
            await n.keeper.close()


async def test_joining_node_gets_a_share_gradually(redis_server, prefix):
    """A node joining an owner of everything receives sessions through bounded releases, no overlap."""
    running: dict[str, str] = {}
    overlaps: list[str] = []
    a = Node("a", redis_server.url, prefix, running, overlaps)
    a.keeper.start()
    try:
        await eventually(lambda: len(a.owned) == len(SESSIONS), what="a owns all")
        b = Node("b", redis_server.url, prefix, running, overlaps)
        b.keeper.start()
        await eventually(lambda: len(b.owned) >= 5 and len(running) == len(SESSIONS), what="rebalanced")
        assert overlaps == []
        await b.keeper.close()
        await eventually(lambda: len(a.owned) == len(SESSIONS), what="b's sessions back to a after a clean leave")
    finally:
        await a.keeper.close()


async def test_owner_url_and_fenced_store(redis_server, prefix):
    """owner_url() finds the owning node's base URL; the store fenced with the value writes until it is lost."""
    running: dict[str, str] = {}
    a = Node("a", redis_server.url, prefix, running, [])
    a.keeper.start()
    box = RedisOutbox(redis_server.url, prefix=prefix, consumer="a")
    try:
        await eventually(lambda: "s1" in a.owned, what="a owns s1")
        assert await a.keeper.owner_url("s1") == "http://a.invalid"
        box.fence("s1", a.owned["s1"])
        await box.put("s1", "hello")
        assert a.keeper.may_act("s1")
    finally:
        await a.keeper.close()
        await box.close()
    from tether import LeaseLost

    box2 = RedisOutbox(redis_server.url, prefix=prefix, consumer="a")
    box2.fence("s1", "a:1")
    await box2.put("s1", "after release")  # queueing is not fenced: any node accepts sends
    with pytest.raises(LeaseLost):
        await box2.lease("s1", 1)  # handing messages out is
    await box2.close()

"""OwnershipCore decisions (sans-I/O): acquire, renew, lose, steal after expiry, bounded rebalancing."""

from __future__ import annotations

import pytest

from tether import ConfigError
from tether.store.redis import Acquire, Drop, OwnershipCore, Release, Renew


def core(node: str = "a", **kw) -> OwnershipCore:
    return OwnershipCore(node, ttl=kw.pop("ttl", 9.0), **kw)


async def test_acquires_free_sessions_up_to_fair_share_plus_slack(clock):
    """Alone with 10 free sessions a node takes all; with 3 live nodes at most ceil(10/3)+1."""
    c = core()
    acts = c.sweep(clock.monotonic(), [f"s{i}" for i in range(10)], {}, ["a"])
    assert len(acts) == 10 and all(isinstance(x, Acquire) for x in acts)
    acts = core().sweep(clock.monotonic(), [f"s{i}" for i in range(10)], {}, ["a", "b", "c"])
    assert len(acts) == 5


async def test_never_acquires_a_session_held_elsewhere(clock):
    """A session whose lease is held by another node is never acquired."""
    acts = core().sweep(0.0, ["s1", "s2"], {"s1": "b:1", "s2": None}, ["a", "b"])
    assert acts == [Acquire("s2")]


async def test_renews_on_schedule_and_may_act_until_local_expiry(clock):
    """A held lease is renewed every renew_every; may_act holds until sent_at + ttl - margin."""
    c = core()
    c.acquired("s", "a:1", clock.monotonic())
    assert c.may_act("s", clock.monotonic())
    await clock.advance(2.9)
    assert c.sweep(clock.monotonic(), ["s"], {"s": "a:1"}, ["a"]) == []
    await clock.advance(0.2)
    assert c.sweep(clock.monotonic(), ["s"], {"s": "a:1"}, ["a"]) == [Renew("s", "a:1")]
    assert c.renewed("s", True, clock.monotonic()) is None
    await clock.advance(8.0)  # 8 s after the renew: ttl 9 - margin 0.9 = 8.1 not passed yet
    assert c.may_act("s", clock.monotonic())
    await clock.advance(0.2)
    assert not c.may_act("s", clock.monotonic())


async def test_lost_when_renew_refused(clock):
    """A refused renew drops the session at once."""
    c = core()
    c.acquired("s", "a:1", 0.0)
    assert c.renewed("s", False, 3.0) == Drop("s", "renew refused: the lease expired or another node holds it")
    assert not c.may_act("s", 3.0) and "s" not in c.held


async def test_lost_when_local_expiry_passes_without_renewal(clock):
    """If renewals could not happen (Redis unreachable), the sweep drops the lease at local expiry."""
    c = core()
    c.acquired("s", "a:1", 0.0)
    await clock.advance(8.5)
    acts = c.sweep(clock.monotonic(), ["s"], {"s": None}, ["a"])
    assert Drop("s", "lease expired before it could be renewed") in acts
    assert Acquire("s") in acts  # free again: it may be re-acquired with a new token


async def test_lost_when_another_node_holds_the_lease(clock):
    """Redis showing another value for our session means we lost it: drop, never renew."""
    c = core()
    c.acquired("s", "a:1", 0.0)
    assert c.sweep(1.0, ["s"], {"s": "b:2"}, ["a", "b"]) == [Drop("s", "another node holds the lease")]


async def test_steals_after_expiry_of_a_dead_nodes_lease(clock):
    """When a dead node's lease expires (owner None), the survivors acquire its sessions."""
    sessions = [f"s{i}" for i in range(6)]
    owners = {s: ("b:1" if i < 3 else "a:2") for i, s in enumerate(sessions)}
    c = core()
    for s in sessions[3:]:
        c.acquired(s, "a:2", 0.0)
    assert [x for x in c.sweep(1.0, sessions, owners, ["a", "b"]) if isinstance(x, Acquire)] == []
    owners.update({s: None for s in sessions[:3]})  # b died, its leases expired
    acts = c.sweep(2.0, sessions, owners, ["a"])
    assert sorted(x.session for x in acts if isinstance(x, Acquire)) == ["s0", "s1", "s2"]


async def test_rebalancing_is_bounded_per_sweep(clock):
    """A node holding all 30 sessions when two nodes join releases at most max_release per sweep."""
    c = core(max_release=2)
    sessions = [f"s{i}" for i in range(30)]
    for s in sessions:
        c.acquired(s, f"a:{s}", 0.0)
    owners = {s: f"a:{s}" for s in sessions}
    acts = c.sweep(1.0, sessions, owners, ["a", "b", "c"])
    rel = [x for x in acts if isinstance(x, Release)]
    assert len(rel) == 2 and not any(isinstance(x, Acquire) for x in acts)
    # converges: keep sweeping until at fair share + slack (10 + 1)
    for _ in range(20):
        for x in c.sweep(1.0, sessions, owners, ["a", "b", "c"]):
            if isinstance(x, Release):
                c.released(x.session)
                owners[x.session] = None
    assert len(c.held) == 11


async def test_releases_sessions_that_no_longer_run(clock):
    """A deleted or stopped session is released."""
    c = core()
    c.acquired("s", "a:1", 0.0)
    assert c.sweep(1.0, [], {"s": "a:1"}, ["a"]) == [Release("s", "a:1", "session no longer runs")]


def test_bad_options():
    """Bad node ids and ttl/renew combinations are ConfigErrors."""
    with pytest.raises(ConfigError):
        OwnershipCore("a:b")
    with pytest.raises(ConfigError):
        OwnershipCore("a", ttl=3, renew_every=3)

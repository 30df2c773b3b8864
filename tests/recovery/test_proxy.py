"""ProxyPool on a real SQLite file: rotation, health, cooldown, restarts, no-healthy errors, masked secrets."""

from __future__ import annotations

import pytest

from tether import ConfigError, NoHealthyProxy, StoreUnavailable
from tether.recovery import ProxyPool, RecoveryPolicy, mask_url
from tether.testing import FakeClock

A = "socks5://alice:s3cret-a@10.0.0.1:1080"
B = "socks5://bob:s3cret-b@10.0.0.2:1080"
C = "http://10.0.0.3:3128"


@pytest.fixture
async def pool(tmp_path):
    clock = FakeClock()
    p = ProxyPool(tmp_path / "proxies.db", cooldown=60, max_cooldown=600, clock=clock)
    await p.add(A, B, C)
    yield p, clock
    await p.close()


async def test_rotation_order(pool):
    """rotate() walks the proxies in order, marking the one in use failed, and wraps around."""
    p, clock = pool
    assert await p.current() == A
    assert await p.rotate(failed=False) == B
    assert await p.rotate(failed=False) == C
    assert await p.rotate(failed=False) == A


async def test_failed_proxy_cools_down(pool):
    """A failed proxy is skipped during its cooldown and is usable again after it."""
    p, clock = pool
    await p.current()
    assert await p.rotate() == B  # A failed
    assert await p.rotate(failed=False) == C
    assert await p.rotate(failed=False) == B  # A still cooling down: skipped
    await clock.advance(61)
    assert await p.rotate(failed=False) == C
    assert await p.rotate(failed=False) == A


async def test_cooldown_doubles_and_success_clears(pool):
    """Consecutive failures double the cooldown (capped); mark_ok clears the record."""
    p, clock = pool
    for _ in range(3):
        await p.mark_failed(A, "refused")
    status = {s.url: s for s in await p.statuses()}
    assert status[A].failures == 3 and status[A].cooldown_left == pytest.approx(240)
    for _ in range(5):
        await p.mark_failed(A)
    assert {s.url: s for s in await p.statuses()}[A].cooldown_left == pytest.approx(600)
    await p.mark_ok(A)
    s = {s.url: s for s in await p.statuses()}[A]
    assert s.healthy and s.failures == 0


async def test_current_skips_unhealthy(pool):
    """current() moves off a proxy that is cooling down."""
    p, clock = pool
    assert await p.current() == A
    await p.mark_failed(A)
    assert await p.current() == B


async def test_no_healthy_proxy(pool):
    """When every proxy cools down the pool raises NoHealthyProxy saying when one comes back."""
    p, clock = pool
    for url in (A, B, C):
        await p.mark_failed(url)
    with pytest.raises(NoHealthyProxy, match=r"all 3 are cooling down.*60s"):
        await p.rotate(failed=False)


async def test_empty_pool(tmp_path):
    """An empty pool says how to fill it."""
    async with ProxyPool(tmp_path / "empty.db") as p:
        with pytest.raises(NoHealthyProxy, match="pool.add"):
            await p.current()


async def test_survives_restart(tmp_path):
    """Proxies, the current choice and cooldowns are read back by a new pool on the same file."""
    clock = FakeClock()
    path = tmp_path / "proxies.db"
    async with ProxyPool(path, clock=clock) as first:
        await first.add(A, B, C)
        await first.current()
        assert await first.rotate() == B  # A failed, cooling down
    async with ProxyPool(path, clock=clock) as second:
        assert await second.current() == B
        status = {s.url: s for s in await second.statuses()}
        assert not status[A].healthy and status[B].current


async def test_secrets_never_shown(pool):
    """Passwords never appear in reprs, statuses, or errors about bad URLs."""
    p, clock = pool
    statuses = await p.statuses()
    text = repr(statuses) + repr(p)
    assert "s3cret" not in text and "alice:***@10.0.0.1:1080" in text
    with pytest.raises(ConfigError) as info:
        await p.add("ftp://carol:topsecret@host:21")
    assert "topsecret" not in str(info.value) and "carol:***@" in str(info.value)
    assert mask_url("socks5://u:p@[::1]:1080") == "socks5://u:***@[::1]:1080"


@pytest.mark.parametrize("url", ["10.0.0.1:1080", "socks5://host", "gopher://h:70", "socks5://h:notaport"])
async def test_bad_urls(pool, url):
    """URLs without a supported scheme, host or port are rejected with an example of a good one."""
    p, _ = pool
    with pytest.raises(ConfigError, match="socks5://"):
        await p.add(url)


async def test_closed_pool(tmp_path):
    """Using a closed pool is a StoreUnavailable error, not a crash."""
    p = ProxyPool(tmp_path / "x.db")
    await p.add(A)
    await p.close()
    with pytest.raises(StoreUnavailable):
        await p.current()


async def test_policy_rotates_through_pool_then_stops(tmp_path, driver):
    """A policy whose rotate_proxy callback uses the pool walks the proxies and ends with NoHealthyProxy, no loop."""
    clock = FakeClock()
    async with ProxyPool(tmp_path / "p.db", clock=clock, cooldown=3600, max_cooldown=3600) as p:
        await p.add(A, B)
        used = []

        async def rotate(failure):
            used.append(await p.rotate(reason=failure.classification.reason))

        policy = RecoveryPolicy(clock=clock, rotate_proxy=rotate)

        class ProxyConnectionError(OSError):
            pass

        async def send():
            await p.current()
            raise ProxyConnectionError("proxy refused")

        with pytest.raises(NoHealthyProxy):
            await driver(clock, policy.run(send))
        assert used == [B]

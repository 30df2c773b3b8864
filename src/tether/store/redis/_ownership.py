"""Session ownership decisions, sans-I/O: which sessions this node acquires, renews, releases, drops.

:class:`OwnershipCore` takes what the shell observed (the time, the sessions that should run, who
holds each lease, which nodes are alive) and returns actions; it performs no I/O and reads no
clock, so every decision is tested on a FakeClock. :class:`tether.store.redis.LeaseKeeper` is the
Redis shell that performs the actions.

Safety rests on two rules:

* A node acts on a session only while :meth:`OwnershipCore.may_act` says so: until
  ``sent_at + ttl - margin`` on its own monotonic clock, where ``sent_at`` is taken *before* the
  acquire/renew request left. Redis's expiry starts later than that, so the local belief ends
  first (``margin`` absorbs clock-rate drift).
* Every write is also fenced in Redis (the store scripts compare the lease value), so even a
  node paused past its lease (GC, SIGSTOP) cannot ack, nack or move a cursor afterwards.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from ..._errors import ConfigError

__all__ = ["OwnershipCore", "Acquire", "Renew", "Release", "Drop", "Held", "rank"]


@dataclass(frozen=True, slots=True)
class Acquire:
    """Try to take the free session (``SET NX PX`` + a new fencing token)."""

    session: str


@dataclass(frozen=True, slots=True)
class Renew:
    """Extend our lease (compare-and-pexpire on ``value``)."""

    session: str
    value: str


@dataclass(frozen=True, slots=True)
class Release:
    """Stop the session here, then give the lease up (compare-and-delete); ``reason`` says why."""

    session: str
    value: str
    reason: str


@dataclass(frozen=True, slots=True)
class Drop:
    """The lease is lost (expired locally, renew refused, or another node holds it): stop now."""

    session: str
    reason: str


Action = Acquire | Renew | Release | Drop


@dataclass(frozen=True, slots=True)
class Held:
    """A lease this node holds: the value in Redis (``node:token``), valid locally until ``until``."""

    value: str
    until: float
    renewed_at: float

    @property
    def token(self) -> int:
        return int(self.value.rsplit(":", 1)[1])


def rank(session: str, node: str) -> int:
    """Rendezvous-hash weight: the live node with the highest weight is a session's preferred home."""
    return int.from_bytes(hashlib.blake2b(f"{node}\0{session}".encode(), digest_size=8).digest(), "big")


class OwnershipCore:
    """Lease decisions for one node.

    Args:
        node: this node's id (unique among live nodes).
        ttl: lease length in seconds.
        renew_every: seconds between renewals (default ``ttl / 3``: two renewals may fail in a row).
        margin: seconds before local expiry at which the node stops acting (clock-rate drift).
        slack: sessions a node may hold above its fair share before it gives some back.
        max_release: most sessions released per sweep (bounded rebalancing: no stampede).
    """

    def __init__(self, node: str, *, ttl: float = 15.0, renew_every: float | None = None,
                 margin: float | None = None, slack: int = 1, max_release: int = 2) -> None:
        if not node or ":" in node:
            raise ConfigError(f"node must be a non-empty id without ':', got {node!r}")
        if not ttl > 0:
            raise ConfigError(f"ttl must be > 0 seconds, got {ttl!r}")
        self.node = node
        self.ttl = float(ttl)
        self.renew_every = float(renew_every if renew_every is not None else ttl / 3)
        self.margin = float(margin if margin is not None else min(1.0, ttl / 10))
        if not 0 < self.renew_every < self.ttl - self.margin:
            raise ConfigError("renew_every must be > 0 and shorter than ttl - margin")
        self.slack = slack
        self.max_release = max_release
        self.held: dict[str, Held] = {}

    # --- queries ------------------------------------------------------------------------------
    def may_act(self, session: str, now: float) -> bool:
        """True while this node surely holds ``session`` (checked before connecting and writing)."""
        h = self.held.get(session)
        return h is not None and now < h.until

    def fair_share(self, sessions: int, nodes: int) -> int:
        return math.ceil(sessions / max(1, nodes))

    # --- results of performed actions -----------------------------------------------------------
    def acquired(self, session: str, value: str, sent_at: float) -> None:
        """The acquire sent at ``sent_at`` (monotonic, before the request) succeeded with ``value``."""
        self.held[session] = Held(value, sent_at + self.ttl - self.margin, sent_at)

    def renewed(self, session: str, ok: bool, sent_at: float) -> Drop | None:
        """The renew sent at ``sent_at`` returned; a refused renew means the lease is gone."""
        h = self.held.get(session)
        if h is None:
            return None
        if not ok:
            del self.held[session]
            return Drop(session, "renew refused: the lease expired or another node holds it")
        self.held[session] = Held(h.value, max(h.until, sent_at + self.ttl - self.margin), sent_at)
        return None

    def released(self, session: str) -> None:
        self.held.pop(session, None)

    # --- the sweep ----------------------------------------------------------------------------
    def sweep(self, now: float, sessions: Iterable[str], owners: Mapping[str, str | None],
              nodes: Iterable[str]) -> list[Action]:
        """Decide one round.

        Args:
            now: monotonic time.
            sessions: every session that should run somewhere.
            owners: the lease value (``node:token``) of each session in Redis, None when free.
            nodes: the live nodes (including this one).
        """
        wanted = set(sessions)
        live = sorted(set(nodes) | {self.node})
        actions: list[Action] = []
        # 1. what we hold: lost, gone, or due for renewal
        for s, h in list(self.held.items()):
            if now >= h.until:
                del self.held[s]
                actions.append(Drop(s, "lease expired before it could be renewed"))
            elif s in owners and owners[s] != h.value:
                del self.held[s]
                actions.append(Drop(s, "another node holds the lease"))
            elif s not in wanted:
                actions.append(Release(s, h.value, "session no longer runs"))
            elif now - h.renewed_at >= self.renew_every:
                actions.append(Renew(s, h.value))
        cap = self.fair_share(len(wanted), len(live)) + self.slack
        mine = [s for s in self.held if s in wanted]
        # 2. bounded rebalancing: above fair share + slack, give back a few, preferring the
        # sessions whose rendezvous home is another live node (that node will take them).
        if len(mine) > cap:
            def others_first(s: str) -> tuple[bool, int]:
                home = max(live, key=lambda n: rank(s, n))
                return (home == self.node, rank(s, self.node))

            for s in sorted(mine, key=others_first)[: min(self.max_release, len(mine) - cap)]:
                actions.append(Release(s, self.held[s].value, "rebalancing: above fair share"))
            return actions
        # 3. free sessions, up to the cap; our rendezvous homes first, so nodes converge quickly
        free = [s for s in wanted if owners.get(s) is None and s not in self.held]
        free.sort(key=lambda s: -rank(s, self.node))
        home_first = sorted(free, key=lambda s: max(live, key=lambda n: rank(s, n)) != self.node)
        for s in home_first[: max(0, cap - len(mine))]:
            actions.append(Acquire(s))
        return actions

"""Link states and the one table of allowed transitions."""

from __future__ import annotations

import enum
from typing import Mapping

from ._errors import InvalidTransition

__all__ = ["State", "TRANSITIONS", "check_transition"]


class State(enum.Enum):
    """Where a link is in its life."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


S = State

#: Every allowed transition, in one place. Anything else is a bug and raises InvalidTransition.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    S.IDLE: frozenset({S.CONNECTING, S.CLOSING, S.CLOSED}),
    # A failed attempt either backs off, gives up (auth, budget) or is cut short by close().
    S.CONNECTING: frozenset({S.CONNECTED, S.BACKING_OFF, S.FAILED, S.CLOSING}),
    # A live connection drops (back off, even by 0 s), is refused for good (auth close), or is closed.
    S.CONNECTED: frozenset({S.BACKING_OFF, S.FAILED, S.CLOSING}),
    S.BACKING_OFF: frozenset({S.CONNECTING, S.FAILED, S.CLOSING}),
    S.CLOSING: frozenset({S.CLOSED}),
    S.CLOSED: frozenset(),
    # A failed link can be closed, or retried by hand (a "reconnect" button).
    S.FAILED: frozenset({S.CONNECTING, S.CLOSING, S.CLOSED}),
}

TERMINAL: frozenset[State] = frozenset({S.CLOSED})


def check_transition(old: State, new: State) -> None:
    """Raise :class:`InvalidTransition` unless ``old -> new`` is in :data:`TRANSITIONS`."""
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"illegal link transition {old.name} -> {new.name}")

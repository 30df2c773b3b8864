"""The transition table is the one authority on state changes."""

import pytest

from tether import State
from tether._errors import InvalidTransition
from tether._state import TRANSITIONS, check_transition


def test_every_state_has_a_row():
    """Every State appears in the table."""
    assert set(TRANSITIONS) == set(State)


def test_closed_is_terminal():
    """Nothing leaves CLOSED."""
    for s in State:
        with pytest.raises(InvalidTransition):
            check_transition(State.CLOSED, s)


def test_illegal_transition_names_both_states():
    """An illegal change raises with both names."""
    with pytest.raises(InvalidTransition, match="IDLE -> CONNECTED"):
        check_transition(State.IDLE, State.CONNECTED)

"""The Link decides through the recovery engine's rule packs (one classification serves both)."""

import tether
from tether import Action


class FloodWait(Exception):
    """Shaped like Pyrogram's FloodWait: only the telegram rule pack knows it."""

    def __init__(self, value):
        super().__init__(f"wait {value}")
        self.value = value


def test_default_classifier_is_the_recovery_engine():
    """A FloodWait(7) seen by a Link means WAIT at least 7 s, as tether.classify says."""
    link = tether.connect("ws://127.0.0.1:9/")
    decision = link._classifier(FloodWait(7))
    assert decision.action is Action.WAIT and decision.delay == 7
    assert tether.classify(FloodWait(7)).retry_after == 7


def test_auth_codes_option_reaches_the_packs():
    """Custom auth_codes make those closes final through the engine's websockets pack."""
    from websockets.exceptions import ConnectionClosedError
    from websockets.frames import Close

    link = tether.connect("ws://127.0.0.1:9/", auth_codes={4999})
    assert link._classifier(ConnectionClosedError(Close(4999, "nope"), None)).action is Action.FAIL
    assert link._classifier(ConnectionClosedError(Close(4001, "x"), None)).action is Action.RECONNECT

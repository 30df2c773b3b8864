"""Test doubles shipped with tether, so users test their bots the way we test ours.

* :class:`FakeClock`: time that moves only when the test calls ``await clock.advance(s)``.
* :class:`FlakyServer`: a real local WebSocket server that drops, blackholes, rejects (with
  ``Retry-After``), closes with a code, accepts-then-closes or restarts on demand, and counts it all.
* :class:`FakeBotAPI`: a real local Telegram Bot API server (429, 5xx, 409, revoked tokens, drops).
"""

from ._botapi import BotAPIRequest, FakeBotAPI
from ._clock import FakeClock
from ._flaky import FlakyServer

__all__ = ["FakeClock", "FlakyServer", "FakeBotAPI", "BotAPIRequest"]

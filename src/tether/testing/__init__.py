"""Test doubles shipped with tether, so users test their bots the way we test ours.

* :class:`FakeClock`: time that moves only when the test calls ``await clock.advance(s)``.
* :class:`FakeBotAPI`: a real local Telegram Bot API server (429, 5xx, 409, revoked tokens, drops).
"""

from ._botapi import BotAPIRequest, FakeBotAPI
from ._clock import FakeClock

__all__ = ["FakeClock", "FakeBotAPI", "BotAPIRequest"]

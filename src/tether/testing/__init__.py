"""Test doubles shipped with tether, so users test their bots the way we test ours.

* :class:`FakeClock`: time that moves only when the test calls ``await clock.advance(s)``.
* :class:`FlakyServer`: a real local WebSocket server that drops, blackholes, rejects (with
  ``Retry-After``), closes with a code, accepts-then-closes or restarts on demand, and counts it all.
* :class:`FakeBotAPI`: a real local Telegram Bot API server (429, 5xx, 409, revoked tokens, drops).

Testing your own recovery policy instantly: give it a FakeClock, start the call as a task, and
advance time; a 30-minute FloodWait takes microseconds and nothing retries early::

    clock = FakeClock()
    policy = tether.RecoveryPolicy(clock=clock, wait_jitter=0)
    task = asyncio.ensure_future(policy.run(send, chat_id, "hi"))
    await clock.advance(29.9)      # the server asked for 30 s: no second call yet
    await clock.advance(0.2)
    assert await task == "sent"
    assert policy.history[0].action is tether.Action.WAIT

See docs/recovery.md for more (events, stats, breaker and budget on the FakeClock).
"""

from ._botapi import BotAPIRequest, FakeBotAPI
from ._clock import FakeClock
from ._flaky import FlakyServer

__all__ = ["FakeClock", "FlakyServer", "FakeBotAPI", "BotAPIRequest"]

"""Test doubles shipped with tether, so users test their bots the way we test ours.

* :class:`FakeClock`: time that moves only when the test calls ``await clock.advance(s)``.
"""

from ._clock import FakeClock

__all__ = ["FakeClock"]

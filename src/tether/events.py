"""Public home of tether's typed events: ``from tether.events import Connected``."""

from ._events import *  # noqa: F401,F403
from ._events import __all__  # noqa: F401

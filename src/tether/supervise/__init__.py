"""tether.supervise: keep a bot process alive, like PM2 without its restart loops.

``tether supervise [options] -- CMD ARGS...`` on the command line, or from Python::

    from tether.supervise import Supervisor, SupervisorConfig

    code = await Supervisor(SupervisorConfig(command=("python", "bot.py"), memory_soft="1G")).run()

The decisions live in a sans-I/O core (:class:`RestartCore`, :class:`MemoryWatch`,
:class:`HealthWatch`, :class:`CronSchedule`); :class:`Supervisor` is the asyncio shell.
"""

from ._config import SupervisorConfig, load_toml_section, parse_duration, parse_size
from ._core import (
    CHILD_TRANSITIONS,
    ChildState,
    CoolDown,
    CronSchedule,
    ExitInfo,
    ExitKind,
    ExitSupervisor,
    HealthWatch,
    MemoryVerdict,
    MemoryWatch,
    Restart,
    RestartCore,
    StayDown,
    StopCause,
    classify_exit,
)
from ._events import (
    BudgetExhausted,
    ChildExited,
    ChildStarted,
    RestartScheduled,
    StopRequested,
    SupervisorEvent,
    SupervisorStopping,
)
from ._state import read_state
from ._proc import tree_rss
from ._supervisor import Supervisor
from ._systemd import systemd_unit

__all__ = [
    "Supervisor",
    "SupervisorConfig",
    "load_toml_section",
    "parse_duration",
    "parse_size",
    # the sans-I/O core
    "RestartCore",
    "ChildState",
    "CHILD_TRANSITIONS",
    "Restart",
    "CoolDown",
    "ExitSupervisor",
    "StayDown",
    "ExitInfo",
    "ExitKind",
    "StopCause",
    "classify_exit",
    "MemoryWatch",
    "MemoryVerdict",
    "HealthWatch",
    "CronSchedule",
    # events
    "SupervisorEvent",
    "ChildStarted",
    "ChildExited",
    "StopRequested",
    "RestartScheduled",
    "BudgetExhausted",
    "SupervisorStopping",
    # helpers
    "read_state",
    "systemd_unit",
    "tree_rss",
]

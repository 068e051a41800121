"""Which job the current thread or asyncio task is working for.

The binding travels with the task through :mod:`contextvars` (DESIGN invariant
7): a worker binds the job before running a task and unbinds it afterwards, so
a pooled thread never leaks one job into another's task.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .run import JobRun

_current: ContextVar[Optional[JobRun]] = ContextVar("routilux_current_job", default=None)

#: Fast accessor for the hot path.
current_run = _current.get
bind = _current.set
unbind = _current.reset

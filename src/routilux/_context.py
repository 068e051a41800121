"""Which job the current thread or asyncio task is working for.

The binding travels with the task through :mod:`contextvars` (DESIGN invariant 7): a
worker binds the job before running a task and unbinds it afterwards, so a pooled thread
never leaks one job into another's task.

The variable lives at the state layer, below everything that reads it -- the error
policy as well as the engine and the definition classes -- so that every reader imports
it downwards. Only the engine binds it; :mod:`routilux.engine.context` re-exports these
names for the engine's own use.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .engine.run import JobRun

__all__ = ["bind", "current_run", "unbind"]

_current: ContextVar[Optional[JobRun]] = ContextVar("routilux_current_job", default=None)

#: Fast accessor for the hot path.
current_run = _current.get
bind = _current.set
unbind = _current.reset

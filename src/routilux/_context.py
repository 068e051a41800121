"""Which job the current thread or asyncio task is working for.

The binding travels with the task through :mod:`contextvars` (DESIGN invariant 7): a
worker binds the job before running a task and unbinds it afterwards, so a pooled thread
never leaks one job into another's task.

The variable lives at the state layer, below everything that reads it -- the error
policy as well as the engine and the definition classes -- so that every reader imports
it downwards. Only the engine binds it (a ``JobRun``); what is read of it here is
:class:`CurrentRun`, and :mod:`routilux.engine.context` reads it back as the engine's
``JobRun`` for the engine and the definition classes.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Optional, Protocol

if TYPE_CHECKING:
    from .job_state import JobState

__all__ = ["CurrentRun", "bind", "current_run", "unbind"]


class CurrentRun(Protocol):
    """What the layers below the engine read of the job a thread serves (the engine's
    ``JobRun``, bound by a layer above): its JobState.  The engine reads the same
    variable as a JobRun (``routilux.engine.context.current_run``)."""

    @property
    def job_state(self) -> JobState: ...


_current: ContextVar[Optional[CurrentRun]] = ContextVar("routilux_current_job", default=None)

#: Fast accessor for the hot path.
current_run = _current.get
bind = _current.set
unbind = _current.reset

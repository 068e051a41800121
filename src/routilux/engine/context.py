"""Which job the current thread or asyncio task is working for, as the engine sees it.

The variable itself lives in :mod:`routilux._context` (the state layer), so that layers
below the engine -- the error policy -- can read it without importing upwards. The engine
binds; everybody reads, the layers below through ``CurrentRun`` (the run's JobState)
and the engine and the definition classes through :data:`current_run` here, which
gives the whole ``JobRun``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, cast

from .._context import _current, bind, unbind

if TYPE_CHECKING:
    from .run import JobRun

__all__ = ["bind", "current_run", "unbind"]

#: The engine binds nothing but JobRuns (``JobRun`` binds itself), so what the variable
#: holds is read back as one: the same ``ContextVar.get``, no wrapper on the hot path.
current_run = cast("Callable[[], Optional[JobRun]]", _current.get)

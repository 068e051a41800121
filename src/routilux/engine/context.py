"""Which job the current thread or asyncio task is working for, as the engine sees it.

The variable itself lives in :mod:`routilux._context` (the state layer), so that layers
below the engine -- the error policy -- can read it without importing upwards. These are
the same objects, re-exported: the engine binds, everybody reads.
"""

from __future__ import annotations

from .._context import bind, current_run, unbind

__all__ = ["bind", "current_run", "unbind"]

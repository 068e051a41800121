"""The ``routilux`` command line (the ``routilux[cli]`` extra: Typer and Rich).

:mod:`.app` holds the commands (``run``, ``validate``, ``graph``, ``routines``,
``schema``, ``jobs``), :mod:`.progress` the live per-routine progress of a job, fed by
the public lifecycle hooks. ``main`` is the console-script entry point.
"""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]

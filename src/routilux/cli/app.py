"""The ``routilux`` command: run, validate and draw flow files, list routines, print the
flow-file schema (Typer + Rich, the ``routilux[cli]`` extra).

Exit codes: 0 success (``run``: the job completed), 1 failure (``run``: the job ended
failed, cancelled, paused or timed out; ``validate``: a file has errors), 2 bad usage or
a file that cannot be read, 130 Ctrl-C (``run``: the job is paused).

The ``jobs`` commands and ``--store`` need the durable job store (``routilux.store``);
until it is installed they stop with exit code 2 and say so. ``ui`` serves the web UI
(the ``routilux[ui]`` extra; without it, it stops with exit code 2 and says so).

Importing the command modules registers their commands on :data:`app`.
"""

from __future__ import annotations

# Commands are listed in --help in the order they are registered: `run` first.
# isort: off
from . import run
from . import inspection, jobs, ui

# isort: on
from ._common import app, parse_params
from .inspection import routine_catalogue

__all__ = ["app", "main", "parse_params", "routine_catalogue"]

# The command modules are imported for what they register.
_COMMANDS = (run, inspection, jobs, ui)


def main() -> None:
    """The console-script entry point."""
    app(prog_name="routilux")

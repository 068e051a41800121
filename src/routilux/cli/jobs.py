"""``routilux jobs``: jobs journaled in the durable job store.

Every command needs ``routilux.store``; until it is installed each one stops with exit
code 2 and says so (``require_store``).
"""

# No ``from __future__ import annotations`` here: Typer reads the parameters'
# Annotated[...] metadata at run time, and on Python 3.9 it cannot see it in string
# annotations. So every annotation below must also be valid at run time on 3.9.
from typing import Annotated, Optional

import typer

from ._common import jobs_app, require_store

STORE = Annotated[str, typer.Option("--store", help="The durable store's URL.")]
JOB_ID = Annotated[str, typer.Argument(help="The job's id.")]


@jobs_app.command("list")
def jobs_list(store: STORE) -> None:
    """List the jobs of the store."""
    require_store(store)


@jobs_app.command("show")
def jobs_show(job_id: JOB_ID, store: STORE) -> None:
    """Show one job: status, routines, history."""
    require_store(store)


@jobs_app.command("resume")
def jobs_resume(job_id: JOB_ID, store: STORE) -> None:
    """Resume a paused job."""
    require_store(store)


@jobs_app.command("cancel")
def jobs_cancel(job_id: JOB_ID, store: STORE) -> None:
    """Cancel a job."""
    require_store(store)


@jobs_app.command("input")
def jobs_input(
    job_id: JOB_ID,
    store: STORE,
    param: Annotated[
        Optional[list[str]], typer.Option("-p", "--param", help="key=value. Repeatable.")
    ] = None,
) -> None:
    """Give a waiting job its input."""
    require_store(store)

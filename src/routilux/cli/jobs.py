"""``routilux jobs``: jobs journaled in the durable job store.

``list`` and ``show`` read the store; ``resume`` continues a job (paused, or whose
process died) with the flow file that defines it; ``cancel`` ends a job no live
process holds; ``input`` answers a waiting job's request (docs/human-input.md).
"""

# No ``from __future__ import annotations`` here: Typer reads the parameters'
# Annotated[...] metadata at run time, and on Python 3.9 it cannot see it in string
# annotations. So every annotation below must also be valid at run time on 3.9.
import json
import warnings
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from routilux.exceptions import (
    FlowError,
    InvalidInputError,
    JobInterrupted,
    JobNotFoundError,
    JobStateError,
    RoutiluxWarning,
    StoreError,
)

from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    IMPORTS,
    err_console,
    fail,
    jobs_app,
    load_file,
    open_cli_store,
    out_console,
)

STORE = Annotated[str, typer.Option("--store", help="The durable store's URL.")]
JOB_ID = Annotated[str, typer.Argument(help="The job's id.")]
JSON_OUT = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="seconds")


@jobs_app.command("list")
def jobs_list(
    store: STORE,
    flow: Annotated[Optional[str], typer.Option("--flow", help="Only this flow's jobs.")] = None,
    status: Annotated[
        Optional[list[str]], typer.Option("--status", help="Only jobs with this status.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many jobs.")] = 100,
    json_output: JSON_OUT = False,
) -> None:
    """List the jobs of the store, newest first."""
    opened = open_cli_store(store)
    try:
        summaries = opened.list_jobs(flow_id=flow, status=status or None, limit=limit)
    except StoreError as exc:
        fail(str(exc))
    finally:
        opened.close()
    if json_output:
        typer.echo(json.dumps([vars(s) for s in summaries], default=str))
        return
    table = Table("job", "flow", "status", "owner", "epoch", "created", "updated")
    for s in summaries:
        table.add_row(
            s.job_id,
            s.flow_id,
            s.status,
            s.owner or "-",
            str(s.epoch),
            _when(s.created_at),
            _when(s.updated_at),
        )
    out_console().print(table)
    if not summaries:
        err_console().print("no jobs")


@jobs_app.command("show")
def jobs_show(job_id: JOB_ID, store: STORE, json_output: JSON_OUT = False) -> None:
    """Show one job: status, owner, pending tasks, routine states, history."""
    opened = open_cli_store(store)
    try:
        job = opened.load(job_id)
        state = opened.load_job(job_id)
    except JobNotFoundError as exc:
        fail(str(exc), EXIT_FAILED)
    except StoreError as exc:
        fail(str(exc))
    finally:
        opened.close()
    pending = [
        {"seq": t["seq"], "kind": t["kind"], "routine": t["routine"], "slot": t["slot"]}
        for t in job.tasks
    ]
    if json_output:
        data = {
            **vars(job.summary),
            "commit_seq": job.commit_seq,
            "pending_tasks": pending,
            "routine_states": state.routine_states,
            "shared_data": state.shared_data,
            "history_records": len(state.execution_history),
        }
        typer.echo(json.dumps(data, default=str))
        return
    out = out_console()
    out.print(f"job {escape(job.job_id)} of flow {escape(job.flow_id)}: [bold]{job.status}[/]")
    out.print(
        f"owner {escape(job.owner or '-')}, epoch {job.epoch}, {job.commit_seq} commits, "
        f"created {_when(job.created_at)}, updated {_when(job.updated_at)}"
    )
    if job.waiting_for is not None:
        out.print(f"waiting for: {escape(json.dumps(job.waiting_for, default=str))}")
    out.print(f"{len(pending)} pending tasks")
    for task in pending[:20]:
        out.print(f"  #{task['seq']} {task['kind']} -> {escape(task['routine'])}.{task['slot']}")
    if len(pending) > 20:
        out.print(f"  ... and {len(pending) - 20} more")
    for rid, routine_state in sorted(state.routine_states.items()):
        out.print(f"routine {escape(rid)}: {escape(json.dumps(routine_state, default=str))}")
    out.print(f"{len(state.execution_history)} history records")


@jobs_app.command("resume")
def jobs_resume(
    job_id: JOB_ID,
    flowfile: Annotated[Path, typer.Argument(help="The flow file that defines the job's flow.")],
    store: STORE,
    imports: IMPORTS = None,
) -> None:
    """Resume a journaled job (paused, or whose process died) with its flow file."""
    file = load_file(flowfile, imports or [])
    flow = file.flow
    opened = open_cli_store(store)
    try:
        flow.use_store(opened)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RoutiluxWarning)
            job = flow.resume(job_id)
    except JobInterrupted as interrupted:
        err_console().print(
            f"[yellow]interrupted:[/] job {interrupted.job_state.job_id} is paused; "
            f"resume it with: routilux jobs resume {job_id} {flowfile} --store {store}"
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except JobNotFoundError as exc:
        fail(str(exc), EXIT_FAILED)
    except (StoreError, JobStateError) as exc:
        fail(str(exc), EXIT_FAILED)
    finally:
        flow.shutdown(wait=False)
    colour = {"completed": "green", "failed": "red"}.get(job.status, "yellow")
    out_console().print(
        f"job {job.job_id}: [bold {colour}]{job.status}[/]; "
        f"{len(job.execution_history)} history records"
    )
    raise typer.Exit(EXIT_OK if job.status == "completed" else EXIT_FAILED)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: JOB_ID,
    store: STORE,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the job).")] = "",
    stale_after: Annotated[
        float,
        typer.Option(
            "--stale-after", help="Seconds without a heartbeat after which an owner is dead."
        ),
    ] = 30.0,
) -> None:
    """Cancel a journaled job that no live process holds."""
    from routilux.flow.recovery import cancel_stored

    opened = open_cli_store(store)
    try:
        cancel_stored(opened, job_id, reason=reason, stale_after=stale_after)
    except JobNotFoundError as exc:
        fail(str(exc), EXIT_FAILED)
    except (StoreError, JobStateError) as exc:
        fail(str(exc), EXIT_FAILED)
    finally:
        opened.close()
    out_console().print(f"job {job_id}: [bold yellow]cancelled[/]")


@jobs_app.command("input")
def jobs_input(
    job_id: JOB_ID,
    routine: Annotated[str, typer.Argument(help="The routine that asked for input.")],
    slot: Annotated[str, typer.Argument(help="The slot the input goes to.")],
    store: STORE,
    data: Annotated[
        str, typer.Option("--data", help="The input, a JSON object: '{\"approved\": true}'.")
    ] = "{}",
    flowfile: Annotated[
        Optional[Path],
        typer.Option("--flow", help="The job's flow file: continue the job here at once."),
    ] = None,
    imports: IMPORTS = None,
) -> None:
    """Give a waiting job its input (checked against the request's schema).

    With --flow the job is taken over and continued here, as flow.send_input does;
    without, the input is stored and the job takes it when it is next resumed."""
    try:
        payload = json.loads(data)
    except ValueError as exc:
        fail(f"--data: not JSON: {exc}")
    if not isinstance(payload, dict):
        fail(f"--data must be a JSON object, got {type(payload).__name__}")
    opened = open_cli_store(store)
    try:
        if flowfile is None:
            _store_input(opened, job_id, routine, slot, payload)
            return
        flow = load_file(flowfile, imports or []).flow
        try:
            flow.use_store(opened)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RoutiluxWarning)
                job = flow.send_input(job_id, routine, slot, payload)
        finally:
            flow.shutdown(wait=False)
    except JobNotFoundError as exc:
        fail(str(exc), EXIT_FAILED)
    except (StoreError, JobStateError, InvalidInputError, FlowError) as exc:
        fail(str(exc), EXIT_FAILED)
    finally:
        opened.close()
    colour = {"completed": "green", "failed": "red"}.get(job.status, "yellow")
    out_console().print(f"job {job.job_id}: [bold {colour}]{job.status}[/]")
    raise typer.Exit(EXIT_FAILED if job.status == "failed" else EXIT_OK)


def _store_input(opened: Any, job_id: str, routine: str, slot: str, payload: Any) -> None:
    """Check ``payload`` against the stored request and store it as an input task."""
    from routilux.inputs import input_row

    row = input_row(opened.load(job_id), routine, slot, payload)
    seq = opened.add_input(job_id, row)
    out_console().print(
        f"job {job_id}: input #{seq} for {escape(routine)}.{escape(slot)} stored; "
        "the job takes it when it is resumed (routilux jobs resume JOB_ID FLOW_FILE ...)"
    )

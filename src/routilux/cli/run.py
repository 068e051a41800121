"""``routilux run``: one job of a flow file, with live progress, a summary and an exit
code that says how the job ended."""

# No ``from __future__ import annotations`` here: Typer reads the parameters'
# Annotated[...] metadata at run time, and on Python 3.9 it cannot see it in string
# annotations. So every annotation below must also be valid at run time on 3.9.
import json
import math
import threading
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from routilux.exceptions import JobInterrupted, JobStateError, RoutiluxWarning
from routilux.flow.diagram import to_mermaid
from routilux.flowfile import FlowFile

from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    IMPORTS,
    PLAIN_INTERVAL,
    app,
    entry_of,
    err_console,
    load_file,
    open_cli_store,
    out_console,
    parse_params,
)
from .progress import RunProgress, counts_as_data, progress_lines, progress_table


@app.command(
    epilog=(
        "Examples:\n\n"
        "  routilux run examples/flows/orders.yaml -p n=100\n\n"
        "  routilux run flow.yaml --entry split -p data='[1, 2, 3]' --json\n\n"
        "Exit codes: 0 completed; 1 failed, cancelled, paused or timed out; 2 bad usage or "
        "flow file; 130 Ctrl-C (the job is paused)."
    )
)
def run(
    flowfile: Annotated[Path, typer.Argument(help="The flow file (YAML, or JSON for .json).")],
    param: Annotated[
        Optional[list[str]],
        typer.Option("-p", "--param", help="An entry parameter key=value (JSON values)."),
    ] = None,
    entry: Annotated[
        Optional[str],
        typer.Option("--entry", help="The routine to start at (default: the file's 'entry')."),
    ] = None,
    timeout: Annotated[
        Optional[float],
        typer.Option("--timeout", help="Cancel the job after this many seconds."),
    ] = None,
    store: Annotated[
        Optional[str],
        typer.Option("--store", help="Journal the job in the durable store at this URL."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary instead of the display.")
    ] = False,
    diagram: Annotated[
        bool, typer.Option("--diagram", help="Also print the Mermaid diagram of the job.")
    ] = False,
    live: Annotated[
        Optional[bool],
        typer.Option("--live/--no-live", help="Live display (default: on a terminal)."),
    ] = None,
    imports: IMPORTS = None,
) -> None:
    """Run a job of a flow file, with live progress per routine."""
    imports = imports or []
    params = parse_params(param or [])
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise typer.BadParameter("must be a positive number of seconds", param_hint="'--timeout'")
    file = load_file(flowfile, imports)
    start = entry_of(file, entry)
    flow = file.flow
    if store is not None:
        flow.use_store(open_cli_store(store))
    limit = timeout if timeout is not None else file.timeout
    progress = RunProgress(flow)
    err = err_console()
    if not json_output:
        for message in file.warnings:
            err.print(f"[yellow]warning:[/] {escape(message)}")
    show_live = (not json_output) and (live if live is not None else err.is_terminal)
    title = f"flow {flow.flow_id} from '{start}'"
    stop = threading.Event()
    ticker: Optional[threading.Thread] = None
    if not json_output and not show_live:
        err.print(f"running {title}")
        ticker = threading.Thread(
            target=_report_plainly, args=(progress, err, stop), name="routilux-cli-progress"
        )
        ticker.daemon = True
        ticker.start()
    timed_out = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RoutiluxWarning)
            if show_live:
                with Live(
                    console=err,
                    refresh_per_second=8,
                    transient=True,
                    get_renderable=lambda: progress_table(progress.snapshot(), title),
                ):
                    job = flow.execute(start, params, hooks=[progress], timeout=limit)
            else:
                job = flow.execute(start, params, hooks=[progress], timeout=limit)
            if job.status in ("pending", "running"):
                try:
                    flow.cancel(job, f"timed out after {limit}s")
                    timed_out = True
                except JobStateError:
                    pass  # it completed (or failed) just now: no timeout after all
                job.wait_for_completion(10)
    except JobInterrupted as interrupted:
        stop.set()
        job = interrupted.job_state
        if store is not None:
            _journal_paused(flow, job)
        if json_output:
            typer.echo(
                json.dumps(_summary(file, start, job, progress, interrupted=True), default=str)
            )
        else:
            _print_summary(file, start, job, progress)
            if store is not None:
                err.print(
                    f"[yellow]interrupted:[/] job {job.job_id} is paused; resume it with: "
                    f"routilux jobs resume {job.job_id} {flowfile} --store {store}"
                )
            else:
                err.print(
                    f"[yellow]interrupted:[/] job {job.job_id} is paused "
                    "(pass --store to keep it resumable)"
                )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        stop.set()
        if ticker is not None:
            ticker.join()
        flow.shutdown(wait=False)
    if json_output:
        data = _summary(file, start, job, progress, timed_out=timed_out)
        typer.echo(json.dumps(data, default=str))
    else:
        _print_summary(file, start, job, progress, timed_out=timed_out)
        if diagram:
            out_console().print(to_mermaid(flow, job), markup=False, end="")
    raise typer.Exit(EXIT_OK if job.status == "completed" and not timed_out else EXIT_FAILED)


def _journal_paused(flow: Any, job: Any) -> None:
    """Ctrl-C paused a journaled job: make its paused state durable before exiting."""
    from routilux.flow.recovery import journal_flush

    job.wait_for_completion(10)
    journal_flush(flow, job)


def _report_plainly(progress: RunProgress, err: Console, stop: threading.Event) -> None:
    """Plain progress lines every PLAIN_INTERVAL seconds until ``stop`` is set."""
    while not stop.wait(PLAIN_INTERVAL):
        err.print(f"... {progress.elapsed():.1f}s", markup=False)
        for line in progress_lines(progress.snapshot()):
            err.print(line, markup=False)


def _summary(
    file: FlowFile,
    start: str,
    job: Any,
    progress: RunProgress,
    *,
    timed_out: bool = False,
    interrupted: bool = False,
) -> dict[str, Any]:
    counts = progress.snapshot() if interrupted else progress.settled()
    return {
        "flow_id": file.flow.flow_id,
        "job_id": job.job_id,
        "entry": start,
        "status": job.status,
        "timed_out": timed_out,
        "interrupted": interrupted,
        "elapsed": round(progress.elapsed(), 6),
        "routines": counts_as_data(counts),
        "errors": [{"routine": rid, "error": text} for rid, text in progress.errors],
        "history_records": len(job.execution_history),
        "shared_data": job.shared_data,
    }


def _print_summary(
    file: FlowFile, start: str, job: Any, progress: RunProgress, *, timed_out: bool = False
) -> None:
    out = out_console()
    counts = progress.settled() if job.status != "paused" else progress.snapshot()
    if out.is_terminal:
        out.print(progress_table(counts, f"flow {file.flow.flow_id} from '{start}'"))
    else:
        out.print(f"flow {file.flow.flow_id} from '{start}'", markup=False)
        for line in progress_lines(counts):
            out.print(line, markup=False)
    colour = {"completed": "green", "failed": "red"}.get(job.status, "yellow")
    extra = " (timed out, cancelled)" if timed_out else ""
    done = sum(c.done for c in counts)
    failed = sum(c.failed for c in counts)
    out.print(
        f"job {job.job_id}: [bold {colour}]{job.status}[/]{extra} in {progress.elapsed():.2f}s; "
        f"{done} deliveries done, {failed} failed, {len(job.execution_history)} history records"
    )
    for rid, text in progress.errors[:10]:
        out.print(f"  [red]{escape(rid)}[/]: {escape(text)}")
    if len(progress.errors) > 10:
        out.print(f"  ... and {len(progress.errors) - 10} more errors")

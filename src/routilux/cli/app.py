"""The ``routilux`` command: run, validate and draw flow files, list routines, print the
flow-file schema (Typer + Rich, the ``routilux[cli]`` extra).

Exit codes: 0 success (``run``: the job completed), 1 failure (``run``: the job ended
failed, cancelled, paused or timed out; ``validate``: a file has errors), 2 bad usage or
a file that cannot be read, 130 Ctrl-C (``run``: the job is paused).

The ``jobs`` commands and ``--store`` need the durable job store (``routilux.store``);
until it is installed they stop with exit code 2 and say so.
"""

# No ``from __future__ import annotations`` here: Typer reads the parameters'
# Annotated[...] metadata at run time, and on Python 3.9 it cannot see it in string
# annotations. So every annotation below must also be valid at run time on 3.9.
import importlib
import importlib.metadata
import json
import math
import sys
import threading
import warnings
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from routilux.exceptions import JobInterrupted, JobStateError, RoutiluxWarning
from routilux.flow.diagram import DIRECTIONS, FORMATS, DiagramError, render, to_mermaid
from routilux.flowfile import FlowFile, FlowFileError, flow_file_schema, read_flow_file
from routilux.routine import Routine
from routilux.serialization import registered_classes

from .progress import RunProgress, counts_as_data, progress_lines, progress_table

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

PLAIN_INTERVAL = 2.0
"""Seconds between progress reports when the output is not a terminal."""

app = typer.Typer(
    name="routilux",
    help="Run, check and draw Routilux flow files.",
    epilog=(
        "Examples:\n\n"
        "  routilux run examples/flows/orders.yaml -p n=100\n\n"
        "  routilux validate flows/*.yaml\n\n"
        "  routilux graph examples/flows/orders.yaml --format svg -o orders.svg\n\n"
        "  routilux routines --import myapp.routines"
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
)
jobs_app = typer.Typer(
    help="Jobs journaled in the durable job store (needs routilux.store).",
    no_args_is_help=True,
)
app.add_typer(jobs_app, name="jobs")

IMPORTS = Annotated[
    Optional[list[str]],
    typer.Option("--import", help="Allow flow files to import this module ('module:Class' names)."),
]
OUTPUT = Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file.")]


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    _err().print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _version() -> str:
    try:
        return importlib.metadata.version("routilux")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"routilux {_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """Run, check and draw Routilux flow files."""


# ---------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------


def _require_store(url: str) -> NoReturn:
    """Stop: the durable store is not available to this command yet."""
    try:
        importlib.import_module("routilux.store")
    except ImportError:
        _fail(
            f"--store {url}: this needs the durable job store (routilux.store), which this "
            "installation of routilux does not have"
        )
    _fail(f"--store {url}: the durable job store is installed but this command does not use it yet")


def _load(path: Path, imports: list[str]) -> FlowFile:
    try:
        with warnings.catch_warnings():
            # The file's warnings are in FlowFile.warnings; each command shows them.
            warnings.simplefilter("ignore", RoutiluxWarning)
            return read_flow_file(path, allow_imports=imports)
    except FlowFileError as exc:
        _fail(str(exc))


def parse_params(items: list[str]) -> dict[str, Any]:
    """``key=value`` strings as entry parameters: a value that is JSON (``100``,
    ``true``, ``[1, 2]``, ``{"a": 1}``, ``"text"``) is that value, anything else the
    string itself."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise typer.BadParameter(
                f"{item!r}: expected key=value with a name as key (n=100, data='[1, 2]')",
                param_hint="'-p'",
            )
        if key in params:
            raise typer.BadParameter(f"{key!r} is given twice", param_hint="'-p'")
        try:
            value = json.loads(raw, parse_constant=_refuse_constant)
        except ValueError:
            value = raw
        params[key] = value
    return params


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a finite number")


def _entry_of(file: FlowFile, entry: Optional[str]) -> str:
    if entry is None:
        try:
            return file.default_entry()
        except FlowFileError as exc:
            _fail(str(exc))
    routine = file.flow.routines.get(entry)
    if routine is None:
        _fail(f"--entry {entry}: no such routine (routines: {', '.join(file.flow.routines)})")
    if routine.get_slot("trigger") is None:
        _fail(f"--entry {entry}: routine {entry!r} has no 'trigger' slot, so it cannot start a job")
    return entry


# ---------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------


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
    if store is not None:
        _require_store(store)
    params = parse_params(param or [])
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise typer.BadParameter("must be a positive number of seconds", param_hint="'--timeout'")
    file = _load(flowfile, imports)
    start = _entry_of(file, entry)
    flow = file.flow
    limit = timeout if timeout is not None else file.timeout
    progress = RunProgress(flow)
    err = _err()
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
        if json_output:
            typer.echo(
                json.dumps(_summary(file, start, job, progress, interrupted=True), default=str)
            )
        else:
            _print_summary(file, start, job, progress)
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
            _out().print(to_mermaid(flow, job), markup=False, end="")
    raise typer.Exit(EXIT_OK if job.status == "completed" and not timed_out else EXIT_FAILED)


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
    out = _out()
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


# ---------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------


@app.command(
    epilog=(
        "Examples:\n\n"
        "  routilux validate examples/flows/orders.yaml\n\n"
        "  routilux validate flows/*.yaml --import myapp.routines\n\n"
        "Exit codes: 0 no errors (warnings are shown); 1 a file has errors."
    )
)
def validate(
    files: Annotated[list[Path], typer.Argument(help="Flow files to check.")],
    imports: IMPORTS = None,
) -> None:
    """Check flow files for errors and warnings.

    Format errors first, then what flow.validate() finds: cycles, routines nothing can
    reach, handler signatures that do not fit their connections.
    """
    imports = imports or []
    out = _out()
    broken = False
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RoutiluxWarning)
                file = read_flow_file(path, allow_imports=imports)
        except FlowFileError as exc:
            out.print(f"[bold red]error:[/] {escape(str(exc))}")
            broken = True
            continue
        report = file.flow.validate()
        for message in report.errors:
            out.print(f"[bold red]error:[/] {escape(str(path))}: {escape(message)}")
        found = [*file.warnings, *(f"{path}: {message}" for message in report.warnings)]
        for message in found:
            out.print(f"[yellow]warning:[/] {escape(message)}")
        if report.errors:
            broken = True
            continue
        flow = file.flow
        note = f", {len(found)} warning(s)" if found else ""
        out.print(
            f"[green]ok:[/] {escape(str(path))} ({len(flow.routines)} routines, "
            f"{len(flow.connections)} connections{note})"
        )
    raise typer.Exit(EXIT_FAILED if broken else EXIT_OK)


# ---------------------------------------------------------------------------
# graph
# ---------------------------------------------------------------------------


@app.command(
    epilog=(
        "Examples:\n\n"
        "  routilux graph examples/flows/orders.yaml\n\n"
        "  routilux graph examples/flows/orders.yaml --format dot | dot -Tpng > orders.png\n\n"
        "  routilux graph examples/flows/orders.yaml --format svg -o orders.svg\n\n"
        "SVG and PNG need the graphviz package and Graphviz's dot program."
    )
)
def graph(
    flowfile: Annotated[Path, typer.Argument(help="The flow file.")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help=f"One of {', '.join(FORMATS)}.")
    ] = "mermaid",
    output: OUTPUT = None,
    direction: Annotated[
        str, typer.Option("--direction", help="LR (left to right) or TB (top to bottom).")
    ] = "LR",
    job: Annotated[
        Optional[str],
        typer.Option("--job", help="Colour by this job of the durable store (needs --store)."),
    ] = None,
    store: Annotated[Optional[str], typer.Option("--store", help="The store's URL.")] = None,
    imports: IMPORTS = None,
) -> None:
    """Draw a flow file as Mermaid, DOT, SVG or PNG.

    Routines with their slots and events; connections with their parameter mappings.
    """
    imports = imports or []
    if fmt not in FORMATS:
        raise typer.BadParameter(
            f"{fmt!r}: choose one of {', '.join(FORMATS)}", param_hint="'--format'"
        )
    if direction not in DIRECTIONS:
        raise typer.BadParameter(
            f"unknown diagram direction {direction!r}; choose one of {', '.join(DIRECTIONS)}",
            param_hint="'--direction'",
        )
    if job is not None or store is not None:
        if job is None or store is None:
            raise typer.BadParameter("--job and --store go together", param_hint="'--job'")
        _require_store(store)
    file = _load(flowfile, imports)
    try:
        data = render(file.flow, fmt, direction=direction)
    except DiagramError as exc:
        _fail(str(exc), EXIT_FAILED)
    if output is not None:
        try:
            output.write_bytes(data)
        except OSError as exc:
            _fail(f"{output}: cannot write it: {exc.strerror or exc}", EXIT_FAILED)
        _err().print(f"wrote {escape(str(output))} ({fmt}, {len(data):,} bytes)")
        return
    if fmt in ("svg", "png") and sys.stdout.isatty():
        _fail(f"{fmt} is binary or long: write it to a file with -o FILE", EXIT_USAGE)
    sys.stdout.flush()
    binary = getattr(sys.stdout, "buffer", None)
    if binary is None:  # a text-only stdout: the text formats still work
        sys.stdout.write(data.decode("utf-8", "replace"))
    else:
        binary.write(data)
        binary.flush()


# ---------------------------------------------------------------------------
# routines, schema
# ---------------------------------------------------------------------------


def routine_catalogue() -> list[dict[str, Any]]:
    """Every registered routine class with its slots, events and config keys."""
    out = []
    for name, cls in sorted(registered_classes().items()):
        if not (isinstance(cls, type) and issubclass(cls, Routine)) or cls is Routine:
            continue
        entry: dict[str, Any] = {"class": name, "module": cls.__module__}
        try:
            routine = cls()
        except Exception as exc:  # noqa: BLE001 - a user class that cannot be built
            entry["problem"] = f"{cls.__name__}() failed: {type(exc).__name__}: {exc}"
        else:
            entry["slots"] = list(routine._slots)
            entry["events"] = list(routine._events)
            schema = cls.config_schema
            entry["config"] = sorted(schema) if schema is not None else sorted(routine.config())
        out.append(entry)
    return out


@app.command(
    epilog=(
        "Examples:\n\n  routilux routines\n\n  routilux routines --import myapp.routines --json"
    )
)
def routines(
    imports: Annotated[
        Optional[list[str]],
        typer.Option("--import", help="Import this module first (its routines appear)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List every registered routine: its slots, events and config keys."""
    for module in imports or []:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any failure of the user's module
            _fail(f"--import {module}: {type(exc).__name__}: {exc}")
    catalogue = routine_catalogue()
    if json_output:
        typer.echo(json.dumps(catalogue, indent=2))
        return
    table = Table(title="Registered routines", title_justify="left")
    for column in ("class", "slots", "events", "config keys"):
        table.add_column(column)
    for entry in catalogue:
        if "problem" in entry:
            table.add_row(entry["class"], f"[red]{escape(entry['problem'])}[/]", "", "")
            continue
        table.add_row(
            entry["class"],
            ", ".join(entry["slots"]) or "-",
            ", ".join(entry["events"]) or "-",
            ", ".join(entry["config"]) or "-",
        )
    _out().print(table)


@app.command(epilog="Example:\n\n  routilux schema -o routilux-flow.schema.json")
def schema(
    output: OUTPUT = None,
) -> None:
    """Print the JSON Schema of flow files (for editors and checks)."""
    text = json.dumps(flow_file_schema(), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(f"{output}: cannot write it: {exc.strerror or exc}", EXIT_FAILED)


# ---------------------------------------------------------------------------
# jobs (the durable store)
# ---------------------------------------------------------------------------

STORE = Annotated[str, typer.Option("--store", help="The durable store's URL.")]
JOB_ID = Annotated[str, typer.Argument(help="The job's id.")]


@jobs_app.command("list")
def jobs_list(store: STORE) -> None:
    """List the jobs of the store."""
    _require_store(store)


@jobs_app.command("show")
def jobs_show(job_id: JOB_ID, store: STORE) -> None:
    """Show one job: status, routines, history."""
    _require_store(store)


@jobs_app.command("resume")
def jobs_resume(job_id: JOB_ID, store: STORE) -> None:
    """Resume a paused job."""
    _require_store(store)


@jobs_app.command("cancel")
def jobs_cancel(job_id: JOB_ID, store: STORE) -> None:
    """Cancel a job."""
    _require_store(store)


@jobs_app.command("input")
def jobs_input(
    job_id: JOB_ID,
    store: STORE,
    param: Annotated[
        Optional[list[str]], typer.Option("-p", "--param", help="key=value. Repeatable.")
    ] = None,
) -> None:
    """Give a waiting job its input."""
    _require_store(store)


def main() -> None:
    """The console-script entry point."""
    app(prog_name="routilux")

"""The commands that look at flow files without running them: ``validate``, ``graph``,
``routines`` and ``schema``."""

# No ``from __future__ import annotations`` here: Typer reads the parameters'
# Annotated[...] metadata at run time, and on Python 3.9 it cannot see it in string
# annotations. So every annotation below must also be valid at run time on 3.9.
import importlib
import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from routilux.exceptions import RoutiluxWarning
from routilux.flow.diagram import DIRECTIONS, FORMATS, DiagramError, render
from routilux.flowfile import FlowFileError, flow_file_schema, read_flow_file
from routilux.routine import Routine
from routilux.serialization import registered_classes

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    IMPORTS,
    OUTPUT,
    app,
    err_console,
    fail,
    load_file,
    open_cli_store,
    out_console,
)


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
    out = out_console()
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
    job_state = None
    if job is not None or store is not None:
        if job is None or store is None:
            raise typer.BadParameter("--job and --store go together", param_hint="'--job'")
        job_state = _stored_job(store, job)
    file = load_file(flowfile, imports)
    try:
        data = render(file.flow, fmt, job_state, direction=direction)
    except DiagramError as exc:
        fail(str(exc), EXIT_FAILED)
    if output is not None:
        try:
            output.write_bytes(data)
        except OSError as exc:
            fail(f"{output}: cannot write it: {exc.strerror or exc}", EXIT_FAILED)
        err_console().print(f"wrote {escape(str(output))} ({fmt}, {len(data):,} bytes)")
        return
    if fmt in ("svg", "png") and sys.stdout.isatty():
        fail(f"{fmt} is binary or long: write it to a file with -o FILE", EXIT_USAGE)
    sys.stdout.flush()
    binary = getattr(sys.stdout, "buffer", None)
    if binary is None:  # a text-only stdout: the text formats still work
        sys.stdout.write(data.decode("utf-8", "replace"))
    else:
        binary.write(data)
        binary.flush()


def _stored_job(url: str, job_id: str) -> Any:
    """The JobState of ``job_id`` in the store at ``url`` (exit 2 if it is not there)."""
    from routilux.exceptions import StoreError

    opened = open_cli_store(url)
    try:
        return opened.load_job(job_id)
    except StoreError as exc:
        fail(f"--job {job_id}: {exc}")
    finally:
        opened.close()


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
            fail(f"--import {module}: {type(exc).__name__}: {exc}")
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
    out_console().print(table)


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
        fail(f"{output}: cannot write it: {exc.strerror or exc}", EXIT_FAILED)

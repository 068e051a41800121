"""What every ``routilux`` command shares: the Typer apps, the exit codes, the consoles,
loading a flow file, entry parameters, and the durable-store seam.

Commands live in :mod:`.run`, :mod:`.inspection` and :mod:`.jobs`, which register
themselves on :data:`app` (and :data:`jobs_app`) when :mod:`.app` imports them.
"""

# No ``from __future__ import annotations`` here: Typer reads the parameters'
# Annotated[...] metadata at run time, and on Python 3.9 it cannot see it in string
# annotations. So every annotation below must also be valid at run time on 3.9.
import importlib
import importlib.metadata
import json
import warnings
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

from routilux.exceptions import RoutiluxWarning
from routilux.flowfile import FlowFile, FlowFileError, read_flow_file

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


def out_console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    err_console().print(f"[bold red]error:[/] {escape(message)}")
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


def require_store(url: str) -> NoReturn:
    """Stop: this command cannot use the durable store yet."""
    try:
        importlib.import_module("routilux.store")
    except ImportError:
        fail(
            f"--store {url}: this needs the durable job store (routilux.store), which this "
            "installation of routilux does not have"
        )
    fail(f"--store {url}: the durable job store is installed but this command does not use it yet")


def open_cli_store(url: str) -> Any:
    """The store ``url`` names (a ``routilux.store.Store``); a bad URL or an unreadable
    store stops with exit code 2, naming it."""
    from routilux.exceptions import StoreError
    from routilux.store import open_store

    try:
        return open_store(url)
    except StoreError as exc:
        fail(f"--store {url}: {exc}")


def load_file(path: Path, imports: list[str]) -> FlowFile:
    try:
        with warnings.catch_warnings():
            # The file's warnings are in FlowFile.warnings; each command shows them.
            warnings.simplefilter("ignore", RoutiluxWarning)
            return read_flow_file(path, allow_imports=imports)
    except FlowFileError as exc:
        fail(str(exc))


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


def entry_of(file: FlowFile, entry: Optional[str]) -> str:
    if entry is None:
        try:
            return file.default_entry()
        except FlowFileError as exc:
            fail(str(exc))
    routine = file.flow.routines.get(entry)
    if routine is None:
        fail(f"--entry {entry}: no such routine (routines: {', '.join(file.flow.routines)})")
    if routine.get_slot("trigger") is None:
        fail(f"--entry {entry}: routine {entry!r} has no 'trigger' slot, so it cannot start a job")
    return entry

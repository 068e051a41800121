"""``routilux ui``: the local web UI over a job store (the ``routilux[ui]`` extra).

Serves http://127.0.0.1:8321 by default. ``--flow FILE`` registers flows (so their
jobs' diagrams show, their paused jobs resume, their requests for input are answered
and new jobs start from the page); ``--import`` is the flow files' import allow-list,
as for ``routilux run``. Another address than a loopback one needs a token
(``--token`` or the environment variable ``ROUTILUX_UI_TOKEN``).
"""

# No ``from __future__ import annotations`` here: Typer reads the parameters'
# Annotated[...] metadata at run time, and on Python 3.9 it cannot see it in string
# annotations. So every annotation below must also be valid at run time on 3.9.
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ._common import IMPORTS, app, fail, load_file, open_cli_store, out_console

DEFAULT_PORT = 8321


@app.command(
    epilog=(
        "Examples:\n\n"
        "  routilux ui --store sqlite:///jobs.db\n\n"
        "  routilux ui --store sqlite:///jobs.db --flow flows/orders.yaml\n\n"
        "  ROUTILUX_UI_TOKEN=s3cret routilux ui --store postgresql://... --host 0.0.0.0"
    )
)
def ui(
    store: Annotated[str, typer.Option("--store", help="The durable store's URL.")],
    flow: Annotated[
        Optional[list[Path]],
        typer.Option("--flow", help="Register the flow of this flow file (repeatable)."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="The address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="The port to serve on.")] = DEFAULT_PORT,
    token: Annotated[
        Optional[str],
        typer.Option(
            "--token",
            envvar="ROUTILUX_UI_TOKEN",
            help="Require this token on every request (needed for a non-loopback --host).",
            show_envvar=True,
        ),
    ] = None,
    imports: IMPORTS = None,
) -> None:
    """Serve the web UI: watch, inspect and answer the store's jobs in the browser."""
    try:
        from routilux.ui import UIConfigError, check_bind, make_server
    except ImportError as exc:
        fail(str(exc))
    try:
        check_bind(host, token)
    except UIConfigError as exc:
        fail(str(exc))
    if not 0 <= port <= 65535:
        fail(f"--port {port}: must be from 0 to 65535")
    flows = [load_file(path, imports or []).flow for path in flow or []]
    opened = open_cli_store(store)
    try:
        server = make_server(opened, flows, host=host, port=port, token=token)
    except UIConfigError as exc:
        fail(str(exc))
    shown = f"[{host}]" if ":" in host else host
    out_console().print(
        f"Routilux web UI on [bold]http://{escape(shown)}:{port}/[/] (store "
        f"{escape(opened.location)}); Ctrl-C stops it"
        + (" - open /?token=<token> once to sign in" if token else "")
    )
    server.run()

"""The local web UI (the ``routilux[ui]`` extra: Starlette and Uvicorn): watch,
inspect and answer the jobs of a job store in the browser.

``routilux ui --store sqlite:///jobs.db`` (or :func:`serve`) serves
http://127.0.0.1:8321: the jobs page (every job of the store, filtered by flow, status
and time, updated live), a job's page (its graph with live counts, timeline, routine
states, shared data and log, outputs, errors with tracebacks, pause/resume/cancel and
a form per open request for input) and the flows page (registered flows, their
diagrams, a form that starts a job). :func:`create_app` gives the ASGI app itself.

The modules: :mod:`.app` (routes, API, streams, server), :mod:`.views` (the JSON
made from the store), :mod:`.actions` (what the buttons do, across processes),
:mod:`.watch` (the one watcher of the store behind every stream), :mod:`.security`
(token, host and same-origin checks, headers), :mod:`.pages` (HTML shells, the fixed
static files), :mod:`.openapi` (the API's description). ``import routilux`` never
imports this package.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        f"routilux.ui needs Starlette and Uvicorn ({exc.name} is missing): "
        "pip install 'routilux[ui]'"
    ) from exc

from .app import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    TOKEN_ENV,
    UIConfigError,
    check_bind,
    create_app,
    make_server,
    serve,
)

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "TOKEN_ENV",
    "UIConfigError",
    "check_bind",
    "create_app",
    "make_server",
    "serve",
]

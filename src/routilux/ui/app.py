"""The web UI's ASGI app (Starlette) and its server (Uvicorn): routes, the JSON API,
the live streams, the pages and :func:`serve`.

Routes (the API is described at ``/api/openapi.json``)::

    GET  /  /jobs/{id}  /flows  /flows/{flow_id}          pages
    GET  /static/{name}                                   fixed set (routilux.ui.pages)
    GET  /api/jobs?flow_id=&status=&since=&until=&limit=&offset=
    GET  /api/jobs/{id}                                   summary + full view
    POST /api/jobs/{id}/pause|resume|cancel|input         (routilux.ui.actions)
    GET  /api/flows  /api/flows/{flow_id}
    POST /api/flows/{flow_id}/jobs                        start a job
    GET  /api/events  /api/jobs/{id}/events               Server-Sent Events

**Live updates.** Both streams are Server-Sent Events with ``id:`` lines. The jobs
feed's ids are the watcher's sequence (:mod:`routilux.ui.watch`); a job's ids are its
commit seqs: one ``change`` event per committed delta (the delivery with its routine
id, status, outputs, history, shared keys, requests for input). A client reconnecting
with ``Last-Event-ID`` gets what it missed: the feed from the watcher's buffer, a job's
deltas after that seq from the store -- and when they are gone (folded into a snapshot,
or the id is unknown) a ``reset`` event carrying the full current view. A first
connection starts with a ``reset``. ``status`` events without an id report a change of
the job's row that no delta carries. A comment line every :data:`KEEPALIVE` seconds
keeps proxies from closing an idle stream. Streams end when the client goes and when
the server shuts down (:meth:`StoreWatcher.close`, called first by :func:`serve`'s
server).

**Input.** Bodies are JSON objects, at most ``max_body`` bytes (default 1 MiB, checked
while reading: 413); bad JSON is 400; every parameter is range-checked and a bad one
is named (400/422). Path parameters are names looked up in the store or the registered
flows; no endpoint reads a path that a request names.

Security (token, loopback hosts, same-origin, headers) is :mod:`routilux.ui.security`.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any, Callable, Optional, Union

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from routilux.exceptions import JobNotFoundError, StoreError
from routilux.flow.flow import Flow
from routilux.store import JournaledJob, Store, open_store

from . import actions, pages
from .actions import ApiError
from .openapi import openapi_document
from .security import LOOPBACK_NAMES, Guard
from .views import STATUSES, delta_event, flow_view, job_view, summary_view, task_routines_of
from .watch import StoreWatcher

#: The address and port :func:`serve` uses by default.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8321
#: The environment variable the token may come from.
TOKEN_ENV = "ROUTILUX_UI_TOKEN"
#: Largest request body, bytes.
MAX_BODY = 1024 * 1024
#: Seconds between keep-alive comments on an idle stream.
KEEPALIVE = 15.0
#: The most jobs one page of /api/jobs returns.
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000
_MAX_ID = 200


class UIConfigError(ValueError):
    """The web UI cannot start as asked (a public address without a token, a flow
    journaled in another store, two flows with one id)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address to bind) is this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: Optional[str]) -> None:
    """Refuse to serve a non-loopback address without a token."""
    if not is_loopback(host) and not token:
        raise UIConfigError(
            f"refusing to serve on {host!r} without a token: anyone who can reach that "
            f"address could control the jobs. Pass --token (or set {TOKEN_ENV}), or bind "
            "127.0.0.1"
        )


class _Context:
    """What every endpoint reads: the store, the flows by id, the watcher."""

    def __init__(self, store: Store, flows: dict[str, Flow], watcher: StoreWatcher, max_body: int):
        self.store = store
        self.flows = flows
        self.watcher = watcher
        self.max_body = max_body


def _register_flows(store: Store, flows: Iterable[Flow]) -> dict[str, Flow]:
    by_id: dict[str, Flow] = {}
    for flow in flows:
        if not isinstance(flow, Flow):
            raise UIConfigError(f"flows must be Flow objects, got {type(flow).__name__}")
        if flow.flow_id in by_id:
            raise UIConfigError(f"two flows with the id {flow.flow_id!r}")
        current = flow.store
        if current is not store:
            if current is not None and current.location != store.location:
                raise UIConfigError(
                    f"flow {flow.flow_id!r} journals its jobs in {current.location}, not in "
                    f"the UI's store {store.location}"
                )
            flow.use_store(store)
        by_id[flow.flow_id] = flow
    return by_id


def create_app(
    store: Union[Store, str, os.PathLike[str]],
    flows: Iterable[Flow] = (),
    *,
    token: Optional[str] = None,
    max_body: int = MAX_BODY,
    watch_interval: float = 0.25,
) -> Starlette:
    """The web UI's ASGI app over ``store`` (a Store or a URL) and the registered
    ``flows`` (journaled in that store: a flow without a store is given it).

    ``token``: required on every request when given (see :mod:`routilux.ui.security`).
    ``max_body``: the largest request body in bytes. ``watch_interval``: seconds between
    two looks of the watcher at the store. ``app.state.watcher`` is the shared
    :class:`~routilux.ui.watch.StoreWatcher`; close it to end every stream.
    """
    opened = store if isinstance(store, Store) else open_store(store)
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise UIConfigError("the token must be a non-empty string")
    watcher = StoreWatcher(opened, interval=watch_interval)
    ctx = _Context(opened, _register_flows(opened, flows), watcher, max_body)
    routes = [
        Route("/", _endpoint(ctx, _jobs_page), methods=["GET"]),
        Route("/jobs/{job_id}", _endpoint(ctx, _job_page), methods=["GET"]),
        Route("/flows", _endpoint(ctx, _flows_page), methods=["GET"]),
        Route("/flows/{flow_id}", _endpoint(ctx, _flow_page), methods=["GET"]),
        Route("/static/{name:path}", _endpoint(ctx, _static), methods=["GET"]),
        Route("/api/openapi.json", _endpoint(ctx, _openapi), methods=["GET"]),
        Route("/api/jobs", _endpoint(ctx, _list_jobs), methods=["GET"]),
        Route("/api/jobs/{job_id}", _endpoint(ctx, _get_job), methods=["GET"]),
        Route("/api/jobs/{job_id}/events", _endpoint(ctx, _job_events), methods=["GET"]),
        Route("/api/jobs/{job_id}/pause", _endpoint(ctx, _action("pause")), methods=["POST"]),
        Route("/api/jobs/{job_id}/resume", _endpoint(ctx, _action("resume")), methods=["POST"]),
        Route("/api/jobs/{job_id}/cancel", _endpoint(ctx, _action("cancel")), methods=["POST"]),
        Route("/api/jobs/{job_id}/input", _endpoint(ctx, _input), methods=["POST"]),
        Route("/api/events", _endpoint(ctx, _jobs_events), methods=["GET"]),
        Route("/api/flows", _endpoint(ctx, _list_flows), methods=["GET"]),
        Route("/api/flows/{flow_id}", _endpoint(ctx, _get_flow), methods=["GET"]),
        Route("/api/flows/{flow_id}/jobs", _endpoint(ctx, _start_job), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.watcher = watcher
    app.state.store = opened
    app.state.flows = ctx.flows
    app.add_middleware(_GuardMiddleware, token=token)
    return app


class _GuardMiddleware(Guard):
    """:class:`~routilux.ui.security.Guard` in Starlette's middleware form."""

    def __init__(self, app: Any, token: Optional[str] = None) -> None:
        super().__init__(app, token)


Handler = Callable[[_Context, Request], Any]


def _endpoint(ctx: _Context, handler: Handler) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            result: Response = await handler(ctx, request)
            return result
        except ApiError as exc:
            return JSONResponse({"error": exc.message, **exc.extra}, status_code=exc.status)
        except JobNotFoundError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except StoreError as exc:
            return JSONResponse({"error": f"store: {exc}"}, status_code=503)

    return endpoint


# ---------------------------------------------------------------------------
# Parameters and bodies
# ---------------------------------------------------------------------------


def _path_id(request: Request, name: str) -> str:
    value = str(request.path_params[name])
    if not value or len(value) > _MAX_ID or not value.isprintable():
        raise ApiError(400, f"{name}: not a valid id")
    return value


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name!r} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, f"query parameter {name!r} must be from {low} to {high}, got {value}")
    return value


def _time_param(request: Request, name: str) -> Optional[float]:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or value > 1e11:
        raise ApiError(400, f"query parameter {name!r} must be a Unix time in seconds, got {raw!r}")
    return value


async def _read_json(ctx: _Context, request: Request) -> Any:
    """The request's JSON body, refused (413) as soon as it passes ``max_body``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad Content-Length header")
        if int(declared) > ctx.max_body:
            raise ApiError(413, f"the body is larger than {ctx.max_body} bytes")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(400, "the body must be JSON (Content-Type: application/json)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > ctx.max_body:
            raise ApiError(413, f"the body is larger than {ctx.max_body} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


# ---------------------------------------------------------------------------
# Pages and static files
# ---------------------------------------------------------------------------


async def _jobs_page(ctx: _Context, request: Request) -> Response:
    return HTMLResponse(pages.jobs_page())


async def _job_page(ctx: _Context, request: Request) -> Response:
    job_id = _path_id(request, "job_id")
    return HTMLResponse(pages.job_page(job_id))


async def _flows_page(ctx: _Context, request: Request) -> Response:
    return HTMLResponse(pages.flows_page())


async def _flow_page(ctx: _Context, request: Request) -> Response:
    flow_id = _path_id(request, "flow_id")
    if flow_id not in ctx.flows:
        return HTMLResponse(f"<p>No flow {flow_id!r} is registered.</p>", status_code=404)
    return HTMLResponse(pages.flows_page(flow_id))


async def _static(ctx: _Context, request: Request) -> Response:
    name = str(request.path_params["name"])
    path = pages.static_path(name)  # a name of a fixed table, never a path
    if path is None:
        raise ApiError(404, f"no static file {name!r}")
    return FileResponse(path, media_type=pages.STATIC_FILES[name][1])


async def _openapi(ctx: _Context, request: Request) -> Response:
    return _json(openapi_document())


# ---------------------------------------------------------------------------
# The JSON API
# ---------------------------------------------------------------------------


async def _list_jobs(ctx: _Context, request: Request) -> Response:
    known = {"flow_id", "status", "since", "until", "limit", "offset"}
    for key in request.query_params:
        if key not in known:
            raise ApiError(
                400, f"unknown query parameter {key!r} (known: {', '.join(sorted(known))})"
            )
    flow_id = request.query_params.get("flow_id") or None
    if flow_id is not None and (len(flow_id) > _MAX_ID or not flow_id.isprintable()):
        raise ApiError(400, "query parameter 'flow_id' is not a valid flow id")
    statuses = None
    raw_status = request.query_params.get("status")
    if raw_status:
        statuses = [part.strip() for part in raw_status.split(",") if part.strip()]
        bad = [part for part in statuses if part not in STATUSES]
        if bad or not statuses:
            raise ApiError(
                400,
                f"query parameter 'status': {bad[0] if bad else raw_status!r} is not a status "
                f"(statuses: {', '.join(STATUSES)})",
            )
    since = _time_param(request, "since")
    until = _time_param(request, "until")
    if since is not None and until is not None and until < since:
        raise ApiError(400, "query parameter 'until' is before 'since'")
    limit = _int_param(request, "limit", 100, 1, MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 0, MAX_OFFSET)

    def find() -> list[dict[str, Any]]:
        if since is None and until is None:
            rows = ctx.store.list_jobs(flow_id, statuses, limit=limit, offset=offset)
            return [summary_view(row) for row in rows]
        # Newest first: read pages until the jobs are older than `since`.
        found: list[dict[str, Any]] = []
        skipped = 0
        page = 0
        while len(found) < limit:
            rows = ctx.store.list_jobs(flow_id, statuses, limit=500, offset=page * 500)
            page += 1
            for row in rows:
                if until is not None and row.created_at >= until:
                    continue
                if since is not None and row.created_at < since:
                    return found
                if skipped < offset:
                    skipped += 1
                    continue
                found.append(summary_view(row))
                if len(found) >= limit:
                    return found
            if len(rows) < 500:
                return found
        return found

    jobs = await run_in_threadpool(find)
    return _json({"jobs": jobs, "limit": limit, "offset": offset})


async def _get_job(ctx: _Context, request: Request) -> Response:
    job_id = _path_id(request, "job_id")
    job = await run_in_threadpool(actions.load_job, ctx.store, job_id)
    view = await run_in_threadpool(job_view, job, ctx.flows.get(job.flow_id))
    return _json(view)


def _action(name: str) -> Handler:
    do = {"pause": actions.pause, "resume": actions.resume, "cancel": actions.cancel}[name]

    async def handler(ctx: _Context, request: Request) -> Response:
        job_id = _path_id(request, "job_id")
        status, body = await run_in_threadpool(do, ctx.store, ctx.flows, job_id)
        ctx.watcher.poke()
        return _json(body, status)

    return handler


async def _input(ctx: _Context, request: Request) -> Response:
    job_id = _path_id(request, "job_id")
    body = await _read_json(ctx, request)
    status, result = await run_in_threadpool(actions.send_input, ctx.store, ctx.flows, job_id, body)
    ctx.watcher.poke()
    return _json(result, status)


async def _list_flows(ctx: _Context, request: Request) -> Response:
    return _json({"flows": [flow_view(flow) for flow in ctx.flows.values()]})


async def _get_flow(ctx: _Context, request: Request) -> Response:
    flow_id = _path_id(request, "flow_id")
    flow = ctx.flows.get(flow_id)
    if flow is None:
        raise ApiError(404, f"no flow {flow_id!r} is registered")
    return _json(flow_view(flow, detail=True))


async def _start_job(ctx: _Context, request: Request) -> Response:
    flow_id = _path_id(request, "flow_id")
    if flow_id not in ctx.flows:
        raise ApiError(404, f"no flow {flow_id!r} is registered")
    body = await _read_json(ctx, request)
    status, result = await run_in_threadpool(actions.start_job, ctx.flows, flow_id, body)
    ctx.watcher.poke()
    return _json(result, status)


# ---------------------------------------------------------------------------
# Server-Sent Events
# ---------------------------------------------------------------------------


def sse(name: str, data: Any, event_id: Optional[int] = None) -> str:
    """One event in the text/event-stream format (the JSON is one line)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _last_event_id(request: Request) -> Optional[int]:
    raw = request.headers.get("last-event-id")
    if raw is None:
        return None
    raw = raw.strip()
    return int(raw) if raw.isdigit() and len(raw) < 20 else -1


def _stream(body: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _jobs_events(ctx: _Context, request: Request) -> Response:
    watcher = ctx.watcher
    last = _last_event_id(request)
    subscriber = watcher.subscribe(None)

    async def body() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            missed = watcher.feed_after(last) if last is not None and last >= 0 else None
            if missed is None:
                cursor = watcher.last_seq
                # The page reloads its list: whatever happened before is in it.
                yield sse("reset", {"reason": "start" if last is None else "gap"}, cursor)
            else:
                cursor = last if last is not None else watcher.last_seq
                for seq, name, data in missed:
                    yield sse(name, data, seq)
                    cursor = seq
            while not watcher.closed:
                woke = await subscriber.wait(KEEPALIVE)
                if watcher.closed or await request.is_disconnected():
                    return
                if not woke:
                    yield ": keepalive\n\n"
                    continue
                items = watcher.feed_after(cursor)
                if items is None:  # more happened than the buffer holds
                    cursor = watcher.last_seq
                    yield sse("reset", {"reason": "gap"}, cursor)
                    continue
                for seq, name, data in items:
                    yield sse(name, data, seq)
                    cursor = seq
        finally:
            watcher.unsubscribe(subscriber)

    return _stream(body())


async def _job_events(ctx: _Context, request: Request) -> Response:
    job_id = _path_id(request, "job_id")
    watcher = ctx.watcher
    last = _last_event_id(request)
    subscriber = watcher.subscribe(job_id)
    try:
        job = await run_in_threadpool(actions.load_job, ctx.store, job_id)
    except BaseException:
        watcher.unsubscribe(subscriber)
        raise

    def reset(job: JournaledJob) -> str:
        return sse("reset", job_view(job, ctx.flows.get(job.flow_id)), job.commit_seq)

    def status_of(job: JournaledJob) -> tuple[str, int]:
        return job.status, len(job.waiting_for or [])

    def catch_up(job: JournaledJob, cursor: int, routines: dict[int, tuple[str, str]]) -> str:
        """The events for the commits after ``cursor`` (a reset when they are gone)."""
        if cursor < job.snapshot_seq or cursor > job.commit_seq:
            routines.clear()
            routines.update(task_routines_of(job))
            return reset(job)
        out = []
        for delta in job.deltas:
            if delta["seq"] > cursor:
                out.append(sse("change", delta_event(delta, routines), delta["seq"]))
        return "".join(out)

    async def body() -> AsyncIterator[str]:
        nonlocal job
        try:
            yield "retry: 2000\n\n"
            routines: dict[int, tuple[str, str]] = {}
            if last is None or last < 0:
                routines.update(task_routines_of(job))
                yield await run_in_threadpool(reset, job)
            else:
                # Tasks added up to `last` name the deliveries of the deltas after it.
                routines.update(task_routines_of(job))
                yield await run_in_threadpool(catch_up, job, last, routines)
                yield sse("status", summary_view(job.summary))
            cursor = job.commit_seq
            shown = status_of(job)
            while not watcher.closed:
                woke = await subscriber.wait(KEEPALIVE)
                if watcher.closed or await request.is_disconnected():
                    return
                if not woke:
                    yield ": keepalive\n\n"
                    continue
                try:
                    job = await run_in_threadpool(watcher.load, job_id)
                except JobNotFoundError:
                    yield sse("gone", {"job_id": job_id})
                    return
                if job.commit_seq != cursor:
                    yield await run_in_threadpool(catch_up, job, cursor, routines)
                    cursor = job.commit_seq
                    shown = status_of(job)
                elif status_of(job) != shown:
                    shown = status_of(job)
                    yield sse("status", summary_view(job.summary))
        finally:
            watcher.unsubscribe(subscriber)

    return _stream(body())


# ---------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------


class UIServer(uvicorn.Server):
    """Uvicorn's server that ends the UI's streams first when it shuts down (open
    streams would otherwise hold the shutdown until its timeout)."""

    def __init__(self, config: uvicorn.Config, watcher: StoreWatcher) -> None:
        super().__init__(config)
        self.watcher = watcher

    async def shutdown(self, sockets: Optional[list[Any]] = None) -> None:
        self.watcher.close()
        await super().shutdown(sockets)


def make_server(
    store: Union[Store, str, os.PathLike[str]],
    flows: Iterable[Flow] = (),
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: Optional[str] = None,
    **options: Any,
) -> UIServer:
    """The server :func:`serve` runs (not started): checks the address and token."""
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise UIConfigError(f"port must be from 0 to 65535, got {port!r}")
    app = create_app(store, flows, token=token, **options)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    return UIServer(config, app.state.watcher)


def serve(
    store: Union[Store, str, os.PathLike[str]],
    flows: Iterable[Flow] = (),
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: Optional[str] = None,
) -> None:
    """Serve the web UI until interrupted (Ctrl-C). ``token`` defaults to the
    environment variable :data:`TOKEN_ENV`; a non-loopback ``host`` needs one."""
    make_server(store, flows, host, port, token).run()

"""OpenTelemetry traces and metrics for every job (the ``routilux[otel]`` extra).

This module owns :class:`RoutiluxInstrumentor`, which follows the
opentelemetry-instrumentation convention (a singleton with ``instrument()`` /
``uninstrument()``, optional ``tracer_provider`` and ``meter_provider``), and the
lifecycle hook it gives every run (:class:`OtelHooks`).

``instrument()`` wraps the public entry points of :class:`~routilux.Flow`
(``execute``, ``execute_async``, ``resume``; ``stream``/``astream`` go through
them) so that each run gets the hook after its flow's hooks and before the
call's own; ``uninstrument()`` puts the originals back.  Nothing else changes:
with the instrumentor off, or the extra not installed, a job pays nothing
(``import routilux`` never imports this module).

Traces: a ``routilux.job`` span per run (child of the caller's current span),
a ``routilux.delivery`` child span per delivery, that is per attempt of a retry,
current while its handler runs (a handler's own spans nest under it).  A run
links to the span of the job's previous run: a resume through the W3C trace
context kept in the job's latest pause point, a recovery from the store
(``recover()``, ``resume(job_id)``) through the one every run keeps in its entry
routine's state; both are saved with the job, so the link survives save/load,
another process and a SIGKILL.  :class:`TracePropagator` carries the context
to a Celery worker.  Metrics: see :data:`METRICS`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.metadata
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import Observation
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("routilux.otel needs OpenTelemetry: pip install 'routilux[otel]'") from exc

from routilux.flow import Flow
from routilux.hooks import Delivery, JobHooks

if TYPE_CHECKING:
    from routilux.job_state import ExecutionRecord, JobState

__all__ = ["METRICS", "OtelHooks", "RoutiluxInstrumentor", "TracePropagator"]

logger = logging.getLogger("routilux.otel")

try:
    _VERSION: Optional[str] = importlib.metadata.version("routilux")
except importlib.metadata.PackageNotFoundError:  # run from a source tree
    _VERSION = None

#: The instruments: name -> (kind, unit, description).  The counts and the
#: gauges are observable: a delivery adds to plain integers and the SDK reads
#: them when it collects, so only the duration histogram is recorded per delivery.
METRICS: dict[str, tuple[str, str, str]] = {
    "routilux.deliveries": (
        "observable_counter",
        "{delivery}",
        "Deliveries (handler calls) by flow, routine and outcome (ok, error)",
    ),
    "routilux.delivery.duration": ("histogram", "s", "Duration of a delivery, by the same"),
    "routilux.retries": (
        "observable_counter",
        "{delivery}",
        "Deliveries that were retries (attempt > 1), by flow and routine",
    ),
    "routilux.jobs": ("counter", "{run}", "Runs of jobs by flow and the status they ended with"),
    "routilux.queue.depth": (
        "observable_gauge",
        "{delivery}",
        "Deliveries queued or scheduled and not started yet, by flow",
    ),
    "routilux.deliveries.active": (
        "observable_gauge",
        "{delivery}",
        "Deliveries running now, by flow",
    ),
}

# Spans of paused runs kept for the link from their resume (oldest forgotten first).
_PREVIOUS_RUNS_KEPT = 10_000

# ``_start_adopted`` runs the jobs ``recover()`` takes over from the store (and
# those ``resume(job_id)`` takes over, which already carry the hook).
_ENTRY_POINTS = ("execute", "execute_async", "resume", "_start_adopted")


class _Counts:
    """The integers behind the observable instruments, under one lock (the
    concurrent strategy counts from several threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deliveries: dict[tuple[str, str, str], int] = {}  # (flow, routine, outcome)
        self.retries: dict[tuple[str, str], int] = {}  # (flow, routine)
        self.queue: dict[str, int] = {}  # flow -> queued or scheduled
        self.active: dict[str, int] = {}  # flow -> running

    def observe(self, table: str) -> Callable[[Any], list[Observation]]:
        names = {
            "deliveries": ("routilux.flow_id", "routilux.routine_id", "routilux.outcome"),
            "retries": ("routilux.flow_id", "routilux.routine_id"),
            "queue": ("routilux.flow_id",),
            "active": ("routilux.flow_id",),
        }[table]

        def callback(_options: Any) -> list[Observation]:
            with self.lock:
                items = list(getattr(self, table).items())
            return [
                Observation(value, dict(zip(names, key if isinstance(key, tuple) else (key,))))
                for key, value in items
            ]

        return callback


class _Instruments:
    """The tracer, the instruments and the counts for one pair of providers
    (kept across ``uninstrument()``/``instrument()``: OpenTelemetry has no way to
    remove an instrument, and cumulative counts must go on from where they were)."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        self.tracer = trace.get_tracer("routilux", _VERSION, tracer_provider)
        meter = metrics.get_meter("routilux", _VERSION or "", meter_provider)
        self.counts = counts = _Counts()
        made: dict[str, Any] = {}
        for name, (kind, unit, description) in METRICS.items():
            create = getattr(meter, f"create_{kind}")
            if kind.startswith("observable"):
                table = {
                    "routilux.deliveries": "deliveries",
                    "routilux.retries": "retries",
                    "routilux.queue.depth": "queue",
                    "routilux.deliveries.active": "active",
                }[name]
                made[name] = create(
                    name, callbacks=[counts.observe(table)], unit=unit, description=description
                )
            else:
                made[name] = create(name, unit=unit, description=description)
        self.duration = made["routilux.delivery.duration"]
        self.jobs = made["routilux.jobs"]
        # The spans of paused runs, for their resume's link: job_id -> SpanContext.
        self.previous: OrderedDict[str, Any] = OrderedDict()
        self.previous_lock = threading.Lock()
        # Attribute dicts of the duration histogram, made once per key.
        self._attributes: dict[tuple[str, str, str], dict[str, str]] = {}

    def attributes(self, key: tuple[str, str, str]) -> dict[str, str]:
        found = self._attributes.get(key)
        if found is None:
            found = {
                "routilux.flow_id": key[0],
                "routilux.routine_id": key[1],
                "routilux.outcome": key[2],
            }
            self._attributes[key] = found
        return found


_instruments: dict[tuple[int, int], tuple[Any, Any, _Instruments]] = {}


def _instruments_for(tracer_provider: Any, meter_provider: Any) -> _Instruments:
    tracer_provider = tracer_provider or trace.get_tracer_provider()
    meter_provider = meter_provider or metrics.get_meter_provider()
    key = (id(tracer_provider), id(meter_provider))
    found = _instruments.get(key)
    if found is None:
        # The providers are kept with their instruments, so their ids stay theirs.
        found = (tracer_provider, meter_provider, _Instruments(tracer_provider, meter_provider))
        _instruments[key] = found
    return found[2]


def _add(table: dict[Any, int], key: Any, amount: int) -> None:
    table[key] = table.get(key, 0) + amount  # the caller holds the counts' lock


class _JobSpan:
    """A run's span, its context (the parent of its deliveries) and its queue count."""

    __slots__ = ("context", "queued", "span")

    def __init__(self, span: Any, context: Any, queued: int) -> None:
        self.span = span
        self.context = context
        self.queued = queued


def _quiet(method: Callable[..., None]) -> Callable[..., None]:
    """``method``, logging instead of raising: the hook is called directly by
    the engine (it is marked trusted), and must never break a job."""

    @functools.wraps(method)
    def guarded(self: Any, *args: Any) -> None:
        try:
            method(self, *args)
        except Exception:  # noqa: BLE001 - a hook must never break the job
            logger.exception("routilux tracing failed in %s", method.__name__)

    return guarded


class OtelHooks(JobHooks):
    """The lifecycle hook that traces and measures one run (made per run by the
    instrumentor: it knows the flow, which tells how many slots an emission
    feeds).

    Marked trusted, so the engine calls it without the per-call guard of user
    hooks: each method guards itself (the per-delivery ones inline)."""

    _routilux_trusted = True

    def __init__(self, instruments: _Instruments, flow: Flow) -> None:
        self._i = instruments
        self._counts = instruments.counts
        self._flow = flow
        self._flow_id = flow.flow_id
        # id(delivery) -> (span, context token); the same Delivery object is
        # given to the start and the end of a delivery.
        self._open: dict[int, tuple[Any, Any]] = {}
        self._fanout: dict[tuple[str, str], int] = {}
        self._run: _JobSpan | None = None
        # Read on every delivery: bound once per run.
        self._start_span = instruments.tracer.start_span
        self._record = instruments.duration.record
        # The attribute dicts of a delivery's span, (routine, slot, attempt) ->
        # dict, and of its duration, (flow, routine, outcome) -> dict: made once.
        self._span_attributes: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._metric_attributes: dict[tuple[str, str, str], dict[str, str]] = {}

    # -- the run ------------------------------------------------------------

    @_quiet
    def on_job_start(self, job_state: JobState) -> None:
        i = self._i
        status = job_state.status
        resumed = status == "paused"
        # pending: a new job; paused: a resume; running: a job taken over from
        # the store (flow.recover(), or resume(job_id) of a job another process
        # paused or left: taking it over made it running already).
        kind = "execute" if status == "pending" else "resume" if resumed else "recover"
        links = []
        with i.previous_lock:
            previous = i.previous.pop(job_state.job_id, None)
        if kind != "execute":
            # The previous run's span, from the job itself (saved with it, so a
            # resume or a recovery in another process links too), else from
            # this process.
            previous = _saved_span_context(job_state, resumed) or previous
        if previous is not None:
            links.append(Link(previous, {"routilux.link": "previous_run"}))
        span = i.tracer.start_span(
            "routilux.job",
            kind=SpanKind.INTERNAL,
            attributes={
                "routilux.flow_id": job_state.flow_id,
                "routilux.job_id": job_state.job_id,
                "routilux.entry_routine_id": job_state.current_routine_id or "",
                "routilux.run": kind,
            },
            links=links,
        )
        _save_run_context(job_state, span)
        # What a run starts with: the entry delivery, or a resume's saved work.
        queued = len(job_state.pending_tasks) if resumed else 1
        self._run = _JobSpan(span, trace.set_span_in_context(span), queued)
        counts = self._counts
        with counts.lock:
            _add(counts.queue, self._flow_id, queued)

    @_quiet
    def on_status(self, job_state: JobState, old: str, new: str) -> None:
        run = self._run
        if run is not None:
            run.span.add_event("routilux.status", {"routilux.old": old, "routilux.new": new})

    @_quiet
    def on_job_end(self, job_state: JobState) -> None:
        i = self._i
        run, self._run = self._run, None
        if run is None:
            return
        if run.queued:
            # What was queued and never started (a pause keeps it, a cancel drops it).
            counts = self._counts
            with counts.lock:
                _add(counts.queue, self._flow_id, -run.queued)
        status = job_state.status
        span = run.span
        span.set_attribute("routilux.status", status)
        if status == "failed":
            span.set_status(Status(StatusCode.ERROR, f"job {job_state.job_id} failed"))
        span.end()
        i.jobs.add(1, {"routilux.flow_id": self._flow_id, "routilux.status": status})
        if status == "paused":
            _save_span_context(job_state, span)
            with i.previous_lock:
                i.previous[job_state.job_id] = span.get_span_context()
                while len(i.previous) > _PREVIOUS_RUNS_KEPT:
                    i.previous.popitem(last=False)

    # -- the deliveries -------------------------------------------------------

    def on_delivery_start(self, job_state: JobState, delivery: Delivery) -> None:
        try:
            run = self._run
            parent = run.context if run is not None else None
            rid = delivery.routine_id
            key = (rid, delivery.slot_name, delivery.attempt)
            attributes = self._span_attributes.get(key)
            if attributes is None:
                # The job's id and flow are on the parent span: not repeated here.
                attributes = self._span_attributes[key] = {
                    "routilux.routine_id": rid,
                    "routilux.slot": delivery.slot_name,
                    "routilux.attempt": delivery.attempt,
                }
            span = self._start_span("routilux.delivery", parent, attributes=attributes)
            # Current while the handler runs, so the handler's own spans (and the
            # log records of an OpenTelemetry logging bridge) nest under it.
            token = _attach(_set_span_in_context(span, parent))
            self._open[id(delivery)] = (span, token)
            counts = self._counts
            flow_id = self._flow_id
            with counts.lock:  # (the hot path: _add written out)
                if run is not None and run.queued > 0:
                    run.queued -= 1
                    counts.queue[flow_id] -= 1
                active = counts.active
                active[flow_id] = active.get(flow_id, 0) + 1
                if delivery.attempt > 1:
                    _add(counts.retries, (flow_id, rid), 1)
        except Exception:  # noqa: BLE001 - a hook must never break the job
            logger.exception("tracing the start of %r failed", delivery)

    def on_delivery_end(
        self,
        job_state: JobState,
        delivery: Delivery,
        duration: float,
        error: BaseException | None,
    ) -> None:
        try:
            opened = self._open.pop(id(delivery), None)
            if opened is not None:
                span, token = opened
                _detach(token)
                if error is not None:
                    span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
                span.end()
            rid = delivery.routine_id
            key = (self._flow_id, rid, "ok" if error is None else "error")
            counts = self._counts
            with counts.lock:
                counts.active[self._flow_id] -= 1
                deliveries = counts.deliveries
                deliveries[key] = deliveries.get(key, 0) + 1
            attributes = self._metric_attributes.get(key)
            if attributes is None:
                attributes = self._metric_attributes[key] = self._i.attributes(key)
            self._record(duration, attributes)
        except Exception:  # noqa: BLE001 - a hook must never break the job
            logger.exception("tracing the end of %r failed", delivery)

    @_quiet
    def on_emit(self, job_state: JobState, record: ExecutionRecord) -> None:
        run = self._run
        if run is None:
            return
        key = (record.routine_id, record.event_name)
        fanout = self._fanout.get(key)
        if fanout is None:
            routine = self._flow.routines.get(record.routine_id)
            event = routine.get_event(record.event_name) if routine is not None else None
            fanout = len(event.connected_slots) if event is not None else 0
            self._fanout[key] = fanout
        if fanout:
            counts = self._counts
            with counts.lock:
                run.queued += fanout
                _add(counts.queue, self._flow_id, fanout)

    @_quiet
    def on_timer(self, job_state: JobState, routine_id: str, slot_name: str, delay: float) -> None:
        run = self._run
        if run is None:
            return
        counts = self._counts
        with counts.lock:
            run.queued += 1
            _add(counts.queue, self._flow_id, 1)
        run.span.add_event(
            "routilux.timer",
            {
                "routilux.routine_id": routine_id,
                "routilux.slot": slot_name,
                "routilux.delay": delay,
            },
        )


#: The key of a pause point that holds the paused run's W3C trace context.
TRACE_CONTEXT_KEY = "trace_context"
#: The key of the entry routine's state that holds every run's W3C trace context:
#: namespaced, so it never overwrites a key of the routine's own.
RUN_CONTEXT_KEY = "routilux.trace_context"
_propagator = TraceContextTextMapPropagator()


def _save_span_context(job_state: JobState, span: Any) -> None:
    """Keep ``span``'s trace context in the job's latest pause point (saved with
    the job), for the link from the resume."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    with job_state.lock:
        if job_state.pause_points and carrier:
            job_state.pause_points[-1][TRACE_CONTEXT_KEY] = carrier


def _save_run_context(job_state: JobState, span: Any) -> None:
    """Keep the run's trace context in the state of the job's entry routine
    (``routine_states[current_routine_id]["routilux.trace_context"]``): it rides along
    with every save and snapshot of the job (a new job's is in the store's
    first row), so a recovery after the process died can link to this run."""
    rid = job_state.current_routine_id
    if rid is None:
        return
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    if carrier:
        job_state.merge_routine_state(rid, {RUN_CONTEXT_KEY: carrier})


def _saved_span_context(job_state: JobState, paused: bool) -> Any:
    """The previous run's span context: for a paused job the one
    :func:`_save_span_context` kept in its latest pause point, else the one
    :func:`_save_run_context` kept; None when there is none (or it is damaged)."""
    with job_state.lock:
        if paused:
            point = job_state.pause_points[-1] if job_state.pause_points else None
            key = TRACE_CONTEXT_KEY
        else:
            point = job_state.routine_states.get(job_state.current_routine_id or "")
            key = RUN_CONTEXT_KEY
    carrier = point.get(key) if isinstance(point, dict) else None
    if not isinstance(carrier, dict):
        return None
    # A loaded file is data: extract() validates the header and ignores a bad one.
    clean = {k: v for k, v in carrier.items() if isinstance(k, str) and isinstance(v, str)}
    found = trace.get_current_span(_propagator.extract(clean)).get_span_context()
    return found if found.is_valid else None


_attach = otel_context.attach
_set_span_in_context = trace.set_span_in_context


def _detach(token: Any) -> None:
    """Undo a delivery's ``attach``, quietly when the delivery ends in another
    context (an async handler's task, a handler the job gave up on): that
    binding ended with its context, and OpenTelemetry's ``detach`` would log an
    error for it."""
    if isinstance(token, contextvars.Token):
        try:
            token.var.reset(token)
        except ValueError:
            pass
    else:  # a runtime context other than contextvars: its own detach
        otel_context.detach(token)


def _with_hooks(hooks: Any, instruments: _Instruments, flow: Flow) -> list[Any]:
    given = list(hooks or ())
    if any(isinstance(hook, OtelHooks) for hook in given):
        return given  # an inner entry point of a run already traced
    return [OtelHooks(instruments, flow), *given]


def _wrap(name: str, original: Callable[..., Any], instruments: _Instruments) -> Any:
    if name == "execute_async":

        @functools.wraps(original)
        async def wrapped_async(self: Flow, *args: Any, hooks: Any = None, **kwargs: Any) -> Any:
            return await original(
                self, *args, hooks=_with_hooks(hooks, instruments, self), **kwargs
            )

        wrapped_async._routilux_otel_original = original  # type: ignore[attr-defined]
        return wrapped_async

    @functools.wraps(original)
    def wrapped(self: Flow, *args: Any, hooks: Any = None, **kwargs: Any) -> Any:
        return original(self, *args, hooks=_with_hooks(hooks, instruments, self), **kwargs)

    wrapped._routilux_otel_original = original  # type: ignore[attr-defined]
    return wrapped


class TracePropagator:
    """The W3C trace context across processes, for ``RoutiluxCelery(...,
    propagator=TracePropagator())``: ``submit()`` injects the caller's current
    context into the message headers, the worker runs the job inside
    ``attach(carrier)``, so the job's span there is a child of the span that
    submitted it (same trace).  A job a worker takes over after another died
    links to the run before it, as any recovery does."""

    def inject(self, carrier: dict[str, str]) -> None:
        """Add the current context (``traceparent``, ``tracestate``) to ``carrier``."""
        _propagator.inject(carrier)

    @contextlib.contextmanager
    def attach(self, carrier: Any) -> Iterator[None]:
        """Make the context in ``carrier`` current while the block runs (a bad
        or missing header gives the empty context: a new trace)."""
        clean = {k: v for k, v in dict(carrier or {}).items() if isinstance(v, str)}
        token = otel_context.attach(_propagator.extract(clean))
        try:
            yield
        finally:
            _detach(token)


class RoutiluxInstrumentor:
    """Traces and measures every job of every flow (the OpenTelemetry
    instrumentation convention)::

        from routilux.otel import RoutiluxInstrumentor
        RoutiluxInstrumentor().instrument()        # global providers
        RoutiluxInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
        RoutiluxInstrumentor().uninstrument()

    A singleton: every ``RoutiluxInstrumentor()`` is the same object.  A second
    ``instrument()`` without an ``uninstrument()`` in between changes nothing.
    Runs already started keep their hooks; the change applies to runs started
    (or resumed) afterwards.
    """

    _instance: Optional[RoutiluxInstrumentor] = None
    _lock = threading.Lock()
    _instruments: Optional[_Instruments]

    def __new__(cls) -> RoutiluxInstrumentor:
        with cls._lock:
            if cls._instance is None:
                instance = super().__new__(cls)
                instance._instruments = None
                cls._instance = instance
            return cls._instance

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        """True between ``instrument()`` and ``uninstrument()``."""
        return self._instruments is not None

    def instrumentation_dependencies(self) -> tuple[str, ...]:
        """The packages this instrumentation needs (the convention's method)."""
        return ("routilux",)

    def instrument(self, *, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        """Start tracing and measuring the runs started from now on; the providers
        default to OpenTelemetry's global ones."""
        with self._lock:
            if self._instruments is not None:
                logger.warning("routilux is already instrumented")
                return
            instruments = _instruments_for(tracer_provider, meter_provider)
            for name in _ENTRY_POINTS:
                setattr(Flow, name, _wrap(name, getattr(Flow, name), instruments))
            self._instruments = instruments

    def uninstrument(self) -> None:
        """Put the Flow methods back: runs started from now on are not traced."""
        with self._lock:
            if self._instruments is None:
                return
            for name in _ENTRY_POINTS:
                current = Flow.__dict__[name]
                original = getattr(current, "_routilux_otel_original", None)
                if original is not None:
                    setattr(Flow, name, original)
            self._instruments = None

"""OpenTelemetry (routilux.otel): the span tree and attributes of a fan-out /
fan-in job with a retry, under both strategies and with async handlers; metric
values; links from a resumed run; uninstrument."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode  # noqa: E402

from helpers import Collector, Source, Step  # noqa: E402
from routilux import ErrorHandler, ErrorStrategy, Flow, JobState, Routine  # noqa: E402
from routilux.otel import METRICS, RoutiluxInstrumentor  # noqa: E402


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self, name: str | None = None) -> list[Any]:
        return [s for s in self.spans.get_finished_spans() if name is None or s.name == name]

    def points(self, metric: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """attributes (sorted items, without the flow) -> the point's value (a sum's
        value, a histogram's count)."""
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name != metric:
                        continue
                    for point in m.data.data_points:
                        key = tuple(
                            sorted(
                                (k, v)
                                for k, v in point.attributes.items()
                                if k != "routilux.flow_id"
                            )
                        )
                        found[key] = getattr(point, "count", None) or point.value
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    RoutiluxInstrumentor().instrument(
        tracer_provider=t.tracer_provider, meter_provider=t.meter_provider
    )
    try:
        yield t
    finally:
        RoutiluxInstrumentor().uninstrument()


class Flaky(Routine):
    """``input(value)`` fails its first call, then forwards ``value`` on ``out``."""

    def __init__(self, asynchronous: bool = False) -> None:
        super().__init__()
        self.calls = 0
        handler = self.take_async if asynchronous else self.take
        self.define_slot("input", handler=handler)
        self.define_event("out", ["value"])
        self.set_error_handler(
            ErrorHandler(strategy=ErrorStrategy.RETRY, max_retries=2, retry_delay=0.0)
        )

    def _step(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("first call fails")
        self.emit("out", value=value)

    def take(self, value: Any) -> None:
        self._step(value)

    async def take_async(self, value: Any) -> None:
        await asyncio.sleep(0)
        self._step(value)


def fan_out_fan_in(strategy: str, asynchronous: bool = False) -> Flow:
    """source -> left (fails once, retried) and right -> join."""
    flow = Flow("fan", execution_strategy=strategy, max_workers=3)
    flow.add_routine(Source(), "source")
    flow.add_routine(Flaky(asynchronous), "left")
    flow.add_routine(Step(lambda r, d: r.emit("out", **d), slot="input"), "right")
    flow.add_routine(Collector(), "join")
    flow.connect("source", "output", "left", "input")
    flow.connect("source", "output", "right", "input")
    flow.connect("left", "out", "join", "input")
    flow.connect("right", "out", "join", "input")
    return flow


@pytest.mark.parametrize(
    "strategy, asynchronous",
    [("sequential", False), ("concurrent", False), ("sequential", True), ("concurrent", True)],
)
def test_span_tree_of_a_fan_out_fan_in_job_with_a_retry(
    telemetry: Telemetry, strategy: str, asynchronous: bool
) -> None:
    flow = fan_out_fan_in(strategy, asynchronous)
    job = flow.execute("source", {"value": 7})
    assert job.status == "completed"

    (job_span,) = telemetry.finished("routilux.job")
    assert job_span.parent is None
    assert dict(job_span.attributes) == {
        "routilux.flow_id": "fan",
        "routilux.job_id": job.job_id,
        "routilux.entry_routine_id": "source",
        "routilux.run": "execute",
        "routilux.status": "completed",
    }
    assert job_span.status.status_code is StatusCode.UNSET
    statuses = [
        tuple(e.attributes.values()) for e in job_span.events if e.name == "routilux.status"
    ]
    assert statuses == [("pending", "running"), ("running", "completed")]

    deliveries = telemetry.finished("routilux.delivery")
    trace_id = job_span.context.trace_id
    assert all(s.context.trace_id == trace_id for s in deliveries)
    assert all(s.parent.span_id == job_span.context.span_id for s in deliveries)
    seen = sorted(
        (
            s.attributes["routilux.routine_id"],
            s.attributes["routilux.slot"],
            s.attributes["routilux.attempt"],
            s.status.status_code.name,
        )
        for s in deliveries
    )
    assert seen == [
        ("join", "input", 1, "UNSET"),
        ("join", "input", 1, "UNSET"),
        ("left", "input", 1, "ERROR"),
        ("left", "input", 2, "UNSET"),
        ("right", "input", 1, "UNSET"),
        ("source", "trigger", 1, "UNSET"),
    ]
    (failed,) = [s for s in deliveries if s.status.status_code is StatusCode.ERROR]
    assert failed.status.description == "ConnectionError: first call fails"
    (exception,) = [e for e in failed.events if e.name == "exception"]
    assert exception.attributes["exception.type"] == "ConnectionError"
    assert "first call fails" in exception.attributes["exception.message"]
    # Every delivery span lies within the job span.
    assert all(
        job_span.start_time <= s.start_time <= s.end_time <= job_span.end_time for s in deliveries
    )


def test_metric_values(telemetry: Telemetry) -> None:
    flow = fan_out_fan_in("concurrent")
    assert flow.execute("source", {"value": 1}).status == "completed"
    assert flow.execute("source", {"value": 2}).status == "completed"
    deliveries = telemetry.points("routilux.deliveries")
    assert deliveries == {
        (("routilux.outcome", "ok"), ("routilux.routine_id", "source")): 2,
        (("routilux.outcome", "ok"), ("routilux.routine_id", "right")): 2,
        (("routilux.outcome", "ok"), ("routilux.routine_id", "join")): 4,
        (("routilux.outcome", "error"), ("routilux.routine_id", "left")): 1,
        (("routilux.outcome", "ok"), ("routilux.routine_id", "left")): 2,
    }
    # One histogram point per (routine, outcome), counting the same deliveries.
    assert telemetry.points("routilux.delivery.duration") == deliveries
    assert telemetry.points("routilux.retries") == {(("routilux.routine_id", "left"),): 1}
    assert telemetry.points("routilux.jobs") == {(("routilux.status", "completed"),): 2}
    # Nothing queued nor running once the jobs are over.
    assert set(telemetry.points("routilux.queue.depth").values()) == {0}
    assert set(telemetry.points("routilux.deliveries.active").values()) == {0}
    assert set(METRICS) == {
        "routilux.deliveries",
        "routilux.delivery.duration",
        "routilux.retries",
        "routilux.jobs",
        "routilux.queue.depth",
        "routilux.deliveries.active",
    }


def test_a_failed_job_is_an_error_span_and_counted(telemetry: Telemetry) -> None:
    def boom(routine: Routine, data: dict[str, Any]) -> None:
        raise ValueError("no")

    flow = Flow("failing")
    flow.add_routine(Step(boom, slot="trigger"), "only")
    job = flow.execute("only")
    assert job.status == "failed"
    (job_span,) = telemetry.finished("routilux.job")
    assert job_span.status.status_code is StatusCode.ERROR
    assert telemetry.points("routilux.jobs") == {(("routilux.status", "failed"),): 1}


def test_queue_depth_counts_what_is_waiting(telemetry: Telemetry) -> None:
    depths: list[int] = []

    def look(routine: Routine, data: dict[str, Any]) -> None:
        depths.append(sum(telemetry.points("routilux.queue.depth").values()))

    flow = Flow("queue")
    flow.add_routine(
        Step(lambda r, d: [r.emit("out", i=i) for i in range(3)], slot="trigger"), "src"
    )
    flow.add_routine(Step(look, slot="input"), "look")
    flow.connect("src", "out", "look", "input")
    flow.execute("src")
    # The sequential queue drains one by one: 2, 1, 0 are still waiting.
    assert depths == [2, 1, 0]


def test_a_handlers_own_spans_nest_under_its_delivery(telemetry: Telemetry) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")

    def work(routine: Routine, data: dict[str, Any]) -> None:
        with tracer.start_as_current_span("app.work"):
            pass

    flow = Flow("nested", execution_strategy="concurrent")
    flow.add_routine(Step(work, slot="trigger"), "only")
    with tracer.start_as_current_span("caller") as caller:
        flow.execute("only")
        # The delivery's span was made current for the handler only.
        assert trace.get_current_span() is caller
    (job_span,) = telemetry.finished("routilux.job")
    (delivery,) = telemetry.finished("routilux.delivery")
    (inner,) = telemetry.finished("app.work")
    assert job_span.parent.span_id == caller.get_span_context().span_id
    assert inner.parent.span_id == delivery.context.span_id


def test_a_resumed_run_links_to_the_paused_one(telemetry: Telemetry) -> None:
    def pause_first(routine: Routine, data: dict[str, Any]) -> None:
        flow_, job_state, _ = routine.context
        if not job_state.get_shared_data("paused"):
            job_state.update_shared_data("paused", True)
            flow_.pause(job_state, reason="wait")
        routine.emit("out", **data)

    flow = Flow("pausing")
    flow.add_routine(Source(), "source")
    flow.add_routine(Step(pause_first, slot="input"), "gate")
    flow.add_routine(Collector(), "sink")
    flow.connect("source", "output", "gate", "input")
    flow.connect("gate", "out", "sink", "input")
    job = flow.execute("source", {"value": 3})
    assert job.status == "paused"
    flow.resume(job)
    assert job.status == "completed"
    first, second = telemetry.finished("routilux.job")
    assert first.attributes["routilux.status"] == "paused"
    assert second.attributes["routilux.run"] == "resume"
    assert second.attributes["routilux.status"] == "completed"
    (link,) = second.links
    assert link.context.span_id == first.context.span_id
    assert link.context.trace_id == first.context.trace_id
    assert telemetry.points("routilux.jobs") == {
        (("routilux.status", "paused"),): 1,
        (("routilux.status", "completed"),): 1,
    }


def test_streams_and_async_entry_points_are_traced(telemetry: Telemetry) -> None:
    flow = fan_out_fan_in("concurrent", asynchronous=True)
    assert list(flow.stream("source", {"value": 1}, kinds=["job_finished"]))
    job = asyncio.run(flow.execute_async("source", {"value": 1}))
    assert job.status == "completed"
    assert len(telemetry.finished("routilux.job")) == 2


def test_instrument_twice_traces_once_and_uninstrument_removes_everything() -> None:
    t = Telemetry()
    originals = {name: Flow.__dict__[name] for name in ("execute", "execute_async", "resume")}
    instrumentor = RoutiluxInstrumentor()
    assert instrumentor is RoutiluxInstrumentor()  # the convention's singleton
    instrumentor.instrument(tracer_provider=t.tracer_provider, meter_provider=t.meter_provider)
    instrumentor.instrument(tracer_provider=t.tracer_provider, meter_provider=t.meter_provider)
    assert instrumentor.is_instrumented_by_opentelemetry
    flow = fan_out_fan_in("sequential")
    flow.execute("source", {"value": 1})
    assert len(t.finished("routilux.job")) == 1
    instrumentor.uninstrument()
    assert not instrumentor.is_instrumented_by_opentelemetry
    assert {name: Flow.__dict__[name] for name in originals} == originals
    t.spans.clear()
    flow.execute("source", {"value": 1})
    assert t.finished() == []
    instrumentor.uninstrument()  # harmless when off


def test_importing_routilux_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, routilux, routilux.streaming, routilux.logs\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_run_resumed_after_save_and_load_links_to_the_paused_one(
    telemetry: Telemetry, tmp_path: Any
) -> None:
    flow = Flow("saved")
    flow.add_routine(Source(), "source")
    flow.add_routine(
        Step(lambda r, d: r.context.flow.pause(r.context.job_state), slot="input"), "stop"
    )
    flow.add_routine(Collector(), "sink")
    flow.connect("source", "output", "stop", "input")
    flow.connect("source", "output", "sink", "input")
    job = flow.execute("source", {"value": 1})
    assert job.status == "paused"
    path = tmp_path / "job.json"
    job.save(path)
    # Another process knows nothing of the first run but what the file holds.
    RoutiluxInstrumentor()._instruments.previous.clear()  # type: ignore[union-attr]
    loaded = JobState.load(path)
    assert loaded.pause_points[-1]["trace_context"]["traceparent"].startswith("00-")
    flow.resume(loaded)
    assert loaded.status == "completed"
    first, second = telemetry.finished("routilux.job")
    (link,) = second.links
    assert (link.context.trace_id, link.context.span_id) == (
        first.context.trace_id,
        first.context.span_id,
    )


def test_a_damaged_saved_trace_context_is_ignored(telemetry: Telemetry) -> None:
    flow = Flow("damaged")
    flow.add_routine(Source(), "source")
    flow.add_routine(
        Step(lambda r, d: r.context.flow.pause(r.context.job_state), slot="input"), "stop"
    )
    flow.add_routine(Collector(), "sink")
    flow.connect("source", "output", "stop", "input")
    flow.connect("source", "output", "sink", "input")
    job = flow.execute("source", {"value": 1})
    RoutiluxInstrumentor()._instruments.previous.clear()  # type: ignore[union-attr]
    job.pause_points[-1]["trace_context"] = {"traceparent": "00-not-a-trace", 3: None}
    flow.resume(job)
    assert job.status == "completed"
    assert telemetry.finished("routilux.job")[1].links == ()


def test_a_failing_tracer_never_breaks_a_job(caplog: pytest.LogCaptureFixture) -> None:
    # The hook is called without the engine's guard (it is the library's own):
    # it must catch what the SDK raises itself.
    class Broken:
        def start_span(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("exporter on fire")

    class BrokenProvider(TracerProvider):
        def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
            return Broken()

    t = Telemetry()
    RoutiluxInstrumentor().instrument(
        tracer_provider=BrokenProvider(), meter_provider=t.meter_provider
    )
    try:
        flow = fan_out_fan_in("sequential")
        with caplog.at_level("ERROR", logger="routilux.otel"):
            job = flow.execute("source", {"value": 1})
    finally:
        RoutiluxInstrumentor().uninstrument()
    assert job.status == "completed"
    assert "exporter on fire" in caplog.text


def test_the_trace_propagator_makes_a_remote_job_a_child_of_its_submitter(
    telemetry: Telemetry,
) -> None:
    # What RoutiluxCelery does with it: inject at submit (here), attach around
    # the job in the worker (here too: the carrier is all that crosses over).
    from routilux.otel import TracePropagator

    propagator = TracePropagator()
    carrier: dict[str, str] = {}
    tracer = telemetry.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("submit") as submit:
        propagator.inject(carrier)
    assert carrier["traceparent"].startswith("00-")
    flow = fan_out_fan_in("sequential")
    with propagator.attach(carrier):
        flow.execute("source", {"value": 1})
    (job,) = telemetry.finished("routilux.job")
    assert job.context.trace_id == submit.get_span_context().trace_id
    assert job.parent.span_id == submit.get_span_context().span_id
    with propagator.attach({"traceparent": "garbage", "x": 3}):  # a new trace
        flow.execute("source", {"value": 1})
    second = telemetry.finished("routilux.job")[1]
    assert second.parent is None


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_a_handlers_log_records_carry_its_delivery_span(
    telemetry: Telemetry, strategy: str
) -> None:
    # What an OpenTelemetry logging bridge reads when a record is written: the
    # current span's context.
    import logging

    seen: list[Any] = []

    class SpanOfRecord(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(trace.get_current_span().get_span_context())

    log = logging.getLogger("app.otel-test")
    handler = SpanOfRecord()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        flow = Flow("logged", execution_strategy=strategy)
        flow.add_routine(Step(lambda r, d: log.info("working"), slot="trigger"), "only")
        flow.execute("only")
    finally:
        log.removeHandler(handler)
    (delivery,) = telemetry.finished("routilux.delivery")
    (context,) = seen
    assert (context.trace_id, context.span_id) == (
        delivery.context.trace_id,
        delivery.context.span_id,
    )


def test_the_saved_run_context_never_overwrites_the_entry_routines_own_keys(
    telemetry: Telemetry,
) -> None:
    """The run's trace context lives under a namespaced key of the entry routine's
    state: a routine that keeps its own ``trace_context`` keeps it."""
    flow = Flow("own-keys")

    def keep(r: Any, d: Any) -> None:
        r.context.job_state.merge_routine_state("entry", {"trace_context": "mine"})

    flow.add_routine(Step(keep, slot="trigger"), "entry")
    job = flow.execute("entry", {"value": 1})
    assert job.status == "completed"
    state = job.get_routine_state("entry")
    assert state is not None
    assert state["trace_context"] == "mine"
    assert state["routilux.trace_context"]["traceparent"].startswith("00-")

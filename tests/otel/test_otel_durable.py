"""OpenTelemetry across processes: a job journaled in a store continues its
trace (a span link to the previous run) when another process resumes it by id
after a pause, or recovers it after its process was killed (SIGKILL).

The first run happens in a child process that imports this module, builds the
flow (``build``), instruments it with an in-memory exporter, and prints the
trace and span ids of the job's span before it pauses or dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from helpers import Collector, Numbers  # noqa: E402
from routilux import Flow, Routine  # noqa: E402
from routilux.engine.journal import Durable  # noqa: E402
from routilux.otel import RoutiluxInstrumentor  # noqa: E402

HERE = Path(__file__).resolve().parent
FLOW_ID = "otel-durable"
FLOWS: dict[str, Flow] = {}


class Stopper(Routine):
    """``input(value)``: at ``STOP_AT`` prints the trace and job span ids, then
    pauses the job (``HOW=pause``) or makes the journal durable and kills its
    own process (``HOW=kill``); forwards ``value`` on ``out``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.take)
        self.define_event("out", ["value"])

    def take(self, value: int = 0, **_: Any) -> None:
        if str(value) == os.environ.get("STOP_AT"):
            js = self.context.job_state
            delivery = trace.get_current_span()
            parent = delivery.parent  # type: ignore[attr-defined]  # the job's span
            print(f"TRACE {parent.trace_id:032x} {parent.span_id:016x}", flush=True)
            if os.environ.get("HOW") == "kill":
                store = FLOWS[js.flow_id].store
                assert store is not None
                Durable.of(store).flush()
                os.kill(os.getpid(), signal.SIGKILL)
            FLOWS[js.flow_id].pause(js, reason="for another process")
        self.emit("out", value=value)


def build(url: str) -> Flow:
    flow = Flow(flow_id=FLOW_ID, store=url)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(Stopper(), "stopper")
    flow.add_routine(Collector(), "sink")
    flow.connect("source", "output", "stopper", "input")
    flow.connect("stopper", "out", "sink", "input")
    FLOWS[FLOW_ID] = flow
    return flow


def child_main(url: str, n: int) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    RoutiluxInstrumentor().instrument(tracer_provider=provider)
    job = build(url).execute("source", entry_params={"n": n})
    print(f"JOB {job.job_id} {job.status}", flush=True)


def first_run(url: str, how: str, n: int = 5, stop_at: int = 2) -> tuple[int, int, str]:
    """Run the job's first run in a child; its (trace id, job span id) and output."""
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import test_otel_durable; "
        "test_otel_durable.child_main(sys.argv[3], int(sys.argv[4]))"
    )
    env = {**os.environ, "STOP_AT": str(stop_at), "HOW": how}
    done = subprocess.run(
        [sys.executable, "-c", code, str(HERE.parent), str(HERE), url, str(n)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if how == "kill":
        assert done.returncode == -signal.SIGKILL, done.stderr
    else:
        assert done.returncode == 0, done.stderr
    trace_id, span_id = done.stdout.split("TRACE ", 1)[1].split()[:2]
    return int(trace_id, 16), int(span_id, 16), done.stdout


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    RoutiluxInstrumentor().instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        RoutiluxInstrumentor().uninstrument()


def job_span(exporter: InMemorySpanExporter) -> Any:
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "routilux.job"]
    return span


def test_a_recovery_after_sigkill_links_to_the_run_that_died(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    trace_id, span_id, _ = first_run(url, "kill")
    (job,) = build(url).recover()
    assert job.status == "completed"
    span = job_span(spans)
    assert span.attributes["routilux.run"] == "recover"
    assert span.attributes["routilux.status"] == "completed"
    (link,) = span.links
    assert (link.context.trace_id, link.context.span_id) == (trace_id, span_id)
    assert link.attributes == {"routilux.link": "previous_run"}


def test_a_resume_by_id_in_another_process_links_to_the_paused_run(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    trace_id, span_id, out = first_run(url, "pause")
    job_id, status = out.split("JOB ", 1)[1].split()[:2]
    assert status == "paused"
    job = build(url).resume(job_id)
    assert job.status == "completed"
    span = job_span(spans)
    assert span.attributes["routilux.run"] == "recover"  # taken over from the store
    (link,) = span.links
    assert (link.context.trace_id, link.context.span_id) == (trace_id, span_id)

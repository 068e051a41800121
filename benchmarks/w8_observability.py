"""W8: what watching a job costs -- W2 with a stream consumer, with OpenTelemetry.

W2 (a source pushes N messages through a 10-stage chain to a sink, sequential
strategy) is run in the same process:

* plain: ``flow.execute(...)``, no hook (the baseline);
* threaded: ``execute(..., wait=False)`` then a wait -- the job on a thread of its
  own, as ``flow.stream`` runs a sequential job, with no consumer;
* streamed: ``for ev in flow.stream(...)``, every kind of event (three per
  delivery: its start, its end, an emission), then emissions only, with a
  consumer that reads each one (the job on its own thread, the consumer on this);
* attached: ``execute(..., wait=False)`` then ``for ev in job.events()`` (a
  stream attached to a job started without one);
* traced: ``RoutiluxInstrumentor().instrument(...)`` with the SDK's tracer
  provider, a ``SimpleSpanProcessor`` into an in-memory exporter (cleared between
  runs), and a meter provider with an in-memory reader.

Time is the process's CPU time (``time.process_time``: every thread of the
process, so the consumer's work counts; a thread waiting does not), median of
``--repeats`` runs; the overhead per delivery is the extra time of the run
divided by its deliveries.  Beside the streamed runs, the least a stream of every
kind costs its consumer, without any job: three events per delivery built by the
library's own builders from the tuples a producer buffers, and read by a loop.
Beside the traced run, the floor no instrumentation
can go under, measured in a plain loop with the same SDK objects and the same
number of spans kept by the exporter (that matters: the garbage collector walks
every kept span): one delivery span started and ended, the same made current
(context attach/detach), one histogram record.  Targets: streaming <= 2 us,
OTel <= 15 us per delivery.

``--instructions MODE N`` runs one W2 of N messages in MODE (plain, stream,
emitted, otel) and prints nothing, for an instruction counter (see
``w1_w2_instructions.py``: count two sizes, divide the difference by 11 per
message)::

    for n in 100 400; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
      python benchmarks/w8_observability.py --instructions stream $n 2>&1 | grep Collected
    done
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(__file__))

from _common import median_cpu, row  # noqa: E402
from w1_w2_core import STAGES, build_w2  # noqa: E402

from routilux import JobStateError  # noqa: E402

TARGET_STREAM_US = 2.0
TARGET_OTEL_US = 15.0


def telemetry() -> tuple[Any, Any, Any]:
    """A tracer provider exporting to memory, that exporter, a meter provider."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return tracer_provider, exporter, meter_provider


def instructions(mode: str, n: int) -> None:
    """One W2 of ``n`` messages in ``mode``, after a first job of one message."""
    flow = build_w2()
    if mode == "otel":
        from routilux.otel import RoutiluxInstrumentor

        tracer_provider, _, meter_provider = telemetry()
        RoutiluxInstrumentor().instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider
        )

    def once(k: int) -> None:
        if mode in ("plain", "otel"):
            flow.execute("source", {"n": k})
        elif mode == "stream":
            for _event in flow.stream("source", {"n": k}):
                pass
        elif mode == "emitted":
            for _event in flow.stream("source", {"n": k}, kinds=["emitted"]):
                pass
        else:
            raise SystemExit(f"unknown mode {mode!r}: use plain, stream, emitted or otel")

    once(1)
    once(n)


def event_floor(deliveries: int) -> Iterator[Any]:
    """The events of ``deliveries`` deliveries (start, emission, end), built the way
    a stream's consumer builds them: each from the flat tuple a producer buffered,
    by the library's builder, with its sequence number."""
    from routilux.hooks import Delivery
    from routilux.job_state import ExecutionRecord
    from routilux.streaming import (
        BUILDERS,
        DeliveryFinished,
        DeliveryStarted,
        Emitted,
    )

    started, emitted, finished = (
        BUILDERS[DeliveryStarted],
        BUILDERS[Emitted],
        BUILDERS[DeliveryFinished],
    )
    delivery = Delivery("stage0", "input", data={"value": 1})
    record = ExecutionRecord("stage0", "output", {"value": 2})
    seq = 0
    for _ in range(deliveries):
        now = time.time()
        yield started(seq, (started, now, "job", delivery))
        yield emitted(seq + 1, (emitted, now, "job", record))
        yield finished(seq + 2, (finished, now, "job", delivery, 0.0, None))
        seq += 3


def consume(events: Iterator[Any]) -> int:
    """Read every event (as the streamed runs' consumers do)."""
    count = 0
    for _event in events:
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="W2 messages per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per median")
    parser.add_argument("--instructions", nargs=2, metavar=("MODE", "N"), default=None)
    args = parser.parse_args()
    if args.instructions is not None:
        instructions(args.instructions[0], int(args.instructions[1]))
        return
    n = args.messages
    deliveries = 1 + n * (STAGES + 1)  # the source's trigger, then every stage and the sink
    flow = build_w2()

    def plain() -> None:
        flow.execute("source", {"n": n})

    def threaded() -> None:
        # What flow.stream() does with a sequential job, without a consumer: the
        # job runs on a thread of its own while the caller waits.
        flow.execute("source", {"n": n}, wait=False).wait_for_completion()

    def streamed() -> None:
        count = 0
        for _event in flow.stream("source", {"n": n}):
            count += 1
        assert count > deliveries  # every delivery starts and ends, every emission

    def streamed_emissions() -> None:
        count = 0
        for _event in flow.stream("source", {"n": n}, kinds=["emitted"]):
            count += 1
        assert count == deliveries - 1

    def attached() -> None:
        count = 0
        for _event in flow.execute("source", {"n": n}, wait=False).events():
            count += 1
        assert count >= 2

    t_plain = median_cpu(plain, args.repeats)
    t_threaded = median_cpu(threaded, args.repeats)
    t_stream = median_cpu(streamed, args.repeats)
    t_emissions = median_cpu(streamed_emissions, args.repeats)
    try:
        t_attached: float | None = median_cpu(attached, args.repeats)
    except JobStateError:  # a version whose job.events() needs a stream up front
        t_attached = None

    def overhead_us(seconds: float) -> float:
        return (seconds - t_plain) / deliveries * 1e6

    print(
        f"W8: W2 ({n} messages, {deliveries} deliveries per run), process CPU time, "
        f"median of {args.repeats}"
    )
    row("plain (baseline)", t_plain / deliveries * 1e6, "us/deliv")
    row(
        "plain, the job on its own thread",
        deliveries / t_threaded,
        "deliv/s",
        f"+{overhead_us(t_threaded):.2f} us/delivery",
    )
    row(
        "with a stream consumer (all kinds)",
        deliveries / t_stream,
        "deliv/s",
        f"+{overhead_us(t_stream):.2f} us/delivery (target <= {TARGET_STREAM_US:g})",
    )
    row(
        "with a stream consumer (emissions only)",
        deliveries / t_emissions,
        "deliv/s",
        f"+{overhead_us(t_emissions):.2f} us/delivery",
    )
    if t_attached is not None:
        row(
            "job.events() attached after the start",
            deliveries / t_attached,
            "deliv/s",
            f"+{overhead_us(t_attached):.2f} us/delivery",
        )

    # The least any stream of every kind costs the consumer, without the job: per
    # delivery, its three events built by the library's own builders from the
    # tuples a producer buffers, and yielded to a loop.
    t_events = median_cpu(lambda: consume(event_floor(deliveries)), args.repeats)
    row(
        "  floor: 3 events built, read",
        t_events / deliveries * 1e6,
        "us/deliv",
        "(no job: the consumer's side alone)",
    )

    try:
        from opentelemetry import context, trace

        from routilux.otel import RoutiluxInstrumentor
    except ImportError:
        print("(OpenTelemetry not installed: pip install 'routilux[otel]' for the traced run)")
        return
    tracer_provider, exporter, meter_provider = telemetry()
    instrumentor = RoutiluxInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)

    def traced() -> None:
        exporter.clear()
        flow.execute("source", {"n": n})
        assert len(exporter.get_finished_spans()) == deliveries + 1

    try:
        t_otel = median_cpu(traced, args.repeats)
    finally:
        instrumentor.uninstrument()
    row(
        "with OTel spans + metrics, in-memory export",
        deliveries / t_otel,
        "deliv/s",
        f"+{overhead_us(t_otel):.2f} us/delivery (target <= {TARGET_OTEL_US:g})",
    )

    # The SDK's own price of what a delivery gets, without routilux, as many
    # spans kept by the exporter as in the traced run.
    tracer = tracer_provider.get_tracer("w8")
    histogram = meter_provider.get_meter("w8").create_histogram("w8.duration")
    parent = trace.set_span_in_context(tracer.start_span("w8.job"))
    span_attributes = {"routilux.routine_id": "s", "routilux.slot": "input", "routilux.attempt": 1}
    metric_attributes = {
        "routilux.flow_id": "w2",
        "routilux.routine_id": "s",
        "routilux.outcome": "ok",
    }

    def spans() -> None:
        exporter.clear()
        for _ in range(deliveries):
            tracer.start_span("d", parent, attributes=span_attributes).end()

    def current_spans() -> None:
        exporter.clear()
        for _ in range(deliveries):
            span = tracer.start_span("d", parent, attributes=span_attributes)
            token = context.attach(trace.set_span_in_context(span, parent))
            context.detach(token)
            span.end()

    def records() -> None:
        for _ in range(deliveries):
            histogram.record(0.0, metric_attributes)

    def per_delivery(fn: Callable[[], None]) -> float:
        return median_cpu(fn, args.repeats) / deliveries * 1e6

    t_spans = per_delivery(spans)
    t_current = per_delivery(current_spans)
    t_records = per_delivery(records)
    gc.disable()
    try:
        t_spans_no_gc = per_delivery(spans)
    finally:
        gc.enable()
    floor = t_current + t_records
    row("  SDK floor: a span started and ended", t_spans, "us/deliv")
    row("  SDK floor: the same without the GC", t_spans_no_gc, "us/deliv", "(kept spans walked)")
    row("  SDK floor: a span made current, ended", t_current, "us/deliv")
    row("  SDK floor: one histogram record", t_records, "us/deliv")
    row(
        "  routilux's own part (traced - plain - floor)",
        overhead_us(t_otel) - floor,
        "us/deliv",
    )
    exporter.clear()


if __name__ == "__main__":
    main()

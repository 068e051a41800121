"""W8: what watching a job costs -- W2 with a stream consumer, with OpenTelemetry.

W2 (a source pushes N messages through a 10-stage chain to a sink, sequential
strategy) is run three ways in the same process:

* plain: ``flow.execute(...)``, no hook;
* threaded: ``execute(..., wait=False)`` then a wait -- the job on a thread of its
  own, as ``flow.stream`` runs a sequential job, with no consumer;
* streamed: ``for ev in flow.stream(...)``, every kind of event (three per
  delivery: its start, its end, an emission), then emissions only, with a
  consumer that reads each one (the job on its own thread, the consumer on this);
* traced: ``RoutiluxInstrumentor().instrument(...)`` with the SDK's tracer
  provider, a ``SimpleSpanProcessor`` into an in-memory exporter (cleared between
  runs), and a meter provider with an in-memory reader.

Printed: deliveries per second of each, and the overhead per delivery (the
extra time of the run divided by its deliveries); beside the traced run, what
the OpenTelemetry SDK alone takes for one span and one histogram record, in
a plain loop (the floor of any instrumentation).  Targets: streaming <= 2 us, OTel
<= 15 us per delivery.  Medians of 5 runs.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from _common import median_seconds, row  # noqa: E402
from w1_w2_core import STAGES, build_w2  # noqa: E402

TARGET_STREAM_US = 2.0
TARGET_OTEL_US = 15.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="W2 messages per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per median")
    args = parser.parse_args()
    n = args.messages
    deliveries = 1 + n * (STAGES + 1)  # the source's trigger, then every stage and the sink
    flow = build_w2()

    def plain() -> None:
        flow.execute("source", {"n": n})

    def streamed() -> None:
        count = 0
        for _event in flow.stream("source", {"n": n}):
            count += 1
        assert count > deliveries  # every delivery starts and ends, every emission

    def threaded() -> None:
        # What flow.stream() does with a sequential job, without a consumer: the
        # job runs on a thread of its own while the caller waits.
        flow.execute("source", {"n": n}, wait=False).wait_for_completion()

    def streamed_emissions() -> None:
        count = 0
        for _event in flow.stream("source", {"n": n}, kinds=["emitted"]):
            count += 1
        assert count == deliveries - 1

    t_plain = median_seconds(plain, repeats=args.repeats)
    t_threaded = median_seconds(threaded, repeats=args.repeats)
    t_stream = median_seconds(streamed, repeats=args.repeats)
    t_emissions = median_seconds(streamed_emissions, repeats=args.repeats)

    t_otel = t_sdk = None
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        from routilux.otel import RoutiluxInstrumentor
    except ImportError:
        print("(OpenTelemetry not installed: pip install 'routilux[otel]' for the traced run)")
    else:
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        instrumentor = RoutiluxInstrumentor()
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)

        def traced() -> None:
            exporter.clear()
            flow.execute("source", {"n": n})
            assert len(exporter.get_finished_spans()) == deliveries + 1

        try:
            t_otel = median_seconds(traced, repeats=args.repeats)
        finally:
            instrumentor.uninstrument()

        # The SDK's own price of what a delivery gets (a span with three
        # attributes made current and ended, one histogram record), without
        # routilux: the part of the overhead no hook can avoid.
        from opentelemetry import context, trace

        tracer = tracer_provider.get_tracer("w8")
        histogram = meter_provider.get_meter("w8").create_histogram("w8.duration")
        parent = trace.set_span_in_context(tracer.start_span("w8.job"))
        attributes = {
            "routilux.flow_id": "w2",
            "routilux.routine_id": "s",
            "routilux.outcome": "ok",
        }

        def sdk_alone() -> None:
            exporter.clear()
            for _ in range(deliveries):
                span = tracer.start_span(
                    "d", context=parent, attributes={"a": "s", "b": "input", "c": 1}
                )
                token = context.attach(trace.set_span_in_context(span, parent))
                context.detach(token)
                span.end()
                histogram.record(0.0, attributes)

        t_sdk = median_seconds(sdk_alone, repeats=args.repeats)

    def overhead_us(seconds: float) -> float:
        return (seconds - t_plain) / deliveries * 1e6

    print(f"W8: W2 ({n} messages, {deliveries} deliveries per run), median of {args.repeats}")
    row("plain", deliveries / t_plain, "deliv/s")
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
    if t_otel is not None:
        row(
            "with OTel spans + metrics, in-memory export",
            deliveries / t_otel,
            "deliv/s",
            f"+{overhead_us(t_otel):.2f} us/delivery (target <= {TARGET_OTEL_US:g})",
        )
    if t_sdk is not None:
        row(
            "  of which the OTel SDK alone (span + record)",
            t_sdk / deliveries * 1e6,
            "us/deliv",
        )


if __name__ == "__main__":
    main()

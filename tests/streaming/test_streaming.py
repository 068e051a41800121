"""Event streaming (routilux.streaming): order, kinds, backpressure, dropping,
closing early, async iteration, under both strategies."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

import pytest

from helpers import AsyncDoubler, Collector, Numbers, Sink, Source, Step, collected, pipeline
from routilux import Flow, FlowError, InvalidArgumentError, JobHooks, JobStateError
from routilux.hooks import Delivery, HookSet
from routilux.job_state import ExecutionRecord
from routilux.streaming import (
    BUILDERS,
    KINDS,
    DeliveryFinished,
    DeliveryStarted,
    Emitted,
    EventStream,
    JobFinished,
    JobStarted,
)

STRATEGIES = ["sequential", "concurrent"]


def fan_flow(strategy: str, sink: Any = None) -> Flow:
    """source -(value)-> fan -(20 x out)-> sink.  The bulk producer is ``fan``, a
    routine that is not the entry, so its handler runs on a job or pool thread in
    both strategies (never on the thread that calls ``flow.stream``)."""

    def fan(routine: Any, data: dict[str, Any]) -> None:
        for i in range(data["value"]):
            routine.emit("out", value=i)

    return _fan(strategy, fan, sink)


def _fan(strategy: str, fan: Any, sink: Any) -> Flow:
    flow = Flow("fan", execution_strategy=strategy, max_workers=2)
    flow.add_routine(Source(), "source")
    flow.add_routine(Step(fan, slot="input"), "fan")
    flow.add_routine(sink if sink is not None else Collector(), "sink")
    flow.connect("source", "output", "fan", "input")
    flow.connect("fan", "out", "sink", "input")
    return flow


class EmitCounter(JobHooks):
    """Counts ``fan``'s emissions before the stream's hook sees them, and notes
    how far the consumer had got at each one; ``reached`` fires at ``at``."""

    def __init__(self, consumed: list[int], at: int) -> None:
        self.consumed = consumed
        self.at = at
        self.reached = threading.Event()
        self.ahead: list[int] = []  # per emission: emitted so far - consumed so far
        self.job_state: Any = None

    def on_job_start(self, job_state: Any) -> None:
        self.job_state = job_state

    def on_emit(self, job_state: Any, record: Any) -> None:
        if record.routine_id != "fan":
            return
        self.ahead.append(len(self.ahead) + 1 - self.consumed[0])
        if len(self.ahead) == self.at:
            self.reached.set()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_job_streams_every_kind_in_order(strategy: str) -> None:
    flow = pipeline(("source", Numbers()), ("sink", Sink()), execution_strategy=strategy)
    events = list(flow.stream("source", {"n": 2}))
    assert [e.seq for e in events] == list(range(len(events)))
    assert isinstance(events[0], JobStarted) and events[0].routine_id == "source"
    assert isinstance(events[-1], JobFinished) and events[-1].status == "completed"
    assert events[-1].job_state.status == "completed"
    kinds = [e.kind for e in events]
    assert set(kinds) == set(KINDS) - {"output"}
    assert [(e.routine_id, e.data) for e in events if isinstance(e, Emitted)] == [
        ("source", {"value": 0}),
        ("source", {"value": 1}),
    ]
    deliveries = [(e.kind, e.routine_id) for e in events if e.kind.startswith("delivery")]
    if strategy == "concurrent":  # the pool may start the sinks before the source ends
        deliveries.sort(key=lambda d: (d[1] != "source", d[0] != "delivery_started"))
        deliveries[2:] = [d for pair in zip(deliveries[2:4], deliveries[4:]) for d in pair]
    assert deliveries == [
        ("delivery_started", "source"),
        ("delivery_finished", "source"),
        ("delivery_started", "sink"),
        ("delivery_finished", "sink"),
        ("delivery_started", "sink"),
        ("delivery_finished", "sink"),
    ]
    statuses = [(e.old, e.new) for e in events if e.kind == "status"]
    assert statuses == [("pending", "running"), ("running", "completed")]
    assert len({e.job_id for e in events}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        events[0].seq = 5  # type: ignore[misc]


def test_outputs_and_failures_are_streamed() -> None:
    def work(routine: Any, data: dict[str, Any]) -> None:
        if data["value"] == 1:
            raise RuntimeError("bad value 1")
        routine.send_output("result", value=data["value"])

    flow = pipeline(("source", Numbers()), ("work", Step(work, slot="input")))
    events = list(flow.stream("source", {"n": 2}, kinds=["output", "delivery_finished"]))
    outputs = [(e.routine_id, e.output_type, e.data) for e in events if e.kind == "output"]
    assert outputs == [("work", "result", {"value": 0})]
    ends = [e for e in events if isinstance(e, DeliveryFinished)]
    assert [(e.routine_id, e.data, type(e.error)) for e in ends] == [
        ("source", {"n": 2}, type(None)),
        ("work", {"value": 0}, type(None)),
        ("work", {"value": 1}, RuntimeError),
    ]
    assert all(e.duration >= 0 for e in ends)


def test_kinds_choose_what_is_received_and_what_the_engine_reports() -> None:
    flow = pipeline(("source", Numbers()), ("sink", Sink()))
    events = list(flow.stream("source", {"n": 3}, kinds="emitted"))
    assert [e.kind for e in events] == ["emitted"] * 3
    # A stream that asks for no delivery does not make the engine report them.
    assert HookSet((EventStream(kinds=["emitted"]).hooks,)).deliveries is False
    assert HookSet((EventStream(kinds=["delivery_finished"]).hooks,)).deliveries is True
    assert HookSet((EventStream(kinds=["output"]).hooks,)).emit is None


@pytest.mark.parametrize(
    "options, words",
    [
        ({"kinds": ["emitted", "bogus"]}, "bogus"),
        ({"kinds": []}, "empty"),
        ({"maxsize": 0}, "maxsize"),
        ({"overflow": "grow"}, "overflow"),
        ({"cancel_on_close": True}, "flow"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        EventStream(**options)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_slow_consumer_holds_the_job_back_and_loses_nothing(strategy: str) -> None:
    maxsize = 3
    consumed = [0]
    counter = EmitCounter(consumed, at=maxsize)
    flow = fan_flow(strategy)
    stream = flow.stream(
        "source", {"value": 20}, kinds=["emitted"], maxsize=maxsize, hooks=[counter]
    )
    first = next(stream)  # the source's emission; the consumer then stalls
    # The fan has emitted at least maxsize values, and then waits for room (until
    # the consumer has read the buffer down to half): the job is held back, not
    # finished, and nothing was dropped.
    counter.reached.wait()
    assert counter.job_state.status == "running"
    assert stream.dropped == 0
    values = []
    for event in stream:
        consumed[0] += 1
        values.append(event.data["value"])
    assert first.data == {"value": 20}
    assert values == list(range(20))
    job = stream.job_state
    assert job is not None and job.wait_for_completion() and job.status == "completed"
    assert len(collected(job)) == 20
    # The producer never ran further ahead of the consumer than the bound (plus the
    # emission waiting for room).
    assert max(counter.ahead) <= maxsize + 1
    assert stream.dropped == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_drop_oldest_never_holds_the_job_back_and_counts_the_drops(strategy: str) -> None:
    flow = fan_flow(strategy)
    stream = flow.stream(
        "source", {"value": 20}, kinds=["emitted"], maxsize=5, overflow="drop_oldest"
    )
    job = stream.job_state
    assert job is not None
    # Nobody consumes until the job is over: it still completes.
    assert job.wait_for_completion() and job.status == "completed"
    received = list(stream)
    assert [e.data["value"] for e in received] == [15, 16, 17, 18, 19]
    assert stream.dropped == 21 - 5  # the source's emission and fan's first 15
    assert [e.seq for e in received] == list(range(16, 21))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("cancel", [False, True])
def test_breaking_out_of_the_loop_cancels_only_when_asked(strategy: str, cancel: bool) -> None:
    counter = EmitCounter([0], at=0)
    flow = fan_flow(strategy)
    for event in flow.stream(
        "source",
        {"value": 20},
        kinds=["emitted"],
        maxsize=1,
        cancel_on_close=cancel,
        hooks=[counter],
    ):
        assert event.data == {"value": 20}
        break  # the stream is dropped here: the job, waiting for room, is released
    job = counter.job_state
    assert job.wait_for_completion()
    if cancel:
        assert job.status == "cancelled"
        assert len(collected(job)) < 20
    else:
        assert job.status == "completed"
        assert len(collected(job)) == 20


def test_closing_a_stream_of_a_finished_job_cancels_nothing() -> None:
    flow = pipeline(("source", Numbers()), ("sink", Sink()))
    stream = flow.stream("source", {"n": 1}, cancel_on_close=True)
    job = stream.job_state
    assert job is not None and job.wait_for_completion()
    stream.close()
    assert job.status == "completed"
    assert list(stream) == []


def test_a_sequential_job_on_the_consumers_own_thread_never_waits() -> None:
    # execute() drains a sequential job on this very thread: the stream's bound
    # must not make it wait for a consumer that can only read afterwards.
    flow = pipeline(("source", Numbers()), ("sink", Sink()))
    stream = EventStream(kinds=["emitted"], maxsize=2)
    job = flow.execute("source", {"n": 10}, hooks=[stream.hooks])
    assert job.status == "completed"
    assert [e.data["value"] for e in stream] == list(range(10))
    assert stream.dropped == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_job_events_reads_the_stream_the_run_was_started_with(strategy: str) -> None:
    flow = fan_flow(strategy)
    stream = EventStream(kinds=["emitted", "job_finished"], maxsize=2)
    job = flow.execute("source", {"value": 20}, wait=False, hooks=[stream.hooks])
    events = list(job.events())
    assert len(events) == 22 and isinstance(events[-1], JobFinished)
    assert events[-1].job_state is job and job.status == "completed"


def gated_fan(strategy: str, gate: threading.Event, entered: threading.Event) -> Flow:
    """fan_flow whose ``fan`` waits for ``gate`` (``entered`` says it is there)
    before it emits its ``value`` events and sends one output."""

    def fan(routine: Any, data: dict[str, Any]) -> None:
        entered.set()
        assert gate.wait(30)
        for i in range(data["value"]):
            routine.emit("out", value=i)
        routine.send_output("done", count=data["value"])

    return _fan(strategy, fan, None)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_job_events_attaches_to_a_job_started_without_a_stream(strategy: str) -> None:
    gate, entered = threading.Event(), threading.Event()
    flow = gated_fan(strategy, gate, entered)
    job = flow.execute("source", {"value": 5}, wait=False)
    assert entered.wait(30)
    events = job.events()
    gate.set()
    got = list(events)
    # No replay: the stream begins now, with the job's current status.
    assert isinstance(got[0], JobStarted) and got[0].status == "running"
    assert [e.seq for e in got] == list(range(len(got)))
    assert [e.data["value"] for e in got if isinstance(e, Emitted)] == [0, 1, 2, 3, 4]
    assert [e.data for e in got if e.kind == "output"] == [{"count": 5}]
    finished = [(e.routine_id, e.error) for e in got if isinstance(e, DeliveryFinished)]
    # fan's own delivery was running before the stream attached: not reported.
    assert finished == [("sink", None)] * 5
    assert [(e.old, e.new) for e in got if e.kind == "status"] == [("running", "completed")]
    assert isinstance(got[-1], JobFinished) and got[-1].status == "completed"
    assert got[-1].job_state is job


def test_job_events_attaches_to_a_journaled_job(tmp_path: Any) -> None:
    # A journaled job reports its deliveries to the journal already: the one
    # running when the stream attaches has no Delivery, and is not reported.
    gate, entered = threading.Event(), threading.Event()
    flow = gated_fan("sequential", gate, entered)
    flow.use_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    job = flow.execute("source", {"value": 2}, wait=False)
    assert entered.wait(30)
    events = job.events(kinds=["delivery_started", "delivery_finished", "job_finished"])
    gate.set()
    got = [(e.kind, e.routine_id) for e in events]
    assert got == [
        ("delivery_started", "sink"),
        ("delivery_finished", "sink"),
        ("delivery_started", "sink"),
        ("delivery_finished", "sink"),
        ("job_finished", None),
    ]
    assert job.status == "completed"


def test_job_events_options_and_a_second_consumer() -> None:
    gate, entered = threading.Event(), threading.Event()
    flow = gated_fan("sequential", gate, entered)
    job = flow.execute("source", {"value": 30}, wait=False)
    assert entered.wait(30)
    outputs = job.events(kinds="output")
    dropping = job.events(kinds=["emitted"], maxsize=4, overflow="drop_oldest")
    gate.set()
    assert job.wait_for_completion(30)
    assert [e.data for e in outputs] == [{"count": 30}]
    kept = [e.data["value"] for e in dropping]
    assert kept == [26, 27, 28, 29] and dropping.dropped == 26


def test_job_events_of_a_settled_job_gives_its_start_and_end() -> None:
    flow = pipeline(("source", Numbers()), ("sink", Sink()))
    job = flow.execute("source", {"n": 1})
    got = list(job.events())
    assert [(e.kind, getattr(e, "status", None)) for e in got] == [
        ("job_started", "completed"),
        ("job_finished", "completed"),
    ]


def test_job_events_of_a_job_no_flow_ran_says_so() -> None:
    from routilux import JobState

    with pytest.raises(JobStateError, match=r"never been run by a flow"):
        JobState("f").events()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_job_aevents_attaches_too(strategy: str) -> None:
    gate, entered = threading.Event(), threading.Event()
    flow = gated_fan(strategy, gate, entered)
    job = flow.execute("source", {"value": 3}, wait=False)
    assert entered.wait(30)

    async def watch() -> list[Any]:
        events = job.aevents(kinds=["emitted", "job_finished"])
        gate.set()
        return [e async for e in events]

    got = asyncio.run(watch())
    assert [e.kind for e in got] == ["emitted"] * 3 + ["job_finished"]
    assert got[-1].status == "completed"


def test_job_aevents_reads_the_stream_the_run_was_started_with() -> None:
    flow = pipeline(("source", Numbers()), ("sink", Sink()))
    stream = EventStream(kinds=["emitted", "job_finished"])
    job = flow.execute("source", {"n": 2}, wait=False, hooks=[stream.hooks])

    async def watch() -> list[str]:
        return [e.kind async for e in job.aevents()]

    assert asyncio.run(watch()) == ["emitted", "emitted", "job_finished"]


def test_a_job_nobody_streams_keeps_its_flows_hooks() -> None:
    flow = pipeline(("source", Numbers()), ("sink", Sink()))
    job = flow.execute("source", {"n": 1})
    # Attaching costs a job nothing up front: it runs with the flow's shared
    # hooks, which do not listen to deliveries.
    assert job._hooks is flow._job_hooks and not job._hooks.deliveries


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_async_iteration_with_async_handlers(strategy: str) -> None:
    flow = Flow("aio", execution_strategy=strategy, max_workers=2)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(AsyncDoubler(), "double")
    flow.add_routine(Collector(), "sink")
    flow.connect("source", "output", "double", "input", param_mapping={"value": "i"})
    flow.connect("double", "out", "sink", "input")

    async def consume() -> list[Any]:
        seen = []
        async for event in flow.astream("source", {"n": 5}, maxsize=2):
            seen.append(event)
        return seen

    events = asyncio.run(consume())
    assert isinstance(events[-1], JobFinished) and events[-1].status == "completed"
    doubled = sorted(
        e.data["i"] for e in events if e.kind == "emitted" and e.routine_id == "double"
    )
    assert doubled == [0, 2, 4, 6, 8]
    assert [e.seq for e in events] == list(range(len(events)))


def test_async_stream_closed_early_cancels_when_asked() -> None:
    counter = EmitCounter([0], at=0)
    flow = fan_flow("concurrent")

    async def consume() -> None:
        stream = flow.astream(
            "source",
            {"value": 20},
            kinds=["emitted"],
            maxsize=1,
            cancel_on_close=True,
            hooks=[counter],
        )
        async with stream:
            async for _event in stream:
                break

    asyncio.run(consume())
    job = counter.job_state
    assert job.wait_for_completion() and job.status == "cancelled"


def _builder_input(cls: type, values: tuple[Any, ...]) -> tuple[Any, ...]:
    """What a producer puts for an event of ``cls`` with the field ``values``
    (after seq): the fields themselves, or for the hot kinds the Delivery or the
    history record they are read from."""
    if cls in (DeliveryStarted, DeliveryFinished):
        timestamp, job_id, routine_id, data, slot, attempt, *rest = values
        delivery = Delivery(routine_id, slot, attempt, False, data, None)
        return (timestamp, job_id, delivery, *rest)
    if cls is Emitted:
        timestamp, job_id, routine_id, data, event_name = values
        record = ExecutionRecord(routine_id, event_name, data)
        return (timestamp, job_id, record)
    return values


def test_every_builder_makes_its_dataclass_field_for_field() -> None:
    for cls, build in BUILDERS.items():
        names = [f.name for f in dataclasses.fields(cls)]
        values = tuple(f"v{i}" for i in range(len(names) - 1))
        event = build(7, (build, *_builder_input(cls, values)))
        assert type(event) is cls
        assert event == cls(7, *values)
        assert dataclasses.astuple(event) == (7, *values)
    assert {cls.kind for cls in BUILDERS} == set(KINDS)


@pytest.mark.parametrize("overflow", ["block", "drop_oldest"])
def test_many_producer_threads_lose_nothing_uncounted(overflow: str) -> None:
    # Four pool threads deliver to the sink at once and all report to one small
    # buffer: every event is either received or counted as dropped, in seq order.
    flow = fan_flow("concurrent")
    flow.set_execution_strategy("concurrent", max_workers=4)
    stream = flow.stream("source", {"value": 200}, maxsize=2, overflow=overflow)
    received = list(stream)
    seqs = [e.seq for e in received]
    assert seqs == sorted(set(seqs))
    total = seqs[-1] + 1
    assert len(received) + stream.dropped == total
    job = received[-1].job_state
    assert job.status == "completed" and len(collected(job)) == 200
    if overflow == "block":
        assert stream.dropped == 0 and seqs == list(range(total))
        kinds = [e.kind for e in received]
        # source + fan + 200 sink deliveries, each started and finished; 201 emissions
        assert kinds.count("delivery_started") == kinds.count("delivery_finished") == 202
        assert kinds.count("emitted") == 201


def test_a_stream_of_an_unknown_entry_raises_like_execute() -> None:
    flow = pipeline(("source", Numbers()), ("sink", Sink()))
    with pytest.raises(FlowError, match="nope"):
        flow.stream("nope")
    with pytest.raises(InvalidArgumentError, match="not a hook"):
        flow.stream("source", hooks=[object()])


def test_the_engines_delivery_has_every_field_of_the_dataclass() -> None:
    # The engine fills a Delivery's fields in directly (no __init__): none forgotten.
    seen: list[Delivery] = []

    class Watch(JobHooks):
        def on_delivery_start(self, job_state: Any, delivery: Delivery) -> None:
            seen.append(delivery)

    flow = pipeline(("source", Numbers()), ("sink", Sink()))
    job = flow.execute("source", {"n": 1}, hooks=[Watch()])
    first = seen[0]
    assert set(vars(first)) == {f.name for f in dataclasses.fields(Delivery)}
    assert first == Delivery("source", "trigger", 1, True, {"n": 1}, f"{job.job_id}:0")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_tracker_records_every_emission_once_beside_a_stream(strategy: str) -> None:
    # The engine does the tracker's part of an emission inline and calls the
    # stream after it: neither may miss one, nor get it twice.
    flow = pipeline(("source", Numbers()), ("sink", Sink()), execution_strategy=strategy)
    events = list(flow.stream("source", {"n": 3}))
    job = events[-1].job_state
    assert [e.data["value"] for e in events if isinstance(e, Emitted)] == [0, 1, 2]
    assert job.execution_tracker is not None
    flow_events = job.execution_tracker.event_flow
    assert [(e["event_name"], e["data"]) for e in flow_events] == [
        ("output", {"value": 0}),
        ("output", {"value": 1}),
        ("output", {"value": 2}),
    ]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_tracker_records_every_emission_once_beside_an_attached_stream(strategy: str) -> None:
    gate, entered = threading.Event(), threading.Event()
    flow = gated_fan(strategy, gate, entered)
    job = flow.execute("source", {"value": 5}, wait=False)
    assert entered.wait(30)
    first, second = job.events(kinds=["emitted"]), job.events(kinds=["emitted"])
    gate.set()
    assert [e.data["value"] for e in first] == [0, 1, 2, 3, 4]
    assert [e.data["value"] for e in second] == [0, 1, 2, 3, 4]
    assert job.execution_tracker is not None
    # The entry's emission (before the streams attached), then fan's five.
    values = [e["data"]["value"] for e in job.execution_tracker.event_flow]
    assert values == [5, 0, 1, 2, 3, 4]

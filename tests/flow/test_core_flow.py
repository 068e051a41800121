"""Flow: construction, building the graph, execute(), ordering, context, isolation.

Spec: 20-flow-execution.md, 10 §1.1/§2, spec/README.md decisions, and
docs/execution-model.md.  Races are forced with threading.Barrier/Event (with
timeouts), never with sleeps.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime

import pytest

from helpers import Step
from routilux import Connection, Flow, InvalidArgumentError, JobState, Routine

TIMEOUT = 5.0

# ---------------------------------------------------------------------------
# routines used by the tests


class Source(Routine):
    """``trigger`` emits one ``output`` (data=item) per item of ``items``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.send)
        self.define_event("output", ["data"])

    def send(self, items=("x",), **kwargs):
        for item in items:
            self.emit("output", data=item)


class Probe(Routine):
    """Slot ``input`` logs ``(name, kwargs)`` into a shared list; optionally re-emits."""

    def __init__(self, name, log, merge_strategy="override", forward=False) -> None:
        super().__init__()
        self.name = name
        self.log = log
        self.forward = forward
        self.define_slot("input", handler=self.handle, merge_strategy=merge_strategy)
        self.define_event("output", ["data"])

    def handle(self, **kwargs):
        self.log.append((self.name, kwargs))
        if self.forward:
            self.emit("output", **kwargs)


class Failing(Routine):
    """Slot ``input`` raises for data == ``bad``, logs everything else."""

    def __init__(self, log, bad="a") -> None:
        super().__init__()
        self.log = log
        self.bad = bad
        self.define_slot("input", handler=self.handle)

    def handle(self, data=None, **kwargs):
        if data == self.bad:
            raise RuntimeError(f"cannot handle {data}")
        self.log.append(data)


class NoTrigger(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=lambda **kw: None)


def two_step_flow(**flow_kwargs):
    """source --output--> sink(input); returns (flow, log)."""
    log: list = []
    flow = Flow("two_step", **flow_kwargs)
    flow.add_routine(Source(), "source")
    flow.add_routine(Probe("sink", log), "sink")
    flow.connect("source", "output", "sink", "input")
    return flow, log


# ---------------------------------------------------------------------------
# construction


def test_flow_defaults():
    flow = Flow()
    uuid.UUID(flow.flow_id)  # a uuid4 string
    assert flow.routines == {}
    assert flow.connections == []
    assert flow.execution_strategy == "sequential"
    assert flow.max_workers == 1
    assert flow.error_handler is None
    assert flow.execution_tracker is None
    assert Flow().flow_id != flow.flow_id


def test_flow_given_id_and_repr():
    flow = Flow(flow_id="my_flow")
    assert flow.flow_id == "my_flow"
    assert repr(flow) == "Flow[my_flow]"


@pytest.mark.parametrize(
    ("args", "strategy", "workers"),
    [
        ((), "sequential", 1),
        ((None, "sequential", 8), "sequential", 1),
        ((None, "concurrent"), "concurrent", 5),
        ((None, "concurrent", 3), "concurrent", 3),
    ],
)
def test_flow_strategy_and_max_workers(args, strategy, workers):
    flow = Flow(*args)
    assert flow.execution_strategy == strategy
    assert flow.max_workers == workers


def test_unknown_strategy_is_stored_and_behaves_as_sequential():
    log = []
    flow = Flow("odd", execution_strategy="whatever", max_workers=4)
    assert flow.execution_strategy == "whatever"
    assert flow.max_workers == 1
    threads = []

    class Rec(Probe):
        def handle(self, **kwargs):
            threads.append(threading.get_ident())

    flow.add_routine(Source(), "source")
    flow.add_routine(Rec("rec", log), "rec")
    flow.connect("source", "output", "rec", "input")
    js = flow.execute("source", {"items": [1, 2]})
    assert js.status == "completed"
    # sequential: the calling thread drains the queue itself
    assert threads == [threading.get_ident()] * 2


def test_set_execution_strategy_invalid_raises():
    flow = Flow()
    with pytest.raises(ValueError) as info:
        flow.set_execution_strategy("parallel")
    assert str(info.value) == (
        "Invalid execution strategy: parallel. Must be 'sequential' or 'concurrent'"
    )
    assert flow.execution_strategy == "sequential"


def test_set_execution_strategy_sets_workers():
    flow = Flow()
    flow.set_execution_strategy("concurrent")
    assert (flow.execution_strategy, flow.max_workers) == ("concurrent", 5)
    flow.set_execution_strategy("concurrent", max_workers=7)
    assert flow.max_workers == 7
    flow.set_execution_strategy("sequential", max_workers=7)
    assert (flow.execution_strategy, flow.max_workers) == ("sequential", 1)
    flow.shutdown()


# ---------------------------------------------------------------------------
# add_routine


def test_add_routine_returns_given_id_and_keeps_order():
    flow = Flow()
    a, b, c = Source(), Source(), Source()
    assert flow.add_routine(b, "b") == "b"
    assert flow.add_routine(a, "a") == "a"
    assert flow.add_routine(c, "c") == "c"
    assert list(flow.routines) == ["b", "a", "c"]
    assert flow.routines["a"] is a


def test_add_routine_defaults_to_routine_internal_id():
    flow = Flow()
    r = Source()
    rid = flow.add_routine(r)
    assert rid == r._id
    assert flow.routines[rid] is r


def test_add_routine_duplicate_id_raises():
    flow = Flow()
    first = Source()
    flow.add_routine(first, "a")
    with pytest.raises(ValueError) as info:
        flow.add_routine(Source(), "a")
    assert str(info.value) == "Routine ID 'a' already exists in flow"
    assert flow.routines == {"a": first}


def test_add_same_routine_object_under_two_ids():
    flow = Flow()
    r = Source()
    flow.add_routine(r, "one")
    flow.add_routine(r, "two")
    assert flow.routines == {"one": r, "two": r}


# ---------------------------------------------------------------------------
# connect


def test_connect_creates_indexed_connection():
    flow = Flow()
    src, sink = Source(), Probe("p", [])
    flow.add_routine(src, "src")
    flow.add_routine(sink, "sink")
    conn = flow.connect("src", "output", "sink", "input", {"data": "value"})
    assert isinstance(conn, Connection)
    assert flow.connections == [conn]
    assert conn.source_event is src.get_event("output")
    assert conn.target_slot is sink.get_slot("input")
    assert conn.param_mapping == {"data": "value"}
    assert src.get_event("output").connected_slots == [sink.get_slot("input")]
    assert sink.get_slot("input").connected_events == [src.get_event("output")]
    assert flow._find_connection(src.get_event("output"), sink.get_slot("input")) is conn
    assert flow._find_connection(sink.get_event("output"), sink.get_slot("input")) is None


@pytest.fixture
def wired():
    flow = Flow()
    flow.add_routine(Source(), "src")
    flow.add_routine(Probe("p", []), "sink")
    return flow


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ghost", "output", "sink", "input"), "Source routine 'ghost' not found in flow"),
        (("src", "nope", "sink", "input"), "Event 'nope' not found in routine 'src'"),
        (("src", "output", "ghost", "input"), "Target routine 'ghost' not found in flow"),
        (("src", "output", "sink", "nope"), "Slot 'nope' not found in routine 'sink'"),
        # several faults: reported in the order source, event, target, slot
        (("ghost", "nope", "ghost2", "nope"), "Source routine 'ghost' not found in flow"),
        (("src", "nope", "ghost", "nope"), "Event 'nope' not found in routine 'src'"),
        (("src", "output", "ghost", "nope"), "Target routine 'ghost' not found in flow"),
        # an event name is not a slot name and vice versa
        (("src", "trigger", "sink", "input"), "Event 'trigger' not found in routine 'src'"),
        (("src", "output", "sink", "output"), "Slot 'output' not found in routine 'sink'"),
    ],
)
def test_connect_errors(wired, args, message):
    with pytest.raises(ValueError) as info:
        wired.connect(*args)
    assert str(info.value) == message
    assert wired.connections == []
    assert wired.routines["src"].get_event("output").connected_slots == []


def test_connect_routine_to_itself_is_allowed_and_runs():
    class Countdown(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.seen = []
            self.define_slot("trigger", handler=self.tick)
            self.define_slot("again", handler=self.tick)
            self.define_event("next", ["n"])

        def tick(self, n):
            self.seen.append(n)
            if n > 0:
                self.emit("next", n=n - 1)

    flow = Flow()
    r = Countdown()
    flow.add_routine(r, "c")
    flow.connect("c", "next", "c", "again")
    js = flow.execute("c", {"n": 3})
    assert js.status == "completed"
    assert r.seen == [3, 2, 1, 0]
    assert [rec.data for rec in js.get_execution_history("c")] == [{"n": 2}, {"n": 1}, {"n": 0}]


def test_connect_same_pair_twice_delivers_once_with_latest_mapping():
    log = []
    flow = Flow()
    flow.add_routine(Source(), "src")
    flow.add_routine(Probe("p", log), "sink")
    c1 = flow.connect("src", "output", "sink", "input", {"data": "first"})
    c2 = flow.connect("src", "output", "sink", "input", {"data": "second"})
    assert flow.connections == [c1, c2]
    js = flow.execute("src", {"items": ["v"]})
    assert js.status == "completed"
    assert log == [("p", {"second": "v"})]


def test_param_mapping_is_applied_on_delivery():
    log = []
    flow = Flow()
    emit_abc = Step(lambda routine, data: routine.emit("out", a=1, b=2, c=3), "trigger")
    flow.add_routine(emit_abc, "src")
    flow.add_routine(Probe("p", log), "sink")
    flow.connect("src", "out", "sink", "input", {"a": "x", "b": "y"})
    js = flow.execute("src")
    assert js.status == "completed"
    assert log == [("p", {"x": 1, "y": 2, "c": 3})]
    # the history records what was emitted, before renaming
    assert [r.data for r in js.get_execution_history("src")] == [{"a": 1, "b": 2, "c": 3}]


# ---------------------------------------------------------------------------
# execute: basics


def test_execute_unknown_entry_raises_and_runs_nothing():
    flow, log = two_step_flow()
    with pytest.raises(ValueError) as info:
        flow.execute("ghost")
    assert str(info.value) == "Entry routine 'ghost' not found in flow"
    assert log == []


def test_execute_returns_completed_job_state_after_downstream_ran():
    flow, log = two_step_flow()
    js = flow.execute("source", {"items": ["a"]})
    assert isinstance(js, JobState)
    assert js.status == "completed"
    assert js.flow_id == "two_step"
    assert js.current_routine_id == "source"
    # execute() blocks until the job is quiescent
    assert log == [("sink", {"data": "a"})]


def test_execute_trivial_flow_returns_completed():
    flow = Flow()

    flow.add_routine(Step(lambda routine, data: None, "trigger"), "nop")
    js = flow.execute("nop")
    assert js.status == "completed"
    assert js.get_execution_history() == []


def test_each_execute_creates_a_new_job_state():
    flow, _ = two_step_flow()
    js1 = flow.execute("source")
    js2 = flow.execute("source")
    assert js1 is not js2
    assert js1.job_id != js2.job_id
    assert js1.status == js2.status == "completed"


def test_entry_params_go_through_the_dispatch_rule():
    seen = []

    class Entry(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.go)

        def go(self, count, label="none"):
            seen.append((count, label))

    flow = Flow()
    flow.add_routine(Entry(), "e")
    flow.execute("e", {"count": 5, "ignored": True})
    flow.execute("e", {"count": 1, "label": "L"})
    assert seen == [(5, "none"), (1, "L")]


def test_entry_params_default_to_empty_dict():
    seen = []

    class Entry(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=lambda data: seen.append(data))

    flow = Flow()
    flow.add_routine(Entry(), "e")
    flow.execute("e")
    flow.execute("e", None)
    assert seen == [{}, {}]


def test_missing_trigger_slot_fails_the_job_without_raising():
    flow = Flow()
    flow.add_routine(NoTrigger(), "nt")
    js = flow.execute("nt")
    assert js.status == "failed"
    state = js.get_routine_state("nt")
    assert state["status"] == "failed"
    assert "trigger" in state["error"]


def test_missing_trigger_slot_with_optional_routine_completes():
    flow = Flow()
    r = NoTrigger()
    r.set_as_optional()
    flow.add_routine(r, "nt")
    js = flow.execute("nt")
    assert js.status == "completed"


def test_execute_sets_current_flow_on_every_routine():
    flow, _ = two_step_flow()
    other = Probe("o", [])
    flow.add_routine(other, "unconnected")
    flow.execute("source")
    assert all("_current_flow" not in vars(r) for r in flow.routines.values())  # never written


# ---------------------------------------------------------------------------
# execute: design document steps


class DocDataSource(Routine):
    def __init__(self):
        super().__init__()
        self.trigger_slot = self.define_slot("trigger", handler=self.send)
        self.output_event = self.define_event("output", ["data"])

    def send(self, **kwargs):
        self.emit("output", data="test")


class DocSimpleProcessor(Routine):
    def __init__(self):
        super().__init__()
        self.input_slot = self.define_slot("input", handler=self.process)
        self.output_event = self.define_event("output", ["result"])

    def process(self, data=None, **kwargs):
        data_value = data or kwargs.get("data", "")
        ctx = self.get_execution_context()
        if ctx:
            ctx.job_state.update_routine_state(
                ctx.routine_id, {"last_processed": data_value, "processed": True}
            )
        self.emit("output", result=f"Processed: {data_value}")


def test_design_step1_history_and_processor_state():
    flow = Flow(flow_id="jobstate_flow")
    source_id = flow.add_routine(DocDataSource(), "source")
    processor_id = flow.add_routine(DocSimpleProcessor(), "processor")
    flow.connect(source_id, "output", processor_id, "input")
    js = flow.execute(source_id)
    assert js.status == "completed"
    assert js.flow_id == "jobstate_flow"
    assert isinstance(js.created_at, datetime)
    history = js.get_execution_history()
    assert [(r.routine_id, r.event_name, r.data) for r in history] == [
        ("source", "output", {"data": "test"}),
        ("processor", "output", {"result": "Processed: test"}),
    ]
    # the framework writes nothing into a non-entry routine's state
    assert js.get_routine_state(processor_id) == {"last_processed": "test", "processed": True}


def test_non_entry_routine_without_state_has_none():
    flow, log = two_step_flow()
    js = flow.execute("source", {"items": ["a", "b"]})
    assert len(log) == 2
    assert js.get_routine_state("sink") is None


def test_entry_state_keeps_handler_keys_after_completion():
    class Gen(Routine):
        def __init__(self):
            super().__init__()
            self.define_slot("trigger", handler=self.generate)
            self.define_event("output", ["data"])

        def generate(self, count=3, **kwargs):
            ctx = self.get_execution_context()
            ctx.job_state.update_routine_state(ctx.routine_id, {"generated_count": count})
            for i in range(count):
                self.emit("output", data=f"item_{i}")

    log = []
    flow = Flow()
    flow.add_routine(Gen(), "source")
    flow.add_routine(Probe("p", log), "p")
    flow.connect("source", "output", "p", "input")
    js = flow.execute("source", entry_params={"count": 5})
    assert js.status == "completed"
    assert len(log) == 5
    state = js.get_routine_state("source")
    assert state["generated_count"] == 5
    assert state["status"] == "completed"
    assert isinstance(state["execution_time"], float)
    assert state["execution_time"] >= 0
    start = datetime.fromisoformat(state["start_time"])
    end = datetime.fromisoformat(state["end_time"])
    assert start <= end
    assert set(state) == {"generated_count", "status", "execution_time", "start_time", "end_time"}


def test_entry_state_gets_framework_keys_even_without_handler_state():
    flow, _ = two_step_flow()
    js = flow.execute("source")
    assert set(js.get_routine_state("source")) == {
        "status",
        "execution_time",
        "start_time",
        "end_time",
    }


class DocCollector(Routine):
    def __init__(self, order):
        super().__init__()
        self.order = order
        self.input_slot = self.define_slot("input", handler=self.collect)

    def collect(self, data=None, **kwargs):
        data_value = data or kwargs.get("data", "")
        self.order.append(("collector", data_value))
        ctx = self.get_execution_context()
        ctx.job_state.append_to_shared_log(
            {"action": "collected", "data": data_value, "routine": "collector"}
        )
        items = ctx.job_state.get_shared_data("collected_items", [])
        items.append(data_value)
        ctx.job_state.update_shared_data("collected_items", items)


class DocProcessor(Routine):
    def __init__(self, order):
        super().__init__()
        self.order = order
        self.input_slot = self.define_slot("input", handler=self.process)
        self.output_event = self.define_event("output", ["result"])

    def process(self, data=None, **kwargs):
        data_value = data or kwargs.get("data", "")
        self.order.append(("processor", data_value))
        ctx = self.get_execution_context()
        items = ctx.job_state.get_shared_data("collected_items", [])
        result = f"Processed {len(items)} items, current: {data_value}"
        ctx.job_state.append_to_shared_log(
            {"action": "processed", "data": data_value, "result": result}
        )
        self.emit("output", result=result)


def test_design_step3_sequential_order_and_shared_data():
    order = []
    flow = Flow(flow_id="shared_data_flow")
    flow.add_routine(Source(), "source")
    flow.add_routine(DocCollector(order), "collector")
    flow.add_routine(DocProcessor(order), "processor")
    flow.connect("source", "output", "collector", "input")
    flow.connect("source", "output", "processor", "input")
    js = flow.execute("source", {"items": ["a", "b", "c"]})
    assert js.status == "completed"
    expected = [
        ("collector", "a"),
        ("processor", "a"),
        ("collector", "b"),
        ("processor", "b"),
        ("collector", "c"),
        ("processor", "c"),
    ]
    assert order == expected
    assert js.get_shared_data("collected_items") == ["a", "b", "c"]
    log = js.get_shared_log()
    assert len(log) == 6
    assert [(e["action"], e["data"]) for e in log] == [
        ("collected" if who == "collector" else "processed", d) for who, d in expected
    ]
    assert all(isinstance(e["timestamp"], str) for e in log)
    # each processor saw the collector's item of the same round first
    assert [e["result"] for e in log if e["action"] == "processed"] == [
        "Processed 1 items, current: a",
        "Processed 2 items, current: b",
        "Processed 3 items, current: c",
    ]


def test_design_step4_history_counts():
    flow = Flow(flow_id="history_flow")
    flow.add_routine(Source(), "source")
    flow.add_routine(Probe("processor", [], forward=True), "processor")
    flow.connect("source", "output", "processor", "input")
    js = flow.execute("source", {"items": ["a", "b", "c"]})
    assert len(js.get_execution_history()) == 6
    assert len(js.get_execution_history("processor")) == 3
    assert len(js.get_execution_history("source")) == 3


def test_sequential_is_breadth_first():
    """A task's own emissions go to the back of the queue (20 §4 (d))."""
    log = []
    flow = Flow()
    flow.add_routine(Source(), "src")
    flow.add_routine(Probe("A", log, forward=True), "A")
    flow.add_routine(Probe("B", log), "B")
    flow.connect("src", "output", "A", "input")
    flow.connect("A", "output", "B", "input")
    js = flow.execute("src", {"items": [1, 2]})
    assert js.status == "completed"
    assert log == [
        ("A", {"data": 1}),
        ("A", {"data": 2}),
        ("B", {"data": 1}),
        ("B", {"data": 2}),
    ]


def test_one_emit_enqueues_in_connection_order():
    log = []
    flow = Flow()
    flow.add_routine(Source(), "src")
    for name in ["z", "m", "a"]:
        flow.add_routine(Probe(name, log), name)
    for name in ["m", "a", "z"]:
        flow.connect("src", "output", name, "input")
    flow.execute("src", {"items": [0]})
    assert [who for who, _ in log] == ["m", "a", "z"]


def test_sequential_trigger_and_downstream_never_overlap():
    log = []
    seen_during_trigger = []

    class Src(Source):
        def send(self, **kwargs):
            self.emit("output", data=1)
            self.emit("output", data=2)
            seen_during_trigger.append(list(log))

    flow = Flow()
    flow.add_routine(Src(), "src")
    flow.add_routine(Probe("p", log), "p")
    flow.connect("src", "output", "p", "input")
    js = flow.execute("src")
    assert js.status == "completed"
    assert seen_during_trigger == [[]]  # nothing ran while the trigger handler ran
    assert log == [("p", {"data": 1}), ("p", {"data": 2})]


def test_sequential_runs_everything_on_the_calling_thread():
    threads = []

    class Rec(Probe):
        def handle(self, **kwargs):
            threads.append(threading.get_ident())
            if self.forward:
                self.emit("output", **kwargs)

    flow = Flow()
    flow.add_routine(Source(), "src")
    flow.add_routine(Rec("a", [], forward=True), "a")
    flow.add_routine(Rec("b", []), "b")
    flow.connect("src", "output", "a", "input")
    flow.connect("a", "output", "b", "input")
    flow.execute("src", {"items": [1, 2, 3]})
    assert threads == [threading.get_ident()] * 6


# ---------------------------------------------------------------------------
# execute: concurrent strategy


def _overlap_flow(barrier, results, **flow_kwargs):
    """source emits twice to a sink whose handler needs two parties at a barrier."""

    def meet(routine, data):
        barrier.wait(timeout=TIMEOUT)
        results.append((data["data"], threading.get_ident()))

    flow = Flow("overlap", **flow_kwargs)
    flow.add_routine(Source(), "src")
    flow.add_routine(Step(meet, "input"), "meet")
    flow.connect("src", "output", "meet", "input")
    return flow


def test_concurrent_handlers_overlap_on_worker_threads():
    barrier = threading.Barrier(2)
    results = []
    flow = _overlap_flow(barrier, results, execution_strategy="concurrent", max_workers=2)
    try:
        js = flow.execute("src", {"items": [1, 2]})
        assert js.status == "completed", js.get_execution_history()
        assert sorted(d for d, _ in results) == [1, 2]
        assert threading.get_ident() not in {t for _, t in results}
    finally:
        flow.shutdown()


def test_per_call_concurrent_override_on_sequential_flow():
    barrier = threading.Barrier(2)
    results = []
    flow = _overlap_flow(barrier, results)
    try:
        js = flow.execute("src", {"items": [1, 2]}, execution_strategy="concurrent")
        assert js.status == "completed", js.get_execution_history()
        assert sorted(d for d, _ in results) == [1, 2]
        # the override is for this job only
        assert flow.execution_strategy == "sequential"
        assert flow.max_workers == 1
    finally:
        flow.shutdown()


def test_concurrent_execute_blocks_until_all_tasks_done():
    log = []
    flow = Flow(execution_strategy="concurrent", max_workers=3)
    flow.add_routine(Source(), "src")
    flow.add_routine(Probe("a", log, forward=True), "a")
    flow.add_routine(Probe("b", log), "b")
    flow.connect("src", "output", "a", "input")
    flow.connect("a", "output", "b", "input")
    try:
        js = flow.execute("src", {"items": list(range(20))})
        assert js.status == "completed"
        assert len(log) == 40
        assert len(js.get_execution_history()) == 40
    finally:
        flow.shutdown()


def test_concurrent_trigger_runs_on_the_calling_thread():
    threads = []

    class Src(Source):
        def send(self, **kwargs):
            threads.append(threading.get_ident())
            self.emit("output", data=1)

    flow = Flow(execution_strategy="concurrent", max_workers=2)
    flow.add_routine(Src(), "src")
    flow.add_routine(Probe("p", []), "p")
    flow.connect("src", "output", "p", "input")
    try:
        assert flow.execute("src").status == "completed"
    finally:
        flow.shutdown()
    assert threads == [threading.get_ident()]


def test_concurrent_single_worker_starts_tasks_in_queue_order():
    order = []
    flow = Flow(execution_strategy="concurrent", max_workers=1)
    flow.add_routine(Source(), "source")
    flow.add_routine(DocCollector(order), "collector")
    flow.add_routine(DocProcessor(order), "processor")
    flow.connect("source", "output", "collector", "input")
    flow.connect("source", "output", "processor", "input")
    try:
        js = flow.execute("source", {"items": ["a", "b", "c"]})
    finally:
        flow.shutdown()
    assert js.status == "completed"
    assert order == [(who, d) for d in "abc" for who in ("collector", "processor")]


def test_concurrent_append_merges_lose_nothing():
    captured = []
    lock = threading.Lock()

    def acc(routine, data):
        with lock:
            captured.append(data["data"])

    flow = Flow(execution_strategy="concurrent", max_workers=4)
    flow.add_routine(Source(), "src")
    flow.add_routine(Step(acc, "input", merge_strategy="append"), "acc")
    flow.connect("src", "output", "acc", "input")
    try:
        js = flow.execute("src", {"items": list(range(60))})
    finally:
        flow.shutdown()
    assert js.status == "completed"
    assert len(captured) == 60
    live = captured[0]
    assert all(c is live for c in captured)  # every call saw the job's live list
    assert sorted(live) == list(range(60))


# ---------------------------------------------------------------------------
# history


def test_history_records_every_emission_with_flow_ids():
    flow, _ = two_step_flow()
    js = flow.execute("source", {"items": ["a", "b"]})
    history = js.get_execution_history()
    assert [(r.routine_id, r.event_name, r.data) for r in history] == [
        ("source", "output", {"data": "a"}),
        ("source", "output", {"data": "b"}),
    ]
    assert all(isinstance(r.timestamp, datetime) for r in history)
    assert not any(r.event_name in ("start", "completed") for r in js.execution_history)


def test_emission_is_recorded_before_the_emissions_it_causes():
    flow = Flow(execution_strategy="concurrent", max_workers=4)
    flow.add_routine(Source(), "src")
    flow.add_routine(Probe("a", [], forward=True), "a")
    flow.connect("src", "output", "a", "input")
    try:
        js = flow.execute("src", {"items": list(range(10))})
        raw = list(js.execution_history)
        for item in range(10):
            src_pos = next(
                i for i, r in enumerate(raw) if r.routine_id == "src" and r.data["data"] == item
            )
            a_pos = next(
                i for i, r in enumerate(raw) if r.routine_id == "a" and r.data["data"] == item
            )
            assert src_pos < a_pos
    finally:
        flow.shutdown()


def test_emit_without_connections_is_recorded():
    flow = Flow()
    flow.add_routine(Source(), "lonely")
    js = flow.execute("lonely", {"items": ["q"]})
    assert js.status == "completed"
    assert [(r.routine_id, r.event_name, r.data) for r in js.get_execution_history()] == [
        ("lonely", "output", {"data": "q"})
    ]


def test_event_emit_delivers_but_does_not_record():
    log = []

    class Direct(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.go)
            self.define_event("output")

        def go(self, **kwargs):
            self.get_event("output").emit(data="direct")

    flow = Flow()
    flow.add_routine(Direct(), "d")
    flow.add_routine(Probe("p", log), "p")
    flow.connect("d", "output", "p", "input")
    js = flow.execute("d")
    assert js.status == "completed"
    assert log == [("p", {"data": "direct"})]
    assert js.get_execution_history() == []


# ---------------------------------------------------------------------------
# failures (README decision 6, execution-model "Failures")


def test_downstream_failure_fails_the_job_and_drops_queued_tasks():
    log = []
    flow = Flow()
    flow.add_routine(Source(), "src")
    flow.add_routine(Failing(log, bad="b"), "f")
    flow.connect("src", "output", "f", "input")
    js = flow.execute("src", {"items": ["a", "b", "c"]})
    assert js.status == "failed"
    assert log == ["a"]  # "c" was queued after "b" and is dropped
    errors = [r for r in js.get_execution_history() if r.event_name == "error"]
    assert len(errors) == 1
    assert errors[0].routine_id == "f"
    assert errors[0].data["slot"] == "input"
    assert errors[0].data["error"] == "cannot handle b"
    state = js.get_routine_state("f")
    assert state["status"] == "failed"
    assert state["error"] == "cannot handle b"
    assert "error_time" in state


def test_entry_failure_fails_the_job():
    def break_entry(routine, data):
        ctx = routine.get_execution_context()
        ctx.job_state.update_routine_state(ctx.routine_id, {"mine": 1})
        raise ValueError("entry broke")

    flow = Flow()
    flow.add_routine(Step(break_entry, "trigger"), "bad")
    js = flow.execute("bad")
    assert js.status == "failed"
    state = js.get_routine_state("bad")
    assert state["status"] == "failed"
    assert state["error"] == "entry broke"
    assert state["mine"] == 1  # merged, not replaced
    assert [(r.routine_id, r.event_name) for r in js.get_execution_history()] == [("bad", "error")]


# ---------------------------------------------------------------------------
# execution context


def test_context_names_the_right_routine_in_entry_and_downstream():
    seen = {}

    class Ctx(Routine):
        def __init__(self, key) -> None:
            super().__init__()
            self.key = key
            self.define_slot("trigger", handler=self.go)
            self.define_slot("input", handler=self.go)
            self.define_event("output")

        def go(self, **kwargs):
            seen[self.key] = self.get_execution_context()
            if self.key == "first":
                self.emit("output")

    flow = Flow()
    flow.add_routine(Ctx("first"), "entry_routine")
    flow.add_routine(Ctx("second"), "downstream_routine")
    flow.connect("entry_routine", "output", "downstream_routine", "input")
    js = flow.execute("entry_routine")
    first, second = seen["first"], seen["second"]
    assert first is not None and second is not None
    assert first.routine_id == "entry_routine"
    assert second.routine_id == "downstream_routine"
    assert first.flow is flow and second.flow is flow
    assert first.job_state is js and second.job_state is js
    fl, state, rid = second
    assert (fl, state, rid) == (flow, js, "downstream_routine")


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_context_in_worker_tasks(strategy):
    seen = []
    lock = threading.Lock()

    class Ctx(Probe):
        def handle(self, **kwargs):
            ctx = self.get_execution_context()
            with lock:
                seen.append((kwargs["data"], ctx.routine_id if ctx else None, ctx))

    flow = Flow(execution_strategy=strategy, max_workers=3)
    flow.add_routine(Source(), "src")
    flow.add_routine(Ctx("a", []), "left")
    flow.add_routine(Ctx("b", []), "right")
    flow.connect("src", "output", "left", "input")
    flow.connect("src", "output", "right", "input")
    try:
        js = flow.execute("src", {"items": list(range(5))})
    finally:
        flow.shutdown()
    assert js.status == "completed"
    assert sorted((d, rid) for d, rid, _ in seen) == sorted(
        [(i, "left") for i in range(5)] + [(i, "right") for i in range(5)]
    )
    assert all(ctx.job_state is js for _, _, ctx in seen)


def test_context_is_none_before_and_after_a_job():
    flow, _ = two_step_flow()
    source = flow.routines["source"]
    sink = flow.routines["sink"]
    assert source.get_execution_context() is None
    flow.execute("source")
    assert source.get_execution_context() is None
    assert sink.get_execution_context() is None


def test_context_is_none_for_a_routine_outside_the_flow_even_inside_a_job():
    outsider = Routine()
    seen = []

    def ask(routine, data):
        seen.append(("outsider", outsider.get_execution_context()))
        seen.append(("self", routine.get_execution_context() is not None))

    flow = Flow()
    flow.add_routine(Step(ask, "trigger"), "ask")
    flow.execute("ask")
    assert seen == [("outsider", None), ("self", True)]


def test_context_does_not_leak_into_threads_a_handler_starts():
    seen = []

    def spawn(routine, data):
        t = threading.Thread(target=lambda: seen.append(routine.get_execution_context()))
        t.start()
        t.join(TIMEOUT)
        seen.append(routine.get_execution_context() is not None)

    flow = Flow()
    flow.add_routine(Step(spawn, "trigger"), "s")
    flow.execute("s")
    assert seen == [None, True]


def test_slot_receive_inside_a_job_records_handler_error():
    class Bad(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", handler=self.handle)

        def handle(self, x):
            raise RuntimeError("bad input")

    bad = Bad()

    def call_bad(routine, data):
        bad.get_slot("input").receive({"x": 1})  # swallowed, but recorded

    flow = Flow()
    flow.add_routine(Step(call_bad, "trigger"), "caller")
    flow.add_routine(bad, "bad")
    js = flow.execute("caller")
    assert js.status == "completed"
    records = js.get_execution_history()
    assert [(r.routine_id, r.event_name) for r in records] == [("bad", "error")]
    assert records[0].data["slot"] == "input"
    assert records[0].data["error"] == "bad input"


def test_context_for_routine_registered_twice_names_the_first_id():
    seen = []

    def ask(routine, data):
        seen.append(routine.get_execution_context().routine_id)

    flow = Flow()
    r = Step(ask, "trigger")
    flow.add_routine(r, "first")
    flow.add_routine(r, "second")
    flow.execute("second")
    assert seen == ["first"]


def test_current_execution_job_state_view():
    seen = []

    def ask(routine, data):
        seen.append(routine.get_execution_context().flow._current_execution_job_state.value)

    flow = Flow()
    flow.add_routine(Step(ask, "trigger"), "ask")
    js = flow.execute("ask")
    assert seen == [js]
    assert getattr(flow._current_execution_job_state, "value", None) is None


def test_emit_deferred_event_and_send_output_inside_a_job():
    class Defer(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.go)
            self.define_event("later")

        def go(self, **kwargs):
            self.emit_deferred_event("later", x=1)
            self.emit_deferred_event("not_validated_now", y=2)
            self.send_output("progress", pct=50)

    log = []
    flow = Flow()
    flow.add_routine(Defer(), "d")
    flow.add_routine(Probe("p", log), "p")
    flow.connect("d", "later", "p", "input")
    js = flow.execute("d")
    assert js.status == "completed"
    assert log == []  # nothing is emitted now
    assert js.get_execution_history() == []
    assert [(e["routine_id"], e["event_name"], e["data"]) for e in js.deferred_events] == [
        ("d", "later", {"x": 1}),
        ("d", "not_validated_now", {"y": 2}),
    ]
    assert all(isinstance(e["timestamp"], str) for e in js.deferred_events)
    assert [(e["routine_id"], e["output_type"], e["data"]) for e in js.output_log] == [
        ("d", "progress", {"pct": 50})
    ]


# ---------------------------------------------------------------------------
# isolation between jobs (DESIGN invariant 2)


def test_jobs_one_after_another_are_isolated():
    seen = []

    def acc(routine, data):
        values = data["data"]  # the live accumulated list
        seen.append(list(values))
        ctx = routine.get_execution_context()
        ctx.job_state.update_shared_data("seen", list(values))
        ctx.job_state.update_routine_state(ctx.routine_id, {"n": len(values)})

    flow = Flow()
    flow.add_routine(Source(), "src")
    flow.add_routine(Step(acc, "input", merge_strategy="append"), "acc")
    flow.connect("src", "output", "acc", "input")
    js1 = flow.execute("src", {"items": ["a", "b"]})
    js2 = flow.execute("src", {"items": ["c"]})
    assert js1 is not js2
    # the append buffer belongs to the job: the second job starts empty
    assert seen == [["a"], ["a", "b"], ["c"]]
    assert js1.get_shared_data("seen") == ["a", "b"]
    assert js2.get_shared_data("seen") == ["c"]
    assert js1.get_routine_state("acc") == {"n": 2}
    assert js2.get_routine_state("acc") == {"n": 1}
    assert [r.data["data"] for r in js1.get_execution_history()] == ["a", "b"]
    assert [r.data["data"] for r in js2.get_execution_history()] == ["c"]


def test_jobs_running_at_the_same_time_are_isolated():
    barrier = threading.Barrier(2)

    class Src(Source):
        def send(self, tag, **kwargs):
            # both jobs are inside their trigger handler at the same time
            barrier.wait(timeout=TIMEOUT)
            self.emit("output", data=f"{tag}-1")
            self.emit("output", data=f"{tag}-2")

    def acc(routine, data):
        ctx = routine.get_execution_context()
        ctx.job_state.update_shared_data("last", list(data["data"]))

    flow = Flow()
    flow.add_routine(Src(), "src")
    flow.add_routine(Step(acc, "input", merge_strategy="append"), "acc")
    flow.connect("src", "output", "acc", "input")
    results = {}

    def run(tag):
        results[tag] = flow.execute("src", {"tag": tag})

    threads = [threading.Thread(target=run, args=(t,)) for t in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
    assert set(results) == {"x", "y"}
    for tag, js in results.items():
        assert js.status == "completed"
        assert js.get_shared_data("last") == [f"{tag}-1", f"{tag}-2"]
        assert [r.data["data"] for r in js.get_execution_history()] == [f"{tag}-1", f"{tag}-2"]
    assert results["x"].job_id != results["y"].job_id


# ---------------------------------------------------------------------------
# wait_for_completion


def test_wait_for_completion_on_fresh_flow_and_after_execute():
    flow, _ = two_step_flow()
    assert flow.wait_for_completion() is True
    assert flow.wait_for_completion(timeout=1.0) is True
    flow.execute("source")
    assert flow.wait_for_completion(timeout=1.0) is True


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_wait_for_completion_waits_for_a_running_job(strategy):
    started = threading.Event()
    release = threading.Event()
    log = []

    class Block(Probe):
        def handle(self, **kwargs):
            started.set()
            release.wait(TIMEOUT)
            log.append(kwargs)

    flow = Flow(execution_strategy=strategy)
    flow.add_routine(Source(), "src")
    flow.add_routine(Block("b", []), "b")
    flow.connect("src", "output", "b", "input")
    try:
        js = flow.execute("src", wait=False)
        assert started.wait(TIMEOUT)
        # the handler is blocked, so neither wait can succeed yet
        assert js.status == "running"
        assert flow.wait_for_completion(timeout=0.05) is False
        assert js.wait_for_completion(timeout=0.05) is False
        release.set()
        assert flow.wait_for_completion(timeout=TIMEOUT) is True
        assert js.wait_for_completion(timeout=TIMEOUT) is True
        assert js.status == "completed"
        assert log == [{"data": "x"}]
    finally:
        release.set()
        flow.shutdown()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"max_workers": 0}, "max_workers"),
        ({"max_workers": "4"}, "max_workers"),
        ({"history_limit": 0}, "history_limit"),
        ({"history_limit": 2.5}, "history_limit"),
    ],
)
def test_flow_rejects_bad_sizes_naming_the_flow_and_argument(kwargs, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment) as info:
        Flow("sized", **kwargs)
    assert "'sized'" in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


def test_set_execution_strategy_rejects_bad_worker_counts():
    flow = Flow("sized")
    with pytest.raises(InvalidArgumentError, match="max_workers"):
        flow.set_execution_strategy("concurrent", max_workers=-1)
    assert flow.execution_strategy == "sequential"


def test_entry_params_must_be_a_dict_naming_the_entry_routine():
    flow, _ = two_step_flow()
    with pytest.raises(InvalidArgumentError, match="entry_params for entry routine 'source'"):
        flow.execute("source", ["not", "a", "dict"])
    assert flow.wait_for_completion(0)


def test_add_routine_rejects_what_is_not_a_routine():
    flow = Flow("typed")
    with pytest.raises(InvalidArgumentError, match=r"add_routine\('a'\) needs a Routine"):
        flow.add_routine(object(), "a")
    with pytest.raises(InvalidArgumentError, match="routine id must be a string"):
        flow.add_routine(Routine(), 7)
    assert flow.routines == {}


def test_connect_rejects_a_mapping_that_is_not_str_to_str():
    flow = Flow("typed")
    src, dst = Routine(), Routine()
    src.define_event("out")
    dst.define_slot("in")
    flow.add_routine(src, "src")
    flow.add_routine(dst, "dst")
    with pytest.raises(InvalidArgumentError, match=r"param_mapping of src\.out -> dst\.in"):
        flow.connect("src", "out", "dst", "in", param_mapping=[("a", "b")])
    with pytest.raises(InvalidArgumentError, match="param_mapping"):
        flow.connect("src", "out", "dst", "in", param_mapping={"a": 1})
    assert flow.connections == []
    assert src.get_event("out").connected_slots == []


def test_an_unknown_merge_strategy_acts_as_override_and_is_logged(caplog):
    routine = Routine()
    with caplog.at_level("WARNING", logger="routilux.slot"):
        slot = routine.define_slot("in", merge_strategy="apend")
    assert "unknown merge strategy 'apend'" in caplog.text
    slot.receive({"v": 1})
    slot.receive({"v": 2})
    assert slot._data == {"v": 2}

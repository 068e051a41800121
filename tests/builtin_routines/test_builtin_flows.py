"""The built-ins inside flows: timers on the engine, per-job state, error strategies,
and a flow of all fourteen built-ins surviving a JSON round trip (acceptance 3).

Timing is never asserted: each test lets the job's completion (which waits for
pending timers) drive it, with short timeouts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from routilux import (
    ErrorHandler,
    ErrorStrategy,
    Flow,
    Routine,
    register_function,
    register_serializable,
)
from routilux.builtin_routines import (
    Aggregator,
    Batcher,
    ConditionalRouter,
    DataFlattener,
    DataTransformer,
    DataValidator,
    Debouncer,
    Filter,
    Mapper,
    ResultExtractor,
    Splitter,
    TextClipper,
    TextRenderer,
    TimeProvider,
)

WAIT = 0.05  # seconds; short, and never measured


@register_serializable
class BuiltinTestSource(Routine):
    """Entry: emits ``items`` as one list (``output``) and one by one (``each``)."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", self._trigger)
        self.define_event("output", ["data"])
        self.define_event("each", ["data"])

    def _trigger(self, items: Any = None, **kwargs: Any) -> None:
        items = list(items or [])
        self.emit("output", data=items, **kwargs)
        for item in items:
            self.emit("each", data=item)


@register_serializable
class BuiltinTestSink(Routine):
    """Keeps every delivery in its routine state (per job)."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", self._receive)

    def _receive(self, **kwargs: Any) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        js, rid = ctx.job_state, ctx.routine_id
        with js.lock:
            state = dict(js.get_routine_state(rid) or {})
            state["received"] = [*state.get("received", []), kwargs]
            js.update_routine_state(rid, state)


def received(job: Any, sink_id: str = "sink") -> list[dict[str, Any]]:
    return list((job.get_routine_state(sink_id) or {}).get("received", []))


def build(*routines: tuple[str, Routine], strategy: str = "sequential") -> Flow:
    flow = Flow(execution_strategy=strategy, max_workers=4)
    flow.add_routine(BuiltinTestSource(), "source")
    flow.add_routine(BuiltinTestSink(), "sink")
    for rid, routine in routines:
        flow.add_routine(routine, rid)
    return flow


def run(flow: Flow, items: list[Any], **kwargs: Any) -> Any:
    job = flow.execute("source", {"items": items, **kwargs})
    assert job.status == "completed", job.status
    return job


class TestBatcher:
    def test_partial_batch_flushed_after_max_wait_without_more_input(self):
        batcher = Batcher()
        batcher.set_config(batch_size=3, max_wait=WAIT, flush_on_job_end=False)
        flow = build(("batcher", batcher))
        flow.connect("source", "each", "batcher", "input")
        flow.connect("batcher", "output", "sink", "input")
        job = run(flow, list(range(7)))
        assert [(r["batch"], r["reason"]) for r in received(job)] == [
            ([0, 1, 2], "full"),
            ([3, 4, 5], "full"),
            ([6], "max_wait"),
        ]
        assert [r["batch_index"] for r in received(job)] == [0, 1, 2]

    def test_partial_batch_flushed_at_job_end(self):
        batcher = Batcher()
        batcher.set_config(batch_size=2)
        flow = build(("batcher", batcher))
        flow.connect("source", "each", "batcher", "input")
        flow.connect("batcher", "output", "sink", "input")
        job = run(flow, ["a", "b", "c"])
        assert [(r["batch"], r["reason"]) for r in received(job)] == [
            (["a", "b"], "full"),
            (["c"], "job_end"),
        ]

    def test_full_batch_cancels_its_timer(self):
        batcher = Batcher()
        batcher.set_config(batch_size=2, max_wait=60.0)
        flow = build(("batcher", batcher))
        flow.connect("source", "each", "batcher", "input")
        flow.connect("batcher", "output", "sink", "input")
        # With the 60 s timer left pending the job could not complete within 10 s.
        job = run(flow, [1, 2])
        assert [r["batch"] for r in received(job)] == [[1, 2]]


class TestAggregator:
    def test_timeout_fires_without_further_input(self):
        agg = Aggregator()
        agg.set_config(expected_count=5, timeout=WAIT, flush_on_job_end=False)
        flow = build(("agg", agg))
        flow.connect("source", "each", "agg", "input")
        flow.connect("agg", "output", "sink", "input")
        job = run(flow, ["x", "y", "z"])
        assert received(job) == [
            {"items": ["x", "y", "z"], "key": None, "count": 3, "expected": 5, "reason": "timeout"}
        ]

    def test_complete_group_cancels_timer(self):
        agg = Aggregator()
        agg.set_config(expected_count=2, timeout=60.0)
        flow = build(("agg", agg))
        flow.connect("source", "each", "agg", "input")
        flow.connect("agg", "output", "sink", "input")
        job = run(flow, [1, 2])
        assert [r["reason"] for r in received(job)] == ["complete"]

    def test_groups_by_key_and_flushes_rest_at_job_end(self):
        agg = Aggregator()
        agg.set_config(expected_count=2, correlation_key="k")
        flow = build(("agg", agg))
        flow.connect("source", "each", "agg", "input")
        flow.connect("agg", "output", "sink", "input")
        items = [{"k": "a", "v": 1}, {"k": "b", "v": 2}, {"k": "a", "v": 3}]
        job = run(flow, items)
        assert [(r["key"], r["count"], r["reason"]) for r in received(job)] == [
            ("a", 2, "complete"),
            ("b", 1, "job_end"),
        ]

    def test_splitter_total_drives_completion(self):
        agg = Aggregator()
        flow = build(("split", Splitter()), ("agg", agg))
        flow.connect("source", "output", "split", "input")
        flow.connect("split", "output", "agg", "input")
        flow.connect("agg", "output", "sink", "input")
        job = run(flow, ["p", "q", "r"])
        assert received(job) == [
            {"items": ["p", "q", "r"], "key": None, "count": 3, "expected": 3, "reason": "complete"}
        ]


class TestDebouncer:
    def test_emits_only_the_last_of_a_burst(self):
        debouncer = Debouncer()
        debouncer.set_config(wait=WAIT)
        flow = build(("debounce", debouncer))
        flow.connect("source", "each", "debounce", "input")
        flow.connect("debounce", "output", "sink", "input")
        job = run(flow, list(range(5)))
        assert received(job) == [{"data": 4, "count": 5}]

    def test_cancelling_the_job_cancels_the_timer(self):
        debouncer = Debouncer()
        debouncer.set_config(wait=60.0)
        flow = build(("debounce", debouncer))
        flow.connect("source", "each", "debounce", "input")
        flow.connect("debounce", "output", "sink", "input")
        job = flow.execute("source", {"items": [1]}, timeout=0.2)
        assert job.status == "running"  # held only by the 60 s timer
        flow.cancel(job)
        assert job.wait_for_completion(timeout=10)
        assert job.status == "cancelled"
        assert received(job) == []


class TestConcurrentJobs:
    @pytest.mark.parametrize("cls", [Batcher, Aggregator, Debouncer])
    def test_two_jobs_keep_separate_buffers(self, cls):
        routine = cls()
        if cls is Batcher:
            routine.set_config(batch_size=100, max_wait=WAIT)
        elif cls is Aggregator:
            routine.set_config(expected_count=100, timeout=WAIT)
        else:
            routine.set_config(wait=WAIT)
        flow = build(("stateful", routine), strategy="concurrent")
        flow.connect("source", "each", "stateful", "input")
        flow.connect("stateful", "output", "sink", "input")
        job_a = flow.execute("source", {"items": [f"a{i}" for i in range(20)]}, wait=False)
        job_b = flow.execute("source", {"items": [f"b{i}" for i in range(20)]}, wait=False)
        assert job_a.wait_for_completion(timeout=10)
        assert job_b.wait_for_completion(timeout=10)
        for job, prefix in ((job_a, "a"), (job_b, "b")):
            assert job.status == "completed"
            outputs = received(job)
            assert outputs, f"job {prefix} emitted nothing"
            if cls is Debouncer:
                values = [o["data"] for o in outputs]
            else:
                key = "batch" if cls is Batcher else "items"
                values = [v for o in outputs for v in o[key]]
            assert all(str(v).startswith(prefix) for v in values), values
            if cls is not Debouncer:
                assert sorted(values) == sorted(f"{prefix}{i}" for i in range(20))

    def test_concurrent_pipeline_orders_by_index(self):
        flow = build(("split", Splitter()), ("map", Mapper()), ("agg", Aggregator()),
                     strategy="concurrent")  # fmt: skip
        flow.routines["map"].set_config(expression="data * 10")
        flow.connect("source", "output", "split", "input")
        flow.connect("split", "output", "map", "input")
        flow.connect("map", "output", "agg", "input")
        flow.connect("agg", "output", "sink", "input")
        job = run(flow, list(range(30)))
        assert received(job)[0]["items"] == [i * 10 for i in range(30)]


class TestErrorStrategies:
    def build_filter_flow(self, condition: Any) -> Flow:
        filt = Filter()
        filt.set_config(condition=condition)
        flow = build(("filter", filt))
        flow.connect("source", "each", "filter", "input")
        flow.connect("filter", "output", "sink", "input")
        return flow

    @pytest.mark.parametrize("condition", ["data['x'] > 0", lambda d: d["x"] > 0])
    def test_raising_condition_fails_the_job_under_stop(self, condition):
        flow = self.build_filter_flow(condition)
        job = flow.execute("source", {"items": [{"x": 1}, {}]}, timeout=10)
        assert job.status == "failed"

    def test_raising_condition_continues_under_continue(self):
        flow = self.build_filter_flow(lambda d: d["x"] > 0)
        flow.routines["filter"].set_error_handler(ErrorHandler(strategy=ErrorStrategy.CONTINUE))
        job = run(flow, [{"x": 1}, {}, {"x": 2}])
        assert [r["data"] for r in received(job)] == [{"x": 1}, {"x": 2}]

    def test_router_string_condition_raising_is_unmatched(self):
        router = ConditionalRouter()
        router.set_config(routes=[("big", "data['x'] > 0")])
        flow = build(("router", router))
        flow.connect("source", "each", "router", "input")
        flow.connect("router", "output", "sink", "input")
        job = run(flow, [{}])
        assert received(job) == [{"data": {}, "route": "unmatched"}]


# ---------------------------------------------------------------------------
# Acceptance 3: every built-in in one flow, serialized, reloaded, same result
# ---------------------------------------------------------------------------


@register_function  # saved by reference: it must be registered (issue 9)
def times_ten(value: Any) -> Any:
    return {**value, "score": value["score"] * 10}


def acceptance_flow() -> Flow:
    flow = Flow(flow_id="all-builtins")
    flow.add_routine(BuiltinTestSource(), "source")
    for sink in ("sink_main", "sink_small", "sink_batches", "sink_time", "sink_invalid"):
        flow.add_routine(BuiltinTestSink(), sink)

    split = Splitter()
    filt = Filter()
    filt.set_config(condition=lambda rec: rec["score"] > 0)
    mapper = Mapper()
    mapper.set_config(function=times_ten, field_map={"name": "name", "score": "score"})
    agg = Aggregator()
    agg.set_config(count_key=None, flush_on_job_end=True)
    router = ConditionalRouter()
    router.add_route("many", "len(data) >= 2")
    router.add_route("few", lambda items: len(items) < 2)
    flattener = DataFlattener()
    flattener.set_config(separator="/")
    validator = DataValidator()
    validator.set_config(rules={"0/score": "is_positive", "1/name": lambda v: isinstance(v, str)})
    renderer = TextRenderer()
    clipper = TextClipper()
    clipper.set_config(max_length=40)
    extractor = ResultExtractor()
    extractor.set_config(strategy="first_match")
    batcher = Batcher()
    batcher.set_config(batch_size=2)  # the rest at job end: deterministic
    transformer = DataTransformer()
    transformer.set_config(transformations=[lambda v: len(v), "to_string"])
    debouncer = Debouncer()
    debouncer.set_config(wait=WAIT)
    clock = TimeProvider()
    clock.set_config(format="timestamp")

    for rid, routine in [
        ("split", split), ("filter", filt), ("map", mapper), ("agg", agg), ("router", router),
        ("flatten", flattener), ("validate", validator), ("render", renderer),
        ("clip", clipper), ("extract", extractor), ("batch", batcher),
        ("transform", transformer), ("debounce", debouncer), ("clock", clock),
    ]:  # fmt: skip
        flow.add_routine(routine, rid)

    flow.connect("source", "output", "split", "input")
    flow.connect("split", "output", "filter", "input")
    flow.connect("filter", "output", "map", "input")
    flow.connect("map", "output", "agg", "input")
    flow.connect("agg", "output", "router", "input", param_mapping={"items": "data"})
    flow.connect("router", "many", "flatten", "input")
    flow.connect("router", "few", "sink_small", "input")
    flow.connect("flatten", "output", "validate", "input", {"flattened_data": "data"})
    flow.connect("validate", "valid", "render", "input", {"validated_data": "data"})
    flow.connect("validate", "invalid", "sink_invalid", "input")
    flow.connect("render", "output", "clip", "input", {"rendered_text": "text"})
    flow.connect("clip", "output", "extract", "input", {"clipped_text": "data"})
    flow.connect("extract", "output", "sink_main", "input")
    flow.connect("split", "output", "batch", "input")
    flow.connect("batch", "output", "transform", "input", {"batch": "data"})
    flow.connect("transform", "output", "debounce", "input", {"transformed_data": "data"})
    flow.connect("debounce", "output", "sink_batches", "input")
    flow.connect("split", "done", "clock", "request")
    flow.connect("clock", "output", "sink_time", "input")
    return flow


RECORDS = [
    {"name": "ann", "score": 3},
    {"name": "bob", "score": -1},
    {"name": "cy", "score": 5},
    {"name": "dee", "score": 0},
    {"name": "eve", "score": 1},
]


def outcome(job: Any) -> dict[str, Any]:
    result = {
        sink: received(job, sink)
        for sink in ("sink_main", "sink_small", "sink_batches", "sink_invalid")
    }
    result["time_keys"] = [sorted(r) for r in received(job, "sink_time")]
    return result


def test_acceptance_all_builtins_round_trip_through_json():
    original = acceptance_flow()
    expected = outcome(run(original, RECORDS))
    assert expected["sink_main"], "the main path produced nothing"
    assert expected["sink_main"][0]["extracted_result"].startswith("<0/name>ann</0/name>")
    assert [(r["data"], r["count"]) for r in expected["sink_batches"]] == [("2", 2), ("1", 1)]
    assert expected["time_keys"] == [["datetime", "formatted", "time_string", "timestamp"]]

    saved = json.loads(json.dumps(original.serialize()))
    restored = Flow().deserialize(saved)
    assert sorted(restored.routines) == sorted(original.routines)
    assert outcome(run(restored, RECORDS)) == expected

    again = json.loads(json.dumps(restored.serialize()))
    assert again["routines"].keys() == saved["routines"].keys()
    for rid in saved["routines"]:
        assert again["routines"][rid]["_config"] == saved["routines"][rid]["_config"], rid

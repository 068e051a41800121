"""Round trips of every serializable class through serialize -> JSON -> deserialize,
and the errors saving and loading must give (spec 50 §1-3, 30 §9, DESIGN 8-9)."""

from __future__ import annotations

import json
import os
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from helpers import Collector, Values, json_trip
from routilux import (
    Connection,
    ErrorHandler,
    ErrorStrategy,
    Event,
    ExecutionRecord,
    ExecutionTracker,
    Flow,
    JobState,
    Routine,
    SerializationError,
    Slot,
    register_serializable,
)
from routilux.builtin_routines import Filter, Mapper
from routilux.persistence import NotConstructableError
from routilux.serialization import FORMAT_VERSION, lookup_class, register_function


@register_serializable  # a saved retryable exception class must be registered (issue 9)
class RetryableForTest(Exception):
    pass


def keep_max(current: Any, new: dict[str, Any]) -> dict[str, Any]:
    """A callable merge strategy: keep the largest ``value`` seen."""
    best = current.get("value") if isinstance(current, dict) else None
    value = new.get("value")
    return {"value": value if best is None or value > best else best}


register_function(keep_max)


def plain_handler(**kwargs: Any) -> None:
    """A module-level function handler."""


register_function(plain_handler)


# ---------------------------------------------------------------------------
# Routines used by these tests (registered: they are rebuilt by name)
# ---------------------------------------------------------------------------


@register_serializable
class RtWorker(Routine):
    """Slots ``input`` (override) and ``collect`` (append), event ``output``."""

    def __init__(self) -> None:
        super().__init__()
        self.input_slot = self.define_slot("input", handler=self.on_input)
        self.collect_slot = self.define_slot("collect", self.on_collect, merge_strategy="append")
        self.output_event = self.define_event("output", ["value"])
        self.set_config(step=1)

    def on_input(self, value: int) -> None:
        self.emit("output", value=value + self.get_config("step"))

    def on_collect(self, value: list[int]) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        ctx.job_state.update_shared_data("collected", list(value))

    def extra(self, **kwargs: Any) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        ctx.job_state.update_shared_data("extra", kwargs)


@register_serializable
class RtLambdaInit(Routine):
    """A routine whose own ``__init__`` installs a lambda handler."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=lambda value: self.emit("output", value=value * 3))
        self.define_event("output", ["value"])


class RtUnregistered(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.run)

    def run(self, **_: Any) -> None:
        pass


class NeedsArgs(Routine):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.define_slot("trigger", handler=self.run)

    def run(self, **_: Any) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        ctx.job_state.update_shared_data("ran", self.name)


# ---------------------------------------------------------------------------
# Routine, Slot, Event
# ---------------------------------------------------------------------------


def make_worker() -> RtWorker:
    r = RtWorker()
    r.set_config(
        step=5,
        nested={"a": [1, {"b": None, "c": ["x", {"d": False}]}], "e": {}},
        text="Grüße — 世界 🚀\nline 2\t\"quoted\" 'single' \\back\\",
    )
    r.set_error_handler(
        ErrorHandler(
            strategy=ErrorStrategy.RETRY,
            max_retries=4,
            retry_delay=0.5,
            retry_backoff=3.0,
            retryable_exceptions=(RetryableForTest, KeyError),
            is_critical=True,
        )
    )
    # A slot defined after construction, handled by another method of the routine.
    r.define_slot("late", handler=r.extra, merge_strategy=keep_max)
    r.define_event("late_event", ["a", "b"])
    return r


def test_routine_round_trip_restores_in_place() -> None:
    original = make_worker()
    data = json_trip(original.serialize())

    assert data["_type"] == "RtWorker"
    assert set(data) >= {"_type", "_id", "_config", "_error_handler", "_slots", "_events"}

    restored = lookup_class(data["_type"])()
    assert isinstance(restored, RtWorker)
    returned = restored.deserialize(data)

    assert returned is restored
    assert restored._id == original._id
    assert restored.config() == original.config()
    # The slots/events __init__ made are the ones in the dicts (90 D28).
    assert restored.input_slot is restored._slots["input"]
    assert restored.collect_slot is restored._slots["collect"]
    assert restored.output_event is restored._events["output"]
    assert all(slot.routine is restored for slot in restored._slots.values())
    assert all(event.routine is restored for event in restored._events.values())
    # Handlers are methods of the restored object, not of the original.
    assert restored.input_slot.handler == restored.on_input
    assert restored._slots["late"].handler == restored.extra
    late_handler: Any = restored._slots["late"].handler
    assert late_handler.__self__ is restored
    assert restored._slots["late"].merge_strategy is keep_max
    assert restored.collect_slot.merge_strategy == "append"
    assert restored._events["late_event"].output_params == ["a", "b"]
    handler = restored.get_error_handler()
    assert handler is not None
    assert handler.strategy is ErrorStrategy.RETRY
    assert (handler.max_retries, handler.retry_delay, handler.retry_backoff) == (4, 0.5, 3.0)
    assert handler.is_critical is True
    assert handler.retryable_exceptions == (RetryableForTest, KeyError)
    # A second trip changes nothing.
    assert json_trip(restored.serialize()) == data


@pytest.mark.parametrize(
    "value",
    [
        {"deep": {"er": [1, [2, [3, {"x": None}]]]}},
        None,
        "",
        0,
        False,
        True,
        0.1,
        -(2**53),
        "unicode: héllo — 世界 🚀 \u0000 \u2028",
        "new\nlines\r\nand\ttabs",
        "quotes \" ' and \\ backslashes",
        list(range(1000)),
        [{"i": i, "s": str(i)} for i in range(1000)],
        {"": "", "key with spaces": [], "ключ": {}},
    ],
    ids=lambda v: type(v).__name__ + str(len(json.dumps(v))),
)
def test_config_values_round_trip_exactly(value: Any) -> None:
    r = RtWorker()
    r.set_config(value=value)
    restored = RtWorker().deserialize(json_trip(r.serialize()))
    got = restored.get_config("value")
    assert got == value
    assert type(got) is type(value)
    # No aliasing: the restored config does not share containers with the data.
    if isinstance(value, (dict, list)):
        data = r.serialize()
        again = RtWorker().deserialize(data)
        assert again.get_config("value") is not data["_config"]["value"]


def test_routine_alone_does_not_resolve_methods_of_other_objects() -> None:
    a, b = RtWorker(), RtWorker()
    a.define_slot("borrowed", handler=b.extra)
    data = json_trip(a.serialize())
    assert data["_slots"]["borrowed"]["handler"]["object_id"] == b._id
    # Issue 9: refused with the field named (it used to become None with a warning).
    with pytest.raises(SerializationError, match="borrowed.*no object with that _id"):
        RtWorker().deserialize(data)


def test_slot_round_trip_standalone() -> None:
    slot = Slot("values", None, plain_handler, merge_strategy=keep_max)
    slot._merge_data({"value": 3})
    slot._merge_data({"value": 1})
    data = json_trip(slot.serialize())
    assert data == {
        "_type": "Slot",
        "name": "values",
        "_data": {"value": 3},
        "handler": data["handler"],
        "merge_strategy": data["merge_strategy"],
    }
    assert data["handler"]["callable_type"] == "function"
    restored = Slot().deserialize(data)
    assert restored.name == "values"
    assert restored.handler is plain_handler
    assert restored.merge_strategy is keep_max
    assert restored._data == {"value": 3}
    assert restored._data is not data["_data"]
    restored._merge_data({"value": 10})
    assert restored._data == {"value": 10}


def test_unregistered_lambda_handler_is_refused_at_load() -> None:
    # Issue 9: an unregistered callable raises naming the field and how to register it
    # (it used to become None with a warning).
    r = RtWorker()
    r.define_slot("adhoc", handler=lambda **kw: None, merge_strategy="append")
    data = json_trip(r.serialize())
    with pytest.raises(SerializationError, match="adhoc.*lambda.*register_function"):
        RtWorker().deserialize(data)


def test_lambda_installed_by_init_is_kept() -> None:
    flow = Flow("lambda-init")
    flow.add_routine(Values(), "src")
    flow.add_routine(RtLambdaInit(), "triple")
    flow.add_routine(Collector(), "sink")
    flow.connect("src", "output", "triple", "input")
    flow.connect("triple", "output", "sink", "input")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "set to None" warning
        restored = Flow().deserialize(json_trip(flow.serialize()))
    js = restored.execute("src", {"values": [1, 2]})
    assert js.status == "completed"
    assert js.shared_data["sink"] == [{"value": 3}, {"value": 6}]


def test_event_round_trip() -> None:
    event = Event("done", None, ["a", "b"])
    data = json_trip(event.serialize())
    assert data == {"_type": "Event", "name": "done", "output_params": ["a", "b"]}
    restored = Event().deserialize(data)
    assert (restored.name, restored.output_params) == ("done", ["a", "b"])
    with pytest.raises(SerializationError, match="output_params"):
        Event().deserialize({"_type": "Event", "name": "x", "output_params": "ab"})


# ---------------------------------------------------------------------------
# Connection and Flow
# ---------------------------------------------------------------------------


def test_connection_round_trip_standalone() -> None:
    source, target = RtWorker(), RtWorker()
    conn = Connection(source.output_event, target.input_slot, {"value": "amount"})
    data = json_trip(conn.serialize())
    assert data == {
        "_type": "Connection",
        "param_mapping": {"value": "amount"},
        "_source_event_name": "output",
        "_target_slot_name": "input",
    }
    restored = Connection().deserialize(data)
    assert restored.param_mapping == {"value": "amount"}
    assert restored._source_event_name == "output"  # type: ignore[attr-defined]
    assert restored._target_slot_name == "input"  # type: ignore[attr-defined]
    assert restored.source_event is None and restored.target_slot is None


def build_chain_flow() -> Flow:
    """Built-in style routines that all use "input"/"output", under ids that are not
    their ``_id``, plus real built-ins."""
    flow = Flow("chain", history_limit=500)
    flow.add_routine(Values(), "src")
    for rid, step in (("plus1", 1), ("plus10", 10), ("plus100", 100)):
        worker = RtWorker()
        worker.set_config(step=step)
        flow.add_routine(worker, rid)
    double = Mapper()
    double.set_config(expression="data * 2")
    flow.add_routine(double, "double")
    evens = Filter()
    evens.set_config(condition="data % 4 == 0")
    flow.add_routine(evens, "evens")
    flow.add_routine(Collector(), "kept")
    flow.add_routine(Collector(), "dropped")
    flow.connect("src", "output", "plus1", "input")
    flow.connect("plus1", "output", "plus10", "input")
    flow.connect("plus10", "output", "plus100", "input")
    flow.connect("plus100", "output", "double", "input", {"value": "data"})
    flow.connect("double", "output", "evens", "input")
    flow.connect("evens", "output", "kept", "input")
    flow.connect("evens", "rejected", "dropped", "input")
    return flow


def wiring(flow: Flow) -> list[tuple[Any, ...]]:
    out = []
    for c in flow.connections:
        assert c.source_event is not None and c.target_slot is not None
        source_rid = flow._get_routine_id(c.source_event.routine)  # type: ignore[arg-type]
        target_rid = flow._get_routine_id(c.target_slot.routine)  # type: ignore[arg-type]
        out.append(
            (source_rid, c.source_event.name, target_rid, c.target_slot.name, c.param_mapping)
        )
    return out


def test_flow_round_trip_keeps_wiring_of_reused_names() -> None:
    flow = build_chain_flow()
    data = json_trip(flow.serialize())
    assert data["_type"] == "Flow"
    assert data["format_version"] == FORMAT_VERSION
    assert "job_state" not in data
    assert data["connections"][1]["_source_routine_id"] == "plus1"
    assert data["connections"][1]["_target_routine_id"] == "plus10"

    restored = Flow().deserialize(data)
    assert restored.flow_id == "chain"
    assert restored.history_limit == 500
    assert list(restored.routines) == list(flow.routines)
    assert wiring(restored) == wiring(flow)
    # Every connection is indexed (the engine finds it by event and slot).
    for c in restored.connections:
        assert c.source_event is not None and c.target_slot is not None
        assert restored._find_connection(c.source_event, c.target_slot) is c
        assert c.target_slot in c.source_event.connected_slots
    assert restored.routines["plus10"].get_config("step") == 10

    expected = flow.execute("src", {"values": [1, 2, 3, 4]})
    got = restored.execute("src", {"values": [1, 2, 3, 4]})
    assert expected.status == got.status == "completed"
    assert got.shared_data == expected.shared_data
    assert got.shared_data["sink"]  # something arrived
    assert [(r.routine_id, r.event_name, r.data) for r in got.execution_history] == [
        (r.routine_id, r.event_name, r.data) for r in expected.execution_history
    ]


def test_flow_connections_without_ids_fall_back_to_first_routine_by_name() -> None:
    flow = Flow("fallback")
    flow.add_routine(Values(), "src")
    flow.add_routine(Collector(), "sink")
    flow.connect("src", "output", "sink", "input")
    data = json_trip(flow.serialize())
    for conn in data["connections"]:
        del conn["_source_routine_id"], conn["_target_routine_id"]
    data["_paused"] = True  # written by upstream; ignored
    restored = Flow().deserialize(data)
    assert wiring(restored) == [("src", "output", "sink", "input", {})]


def test_unresolvable_connection_is_dropped_with_a_warning() -> None:
    flow = Flow("drop")
    flow.add_routine(Values(), "src")
    flow.add_routine(Collector(), "sink")
    flow.connect("src", "output", "sink", "input")
    data = json_trip(flow.serialize())
    data["connections"].append(
        {
            "_type": "Connection",
            "param_mapping": {},
            "_source_event_name": "output",
            "_target_slot_name": "input",
            "_source_routine_id": "src",
            "_target_routine_id": "ghost",
        }
    )
    with pytest.warns(UserWarning, match="ghost"):
        restored = Flow().deserialize(data)
    assert wiring(restored) == [("src", "output", "sink", "input", {})]


def test_empty_flow_round_trip() -> None:
    flow = Flow("empty", execution_strategy="concurrent", max_workers=3)
    data = json_trip(flow.serialize())
    assert data["routines"] == {} and data["connections"] == []
    restored = Flow().deserialize(data)
    assert (restored.flow_id, restored.execution_strategy, restored.max_workers) == (
        "empty",
        "concurrent",
        3,
    )
    assert restored.routines == {} and restored.connections == []


def test_flow_error_handler_round_trip() -> None:
    flow = Flow("eh")
    flow.set_error_handler(ErrorHandler(strategy="continue"))
    restored = Flow().deserialize(json_trip(flow.serialize()))
    assert restored.error_handler is not None
    assert restored.error_handler.strategy is ErrorStrategy.CONTINUE


def test_handler_bound_to_another_routine_is_rebound_in_the_new_flow() -> None:
    flow = Flow("cross")
    flow.add_routine(Values(), "src")
    helper = RtWorker()
    flow.add_routine(helper, "helper")
    consumer = Collector()
    # handled by another routine's method
    consumer.get_slot("input").handler = helper.extra  # type: ignore[union-attr]
    flow.add_routine(consumer, "consumer")
    flow.connect("src", "output", "consumer", "input")
    restored = Flow().deserialize(json_trip(flow.serialize()))
    new_helper = restored.routines["helper"]
    handler = restored.routines["consumer"].get_slot("input").handler  # type: ignore[union-attr]
    assert getattr(handler, "__self__", None) is new_helper
    js = restored.execute("src", {"values": [7]})
    assert js.shared_data["extra"] == {"value": 7}


def test_flow_with_non_constructable_routine_fails_to_serialize() -> None:
    flow = Flow("bad")
    flow.add_routine(NeedsArgs("x"), "p")
    js = flow.execute("p")  # it runs fine; only serialization is refused
    assert js.shared_data["ran"] == "x"
    with pytest.raises(TypeError) as info:
        flow.serialize()
    message = str(info.value)
    assert message.startswith(
        "In field 'routines[\"p\"]' of Flow: Found non-constructable Serializable object: "
        "NeedsArgs["
    )
    assert "name" in message
    assert isinstance(info.value, NotConstructableError)


def test_unregistered_routine_serializes_but_does_not_load() -> None:
    flow = Flow("unreg")
    flow.add_routine(RtUnregistered(), "u")
    data = json_trip(flow.serialize())
    assert data["routines"]["u"]["_type"] == "RtUnregistered"
    with pytest.raises(ValueError, match="class not found in registry") as info:
        Flow().deserialize(data)
    assert 'routines["u"]' in str(info.value)


def test_deserialize_into_non_empty_flow_is_refused() -> None:
    data = json_trip(build_chain_flow().serialize())
    target = Flow("busy")
    target.add_routine(Collector(), "x")
    with pytest.raises(SerializationError, match="new Flow"):
        target.deserialize(data)
    assert list(target.routines) == ["x"]


def test_flow_is_untouched_when_its_data_is_bad() -> None:
    data = json_trip(build_chain_flow().serialize())
    data["routines"]["plus10"]["_slots"]["input"]["handler"] = "not a callable dict"
    target = Flow("keep-me")
    with pytest.raises(SerializationError, match="plus10"):
        target.deserialize(data)
    assert target.flow_id == "keep-me" and target.routines == {}


def test_newer_flow_format_is_refused() -> None:
    data = json_trip(Flow("v").serialize())
    data["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(SerializationError, match="format_version"):
        Flow().deserialize(data)


# ---------------------------------------------------------------------------
# JobState, ExecutionRecord, ErrorHandler, ExecutionTracker
# ---------------------------------------------------------------------------

SPEC_KEYS = {
    "_type",
    "flow_id",
    "job_id",
    "status",
    "current_routine_id",
    "routine_states",
    "execution_history",
    "created_at",
    "updated_at",
    "pause_points",
    "pending_tasks",
    "deferred_events",
    "shared_data",
    "shared_log",
    "output_log",
}


def busy_job_state() -> JobState:
    """A JobState with something in every field."""
    js = JobState("flow-1", history_limit=None)
    js.status = "paused"
    js.current_routine_id = "src"
    js.update_routine_state("src", {"count": 2, "ünï": ["c", "ö", "d"]})
    js.record_execution("src", "output", {"value": 1, "nested": {"l": [1, 2]}})
    js.record_execution("w", "error", {"error": "boom", "error_type": "ValueError"})
    js.update_shared_data("text", '日本語\n"quoted"')
    js.update_shared_data("nested", {"a": [1, {"b": None}], "t": True})
    js.append_to_shared_log({"msg": "hello"})
    js.add_deferred_event("src", "output", {"value": 99})
    js.send_output("w", "progress", {"pct": 50})
    js._set_paused("waiting for a human", {"step": 3})
    js.pending_tasks.append({"slot_routine_id": "w", "slot_name": "input", "data": {"v": 2}})
    js.slot_buffers["w"] = {"collect": {"value": [1, 2, 3]}}
    return js


def test_job_state_round_trip_through_json() -> None:
    js = busy_job_state()
    data = json_trip(js.serialize())
    assert SPEC_KEYS <= set(data)
    assert "output_handler" not in data
    assert data["format_version"] == FORMAT_VERSION
    assert set(data) - SPEC_KEYS == {
        "format_version",
        "slot_buffers",
        "history_limit",
        "history_dropped",
    }

    restored = JobState().deserialize(data)
    assert restored.job_id == js.job_id and restored.flow_id == "flow-1"
    assert restored.status == "paused" and restored.current_routine_id == "src"
    assert isinstance(restored.created_at, datetime)
    assert (restored.created_at, restored.updated_at) == (js.created_at, js.updated_at)
    assert all(isinstance(r, ExecutionRecord) for r in restored.execution_history)
    assert list(restored.execution_history) == list(js.execution_history)
    for name in (
        "routine_states",
        "pause_points",
        "pending_tasks",
        "deferred_events",
        "shared_data",
        "shared_log",
        "output_log",
        "slot_buffers",
    ):
        assert getattr(restored, name) == getattr(js, name), name
    assert restored.pause_points[0]["checkpoint"] == {"step": 3}
    assert restored.output_handler is None
    assert json_trip(restored.serialize()) == data


def test_job_state_serialize_is_a_snapshot() -> None:
    js = busy_job_state()
    data = js.serialize()
    js.shared_data["nested"]["a"].append("later")
    js.slot_buffers["w"]["collect"]["value"].append(4)
    js.execution_history[0].data["nested"]["l"].append(3)
    assert data["shared_data"]["nested"]["a"] == [1, {"b": None}]
    assert data["slot_buffers"]["w"]["collect"]["value"] == [1, 2, 3]
    assert data["execution_history"][0]["data"]["nested"]["l"] == [1, 2]
    # And a deserialized JobState does not share containers with the dict it came from.
    restored = JobState().deserialize(data)
    restored.shared_data["nested"]["a"].append("mine")
    assert data["shared_data"]["nested"]["a"] == [1, {"b": None}]


def test_job_state_deserialize_keeps_output_handler_and_lock() -> None:
    target = JobState()
    sink: list[Any] = []

    class Handler:
        def handle(self, **kwargs: Any) -> None:
            sink.append(kwargs)

    handler = Handler()
    target.set_output_handler(handler)
    lock = target.lock
    target.deserialize(json_trip(busy_job_state().serialize()))
    assert target.output_handler is handler
    assert target.lock is lock


def test_job_state_history_limit_round_trip() -> None:
    js = JobState("f", history_limit=3)
    for i in range(5):
        js.record_execution("r", "output", {"i": i})
    data = json_trip(js.serialize())
    assert (data["history_limit"], data["history_dropped"]) == (3, 2)
    restored = JobState().deserialize(data)
    assert restored.history_limit == 3 and restored.history_dropped == 2
    assert [r.data["i"] for r in restored.execution_history] == [2, 3, 4]
    restored.record_execution("r", "output", {"i": 5})
    assert [r.data["i"] for r in restored.execution_history] == [3, 4, 5]
    assert restored.history_dropped == 3


def test_job_state_save_and_load(tmp_path: Path) -> None:
    js = busy_job_state()
    path = tmp_path / "deeper" / "dir" / "job.json"  # parents are created
    js.save(path)
    text = path.read_text(encoding="utf-8")
    assert "日本語" in text  # ensure_ascii=False
    assert text.startswith('{"_type":"JobState",')  # compact (issue 9 item 5)
    loaded = JobState.load(str(path))
    assert loaded.serialize() == json_trip(js.serialize())
    assert isinstance(loaded.execution_history[0].timestamp, datetime)
    # No temporary files are left behind.
    assert os.listdir(path.parent) == ["job.json"]


def test_save_names_the_key_of_unserializable_data(tmp_path: Path) -> None:
    js = busy_job_state()
    js.update_shared_data("tags", {"a", "b"})
    path = tmp_path / "job.json"
    with pytest.raises(SerializationError, match=r"shared_data\.tags"):
        js.save(path)
    assert not path.exists()


def test_save_failure_leaves_the_previous_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    js = busy_job_state()
    js.save(path)
    before = path.read_bytes()
    js.routine_states["src"]["handle"] = object()
    with pytest.raises(SerializationError, match=r"routine_states\.src\.handle"):
        js.save(path)
    assert path.read_bytes() == before


def test_save_refuses_keys_json_would_change(tmp_path: Path) -> None:
    js = JobState("f")
    js.update_shared_data("counts", {"ok": {1: "one"}})
    with pytest.raises(SerializationError, match=r"shared_data\.counts\.ok.*int"):
        js.save(tmp_path / "job.json")
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    js.shared_data = {"loop": cyclic}
    with pytest.raises(SerializationError, match="circular"):
        js.save(tmp_path / "job.json")
    assert not (tmp_path / "job.json").exists()


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError) as info:
        JobState.load(path)
    assert str(info.value) == f"JobState file not found: {path}"


@pytest.mark.parametrize("payload", [{"_type": "Flow"}, {"flow_id": "x"}, {"_type": "os.system"}])
def test_load_wrong_type(tmp_path: Path, payload: dict[str, Any]) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError) as info:
        JobState.load(path)
    assert str(info.value) == f"Invalid JobState file format: {path}"


def test_load_newer_format_version(tmp_path: Path) -> None:
    path = tmp_path / "future.json"
    data = busy_job_state().serialize()
    data["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(SerializationError, match="format_version") as info:
        JobState.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("cut", [1, 10, 0.5, -2])
def test_load_truncated_or_corrupt_file(tmp_path: Path, cut: float) -> None:
    path = tmp_path / "job.json"
    busy_job_state().save(path)
    full = path.read_bytes()
    size = int(len(full) * cut) if isinstance(cut, float) else cut
    path.write_bytes(full[:size])
    before = path.read_bytes()
    with pytest.raises(SerializationError) as info:
        JobState.load(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before


def test_load_malformed_field_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    data = busy_job_state().serialize()
    data["execution_history"][1]["timestamp"] = "yesterday"
    path.write_text(json.dumps(data))
    with pytest.raises(SerializationError, match=r"execution_history\[1\]\.timestamp") as info:
        JobState.load(path)
    assert str(path) in str(info.value)


def test_execution_record_round_trip() -> None:
    record = ExecutionRecord("r1", "output", {"v": "ü", "l": [1]})
    data = json_trip(record.serialize())
    assert data == {
        "_type": "ExecutionRecord",
        "routine_id": "r1",
        "event_name": "output",
        "data": {"v": "ü", "l": [1]},
        "timestamp": record.timestamp.isoformat(),
    }
    assert ExecutionRecord().deserialize(data) == record


def test_error_handler_round_trip() -> None:
    handler = ErrorHandler(
        strategy="retry",
        max_retries=2,
        retry_delay=0.25,
        retry_backoff=1.5,
        retryable_exceptions=(RetryableForTest, ConnectionError),
        is_optional=True,
    )
    restored = ErrorHandler().deserialize(json_trip(handler.serialize()))
    assert restored.strategy is ErrorStrategy.RETRY
    assert (restored.max_retries, restored.retry_delay, restored.retry_backoff) == (2, 0.25, 1.5)
    assert restored.retryable_exceptions == (RetryableForTest, ConnectionError)
    assert (restored.is_critical, restored.is_optional) == (False, True)


def test_execution_tracker_round_trip() -> None:
    flow = build_chain_flow()
    flow.execute("src", {"values": [1, 2]})
    tracker = flow.execution_tracker
    assert tracker is not None and tracker.event_flow
    data = json_trip(tracker.serialize())
    assert set(data) == {
        "_type",
        "flow_id",
        "routine_executions",
        "event_flow",
        "performance_metrics",
        "max_events",  # the job's history_limit (500) bounds its tracker too
    }
    assert data["max_events"] == 500
    restored = lookup_class(data["_type"])().deserialize(data)
    assert isinstance(restored, ExecutionTracker)
    assert restored.flow_id == "chain"
    assert restored.routine_executions == tracker.routine_executions
    assert restored.event_flow == json_trip(tracker.event_flow)
    assert restored.get_flow_performance() == tracker.get_flow_performance()


def test_router_events_made_from_config_are_wired_after_a_round_trip() -> None:
    from routilux.builtin_routines import ConditionalRouter

    flow = Flow("router")
    flow.add_routine(Values(), "src")
    router = ConditionalRouter()
    router.set_config(routes=[("big", "data > 10")])
    flow.add_routine(router, "router")
    flow.add_routine(Collector(), "big_sink")
    flow.add_routine(Collector(), "small_sink")
    flow.connect("src", "output", "router", "input")
    flow.connect("router", "big", "big_sink", "input")
    flow.connect("router", "output", "small_sink", "input")
    restored = Flow().deserialize(json_trip(flow.serialize()))
    assert wiring(restored) == wiring(flow)
    new_router = restored.routines["router"]
    assert new_router.get_event("big") is new_router._events["big"]
    expected = flow.execute("src", {"values": [5, 50]})
    got = restored.execute("src", {"values": [5, 50]})
    assert got.shared_data == expected.shared_data
    assert [r.routine_id for r in got.execution_history if r.event_name == "big"] == ["router"]


def test_built_ins_load_in_a_fresh_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    flow = Flow("fresh")
    double = Mapper()
    double.set_config(expression="data * 2")
    flow.add_routine(double, "double")
    flow.add_routine(Filter(), "keep")
    flow.connect("double", "output", "keep", "input")
    (tmp_path / "flow.json").write_text(json.dumps(flow.serialize()), encoding="utf-8")
    code = (
        "import json, sys\n"
        "from routilux import Flow\n"
        "flow = Flow().deserialize(json.load(open(sys.argv[1])))\n"
        "print(type(flow.routines['double']).__name__, flow.routines['double']"
        ".get_config('expression'), len(flow.connections))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "flow.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["Mapper", "data", "*", "2", "1"]


@pytest.mark.parametrize(
    "name",
    ["Routine", "Slot", "Event", "Connection", "Flow", "JobState", "ExecutionRecord",
     "ErrorHandler", "ExecutionTracker", "Mapper", "Filter", "ConditionalRouter"],
)  # fmt: skip
def test_every_library_class_is_registered(name: str) -> None:
    """Spec 50 §1: every serializable library class is pre-registered."""
    assert lookup_class(name).__name__ == name


def test_history_data_is_copied_and_checked_like_the_rest(tmp_path: Path) -> None:
    js = JobState("f")
    js.record_execution("r", "out", {"a": 1, "b": "x"})  # atoms only
    js.record_execution("r", "out", {"n": {"deep": [1]}})
    saved = js.serialize()
    js.execution_history[0].data["a"] = 2
    js.execution_history[1].data["n"]["deep"].append(2)
    assert saved["execution_history"][0]["data"] == {"a": 1, "b": "x"}
    assert saved["execution_history"][1]["data"] == {"n": {"deep": [1]}}
    js.record_execution("r", "out", {"k": 1})
    js.execution_history[2].data[3] = "int key"  # JSON would make it "3": refused
    with pytest.raises(SerializationError, match=r"execution_history\[2\]\.data"):
        js.save(tmp_path / "job.json")

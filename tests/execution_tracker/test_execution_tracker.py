"""ExecutionTracker (spec 70 §2, 50 §3): records, summaries, event flow, serialization."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta

import pytest

from helpers import Numbers, Sink, pipeline
from routilux.exceptions import SerializationError
from routilux.execution_tracker import ExecutionTracker
from routilux.serialization import FORMAT_VERSION, lookup_class


def test_new_tracker_is_empty() -> None:
    tracker = ExecutionTracker()
    assert tracker.flow_id == ""
    assert tracker.routine_executions == {}
    assert tracker.event_flow == []
    assert tracker.performance_metrics == {}
    assert ExecutionTracker("flow-1").flow_id == "flow-1"


def test_record_routine_start_appends_running_record() -> None:
    tracker = ExecutionTracker("f")
    tracker.record_routine_start("r1", {"x": 1})
    tracker.record_routine_start("r1")
    first, second = tracker.routine_executions["r1"]
    assert first["routine_id"] == "r1"
    assert first["params"] == {"x": 1}
    assert first["status"] == "running"
    assert isinstance(datetime.fromisoformat(first["start_time"]), datetime)
    assert second["params"] == {}


def test_record_routine_end_updates_last_record() -> None:
    tracker = ExecutionTracker()
    tracker.record_routine_start("r")
    tracker.record_routine_end("r", "completed", result={"ok": True})
    tracker.record_routine_start("r")
    time.sleep(0.001)
    tracker.record_routine_end("r", "failed", error="boom")
    first, last = tracker.routine_executions["r"]
    assert first["status"] == "completed"
    assert first["result"] == {"ok": True}
    assert "error" not in first
    assert last["status"] == "failed"
    assert last["error"] == "boom"
    assert "result" not in last
    assert last["execution_time"] > 0
    start = datetime.fromisoformat(last["start_time"])
    end = datetime.fromisoformat(last["end_time"])
    assert last["execution_time"] == pytest.approx((end - start).total_seconds())


def test_record_routine_end_defaults_to_completed() -> None:
    tracker = ExecutionTracker()
    tracker.record_routine_start("r")
    tracker.record_routine_end("r")
    (record,) = tracker.routine_executions["r"]
    assert record["status"] == "completed"
    assert "result" not in record and "error" not in record
    assert record["execution_time"] >= 0


def test_record_routine_end_on_unknown_routine_is_a_noop() -> None:
    tracker = ExecutionTracker()
    tracker.record_routine_end("ghost", "completed", result=1)
    assert tracker.routine_executions == {}
    tracker.routine_executions["empty"] = []
    tracker.record_routine_end("empty")
    assert tracker.routine_executions == {"empty": []}


def test_routine_performance_success_rate() -> None:
    tracker = ExecutionTracker()
    for status in ("completed", "completed", "failed", "completed"):
        tracker.record_routine_start("r")
        tracker.record_routine_end("r", status)
    perf = tracker.get_routine_performance("r")
    assert perf is not None
    assert perf["total_executions"] == 4
    assert perf["completed"] == 3
    assert perf["failed"] == 1
    assert perf["success_rate"] == 0.75


def test_routine_performance_times() -> None:
    tracker = ExecutionTracker()
    tracker.routine_executions["r"] = [
        {"status": "completed", "execution_time": 1.0},
        {"status": "completed", "execution_time": 3.0},
        {"status": "running"},  # no execution_time: not in the timings
    ]
    perf = tracker.get_routine_performance("r")
    assert perf == {
        "total_executions": 3,
        "completed": 2,
        "failed": 0,
        "success_rate": 2 / 3,
        "avg_execution_time": 2.0,
        "min_execution_time": 1.0,
        "max_execution_time": 3.0,
    }


def test_routine_performance_without_times_is_zero() -> None:
    tracker = ExecutionTracker()
    tracker.record_routine_start("r")
    perf = tracker.get_routine_performance("r")
    assert perf is not None
    assert perf["avg_execution_time"] == 0
    assert perf["min_execution_time"] == 0
    assert perf["max_execution_time"] == 0
    assert perf["success_rate"] == 0


def test_routine_performance_unknown_or_empty_is_none() -> None:
    tracker = ExecutionTracker()
    assert tracker.get_routine_performance("nope") is None
    tracker.routine_executions["empty"] = []
    assert tracker.get_routine_performance("empty") is None


def test_flow_performance_of_empty_tracker_is_zero() -> None:
    assert ExecutionTracker().get_flow_performance() == {
        "total_routines": 0,
        "total_events": 0,
        "total_execution_time": 0,
        "avg_routine_time": 0,
    }


def test_flow_performance_sums_nonzero_averages() -> None:
    tracker = ExecutionTracker()
    tracker.routine_executions = {
        "a": [{"status": "completed", "execution_time": 1.0}],
        "b": [{"status": "completed", "execution_time": 2.0}, {"execution_time": 4.0}],
        "c": [{"status": "running"}],  # average 0: left out of both numbers
    }
    tracker.record_event("a", "out", "b")
    tracker.record_event("b", "out")
    perf = tracker.get_flow_performance()
    assert perf["total_routines"] == 3
    assert perf["total_events"] == 2
    assert perf["total_execution_time"] == pytest.approx(4.0)
    assert perf["avg_routine_time"] == pytest.approx(2.0)


def test_record_event_materializes_spec_dicts() -> None:
    tracker = ExecutionTracker()
    before = datetime.now()
    tracker.record_event("src", "output", "dst", {"value": 1})
    tracker.record_event("src", "done")
    after = datetime.now()
    first, second = tracker.event_flow
    assert set(first) == {
        "timestamp",
        "source_routine_id",
        "event_name",
        "target_routine_id",
        "data",
    }
    assert first["source_routine_id"] == "src"
    assert first["event_name"] == "output"
    assert first["target_routine_id"] == "dst"
    assert first["data"] == {"value": 1}
    assert second["target_routine_id"] is None
    assert second["data"] == {}
    for event in (first, second):
        stamp = datetime.fromisoformat(event["timestamp"])
        assert stamp.tzinfo is None
        assert before - timedelta(milliseconds=1) <= stamp <= after + timedelta(milliseconds=1)


def test_record_event_uses_given_timestamp() -> None:
    tracker = ExecutionTracker()
    when = datetime(2024, 1, 1, 12, 0, 0, 1000)
    tracker.record_event("s", "e", timestamp=when)
    assert tracker.event_flow[0]["timestamp"] == "2024-01-01T12:00:00.001000"


def test_event_flow_is_one_real_list_that_grows() -> None:
    tracker = ExecutionTracker()
    tracker.record_event("s", "e1")
    flow = tracker.event_flow
    assert isinstance(flow, list)
    assert len(flow) == 1
    tracker.record_event("s", "e2")
    tracker.record_event("s", "e3")
    assert tracker.event_flow is flow
    assert [e["event_name"] for e in flow] == ["e1", "e2", "e3"]
    assert tracker.event_flow[-1]["event_name"] == "e3"
    assert len(tracker.event_flow) == 3


def test_event_flow_setter_replaces_events() -> None:
    tracker = ExecutionTracker()
    tracker.record_event("s", "lost")
    tracker.event_flow = [{"event_name": "kept", "data": {}}]
    tracker.record_event("s", "new")
    assert [e["event_name"] for e in tracker.event_flow] == ["kept", "new"]
    with pytest.raises(TypeError):
        tracker.event_flow = "nope"  # type: ignore[assignment]


def test_concurrent_recording_loses_nothing() -> None:
    tracker = ExecutionTracker()
    threads_n, per_thread = 8, 2000
    start = threading.Barrier(threads_n + 1)

    def record(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            tracker.record_event(f"t{n}", "e", None, {"i": i})

    threads = [threading.Thread(target=record, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    start.wait()
    seen_lengths = []
    while any(t.is_alive() for t in threads):
        seen_lengths.append(len(tracker.event_flow))  # reads race with the writers
    for thread in threads:
        thread.join()
    events = tracker.event_flow
    assert len(events) == threads_n * per_thread
    assert tracker.get_flow_performance()["total_events"] == threads_n * per_thread
    assert seen_lengths == sorted(seen_lengths)
    for n in range(threads_n):
        mine = [e["data"]["i"] for e in events if e["source_routine_id"] == f"t{n}"]
        assert mine == list(range(per_thread))  # per thread: all there, in order


def test_serialize_format() -> None:
    tracker = ExecutionTracker("flow-9")
    tracker.record_routine_start("r", {"p": 1})
    tracker.record_routine_end("r", "completed", result="ok")
    tracker.record_event("r", "out", "s", {"v": [1, 2]})
    data = tracker.serialize()
    assert set(data) == {
        "_type",
        "flow_id",
        "routine_executions",
        "event_flow",
        "performance_metrics",
    }
    assert data["_type"] == "ExecutionTracker"
    assert data["flow_id"] == "flow-9"
    assert data["routine_executions"]["r"][0]["result"] == "ok"
    assert data["event_flow"][0]["data"] == {"v": [1, 2]}
    # A copy: changing it does not change the tracker.
    data["routine_executions"]["r"][0]["status"] = "changed"
    data["event_flow"].clear()
    assert tracker.routine_executions["r"][0]["status"] == "completed"
    assert len(tracker.event_flow) == 1


def test_json_round_trip() -> None:
    tracker = ExecutionTracker("flow-x")
    for status in ("completed", "failed"):
        tracker.record_routine_start("r1", {"n": 1})
        tracker.record_routine_end("r1", status, error="e" if status == "failed" else None)
    tracker.record_event("r1", "output", "r2", {"text": 'héllo\n"q"'})
    tracker.record_event("r2", "output")
    tracker.performance_metrics["custom"] = 1

    data = json.loads(json.dumps(tracker.serialize()))
    restored = ExecutionTracker()
    assert restored.deserialize(data) is restored

    assert restored.flow_id == "flow-x"
    assert restored.routine_executions == tracker.routine_executions
    assert restored.event_flow == tracker.event_flow
    assert restored.performance_metrics == {"custom": 1}
    assert restored.get_routine_performance("r1") == tracker.get_routine_performance("r1")
    assert restored.get_flow_performance() == tracker.get_flow_performance()
    assert restored.serialize() == tracker.serialize()

    restored.record_event("r2", "late")
    assert restored.event_flow[-1]["event_name"] == "late"
    assert len(restored.event_flow) == 3


def test_deserialize_ignores_unknown_keys_and_defaults_missing_ones() -> None:
    tracker = ExecutionTracker("old")
    tracker.record_event("s", "e")
    tracker.deserialize({"_type": "ExecutionTracker", "flow_id": "new", "extra": 1})
    assert tracker.flow_id == "new"
    assert tracker.routine_executions == {}
    assert tracker.event_flow == []


def test_deserialize_rejects_bad_data() -> None:
    bad_inputs = [
        {"_type": "Flow"},
        {"flow_id": 3},
        {"routine_executions": []},
        {"routine_executions": {"r": {}}},
        {"routine_executions": {"r": ["x"]}},
        {"event_flow": {}},
        {"event_flow": ["x"]},
        {"performance_metrics": []},
        {"format_version": FORMAT_VERSION + 1},
        "not a dict",
    ]
    for bad in bad_inputs:
        with pytest.raises(SerializationError):
            ExecutionTracker().deserialize(bad)  # type: ignore[arg-type]


def test_tracker_is_registered_for_deserialization() -> None:
    assert lookup_class("ExecutionTracker") is ExecutionTracker


def test_max_events_keeps_the_newest_events() -> None:
    tracker = ExecutionTracker("f", max_events=3)
    for i in range(10):
        tracker.record_event("a", "out", None, {"i": i})
    assert [e["data"]["i"] for e in tracker.event_flow] == [7, 8, 9]
    for i in range(10, 20):
        tracker.record_event("a", "out", None, {"i": i})
    assert [e["data"]["i"] for e in tracker.event_flow] == [17, 18, 19]


def test_max_events_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_events"):
        ExecutionTracker("f", max_events=0)


def test_a_flow_job_tracks_its_events_within_its_history_limit() -> None:

    flow = pipeline(("s", Numbers()), ("k", Sink()), flow_id="tracked", history_limit=5)
    job = flow.execute("s", {"n": 100})
    events = job.execution_tracker.event_flow
    assert [e["data"]["value"] for e in events] == [95, 96, 97, 98, 99]
    assert {e["target_routine_id"] for e in events} == {"k"}
    assert {e["source_routine_id"] for e in events} == {"s"}
    assert flow.execution_tracker is job.execution_tracker


def test_max_events_round_trips() -> None:
    tracker = ExecutionTracker("f", max_events=2)
    for i in range(5):
        tracker.record_event("a", "out", None, {"i": i})
    data = json.loads(json.dumps(tracker.serialize()))
    restored = ExecutionTracker().deserialize(data)
    assert restored.max_events == 2
    assert [e["data"]["i"] for e in restored.event_flow] == [3, 4]
    with pytest.raises(SerializationError, match="max_events"):
        ExecutionTracker().deserialize({**data, "max_events": 0})


def test_the_job_end_hook_reads_a_journaled_state_without_taking_it() -> None:
    # A durable job's JobState has a ChangeLog: a read of a mutable value through the
    # tracked mapping marks it taken (encoded now, and again when the job settles).
    # The hook only reads the entry routine's state, so it must mark nothing.
    from routilux.changes import ChangeLog
    from routilux.execution_tracker import TRACKER_HOOKS
    from routilux.job_state import JobState

    js = JobState("f")
    js._set_started()
    js.execution_tracker = tracker = ExecutionTracker("f")
    tracker.record_routine_start("entry")
    start = tracker.routine_executions["entry"][-1]["start_time"]
    log = ChangeLog(js)
    js.merge_routine_state(
        "entry",
        {"status": "completed", "execution_time": 0.5, "start_time": start, "end_time": start},
    )
    assert js._set_completed()
    seq = log._seq
    TRACKER_HOOKS.on_job_end(js)
    assert log._seq == seq and not log._takers
    assert tracker.routine_executions["entry"][-1]["status"] == "completed"
    assert tracker.routine_executions["entry"][-1]["execution_time"] == 0.5

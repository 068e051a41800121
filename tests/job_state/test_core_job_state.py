"""JobState and ExecutionRecord (spec 30), history retention (history_limit)
and the status transitions a Flow drives."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta

import pytest

from helpers import Numbers
from routilux import ExecutionRecord, Flow, JobState, JobStateError, Routine

TIMEOUT = 5.0
OLD = datetime(2000, 1, 1)


# ---------------------------------------------------------------------------
# ExecutionRecord


def test_execution_record_defaults():
    before = datetime.now()
    rec = ExecutionRecord()
    after = datetime.now()
    assert rec.routine_id == ""
    assert rec.event_name == ""
    assert rec.data == {}
    assert isinstance(rec.timestamp, datetime)
    assert before <= rec.timestamp <= after


def test_execution_record_fields():
    ts = datetime(2024, 1, 2, 3, 4, 5)
    rec = ExecutionRecord("r", "output", {"a": 1}, ts)
    assert (rec.routine_id, rec.event_name, rec.data, rec.timestamp) == (
        "r",
        "output",
        {"a": 1},
        ts,
    )
    assert repr(rec) == f"ExecutionRecord[r.output@{ts}]"


def test_execution_record_none_data_becomes_empty_dict():
    assert ExecutionRecord("r", "e", None).data == {}


def test_execution_record_has_no_action_attribute():
    assert not hasattr(ExecutionRecord("r", "e"), "action")


def test_execution_record_serialize_round_trip():
    ts = datetime(2024, 5, 6, 7, 8, 9, 123456)
    data = ExecutionRecord("r", "output", {"a": [1, 2]}, ts).serialize()
    assert data == {
        "_type": "ExecutionRecord",
        "routine_id": "r",
        "event_name": "output",
        "data": {"a": [1, 2]},
        "timestamp": ts.isoformat(),
    }
    back = ExecutionRecord().deserialize(data)
    assert (back.routine_id, back.event_name, back.data, back.timestamp) == (
        "r",
        "output",
        {"a": [1, 2]},
        ts,
    )


# ---------------------------------------------------------------------------
# JobState construction


def test_job_state_no_arg_construction_and_initial_fields():
    before = datetime.now()
    js = JobState()
    assert js.flow_id == ""
    uuid.UUID(js.job_id)
    assert js.status == "pending"
    assert js.current_routine_id is None
    assert js.routine_states == {}
    assert list(js.execution_history) == []
    assert js.pause_points == []
    assert js.pending_tasks == []
    assert js.deferred_events == []
    assert js.shared_data == {}
    assert js.shared_log == []
    assert js.output_log == []
    assert js.output_handler is None
    assert isinstance(js.created_at, datetime)
    assert isinstance(js.updated_at, datetime)
    assert before <= js.created_at <= datetime.now()
    assert js.history_dropped == 0


def test_job_state_flow_id_and_unique_job_ids():
    a, b = JobState("f"), JobState("f")
    assert a.flow_id == "f"
    assert a.job_id != b.job_id


def test_job_state_repr():
    js = JobState("f")
    assert repr(js) == f"JobState[{js.job_id}:pending]"
    js.status = "whatever"  # any string may be assigned
    assert repr(js) == f"JobState[{js.job_id}:whatever]"


# ---------------------------------------------------------------------------
# routine state


def test_routine_state_unknown_is_none():
    assert JobState().get_routine_state("nobody") is None


def test_update_routine_state_stores_a_shallow_copy():
    js = JobState()
    nested = [1]
    state = {"a": 1, "items": nested}
    js.update_routine_state("r", state)
    state["a"] = 2
    state["b"] = 3
    assert js.get_routine_state("r") == {"a": 1, "items": [1]}
    assert js.get_routine_state("r") is not state
    assert js.get_routine_state("r")["items"] is nested  # shallow


def test_update_routine_state_replaces_previous_state():
    js = JobState()
    js.update_routine_state("r", {"a": 1, "b": 2})
    js.update_routine_state("r", {"c": 3})
    assert js.get_routine_state("r") == {"c": 3}
    assert js.routine_states == {"r": {"c": 3}}


def test_routine_states_are_per_routine():
    js = JobState()
    js.update_routine_state("a", {"x": 1})
    js.update_routine_state("b", {"x": 2})
    assert js.get_routine_state("a") == {"x": 1}
    assert js.get_routine_state("b") == {"x": 2}


# ---------------------------------------------------------------------------
# history


def test_record_execution_appends_stamped_record():
    js = JobState()
    before = datetime.now()
    js.record_execution("r", "output", {"v": 1})
    (rec,) = js.get_execution_history()
    assert isinstance(rec, ExecutionRecord)
    assert (rec.routine_id, rec.event_name, rec.data) == ("r", "output", {"v": 1})
    assert before <= rec.timestamp <= datetime.now()


def test_get_execution_history_filters_by_routine():
    js = JobState()
    for rid, value in [("a", 1), ("b", 2), ("a", 3), ("c", 4)]:
        js.record_execution(rid, "out", {"v": value})
    assert [r.data["v"] for r in js.get_execution_history()] == [1, 2, 3, 4]
    assert [r.data["v"] for r in js.get_execution_history("a")] == [1, 3]
    assert [r.data["v"] for r in js.get_execution_history(routine_id="b")] == [2]
    assert js.get_execution_history("zzz") == []


def test_get_execution_history_returns_a_new_list():
    js = JobState()
    js.record_execution("a", "out", {})
    history = js.get_execution_history()
    history.clear()
    assert len(js.get_execution_history()) == 1
    assert js.get_execution_history() is not js.get_execution_history()


def test_get_execution_history_sorted_by_timestamp_stably():
    js = JobState()
    t0 = datetime(2024, 1, 1, 12, 0, 0)
    later = ExecutionRecord("a", "late", {}, t0 + timedelta(seconds=2))
    early = ExecutionRecord("a", "early", {}, t0)
    tie1 = ExecutionRecord("b", "tie1", {}, t0 + timedelta(seconds=1))
    tie2 = ExecutionRecord("a", "tie2", {}, t0 + timedelta(seconds=1))
    for rec in (later, tie1, early, tie2):
        js.execution_history.append(rec)
    assert [r.event_name for r in js.get_execution_history()] == ["early", "tie1", "tie2", "late"]
    assert [r.event_name for r in js.get_execution_history("a")] == ["early", "tie2", "late"]


def test_record_execution_is_thread_safe():
    js = JobState()
    n_threads, per_thread = 8, 300
    barrier = threading.Barrier(n_threads)

    def work(t):
        barrier.wait(TIMEOUT)
        for i in range(per_thread):
            js.record_execution(f"r{t}", "out", {"i": i})
            js.append_to_shared_log({"t": t, "i": i})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
    assert len(js.get_execution_history()) == n_threads * per_thread
    assert len(js.get_shared_log()) == n_threads * per_thread
    for t in range(n_threads):
        assert [r.data["i"] for r in js.execution_history if r.routine_id == f"r{t}"] == list(
            range(per_thread)
        )


# ---------------------------------------------------------------------------
# history retention


def test_job_state_history_limit_keeps_newest_and_counts_dropped():
    js = JobState("f", history_limit=2)
    for i in range(5):
        js.record_execution("r", "out", {"i": i})
    assert [r.data["i"] for r in js.get_execution_history()] == [3, 4]
    assert js.history_dropped == 3


def test_job_state_history_limit_not_reached_drops_nothing():
    js = JobState("f", history_limit=10)
    for i in range(10):
        js.record_execution("r", "out", {"i": i})
    assert [r.data["i"] for r in js.get_execution_history()] == list(range(10))
    assert js.history_dropped == 0


def test_limited_history_is_still_a_list():
    js = JobState("f", history_limit=3)
    for i in range(5):
        js.record_execution("r", "out", {"i": i})
    assert [r.data["i"] for r in js.execution_history[-2:]] == [3, 4]
    assert js.execution_history == js.get_execution_history()


def test_job_state_without_limit_keeps_everything():
    js = JobState("f")
    for i in range(500):
        js.record_execution("r", "out", {"i": i})
    assert len(js.get_execution_history()) == 500
    assert js.history_dropped == 0


def test_flow_history_limit_applies_to_each_job():
    flow = Flow("limited", history_limit=3)
    flow.add_routine(Numbers(), "b")
    js = flow.execute("b", {"n": 10})
    assert js.status == "completed"
    assert [r.data["value"] for r in js.get_execution_history()] == [7, 8, 9]
    assert js.history_dropped == 7
    js2 = flow.execute("b", {"n": 2})
    assert [r.data["value"] for r in js2.get_execution_history()] == [0, 1]
    assert js2.history_dropped == 0


def test_flow_without_history_limit_keeps_everything():
    flow = Flow("unlimited")
    flow.add_routine(Numbers(), "b")
    js = flow.execute("b", {"n": 50})
    assert len(js.get_execution_history()) == 50
    assert js.history_dropped == 0


# ---------------------------------------------------------------------------
# shared data and shared log


def test_shared_data_get_and_update():
    js = JobState()
    assert js.get_shared_data("k") is None
    assert js.get_shared_data("k", "dflt") == "dflt"
    value = ["a"]
    js.update_shared_data("k", value)
    assert js.get_shared_data("k") is value  # the object itself, not a copy
    js.update_shared_data("k", 2)
    assert js.get_shared_data("k", "dflt") == 2
    assert js.shared_data == {"k": 2}


def test_append_to_shared_log_rejects_non_dicts():
    js = JobState()
    for bad in (["a"], "text", 1, None):
        with pytest.raises(ValueError) as info:
            js.append_to_shared_log(bad)
        assert str(info.value) == "Entry must be a dictionary"
    assert js.get_shared_log() == []


def test_append_to_shared_log_stamps_a_copy():
    js = JobState()
    entry = {"action": "x"}
    before = datetime.now()
    js.append_to_shared_log(entry)
    assert entry == {"action": "x"}  # the caller's dict is not modified
    (stored,) = js.get_shared_log()
    assert stored["action"] == "x"
    assert set(stored) == {"action", "timestamp"}
    stamp = datetime.fromisoformat(stored["timestamp"])
    assert before <= stamp <= datetime.now()


def test_append_to_shared_log_keeps_given_timestamp():
    js = JobState()
    entry = {"action": "x", "timestamp": "yesterday"}
    js.append_to_shared_log(entry)
    assert js.get_shared_log() == [{"action": "x", "timestamp": "yesterday"}]


def test_get_shared_log_returns_copy_and_filters():
    js = JobState()
    for i in range(5):
        js.append_to_shared_log({"i": i})
    log = js.get_shared_log()
    log.append({"i": 99})
    assert len(js.get_shared_log()) == 5
    assert [e["i"] for e in js.get_shared_log(lambda e: e["i"] % 2 == 0)] == [0, 2, 4]
    assert js.get_shared_log(lambda e: False) == []


# ---------------------------------------------------------------------------
# deferred events


def test_add_deferred_event():
    js = JobState()
    js.add_deferred_event("r", "out", {"x": 1})
    (entry,) = js.deferred_events
    assert (entry["routine_id"], entry["event_name"], entry["data"]) == ("r", "out", {"x": 1})
    datetime.fromisoformat(entry["timestamp"])


# ---------------------------------------------------------------------------
# updated_at


@pytest.mark.parametrize(
    "mutate",
    [
        lambda js: js.update_routine_state("r", {}),
        lambda js: js.record_execution("r", "e", {}),
        lambda js: js.update_shared_data("k", 1),
        lambda js: js.append_to_shared_log({}),
        lambda js: js.add_deferred_event("r", "e", {}),
        lambda js: js._set_paused(),
        lambda js: js._set_cancelled(),
    ],
)
def test_mutators_refresh_updated_at(mutate):
    js = JobState()
    js.updated_at = OLD
    mutate(js)
    assert js.updated_at > OLD


# ---------------------------------------------------------------------------
# status helpers


def test_set_paused_appends_one_pause_point():
    js = JobState()
    js.current_routine_id = "r"
    js._set_paused("waiting", {"step": 2})
    assert js.status == "paused"
    assert len(js.pause_points) == 1
    point = js.pause_points[0]
    assert point["reason"] == "waiting"
    assert point["current_routine_id"] == "r"
    assert point["checkpoint"] == {"step": 2}
    datetime.fromisoformat(point["timestamp"])
    js._set_paused()
    assert len(js.pause_points) == 2
    assert js.pause_points[1]["checkpoint"] == {}
    assert js.pause_points[1]["reason"] == ""


@pytest.mark.parametrize("status", ["pending", "running", "completed", "failed", "cancelled"])
def test_set_running_only_from_paused(status):
    js = JobState()
    js.status = status
    js._set_running()
    assert js.status == status


def test_set_running_from_paused():
    js = JobState()
    js._set_paused()
    js._set_running()
    assert js.status == "running"


def test_set_cancelled_with_and_without_reason():
    js = JobState()
    js._set_cancelled()
    assert js.status == "cancelled"
    assert js.get_routine_state("_cancellation") is None
    js2 = JobState()
    js2.update_routine_state("_cancellation", {"keep": 1})
    js2._set_cancelled("user asked")
    assert js2.status == "cancelled"
    assert js2.get_routine_state("_cancellation") == {"keep": 1, "reason": "user asked"}


# ---------------------------------------------------------------------------
# status transitions driven by a flow


class Watch(Routine):
    """Trigger handler records the job status it sees, then runs ``action``."""

    def __init__(self, action=None) -> None:
        super().__init__()
        self.action = action
        self.seen: list[str] = []
        self.define_slot("trigger", handler=self.go)
        self.define_slot("input", handler=self.downstream)
        self.define_event("out")

    def go(self, **kwargs):
        ctx = self.get_execution_context()
        self.seen.append(ctx.job_state.status)
        self.emit("out", n=1)
        if self.action is not None:
            self.action(ctx)

    def downstream(self, **kwargs):
        self.seen.append("downstream")


def _watch_flow(action=None):
    flow = Flow("watch")
    entry = Watch(action)
    flow.add_routine(entry, "entry")
    flow.add_routine(Watch(), "next")
    flow.connect("entry", "out", "next", "input")
    return flow, entry


def test_status_running_during_job_then_completed():
    flow, entry = _watch_flow()
    js = flow.execute("entry")
    assert entry.seen == ["running"]
    assert js.status == "completed"
    assert flow.routines["next"].seen == ["downstream"]


def test_status_failed_on_entry_failure():
    def boom(ctx):
        raise RuntimeError("boom")

    flow, _ = _watch_flow(boom)
    js = flow.execute("entry")
    assert js.status == "failed"
    assert flow.routines["next"].seen == []  # queued work is dropped


def test_cancel_inside_handler_is_not_overwritten():
    flow, _ = _watch_flow(lambda ctx: ctx.flow.cancel(ctx.job_state, reason="enough"))
    js = flow.execute("entry")
    assert js.status == "cancelled"
    assert flow.routines["next"].seen == []  # the cancelled job's tasks are dropped
    assert js.get_routine_state("_cancellation") == {"reason": "enough"}


def test_pause_inside_handler_is_not_overwritten():
    flow, _ = _watch_flow(lambda ctx: ctx.flow.pause(ctx.job_state, reason="later"))
    js = flow.execute("entry")
    assert js.status == "paused"
    assert flow.routines["next"].seen == []
    assert len(js.pause_points) == 1
    assert js.pause_points[0]["reason"] == "later"
    assert len(js.pending_tasks) == 1


def test_cancel_and_pause_a_finished_job():
    # Job status is a state machine (spec README item 8): a completed job cannot be
    # cancelled, but seed-era code may still pause it (nothing is pending then).
    flow, _ = _watch_flow()
    js = flow.execute("entry")
    assert js.status == "completed"
    with pytest.raises(JobStateError, match="completed"):
        flow.cancel(js)
    assert js.status == "completed"
    js2 = flow.execute("entry")
    flow.pause(js2)
    assert js2.status == "paused"
    assert js2.pending_tasks == []


# ---------------------------------------------------------------------------
# wait_for_completion


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_job_state_wait_for_completion(strategy):
    release = threading.Event()
    started = threading.Event()

    class Slow(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.go)
            self.define_slot("input", handler=self.work)
            self.define_event("out")

        def go(self, **kwargs):
            self.emit("out")

        def work(self, **kwargs):
            started.set()
            release.wait(TIMEOUT)

    flow = Flow(execution_strategy=strategy)
    flow.add_routine(Slow(), "a")
    flow.add_routine(Slow(), "b")
    flow.connect("a", "out", "b", "input")
    try:
        js = flow.execute("a", wait=False)
        assert started.wait(TIMEOUT)
        assert js.wait_for_completion(timeout=0.05) is False
        assert js.status == "running"
        release.set()
        assert js.wait_for_completion(timeout=TIMEOUT) is True
        assert js.status == "completed"
        assert js.wait_for_completion() is True  # already settled: returns at once
    finally:
        release.set()
        flow.shutdown()

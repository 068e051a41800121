"""Output handlers attached through ``flow.execute(..., output_handler=h)`` and the
ExecutionTracker of a flow run (spec 70; issue 5, item 6)."""

from __future__ import annotations

import json
import queue
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from routilux import (
    CallbackOutputHandler,
    ErrorHandler,
    ExecutionTracker,
    Flow,
    JobState,
    NullOutputHandler,
    OutputHandler,
    QueueOutputHandler,
    Routine,
    register_serializable,
)


@register_serializable
class OtReporter(Routine):
    """Sends two outputs per item and passes the item on."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.run)
        self.define_event("output", ["item"])
        self.define_event("unconnected", ["item"])

    def run(self, items: list[Any] | None = None, fail: bool = False, **_: Any) -> None:
        for item in items or []:
            self.send_output("progress", item=item, note="ü")
            self.emit("output", item=item)
        self.send_output("summary", count=len(items or []))
        self.emit("unconnected", item=None)
        if fail:
            raise RuntimeError("entry broke")


@register_serializable
class OtWorker(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_item)

    def on_item(self, item: Any) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        with ctx.job_state.lock:
            done = list(ctx.job_state.get_shared_data("done", []))
            ctx.job_state.update_shared_data("done", done + [item])
        self.send_output("worker", item=item)
        if item == "pause":
            ctx.flow.pause(ctx.job_state, reason="check outputs")


def build(flow_id: str = "ot", strategy: str = "sequential") -> Flow:
    flow = Flow(flow_id, execution_strategy=strategy, max_workers=4)
    flow.add_routine(OtReporter(), "reporter")
    flow.add_routine(OtWorker(), "worker")
    flow.connect("reporter", "output", "worker", "input")
    return flow


def expected_log(items: list[Any]) -> list[tuple[str, str, dict[str, Any]]]:
    out: list[tuple[str, str, dict[str, Any]]] = []
    out += [("reporter", "progress", {"item": i, "note": "ü"}) for i in items]
    out += [("reporter", "summary", {"count": len(items)})]
    out += [("worker", "worker", {"item": i}) for i in items]
    return out


def log_of(js: JobState) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e["routine_id"], e["output_type"], e["data"]) for e in js.output_log]


# ---------------------------------------------------------------------------
# Output handlers
# ---------------------------------------------------------------------------


def test_queue_output_handler() -> None:
    q: queue.Queue[dict[str, Any]] = queue.Queue()
    js = build().execute("reporter", {"items": [1, 2]}, output_handler=QueueOutputHandler(q))
    assert js.status == "completed"
    items = [q.get_nowait() for _ in range(q.qsize())]
    assert [(i["routine_id"], i["output_type"], i["data"]) for i in items] == expected_log([1, 2])
    for item in items:
        assert item["job_id"] == js.job_id
        assert isinstance(datetime.fromisoformat(item["timestamp"]), datetime)
    # The log holds the same outputs, with the same timestamps.
    assert log_of(js) == expected_log([1, 2])
    assert [e["timestamp"] for e in js.output_log] == [i["timestamp"] for i in items]


def test_callback_output_handler() -> None:
    calls: list[tuple[Any, ...]] = []
    handler = CallbackOutputHandler(lambda *args: calls.append(args))
    js = build().execute("reporter", {"items": ["a"]}, output_handler=handler)
    assert js.status == "completed"
    assert [(c[1], c[2], c[3]) for c in calls] == expected_log(["a"])
    for job_id, _, _, _, timestamp in calls:
        assert job_id == js.job_id
        assert isinstance(timestamp, datetime)
    assert log_of(js) == expected_log(["a"])


@pytest.mark.parametrize("handler", [NullOutputHandler(), None], ids=["null", "none"])
def test_output_log_is_always_appended(handler: OutputHandler | None) -> None:
    js = build().execute("reporter", {"items": [1]}, output_handler=handler)
    assert js.status == "completed"
    assert log_of(js) == expected_log([1])
    assert js.output_handler is handler


def test_outputs_are_not_events() -> None:
    js = build().execute("reporter", {"items": [1]})
    recorded = [(r.routine_id, r.event_name) for r in js.execution_history]
    assert recorded == [("reporter", "output"), ("reporter", "unconnected")]
    assert js.shared_data["done"] == [1]


def test_a_failing_output_handler_warns_and_the_job_continues() -> None:
    class Broken(OutputHandler):
        def handle(self, job_id: str, routine_id: str, output_type: str, data: Any,
                   timestamp: datetime | None = None) -> None:  # fmt: skip
            raise OSError("disk full")

    with pytest.warns(RuntimeWarning, match="Output handler failed: disk full"):
        js = build().execute("reporter", {"items": [1, 2]}, output_handler=Broken())
    assert js.status == "completed"
    assert js.shared_data["done"] == [1, 2]  # downstream still ran
    assert log_of(js) == expected_log([1, 2])  # every output is in the log


def test_output_handler_with_concurrent_handlers() -> None:
    q: queue.Queue[dict[str, Any]] = queue.Queue()
    items = list(range(50))
    js = build("ot-conc", "concurrent").execute(
        "reporter", {"items": items}, output_handler=QueueOutputHandler(q)
    )
    assert js.status == "completed"
    got = [q.get_nowait() for _ in range(q.qsize())]
    key = json.dumps
    assert sorted(key([g["routine_id"], g["output_type"], g["data"]]) for g in got) == sorted(
        key(list(e)) for e in expected_log(items)
    )
    assert len(js.output_log) == len(got)


def test_send_output_outside_a_job() -> None:
    with pytest.raises(RuntimeError, match="not in execution context"):
        OtReporter().send_output("x", a=1)


def test_output_handler_is_not_saved_and_can_be_set_again_on_resume(tmp_path: Path) -> None:
    flow = build("ot-resume")
    first: list[tuple[Any, ...]] = []
    js = flow.execute(
        "reporter",
        {"items": ["pause", "b"]},
        output_handler=CallbackOutputHandler(lambda *a: first.append(a)),
    )
    assert js.status == "paused"
    data = js.serialize()
    assert "output_handler" not in data
    js.save(tmp_path / "job.json")

    loaded = JobState.load(tmp_path / "job.json")
    assert loaded.output_handler is None
    assert log_of(loaded) == log_of(js)  # the log is saved
    second: list[tuple[Any, ...]] = []
    loaded.set_output_handler(CallbackOutputHandler(lambda *a: second.append(a)))
    Flow().deserialize(flow.serialize()).resume(loaded)
    assert loaded.status == "completed"
    assert [(c[1], c[2], c[3]) for c in second] == [("worker", "worker", {"item": "b"})]
    assert log_of(loaded) == expected_log(["pause", "b"])
    assert len(first) == 4  # the first handler saw only what happened before the pause


# ---------------------------------------------------------------------------
# ExecutionTracker
# ---------------------------------------------------------------------------


def test_tracker_of_a_flow_run() -> None:
    flow = build("ot-track")
    assert flow.execution_tracker is None
    js = flow.execute("reporter", {"items": [1, 2]})
    tracker = flow.execution_tracker
    assert isinstance(tracker, ExecutionTracker)
    assert tracker.flow_id == "ot-track"

    # Start and end of the entry routine only; downstream handlers get no records.
    assert list(tracker.routine_executions) == ["reporter"]
    (run,) = tracker.routine_executions["reporter"]
    assert run["status"] == "completed"
    assert run["params"] == {"items": [1, 2]}
    assert run["execution_time"] >= 0
    assert datetime.fromisoformat(run["end_time"]) >= datetime.fromisoformat(run["start_time"])

    # One event per emit: source = emitting routine, target = first connected routine.
    flow_events = [
        (e["source_routine_id"], e["event_name"], e["target_routine_id"], e["data"])
        for e in tracker.event_flow
    ]
    assert flow_events == [
        ("reporter", "output", "worker", {"item": 1}),
        ("reporter", "output", "worker", {"item": 2}),
        ("reporter", "unconnected", None, {"item": None}),
    ]
    assert len(tracker.event_flow) == len(js.execution_history)

    perf = tracker.get_routine_performance("reporter")
    assert perf is not None
    assert (perf["total_executions"], perf["completed"], perf["failed"]) == (1, 1, 0)
    assert perf["success_rate"] == 1.0
    assert tracker.get_routine_performance("worker") is None
    flow_perf = tracker.get_flow_performance()
    assert (flow_perf["total_routines"], flow_perf["total_events"]) == (1, 3)


def test_each_run_gets_a_new_tracker() -> None:
    flow = build("ot-new")
    flow.execute("reporter", {"items": [1]})
    first = flow.execution_tracker
    flow.execute("reporter", {"items": [1, 2, 3]})
    second = flow.execution_tracker
    assert first is not None and second is not None and first is not second
    assert len(first.event_flow) == 2
    assert len(second.event_flow) == 4


@pytest.mark.parametrize(
    ("handler", "status"),
    [(None, "failed"), (ErrorHandler(strategy="continue"), "error_continued")],
    ids=["stop", "continue"],
)
def test_tracker_records_how_the_entry_routine_ended(
    handler: ErrorHandler | None, status: str
) -> None:
    flow = build("ot-fail")
    flow.routines["reporter"].set_error_handler(handler)
    js = flow.execute("reporter", {"items": [1], "fail": True})
    assert js.status == ("failed" if handler is None else "completed")
    tracker = flow.execution_tracker
    assert tracker is not None
    (run,) = tracker.routine_executions["reporter"]
    assert run["status"] == status


def test_tracker_of_concurrent_jobs_are_separate() -> None:
    flow = build("ot-jobs", "concurrent")
    started = threading.Barrier(2)
    statuses: list[str] = []

    def run(items: list[int]) -> None:
        started.wait()
        statuses.append(flow.execute("reporter", {"items": items}).status)

    threads = [threading.Thread(target=run, args=(items,)) for items in ([1], [1, 2, 3])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == ["completed", "completed"]
    tracker = flow.execution_tracker
    assert tracker is not None
    # Whichever job started last, its tracker holds only its own events.
    assert len(tracker.event_flow) in (2, 4)
    assert len(tracker.routine_executions["reporter"]) == 1

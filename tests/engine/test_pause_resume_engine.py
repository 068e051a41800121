"""Pause, resume and cancel of running jobs (spec 50 §5, execution model "Pause,
resume, cancel"; issue 5, item 3).

Handlers are held with ``threading.Event`` gates, never ordered by sleeping. A gate
that is never released would hang a test, so every wait has a generous timeout whose
expiry fails the test.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any, Callable

import pytest

from helpers import Step, json_trip, routine_seen
from routilux import Flow, JobState, JobStateError, Routine, register_serializable
from routilux.flow.state_management import cancel_flow, pause_flow, resume_flow

LONG = 30.0  # seconds; only reached when something is broken


@register_serializable
class PrSource(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.run)
        self.define_event("output", ["value"])

    #: Test hook (not serialized): called after the first value is emitted.
    after_first: Callable[[], Any] | None = None

    def run(self, values: list[int] | None = None, **_: Any) -> None:
        for index, value in enumerate(values or []):
            self.emit("output", value=value)
            if index == 0 and self.after_first is not None:
                self.after_first()


@register_serializable
class PrStage(Routine):
    """Passes ``value`` on (``value * factor``); counts what it saw in its state.

    Test hooks live on the instance (never serialized): ``hold`` maps a value to a
    gate the handler waits on, ``on_value`` is called with (routine, ctx, value).
    """

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_input)
        self.define_event("output", ["value"])
        self.set_config(factor=1)
        self.entered: dict[int, threading.Event] = {}
        self.hold: dict[int, threading.Event] = {}
        self.on_value: Callable[[PrStage, Any, int], None] | None = None

    def on_input(self, value: int) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        js = ctx.job_state
        with js.lock:
            state = dict(js.get_routine_state(ctx.routine_id) or {})
            state["seen"] = list(state.get("seen", [])) + [value]
            js.update_routine_state(ctx.routine_id, state)
        if value in self.entered:
            self.entered[value].set()
        if value in self.hold:
            assert self.hold[value].wait(LONG), "gate never opened"
        if self.on_value is not None:
            self.on_value(self, ctx, value)
        self.emit("output", value=value * self.get_config("factor"))


@register_serializable
class PrCollect(Routine):
    """Append-merges values; writes the running list to shared data."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_values, merge_strategy="append")
        self.pause_when: int | None = None

    def on_values(self, value: list[int]) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        ctx.job_state.update_shared_data("values", list(value))
        if self.pause_when is not None and len(value) == self.pause_when:
            ctx.flow.pause(ctx.job_state, reason="collector", checkpoint={"n": len(value)})


def chain(flow_id: str = "pr", strategy: str = "sequential", workers: int = 1) -> Flow:
    flow = Flow(flow_id, execution_strategy=strategy, max_workers=workers)
    flow.add_routine(PrSource(), "src")
    flow.add_routine(PrStage(), "stage")
    flow.add_routine(PrCollect(), "collect")
    flow.connect("src", "output", "stage", "input")
    flow.connect("stage", "output", "collect", "input")
    return flow


def stage(flow: Flow) -> PrStage:
    routine = flow.routines["stage"]
    assert isinstance(routine, PrStage)
    return routine


def history(js: JobState) -> Counter[tuple[str, str, str]]:
    return Counter(
        (r.routine_id, r.event_name, json.dumps(r.data, sort_keys=True))
        for r in js.execution_history
    )


# ---------------------------------------------------------------------------
# Pause from another thread, while tasks run
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_pause_from_another_thread_while_a_handler_runs(strategy: str) -> None:
    flow = chain(strategy=strategy, workers=1)
    worker = stage(flow)
    gate, entered = threading.Event(), threading.Event()
    worker.hold[0], worker.entered[0] = gate, entered

    js = flow.execute("src", {"values": list(range(6))}, wait=False)
    assert entered.wait(LONG)
    assert js.status == "running"

    # Open the gate the moment the job is marked paused: pause() then waits for the
    # held handler, whose emission (made after the pause) must be saved, not run.
    original = js._set_paused

    def set_paused_then_release(*args: Any, **kwargs: Any) -> dict[str, Any]:
        point = original(*args, **kwargs)
        gate.set()
        return point

    js._set_paused = set_paused_then_release  # type: ignore[method-assign]
    flow.pause(js, reason="operator", wait_timeout=LONG)

    assert js.status == "paused"
    assert gate.is_set()
    # A save right after pause() is complete.
    assert len(js.serialize()["pending_tasks"]) == 6
    assert js.wait_for_completion(LONG)
    assert js.status == "paused"
    saved = JobState().deserialize(json_trip(js.serialize()))
    pending = saved.pending_tasks
    stage_values = sorted(t["data"]["value"] for t in pending if t["slot_routine_id"] == "stage")
    assert stage_values == [1, 2, 3, 4, 5]
    assert [t["data"] for t in pending if t["slot_routine_id"] == "collect"] == [{"value": 0}]
    assert routine_seen(js, "stage") == [0]
    assert "values" not in js.shared_data
    assert len(js.pause_points) == 1
    assert js.pause_points[0]["reason"] == "operator"

    flow.resume(js)
    assert js.status == "completed"
    assert sorted(routine_seen(js, "stage")) == list(range(6))
    assert sorted(js.shared_data["values"]) == list(range(6))
    assert js.pending_tasks == []


def test_a_save_right_after_pause_has_every_task_concurrent() -> None:
    """The job's deliveries waiting for a pool worker -- here behind another job's
    blocked handler -- are saved by pause() itself, not when a worker gets to them."""
    flow = chain(strategy="concurrent", workers=1)
    flow.add_routine(PrSource(), "other_src")
    flow.add_routine(PrStage(), "other")
    flow.connect("other_src", "output", "other", "input")
    other = flow.routines["other"]
    assert isinstance(other, PrStage)
    other_gate = threading.Event()
    other.hold[999] = other_gate

    worker = stage(flow)
    gate, entered = threading.Event(), threading.Event()
    worker.hold[0], worker.entered[0] = gate, entered
    source = flow.routines["src"]
    assert isinstance(source, PrSource)
    # After the first delivery is submitted, a second job puts a handler that blocks
    # into the shared pool's queue, ahead of this job's remaining deliveries.
    source.after_first = lambda: flow.execute("other_src", {"values": [999]}, wait=False)

    js = flow.execute("src", {"values": [0, 1, 2, 3, 4, 5]}, wait=False)
    assert entered.wait(LONG)
    original = js._set_paused

    def set_paused_then_release(*args: Any, **kwargs: Any) -> dict[str, Any]:
        point = original(*args, **kwargs)
        gate.set()
        return point

    js._set_paused = set_paused_then_release  # type: ignore[method-assign]
    try:
        flow.pause(js, wait_timeout=10)
        saved_at_return = [t["slot_routine_id"] for t in js.serialize()["pending_tasks"]]
    finally:
        other_gate.set()
    assert flow.wait_for_completion(LONG)
    assert Counter(t["slot_routine_id"] for t in js.pending_tasks) == {"stage": 5, "collect": 1}
    assert Counter(saved_at_return) == {"stage": 5, "collect": 1}


def test_pause_without_waiting_then_release() -> None:
    flow = chain(strategy="concurrent", workers=1)
    worker = stage(flow)
    gate, entered = threading.Event(), threading.Event()
    worker.hold[0], worker.entered[0] = gate, entered
    js = flow.execute("src", {"values": [0, 1, 2]}, wait=False)
    assert entered.wait(LONG)

    flow.pause(js, wait_timeout=0)  # returns at once; the held handler still runs
    assert js.status == "paused"
    gate.set()
    assert js.wait_for_completion(LONG)
    assert js.status == "paused"
    targets = Counter(t["slot_routine_id"] for t in js.pending_tasks)
    assert targets == {"stage": 2, "collect": 1}
    assert routine_seen(js, "stage") == [0]

    flow.resume(js)
    assert js.status == "completed"
    assert sorted(js.shared_data["values"]) == [0, 1, 2]


def test_pause_from_a_handler_returns_when_the_other_handlers_finish() -> None:
    flow = chain(strategy="concurrent", workers=2)
    worker = stage(flow)
    gate, entered = threading.Event(), threading.Event()
    worker.hold[0], worker.entered[0] = gate, entered
    returned = threading.Event()

    class ReleaseWhenSaved(list[dict[str, Any]]):
        """Opens the gate when pause() saves the queue, i.e. while pause() holds the
        job's engine lock: handler 0 can then only finish after pause() waits."""

        def extend(self, items: Any) -> None:
            super().extend(items)
            gate.set()

    def pause_on_one(routine: PrStage, ctx: Any, value: int) -> None:
        if value == 1:
            assert entered.wait(LONG)
            ctx.job_state.pending_tasks = ReleaseWhenSaved(ctx.job_state.pending_tasks)
            ctx.flow.pause(ctx.job_state, reason="from handler", wait_timeout=LONG)
            returned.set()

    worker.on_value = pause_on_one
    js = flow.execute("src", {"values": [0, 1, 2, 3]}, wait=False)
    # With the bug, pause() sleeps the full LONG seconds; half of it is plenty.
    assert returned.wait(LONG / 2), "pause() did not return when handler 0 finished"
    assert js.wait_for_completion(LONG)
    assert js.status == "paused"


# ---------------------------------------------------------------------------
# Pause from a handler, deferred events, timers
# ---------------------------------------------------------------------------


def test_deferred_event_is_delivered_and_recorded_on_resume() -> None:
    flow = chain()

    def defer_and_pause(routine: PrStage, ctx: Any, value: int) -> None:
        if value == 1:
            routine.emit_deferred_event("output", value=100)
            ctx.flow.pause(ctx.job_state, reason="approval needed")

    stage(flow).on_value = defer_and_pause
    js = flow.execute("src", {"values": [1, 2]})
    assert js.status == "paused"
    assert [(e["routine_id"], e["event_name"], e["data"]) for e in js.deferred_events] == [
        ("stage", "output", {"value": 100})
    ]
    assert ("stage", "output", '{"value": 100}') not in history(js)

    # Resume in a fresh flow from JSON, as another process would.
    stage(flow).on_value = None
    restored_flow = Flow().deserialize(json_trip(flow.serialize()))
    restored = JobState().deserialize(json_trip(js.serialize()))
    resume_flow(restored_flow, restored)
    assert restored.status == "completed"
    assert restored.deferred_events == []
    assert history(restored)[("stage", "output", '{"value": 100}')] == 1
    assert sorted(restored.shared_data["values"]) == [1, 2, 100]


def test_scheduled_delivery_is_saved_when_paused_and_made_on_resume() -> None:
    flow = chain()

    def schedule_and_pause(routine: PrStage, ctx: Any, value: int) -> None:
        if value == 5:
            routine.schedule(3600.0, "input", value=6)  # an hour away
            ctx.flow.pause(ctx.job_state, reason="timer pending")

    stage(flow).on_value = schedule_and_pause
    js = flow.execute("src", {"values": [5]})
    assert js.status == "paused"
    pending = sorted((t["slot_routine_id"], t["data"]["value"]) for t in js.pending_tasks)
    assert pending == [("collect", 5), ("stage", 6)]
    stage(flow).on_value = None
    restored_flow = Flow().deserialize(json_trip(flow.serialize()))
    restored = JobState().deserialize(json_trip(js.serialize()))
    restored_flow.resume(restored)
    assert restored.status == "completed"
    assert sorted(routine_seen(restored, "stage")) == [5, 6]
    assert sorted(restored.shared_data["values"]) == [5, 6]


def test_pause_keeps_append_buffers_and_pending_tasks() -> None:
    values = list(range(10))
    expected = chain("buffers").execute("src", {"values": values})
    assert expected.status == "completed"

    flow = chain("buffers")
    collect = flow.routines["collect"]
    assert isinstance(collect, PrCollect)
    collect.pause_when = 4
    js = flow.execute("src", {"values": values})
    assert js.status == "paused"
    assert js.slot_buffers["collect"]["input"] == {"value": [0, 1, 2, 3]}
    assert len(js.pending_tasks) == 6
    assert js.pause_points[-1]["pending_tasks_count"] == 6
    assert js.pause_points[-1]["checkpoint"] == {"n": 4}
    # The flow's own (non-job) buffer is not where job data goes.
    assert collect.get_slot("input")._data == {}  # type: ignore[union-attr]

    restored_flow = Flow().deserialize(json_trip(flow.serialize()))
    restored = JobState().deserialize(json_trip(js.serialize()))
    restored_flow.resume(restored)
    assert restored.status == "completed"
    assert restored.shared_data == expected.shared_data
    assert restored.slot_buffers == expected.slot_buffers
    assert history(restored) == history(expected)
    timing = ("execution_time", "start_time", "end_time")

    def states(j: JobState) -> dict[str, Any]:
        return {
            rid: {k: v for k, v in s.items() if k not in timing}
            for rid, s in j.routine_states.items()
        }

    assert states(restored) == states(expected)


def test_pausing_a_finished_job() -> None:
    flow = chain()
    js = flow.execute("src", {"values": [1]})
    assert js.status == "completed"
    pause_flow(flow, js, reason="late", checkpoint={"k": 1})
    assert js.status == "paused"
    assert len(js.pause_points) == 1
    point = js.pause_points[0]
    assert (point["reason"], point["checkpoint"], point["pending_tasks_count"]) == (
        "late",
        {"k": 1},
        0,
    )
    flow.resume(js)
    assert js.status == "completed"
    assert js.shared_data["values"] == [1]


def test_resume_with_a_flow_whose_id_does_not_match() -> None:
    flow = chain("one")
    js = flow.execute("src", {"values": [1]})
    flow.pause(js)
    other = chain("two")
    with pytest.raises(ValueError, match="does not match"):
        other.resume(js)
    with pytest.raises(ValueError, match="does not match"):
        other.pause(js)
    with pytest.raises(ValueError, match="does not match"):
        other.cancel(js)
    assert js.status == "paused"


def test_resume_with_unknown_current_routine() -> None:
    flow = chain("cur")
    js = flow.execute("src", {"values": [1]})
    flow.pause(js)
    js.current_routine_id = "ghost"
    with pytest.raises(ValueError, match="Current routine 'ghost' not found in flow"):
        flow.resume(js)


def test_resume_without_waiting() -> None:
    flow = chain("nowait")
    worker = stage(flow)

    def pause_on_one(routine: PrStage, ctx: Any, value: int) -> None:
        if value == 1:
            ctx.flow.pause(ctx.job_state, reason="first item")

    worker.on_value = pause_on_one
    js = flow.execute("src", {"values": [1, 2, 3]})
    assert js.status == "paused"
    assert routine_seen(js, "stage") == [1]

    worker.on_value = None
    gate, entered = threading.Event(), threading.Event()
    worker.hold[3], worker.entered[3] = gate, entered
    returned = flow.resume(js, wait=False)
    assert returned is js
    assert entered.wait(LONG)  # the resumed work runs in the background...
    assert js.status == "running"  # ...and resume() did not wait for it
    assert not js.wait_for_completion(0)
    gate.set()
    assert js.wait_for_completion(LONG)
    assert js.status == "completed"
    assert sorted(js.shared_data["values"]) == [1, 2, 3]


# ---------------------------------------------------------------------------
# Cancel
# ---------------------------------------------------------------------------


def test_cancel_while_a_handler_runs() -> None:
    flow = chain(strategy="concurrent", workers=1)
    worker = stage(flow)
    gate, entered = threading.Event(), threading.Event()
    worker.hold[0], worker.entered[0] = gate, entered
    js = flow.execute("src", {"values": [0, 1, 2, 3]}, wait=False)
    assert entered.wait(LONG)

    cancel_flow(flow, js, reason="user abort")
    assert js.status == "cancelled"
    gate.set()
    assert js.wait_for_completion(LONG)
    assert js.status == "cancelled"
    assert routine_seen(js, "stage") == [0]  # nothing else started
    assert "values" not in js.shared_data  # the held handler's emission was discarded
    assert js.pending_tasks == []
    assert js.get_routine_state("_cancellation") == {"reason": "user abort"}


def test_cancel_a_paused_job_drops_its_pending_work() -> None:
    flow = chain("cancel-paused")
    collect = flow.routines["collect"]
    assert isinstance(collect, PrCollect)
    collect.pause_when = 1
    js = flow.execute("src", {"values": [1, 2, 3]})
    assert js.status == "paused" and js.pending_tasks
    flow.cancel(js)
    assert js.status == "cancelled"
    assert js.pending_tasks == []
    with pytest.raises(JobStateError, match="cancelled"):
        flow.resume(js)  # a cancelled job stays cancelled (spec README item 8)
    assert js.status == "cancelled"
    assert js.shared_data["values"] == [1]


def test_cancel_a_completed_job() -> None:
    flow = chain("cancel-done")
    js = flow.execute("src", {"values": [1]})
    with pytest.raises(JobStateError, match="completed"):
        flow.cancel(js)  # a completed job stays completed (spec README item 8)
    assert js.status == "completed"


@register_serializable
class PrFlaky(Routine):
    """Append-merges; fails on its first delivery of a job, succeeds when retried."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_values, merge_strategy="append")
        self.failing = threading.Event()  # test hook: set just before the first failure

    def on_values(self, value: list[int]) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        js = ctx.job_state
        with js.lock:
            attempts = js.get_shared_data("attempts", 0) + 1
            js.update_shared_data("attempts", attempts)
        if attempts == 1:
            self.failing.set()
            raise ConnectionError("service down")
        js.update_shared_data("delivered", list(value))


def test_a_retry_waiting_for_its_backoff_is_saved_and_made_on_resume() -> None:
    from routilux import ErrorHandler

    flow = Flow("retry-pause")
    flow.add_routine(PrSource(), "src")
    flaky = PrFlaky()
    flaky.set_error_handler(ErrorHandler(strategy="retry", max_retries=2, retry_delay=3600.0))
    flow.add_routine(flaky, "flaky")
    flow.connect("src", "output", "flaky", "input")

    js = flow.execute("src", {"values": [4]}, wait=False)
    assert flaky.failing.wait(LONG)
    # The failed delivery is about to wait an hour for its retry: pause, and it is saved
    # (whether the retry was already scheduled or is scheduled while paused).
    flow.pause(js, reason="maintenance")
    assert js.wait_for_completion(LONG)
    assert js.status == "paused"
    (task,) = js.pending_tasks
    assert (task["slot_routine_id"], task["retry_count"]) == ("flaky", 1)
    assert [r.data["action"] for r in js.execution_history if r.event_name == "error"] == ["retry"]

    restored_flow = Flow().deserialize(json_trip(flow.serialize()))
    restored = JobState().deserialize(json_trip(js.serialize()))
    restored_flow.resume(restored)
    assert restored.status == "completed"
    assert restored.shared_data["attempts"] == 2
    # The retry re-delivers the data merged by the failed attempt: merged once, not twice.
    assert restored.shared_data["delivered"] == [4]


def test_resume_from_a_handler_of_the_same_job_is_refused() -> None:
    outcome: list[str] = []

    def resume_itself(routine: Routine, data: dict[str, Any]) -> None:
        ctx = routine.get_execution_context()
        assert ctx is not None
        ctx.flow.pause(ctx.job_state)
        try:
            ctx.flow.resume(ctx.job_state)
        except JobStateError as exc:
            outcome.append(str(exc))

    flow = Flow("self_resume")
    flow.add_routine(Step(resume_itself, "trigger"), "s")
    js = flow.execute("s")
    assert js.status == "paused"
    assert outcome and "cannot be resumed from one of its own handlers" in outcome[0]

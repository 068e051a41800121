"""Job status is a state machine (spec README item 8, issue 9 item 3).

``failed`` and ``cancelled`` are final; ``completed`` never becomes ``cancelled`` or
``failed`` (a seed-era pause of a completed job is kept: it is ``paused`` with nothing
pending and resumes to ``completed`` without running anything); a JobState saved while
``running`` carries no pending work and cannot be resumed.

Handlers are held with ``threading.Event`` gates, never ordered by sleeping; every
wait has a generous timeout whose expiry fails the test.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from helpers import Step, routine_seen
from routilux import Flow, JobState, JobStateError, Routine, register_serializable

LONG = 30.0  # seconds; only reached when something is broken


def json_trip(js: JobState) -> JobState:
    return JobState().deserialize(json.loads(json.dumps(js.serialize())))


@register_serializable
class StSource(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.run)
        self.define_event("output", ["value"])
        self.define_event("later", ["value"])

    def run(self, values: Any = (), defer: Any = None, **_: Any) -> None:
        for value in values:
            self.emit("output", value=value)
        if defer is not None:
            self.emit_deferred_event("later", value=defer)


@register_serializable
class StStage(Routine):
    """Counts its deliveries in the job's routine state; ``hold`` gates a value."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_input)
        self.hold: dict[int, threading.Event] = {}  # test hook, never saved
        self.entered: dict[int, threading.Event] = {}
        self.fail_on: int | None = None

    def on_input(self, value: int) -> None:
        ctx = self.context
        with ctx.job_state.lock:
            state = dict(ctx.job_state.get_routine_state(ctx.routine_id) or {})
            state["seen"] = [*state.get("seen", []), value]
            ctx.job_state.update_routine_state(ctx.routine_id, state)
        if value in self.entered:
            self.entered[value].set()
        if value in self.hold:
            assert self.hold[value].wait(LONG), "gate never opened"
        if value == self.fail_on:
            raise RuntimeError(f"failing on {value}")


def chain(flow_id: str, strategy: str = "sequential", workers: int = 1) -> Flow:
    # One worker: a held handler holds back every later delivery of the job.
    flow = Flow(flow_id, execution_strategy=strategy, max_workers=workers)
    flow.add_routine(StSource(), "src")
    flow.add_routine(StStage(), "stage")
    flow.connect("src", "output", "stage", "input")
    flow.connect("src", "later", "stage", "input")
    return flow


def stage(flow: Flow) -> StStage:
    routine = flow.routines["stage"]
    assert isinstance(routine, StStage)
    return routine


def paused_with_pending(flow: Flow, values: list[int], held: int = 1) -> JobState:
    """A job paused from another thread while its first ``held`` deliveries ran
    (one per pool worker, so no worker can run the later ones meanwhile)."""
    gates = {value: threading.Event() for value in values[:held]}
    entered = {value: threading.Event() for value in values[:held]}
    stage(flow).hold.update(gates)
    stage(flow).entered.update(entered)
    js = flow.execute("src", {"values": values}, wait=False)
    for event in entered.values():
        assert event.wait(LONG)
    flow.pause(js, wait_timeout=0)
    for gate in gates.values():
        gate.set()
    assert js.wait_for_completion(LONG)
    for value in gates:
        del stage(flow).hold[value], stage(flow).entered[value]
    assert js.status == "paused" and js.pending_tasks
    return js


def assert_refused(call: Any, js: JobState, status: str) -> None:
    with pytest.raises(JobStateError) as info:
        call(js)
    message = str(info.value)
    assert js.job_id in message and status in message, message


# ---------------------------------------------------------------- final statuses


def test_a_cancelled_job_refuses_pause_resume_and_cancel() -> None:
    flow = chain("st-cancelled")
    js = paused_with_pending(flow, [1, 2])
    flow.cancel(js, reason="stop it")
    assert js.pending_tasks == []
    assert js.status == "cancelled"
    for call in (flow.pause, flow.resume, flow.cancel):
        assert_refused(call, js, "cancelled")
    assert js.status == "cancelled"
    # The same after a trip through JSON.
    loaded = json_trip(js)
    for call in (flow.pause, flow.resume, flow.cancel):
        assert_refused(call, loaded, "cancelled")


def test_a_failed_job_refuses_pause_resume_and_cancel() -> None:
    flow = chain("st-failed")
    stage(flow).fail_on = 2
    js = flow.execute("src", {"values": [1, 2, 3]})
    assert js.status == "failed"
    for call in (flow.pause, flow.resume, flow.cancel):
        assert_refused(call, js, "failed")
    assert js.status == "failed"
    assert routine_seen(js, "stage") == [1, 2]


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_cancel_pause_resume_of_a_running_job_never_completes_it(strategy: str) -> None:
    """The issue's sequence: cancel(j); pause(j); resume(j) while a handler runs."""
    flow = chain(f"st-cpr-{strategy}", strategy)
    gate, entered = threading.Event(), threading.Event()
    stage(flow).hold[0], stage(flow).entered[0] = gate, entered
    js = flow.execute("src", {"values": [0, 1, 2, 3]}, wait=False)
    assert entered.wait(LONG)
    flow.cancel(js)
    assert_refused(flow.pause, js, "cancelled")
    assert_refused(flow.resume, js, "cancelled")
    # Refused at once: resume() did not wait for the held handler.
    assert not js.wait_for_completion(0)
    gate.set()
    assert js.wait_for_completion(LONG)
    assert js.status == "cancelled"
    assert routine_seen(js, "stage") == [0]
    assert_refused(flow.resume, js, "cancelled")
    assert js.status == "cancelled"


def test_a_handler_failing_after_cancel_leaves_the_job_cancelled() -> None:
    flow = chain("st-cancel-then-fail", "concurrent")
    gate, entered = threading.Event(), threading.Event()
    worker = stage(flow)
    worker.hold[5], worker.entered[5], worker.fail_on = gate, entered, 5
    js = flow.execute("src", {"values": [5]}, wait=False)
    assert entered.wait(LONG)
    flow.cancel(js)
    gate.set()  # the held handler now raises under STOP
    assert js.wait_for_completion(LONG)
    assert js.status == "cancelled"


# ---------------------------------------------------------------- completed


def test_cancelling_a_completed_job_is_refused() -> None:
    flow = chain("st-cancel-done")
    js = flow.execute("src", {"values": [1]})
    assert js.status == "completed"
    assert_refused(flow.cancel, js, "completed")
    assert js.status == "completed"


def test_a_completed_job_paused_then_saved_resumes_completed_running_nothing(
    tmp_path: Path,
) -> None:
    flow = chain("st-paused-done")
    # The job leaves a deferred event behind: a resume of a paused job would emit it.
    js = flow.execute("src", {"values": [1], "defer": 99})
    assert js.status == "completed"
    assert js.deferred_events
    flow.pause(js, reason="late", checkpoint={"k": 1})
    assert js.status == "paused"
    assert js.pending_tasks == []
    assert js.pause_points[-1]["pending_tasks_count"] == 0
    # Cancelling it is cancelling a completed job.
    assert_refused(flow.cancel, js, "completed")

    path = tmp_path / "job.json"
    js.save(path)
    loaded = JobState.load(path)
    assert loaded.status == "paused"
    flow.pause(loaded, reason="again")  # still a paused completed job
    assert_refused(flow.cancel, loaded, "completed")
    assert flow.resume(loaded) is loaded
    assert loaded.status == "completed"
    assert routine_seen(loaded, "stage") == [1]  # the deferred event was not emitted
    assert len(loaded.execution_history) == len(js.execution_history)
    # ... and the in-process object resumes the same way.
    flow.resume(js)
    assert js.status == "completed"
    assert routine_seen(js, "stage") == [1]


def test_resuming_a_completed_job_runs_nothing() -> None:
    flow = chain("st-resume-done")
    js = flow.execute("src", {"values": [1], "defer": 7})
    assert flow.resume(js) is js
    assert js.status == "completed"
    assert routine_seen(js, "stage") == [1]


# ---------------------------------------------------------------- saved while running


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_a_job_saved_while_running_cannot_be_resumed(strategy: str, tmp_path: Path) -> None:
    flow = chain(f"st-saved-running-{strategy}", strategy)
    gate, entered = threading.Event(), threading.Event()
    stage(flow).hold[0], stage(flow).entered[0] = gate, entered
    js = flow.execute("src", {"values": [0, 1, 2, 3]}, wait=False)
    try:
        assert entered.wait(LONG)
        path = tmp_path / "running.json"
        js.save(path)
    finally:
        gate.set()
    assert js.wait_for_completion(LONG)
    assert js.status == "completed"

    loaded = JobState.load(path)
    assert loaded.status == "running"
    for call in (flow.resume, flow.pause):
        with pytest.raises(JobStateError, match="saved while it was running") as info:
            call(loaded)
        assert loaded.job_id in str(info.value)
        assert "paused" in str(info.value)
    assert loaded.status == "running"
    assert routine_seen(loaded, "stage") == [0]  # nothing ran
    # A stale copy may still be cancelled.
    flow.cancel(loaded)
    assert loaded.status == "cancelled"


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_resuming_a_job_whose_paused_run_is_still_active_works(strategy: str) -> None:
    flow = chain(f"st-resume-active-{strategy}", strategy)
    gate, entered = threading.Event(), threading.Event()
    stage(flow).hold[0], stage(flow).entered[0] = gate, entered
    js = flow.execute("src", {"values": [0, 1, 2]}, wait=False)
    assert entered.wait(LONG)
    flow.pause(js, wait_timeout=0)
    both = threading.Barrier(2, timeout=LONG)

    def release() -> None:
        both.wait()
        gate.set()

    helper = threading.Thread(target=release, daemon=True)
    helper.start()
    both.wait()
    assert flow.resume(js) is js  # waits for the paused run, then resumes it
    helper.join(LONG)
    assert js.status == "completed"
    assert sorted(routine_seen(js, "stage")) == [0, 1, 2]


def test_a_job_never_started_cannot_be_resumed() -> None:
    flow = chain("st-pending")
    js = JobState(flow.flow_id)
    assert_refused(flow.resume, js, "pending")
    flow.cancel(js)
    assert js.status == "cancelled"


def test_a_job_state_built_by_hand_and_paused_resumes_its_pending_tasks() -> None:
    flow = chain("st-by-hand")
    js = JobState(flow.flow_id)
    js.pending_tasks.append(
        {"slot_routine_id": "stage", "slot_name": "input", "data": {"value": 4}}
    )
    flow.pause(js, reason="built by hand")
    flow.resume(js)
    assert js.status == "completed"
    assert routine_seen(js, "stage") == [4]


# ---------------------------------------------------------------- races


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_cancel_racing_the_natural_completion_gives_one_consistent_outcome(
    strategy: str,
) -> None:
    """Whichever wins: cancel() returned and the job is cancelled, or cancel() raised
    JobStateError and the job is completed with every delivery made."""
    flow = chain(f"st-race-{strategy}", strategy)
    outcomes = set()
    for _ in range(40):
        start = threading.Barrier(2, timeout=LONG)
        js = flow.execute("src", {"values": [0, 1]}, wait=False)
        result: list[str] = []

        def canceller(
            js: JobState = js, start: threading.Barrier = start, result: list[str] = result
        ) -> None:
            start.wait()
            try:
                flow.cancel(js)
                result.append("cancelled")
            except JobStateError:
                result.append("refused")

        thread = threading.Thread(target=canceller, daemon=True)
        thread.start()
        start.wait()
        thread.join(LONG)
        assert js.wait_for_completion(LONG)
        (outcome,) = result
        outcomes.add(outcome)
        if outcome == "refused":
            assert js.status == "completed"
            assert sorted(routine_seen(js, "stage")) == [0, 1]
        else:
            assert js.status == "cancelled"
            assert js.pending_tasks == []
    assert outcomes <= {"cancelled", "refused"}


@pytest.mark.parametrize("action", ["pause", "cancel"])
def test_a_run_paused_or_cancelled_before_it_starts_does_not_settle_early(
    action: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume registers its run, then starts it.  A pause (or cancel) in between
    must not settle the job before the run has put its pending work back: else a
    second resume could start while the first run still appends to pending_tasks,
    and the job would end ``completed`` with those tasks never run.

    Depends on the internal name ``JobRun.start`` (held to widen the window)."""
    from routilux.engine.run import JobRun

    flow = chain(f"st-before-start-{action}")
    js = paused_with_pending(flow, [1, 2, 3])
    registered, go = threading.Event(), threading.Event()
    original = JobRun.start

    def held_start(self: JobRun, first_steps: Any) -> None:
        registered.set()
        assert go.wait(LONG)
        original(self, first_steps)

    monkeypatch.setattr(JobRun, "start", held_start)
    resumer = threading.Thread(target=flow.resume, args=(js,), daemon=True)
    resumer.start()
    try:
        assert registered.wait(LONG)
        if action == "pause":
            flow.pause(js, wait_timeout=0)
        else:
            flow.cancel(js)
        assert not js.wait_for_completion(0), "settled before the run started"
    finally:
        go.set()
    resumer.join(LONG)
    assert js.wait_for_completion(LONG)
    monkeypatch.setattr(JobRun, "start", original)
    if action == "cancel":
        assert js.status == "cancelled"
        assert js.pending_tasks == []
        assert routine_seen(js, "stage") == [1]
        return
    assert js.status == "paused"
    assert len(js.pending_tasks) == 2
    flow.resume(js)
    assert js.status == "completed"
    assert sorted(routine_seen(js, "stage")) == [1, 2, 3]


def test_a_loaded_copy_of_a_running_job_does_not_control_the_original() -> None:
    """The copy has the original's job_id, but it is not the object the run writes
    to: pausing it must not pause the run (whose own status would stay ``running``
    and end ``completed`` with the moved tasks never run)."""
    flow = chain("st-copy", "concurrent")
    gate, entered = threading.Event(), threading.Event()
    stage(flow).hold[0], stage(flow).entered[0] = gate, entered
    js = flow.execute("src", {"values": [0, 1, 2]}, wait=False)
    try:
        assert entered.wait(LONG)
        copy = json_trip(js)
        with pytest.raises(JobStateError, match="saved while it was running"):
            flow.pause(copy)
        with pytest.raises(JobStateError, match="saved while it was running"):
            flow.resume(copy)
    finally:
        gate.set()
    assert js.wait_for_completion(LONG)
    assert js.status == "completed"
    assert js.pending_tasks == []
    assert sorted(routine_seen(js, "stage")) == [0, 1, 2]


def test_a_handler_failing_after_a_pause_fails_the_job_for_good() -> None:
    """paused -> failed: a handler still running when the pause began fails (STOP)."""
    flow = chain("st-pause-then-fail", "concurrent")
    gate, entered = threading.Event(), threading.Event()
    worker = stage(flow)
    worker.hold[5], worker.entered[5], worker.fail_on = gate, entered, 5
    js = flow.execute("src", {"values": [5, 6, 7]}, wait=False)
    assert entered.wait(LONG)
    flow.pause(js, wait_timeout=0)
    assert js.status == "paused"
    gate.set()
    assert js.wait_for_completion(LONG)
    assert js.status == "failed"
    assert js.pending_tasks == []
    for call in (flow.pause, flow.resume, flow.cancel):
        assert_refused(call, js, "failed")


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_two_resumes_at_once_run_every_delivery_once(strategy: str) -> None:
    flow = chain(f"st-two-resumes-{strategy}", strategy, workers=2)
    js = paused_with_pending(flow, [1, 2, 3, 4], held=2 if strategy == "concurrent" else 1)
    both = threading.Barrier(2, timeout=LONG)
    returned: list[JobState] = []
    errors: list[BaseException] = []

    def resume() -> None:
        both.wait()
        try:
            returned.append(flow.resume(js))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=resume, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LONG)
    assert errors == [] and returned == [js, js]
    assert js.status == "completed"
    assert sorted(routine_seen(js, "stage")) == [1, 2, 3, 4]
    assert js.pending_tasks == []


def test_a_handler_resuming_its_own_job_through_a_twin_flow_is_refused() -> None:
    """Another Flow object with the same id would otherwise wait for the very run
    whose handler is calling it."""
    outcome: list[str] = []

    def resume_on_twin(routine: Routine, data: dict[str, Any]) -> None:
        ctx = routine.context
        ctx.flow.pause(ctx.job_state)
        try:
            twin.resume(ctx.job_state)
        except JobStateError as exc:
            outcome.append(str(exc))

    flow, twin = Flow("st-twin"), Flow("st-twin")
    flow.add_routine(Step(resume_on_twin, "trigger"), "s")
    twin.add_routine(Step(resume_on_twin, "trigger"), "s")
    js = flow.execute("s")
    assert js.status == "paused"
    assert outcome and "cannot be resumed from one of its own handlers" in outcome[0]

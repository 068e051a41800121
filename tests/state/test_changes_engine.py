"""The change capture on a job the engine runs: every write a flow's deliveries make
(history, routine states, shared data, outputs, the slot merge buffers) is captured.

Lifecycle hooks stand in for the journal here: the ChangeLog is attached when the job
starts, each delivery is opened and bound when it starts and ended when it ends.
"""

from __future__ import annotations

from typing import Any

from routilux import Flow, Routine
from routilux.changes import ChangeLog, Record, apply_ops
from routilux.hooks import Delivery, JobHooks
from routilux.job_state import JobState

# Recorded by the journal beside the ops (the task counter travels with the tasks).
NOT_CAPTURED = ("status", "pause_points", "pending_tasks", "updated_at", "task_seq")


class Capture(JobHooks):
    def __init__(self) -> None:
        self.log: ChangeLog | None = None
        self.start: dict[str, Any] = {}
        self.bound: dict[int, Any] = {}
        self.released: list[Record] = []

    def on_job_start(self, job_state: JobState) -> None:
        self.start = job_state.serialize()
        self.log = ChangeLog(job_state)

    def on_delivery_start(self, job_state: JobState, delivery: Delivery) -> None:
        assert self.log is not None
        self.log.begin(id(delivery))
        scope = self.log.bound(id(delivery))
        scope.__enter__()
        self.bound[id(delivery)] = scope

    def on_delivery_end(
        self, job_state: JobState, delivery: Delivery, duration: float, error: Any
    ) -> None:
        assert self.log is not None
        self.bound.pop(id(delivery)).__exit__(None, None, None)
        self.log.end(id(delivery))
        self.released += self.log.take_ready()

    def on_job_end(self, job_state: JobState) -> None:
        assert self.log is not None
        self.released += self.log.take_ready(flush=True)


class Source(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.run)
        self.define_event("output", ["value"])

    def run(self, n: int = 1, **_: Any) -> None:
        for i in range(n):
            self.emit("output", value=i)


class Collect(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_value, merge_strategy="append")

    def on_value(self, value: Any) -> None:
        # ``value`` is the merge buffer's live list (spec 10 §3.2: later appends show
        # through); a copy goes into the JobState, so no two places share one list.
        value = list(value)
        job_state = self.get_execution_context().job_state
        with job_state.lock:
            job_state.shared_data["total"] = job_state.shared_data.get("total", 0) + 1
        job_state.shared_data.setdefault("seen", []).append(value)
        job_state.merge_routine_state("collect", {"last": value})
        self.send_output("seen", value=value)


def test_a_sequential_flow_run_replays_to_its_final_state() -> None:
    flow = Flow(flow_id="capture")
    flow.add_routine(Source(), "source")
    flow.add_routine(Collect(), "collect")
    flow.connect("source", "output", "collect", "input")
    capture = Capture()
    job = flow.execute("source", entry_params={"n": 5}, hooks=[capture])
    assert job.wait_for_completion(10) and job.status == "completed"
    assert job.slot_buffers  # the append strategy keeps a merge buffer per job
    replay = JobState().deserialize(capture.start)
    for record in capture.released:
        apply_ops(replay, record.ops)
    live, replayed = job.serialize(), replay.serialize()
    for key in NOT_CAPTURED:
        live.pop(key, None)
        replayed.pop(key, None)
    assert replayed == live
    assert live["shared_data"]["total"] == 5
    assert any(op[0] == "buffers_set" for r in capture.released for op in r.ops)

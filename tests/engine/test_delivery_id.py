"""Delivery ids: ``get_execution_context().delivery_id`` names one delivery within its job."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from routilux import ErrorHandler, ErrorStrategy, Flow, JobState, Routine

FANOUT = 12


class Source(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.run)
        self.define_event("out", ["value"])

    def run(self, n: int = 1, **_: Any) -> None:
        ctx = self.context
        _note(ctx, "src")
        for i in range(n):
            self.emit("out", value=i)


def _note(ctx: Any, who: str, value: Any = None) -> None:
    with ctx.job_state.lock:
        ctx.job_state.shared_log.append({"who": who, "id": ctx.delivery_id, "value": value})


class AsyncSink(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.take)

    async def take(self, value: Any) -> None:
        await asyncio.sleep(0)  # let the other deliveries interleave
        _note(self.context, "sink", value)


class SyncSink(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.take)

    def take(self, value: Any) -> None:
        _note(self.context, "sink", value)


def ids_of(job: JobState, who: str) -> list[str]:
    return [entry["id"] for entry in job.shared_log if entry["who"] == who]


def test_ids_are_unique_across_a_concurrent_fan_out_with_async_handlers() -> None:
    flow = Flow(flow_id="ids-fanout", execution_strategy="concurrent", max_workers=4)
    flow.add_routine(Source(), "src")
    for i in range(FANOUT):
        flow.add_routine(AsyncSink(), f"a{i}")
        flow.connect("src", "out", f"a{i}", "input")
    flow.add_routine(SyncSink(), "s")
    flow.connect("src", "out", "s", "input")
    job = flow.execute("src", {"n": 5}, timeout=30)
    assert job.status == "completed"
    sink_ids = ids_of(job, "sink")
    assert len(sink_ids) == 5 * (FANOUT + 1)
    every = [*ids_of(job, "src"), *sink_ids]
    assert len(set(every)) == len(every)  # unique within the job
    assert all(i.startswith(f"{job.job_id}:") for i in every)
    # A second job numbers its own deliveries: no id is shared between jobs.
    other = flow.execute("src", {"n": 1}, timeout=30)
    assert not set(ids_of(other, "sink")) & set(sink_ids)


def test_no_delivery_id_outside_a_delivery() -> None:
    seen: list[Any] = []

    class Peek(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.run)

        def run(self, **_: Any) -> None:
            ctx = self.context
            flow_, job_state, routine_id = ctx  # still a three-field context
            seen.append((routine_id, ctx.delivery_id, job_state.job_id))

    flow = Flow(flow_id="ids-none")
    routine = Peek()
    flow.add_routine(routine, "p")
    assert routine.get_execution_context() is None  # not in a job at all
    job = flow.execute("p")
    assert seen == [("p", f"{job.job_id}:0", job.job_id)]


class Flaky(Routine):
    """Fails its first two deliveries of the value 0 (counted in the job)."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.take)

    def take(self, value: Any) -> None:
        ctx = self.context
        _note(ctx, "attempt", value)
        with ctx.job_state.lock:
            tries = ctx.job_state.shared_data.get(f"tries{value}", 0) + 1
            ctx.job_state.shared_data[f"tries{value}"] = tries
        if value == 0 and tries <= 2:
            raise RuntimeError("try again")


def test_a_retried_delivery_keeps_its_id() -> None:
    flow = Flow(flow_id="ids-retry")
    flow.add_routine(Source(), "src")
    flaky = Flaky()
    flaky.set_error_handler(ErrorHandler(ErrorStrategy.RETRY, max_retries=3, retry_delay=0.0))
    flow.add_routine(flaky, "flaky")
    flow.connect("src", "out", "flaky", "input")
    job = flow.execute("src", {"n": 2}, timeout=30)
    assert job.status == "completed"
    attempts = [(e["value"], e["id"]) for e in job.shared_log if e["who"] == "attempt"]
    zero = {i for v, i in attempts if v == 0}
    one = {i for v, i in attempts if v == 1}
    assert len([v for v, _ in attempts if v == 0]) == 3  # two failures, one success
    assert len(zero) == 1 and len(one) == 1 and zero != one


class Pauser(Routine):
    """Pauses its job on its first delivery (the others stay pending)."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.take)
        self.define_event("out", ["value"])

    def take(self, value: Any) -> None:
        ctx = self.context
        _note(ctx, "pauser", value)
        if value == 0:
            ctx.flow.pause(ctx.job_state, reason="checkpoint")
        self.emit("out", value=value)


def pausing_flow() -> Flow:
    flow = Flow(flow_id="ids-pause")
    flow.add_routine(Source(), "src")
    flow.add_routine(Pauser(), "pauser")
    flow.add_routine(SyncSink(), "sink")
    flow.connect("src", "out", "pauser", "input")
    flow.connect("pauser", "out", "sink", "input")
    return flow


def test_ids_survive_pause_save_load_and_resume(tmp_path: Path) -> None:
    job = pausing_flow().execute("src", {"n": 3}, timeout=30)
    assert job.status == "paused"
    before = [e["id"] for e in job.shared_log]
    saved_seqs = [t["seq"] for t in job.pending_tasks]
    assert len(saved_seqs) == 3  # values 1 and 2 for the pauser, 0's emission for the sink
    path = tmp_path / "job.json"
    job.save(path)

    loaded = JobState.load(path)
    resumed = pausing_flow().resume(loaded, timeout=30)
    assert resumed.status == "completed"
    after = [e["id"] for e in resumed.shared_log][len(before) :]
    # The saved deliveries run under the ids they were given before the pause...
    assert {f"{loaded.job_id}:{seq}" for seq in saved_seqs} <= set(after)
    # ... and no delivery of the job, before or after, shares an id with another.
    every = before + after
    assert len(every) == len(set(every)) == 1 + 3 + 3


def test_files_without_task_numbers_still_load_and_get_fresh_ones(tmp_path: Path) -> None:
    job = pausing_flow().execute("src", {"n": 3}, timeout=30)
    data = json.loads(json.dumps(job.serialize()))
    # As an older version wrote it: no task numbers anywhere.
    data.pop("task_seq", None)
    for entry in data["pending_tasks"]:
        del entry["seq"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))

    loaded = JobState.load(path)
    resumed = pausing_flow().resume(loaded, timeout=30)
    assert resumed.status == "completed"
    after = [e["id"] for e in resumed.shared_log][1 + 1 :]  # past src and pauser(0)
    assert len(after) == 5 and len(set(after)) == 5
    assert all(i is not None and i.startswith(f"{loaded.job_id}:") for i in after)


def test_a_resumed_run_numbers_new_tasks_above_every_saved_one() -> None:
    job = pausing_flow().execute("src", {"n": 3}, timeout=30)
    highest = max(t["seq"] for t in job.pending_tasks)
    pausing_flow().resume(job, timeout=30)
    numbers = [int(e["id"].rsplit(":", 1)[1]) for e in job.shared_log]
    assert len(numbers) == len(set(numbers))
    new = [n for n in numbers if n > highest]
    assert new  # the sink deliveries of values 1 and 2 were made after the resume
    assert job.task_seq > max(numbers)

"""The task observer: what a durable journal or a distributed runner sees of a job.

A run with an observer reports every task it queues (ready, on a timer, at the
job's end), every delivery's start and end, withdrawn timers and scheduled retries,
all naming tasks by their job-wide ``seq``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from routilux import ErrorHandler, ErrorStrategy, Flow, JobState, Routine
from routilux.engine.run import JobRun
from routilux.engine.tasks import Task


class Recorder:
    """A TaskObserver that writes down what it is told (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[Any, ...]] = []

    def _add(self, *call: Any) -> None:
        with self.lock:
            self.calls.append(call)

    def task_queued(self, run: JobRun, task: Task, kind: str, due: float | None) -> None:
        self._add("queued", task.seq, task.rid, kind, due)

    def delivery_started(self, run: JobRun, task: Task) -> None:
        self._add("started", task.seq, task.rid, task.retries)

    def delivery_ended(self, run: JobRun, task: Task, error: BaseException | None) -> None:
        self._add("ended", task.seq, task.rid, type(error).__name__ if error else None)

    def timer_cancelled(self, run: JobRun, task: Task) -> None:
        self._add("cancelled", task.seq, task.rid)

    def retry_scheduled(self, run: JobRun, task: Task, retry: Task, delay: float) -> None:
        self._add("retry", task.seq, retry.seq, retry.retries, delay)

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind]


def execute_observed(flow: Flow, entry: str, params: dict[str, Any], **kw: Any) -> JobState:
    """``flow.execute`` with an observer installed on the run before it starts."""
    observer = kw.pop("observer")
    run, first_steps = flow._new_job(entry, params, kw.pop("strategy", None), None, None)
    run.set_observer(observer)
    flow._launch(run, first_steps, True, 30)
    return run.job_state


class Source(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.run)
        self.define_event("out", ["value"])

    def run(self, n: int = 1, **_: Any) -> None:
        for i in range(n):
            self.emit("out", value=i)


class Sink(Routine):
    def __init__(self, is_async: bool = False) -> None:
        super().__init__()
        self.define_slot("input", handler=self.take_async if is_async else self.take)

    def take(self, value: Any) -> None:
        if value == "boom":
            raise RuntimeError("boom")

    async def take_async(self, value: Any) -> None:
        await asyncio.sleep(0)


def check_every_task_is_queued_started_and_ended_once(rec: Recorder) -> None:
    queued = [c[1] for c in rec.of("queued")]
    started = [c[1] for c in rec.of("started")]
    ended = [c[1] for c in rec.of("ended")]
    assert len(queued) == len(set(queued))
    assert sorted(started) == sorted(ended)
    assert set(started) == set(queued)
    order = {call: index for index, call in enumerate(rec.calls)}
    for seq in queued:
        q = next(i for c, i in order.items() if c[0] == "queued" and c[1] == seq)
        s = next(i for c, i in order.items() if c[0] == "started" and c[1] == seq)
        e = next(i for c, i in order.items() if c[0] == "ended" and c[1] == seq)
        assert q < s < e


@pytest.mark.parametrize(("strategy", "is_async"), [("sequential", False), ("concurrent", True)])
def test_every_delivery_is_observed(strategy: str, is_async: bool) -> None:
    flow = Flow(flow_id="observed", execution_strategy=strategy, max_workers=3)
    flow.add_routine(Source(), "src")
    for i in range(4):
        flow.add_routine(Sink(is_async), f"sink{i}")
        flow.connect("src", "out", f"sink{i}", "input")
    rec = Recorder()
    job = execute_observed(flow, "src", {"n": 5}, observer=rec)
    assert job.status == "completed"
    assert len(rec.of("started")) == 1 + 5 * 4
    assert {c[3] for c in rec.of("queued")} == {"ready"}
    check_every_task_is_queued_started_and_ended_once(rec)
    assert [c[2] for c in rec.of("started")].count("src") == 1


def test_a_retry_keeps_the_task_number_and_is_reported() -> None:
    class Flaky(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", handler=self.take)

        def take(self, value: Any) -> None:
            js = self.context.job_state
            with js.lock:
                js.shared_data["n"] = js.shared_data.get("n", 0) + 1
                if js.shared_data["n"] < 3:
                    raise ValueError("not yet")

    flow = Flow(flow_id="observed-retry")
    flow.add_routine(Source(), "src")
    flaky = Flaky()
    flaky.set_error_handler(ErrorHandler(ErrorStrategy.RETRY, max_retries=5, retry_delay=0.001))
    flow.add_routine(flaky, "flaky")
    flow.connect("src", "out", "flaky", "input")
    rec = Recorder()
    job = execute_observed(flow, "src", {"n": 1}, observer=rec)
    assert job.status == "completed"
    (seq,) = {c[1] for c in rec.of("started") if c[2] == "flaky"}
    assert [c[1:4] for c in rec.of("retry")] == [(seq, seq, 1), (seq, seq, 2)]
    # A retry with a delay waits on a timer, with its due time.
    timers = [c for c in rec.of("queued") if c[3] == "timer"]
    assert [c[1] for c in timers] == [seq, seq] and all(isinstance(c[4], float) for c in timers)
    ends = [c[3] for c in rec.of("ended") if c[2] == "flaky"]
    assert ends == ["ValueError", "ValueError", None]


def test_timers_cancellation_and_job_end_tasks_are_observed() -> None:
    class Timed(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.run)
            self.define_slot("tick", handler=self.tick)
            self.define_slot("last", handler=self.tick)

        def run(self, **_: Any) -> None:
            self.set_timer("t", 3600.0, "tick")
            self.cancel_timer("t")
            self.schedule(0.001, "tick", value=1)
            self.schedule_at_job_end("last", value=2)

        def tick(self, value: Any = None) -> None:
            pass

    flow = Flow(flow_id="observed-timers")
    flow.add_routine(Timed(), "t")
    rec = Recorder()
    job = execute_observed(flow, "t", {}, observer=rec)
    assert job.status == "completed"
    queued = rec.of("queued")
    kinds = sorted(c[3] for c in queued)
    # The entry, two timers, the job-end task, and the timer that fired, ready.
    assert kinds == ["at_job_end", "ready", "ready", "timer", "timer"]
    cancelled_seq, fired_seq = (c[1] for c in queued if c[3] == "timer")
    assert [c[1] for c in queued if c[3] == "ready"][1:] == [fired_seq]
    assert rec.of("cancelled") == [("cancelled", cancelled_seq, "t")]
    started = [c[1] for c in rec.of("started")]
    assert cancelled_seq not in started and fired_seq in started and len(started) == 3
    assert len(rec.of("ended")) == 3


def test_without_an_observer_a_run_has_none() -> None:
    flow = Flow(flow_id="unobserved")
    flow.add_routine(Source(), "src")
    run, first_steps = flow._new_job("src", {}, None, None, None)
    assert run._observer is None and run._watch is False
    flow._launch(run, first_steps, True, 30)
    assert run.job_state.status == "completed"


def test_the_executor_is_chosen_once_per_job() -> None:
    from routilux.engine.executors import INLINE, PoolExecutor

    flow = Flow(flow_id="executors")
    flow.add_routine(Source(), "src")
    flow.add_routine(Sink(is_async=True), "sink")
    flow.connect("src", "out", "sink", "input")
    inline, inline_steps = flow._new_job("src", {"n": 3}, None, None, None)
    pooled, pooled_steps = flow._new_job("src", {"n": 3}, "concurrent", None, None)
    assert inline.executor is INLINE and not inline.executor.pooled
    assert isinstance(pooled.executor, PoolExecutor) and pooled.executor.pooled
    assert pooled.executor.pool is not None and pooled.executor.width >= 1
    for run, first_steps in ((inline, inline_steps), (pooled, pooled_steps)):
        flow._launch(run, first_steps, True, 30)
        assert run.job_state.status == "completed"
        assert [r.event_name for r in run.job_state.execution_history] == ["out"] * 3

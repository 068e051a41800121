"""Lifecycle hooks (``routilux.JobHooks``): what a hook sees of a job, and that a
hook never breaks one."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import datetime
from typing import Any

import pytest

from helpers import AsyncDoubler, Doubler, pipeline
from routilux import (
    CallbackOutputHandler,
    Delivery,
    ErrorHandler,
    ExecutionRecord,
    Flow,
    InvalidArgumentError,
    JobHooks,
    JobState,
    Routine,
)

# ---------------------------------------------------------------------------
# A hook that writes down everything it is told, and routines to run
# ---------------------------------------------------------------------------


class Recorder(JobHooks):
    """Records every call as a tuple; thread-safe (concurrent jobs call from many threads)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def _add(self, *call: Any) -> None:
        with self._lock:
            self.calls.append(call)

    def on_job_start(self, job_state: JobState) -> None:
        self._add("job_start", job_state.job_id, job_state.status)

    def on_job_end(self, job_state: JobState) -> None:
        self._add("job_end", job_state.job_id, job_state.status)

    def on_status(self, job_state: JobState, old: str, new: str) -> None:
        self._add("status", job_state.job_id, old, new)

    def on_delivery_start(self, job_state: JobState, delivery: Delivery) -> None:
        self._add("delivery_start", job_state.job_id, delivery)

    def on_delivery_end(
        self, job_state: JobState, delivery: Delivery, duration: float, error: BaseException | None
    ) -> None:
        self._add("delivery_end", job_state.job_id, delivery, duration, error)

    def on_emit(self, job_state: JobState, record: ExecutionRecord) -> None:
        self._add("emit", job_state.job_id, record)

    def on_output(
        self, job_state: JobState, routine_id: str, output_type: str, data: Any, timestamp: datetime
    ) -> None:
        self._add("output", job_state.job_id, routine_id, output_type, data)

    def on_timer(self, job_state: JobState, routine_id: str, slot_name: str, delay: float) -> None:
        self._add("timer", job_state.job_id, routine_id, slot_name, delay)

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return [c for c in self.calls if c[0] == kind]

    def kinds(self) -> list[str]:
        with self._lock:
            return [c[0] for c in self.calls]

    def statuses(self) -> list[tuple[str, str]]:
        return [(c[2], c[3]) for c in self.of("status")]

    def check_deliveries_pair(self) -> list[tuple[Delivery, float, BaseException | None]]:
        """Every start has exactly one end (same Delivery object) after it; returns the ends."""
        starts = [c[2] for c in self.of("delivery_start")]
        ends = [(c[2], c[3], c[4]) for c in self.of("delivery_end")]
        assert len(starts) == len(ends)
        assert sorted(map(id, starts)) == sorted(id(d) for d, _, _ in ends)
        with self._lock:
            order = [(c[0], id(c[2])) for c in self.calls if c[0].startswith("delivery")]
        for delivery in starts:
            assert order.index(("delivery_start", id(delivery))) < order.index(
                ("delivery_end", id(delivery))
            )
        for _, duration, _ in ends:
            assert duration >= 0
        return ends


class Source(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.run)
        self.define_event("out", ["i"])

    def run(self, n: int = 3, **_: Any) -> None:
        self.send_output("progress", started=n)
        for i in range(n):
            self.emit("out", i=i)


class Collect(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_input)

    def on_input(self, i: int) -> None:
        with self.context.job_state.lock:
            seen = self.context.job_state.shared_data.setdefault("seen", [])
            seen.append(i)


class AsyncCollect(Collect):
    async def on_input(self, i: int) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        Collect.on_input(self, i)


def chain(middle: Routine, sink: Routine, strategy: str = "sequential", **kw: Any) -> Flow:
    return pipeline(
        ("source", Source()),
        ("middle", middle),
        ("sink", sink),
        event="out",
        execution_strategy=strategy,
        max_workers=4,
        **kw,
    )


# ---------------------------------------------------------------------------
# What a hook sees
# ---------------------------------------------------------------------------


def test_a_hook_sees_every_delivery_of_a_concurrent_job_with_async_handlers() -> None:
    hook = Recorder()
    flow = chain(AsyncDoubler(), AsyncCollect(), "concurrent", hooks=[hook])
    js = flow.execute("source", {"n": 30})
    assert js.status == "completed"
    assert sorted(js.shared_data["seen"]) == [2 * i for i in range(30)]

    ends = hook.check_deliveries_pair()
    delivered = sorted((d.routine_id, d.slot_name) for d, _, _ in ends)
    assert delivered == sorted(
        [("source", "trigger")] + [("middle", "input")] * 30 + [("sink", "input")] * 30
    )
    assert all(error is None for _, _, error in ends)
    assert all(d.attempt == 1 for d, _, _ in ends)
    assert [d.entry for d, _, _ in ends if d.routine_id == "source"] == [True]
    assert sorted(d.data["i"] for d, _, _ in ends if d.routine_id == "middle") == list(range(30))

    # Every emission, as the job's own history records.
    emitted = [c[2] for c in hook.of("emit")]
    assert sorted(map(id, emitted)) == sorted(map(id, js.execution_history))
    assert hook.of("output") == [("output", js.job_id, "source", "progress", {"started": 30})]
    assert hook.statuses() == [("pending", "running"), ("running", "completed")]
    kinds = hook.kinds()
    assert kinds[0] == "job_start" and kinds[-1] == "job_end"
    assert hook.of("job_start") == [("job_start", js.job_id, "pending")]
    assert hook.of("job_end") == [("job_end", js.job_id, "completed")]
    assert {c[1] for c in hook.calls} == {js.job_id}


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_hooks_under_both_strategies(strategy: str) -> None:
    hook = Recorder()
    flow = chain(Doubler(), Collect(), strategy)
    js = flow.execute("source", {"n": 5}, hooks=[hook])
    assert js.status == "completed"
    ends = hook.check_deliveries_pair()
    assert len(ends) == 11
    assert len(hook.of("emit")) == 10
    assert hook.statuses() == [("pending", "running"), ("running", "completed")]
    if strategy == "sequential":
        # One thread, breadth-first: each delivery ends before the next starts.
        kinds = [k for k in hook.kinds() if k.startswith("delivery")]
        assert kinds == ["delivery_start", "delivery_end"] * 11
        order = [d.routine_id for d, _, _ in ends]
        assert order == ["source"] + ["middle"] * 5 + ["sink"] * 5


def test_sequential_async_handlers_are_reported_too() -> None:
    hook = Recorder()
    js = chain(AsyncDoubler(), AsyncCollect()).execute("source", {"n": 4}, hooks=[hook])
    assert js.status == "completed"
    assert len(hook.check_deliveries_pair()) == 9


def test_execute_async_takes_hooks() -> None:
    hook = Recorder()
    flow = chain(AsyncDoubler(), AsyncCollect(), "concurrent")

    async def main() -> JobState:
        return await flow.execute_async("source", {"n": 3}, hooks=[hook])

    js = asyncio.run(main())
    assert js.status == "completed"
    assert len(hook.check_deliveries_pair()) == 7
    assert hook.kinds()[-1] == "job_end"


def test_per_call_hooks_see_only_their_job_and_flow_hooks_see_all() -> None:
    everywhere, once = Recorder(), Recorder()
    flow = chain(Doubler(), Collect())
    flow.add_hooks(everywhere)
    assert flow.hooks == (everywhere,)
    first = flow.execute("source", {"n": 1})
    second = flow.execute("source", {"n": 1}, hooks=[once])
    third = flow.execute("source", {"n": 1})
    assert {c[1] for c in once.calls} == {second.job_id}
    assert [c[1] for c in everywhere.of("job_start")] == [
        first.job_id,
        second.job_id,
        third.job_id,
    ]


def test_flow_hooks_run_before_call_hooks_and_after_the_output_handler() -> None:
    order: list[str] = []

    class Named(JobHooks):
        def __init__(self, name: str) -> None:
            self.name = name

        def on_output(self, job_state: JobState, *args: Any) -> None:
            order.append(self.name)

    flow = chain(Doubler(), Collect(), hooks=[Named("flow")])
    handler = CallbackOutputHandler(lambda *a: order.append("handler"))
    flow.execute("source", {"n": 1}, output_handler=handler, hooks=[Named("call")])
    assert order == ["handler", "flow", "call"]


def test_a_hook_without_the_base_class_and_bad_hooks() -> None:
    class Duck:
        def __init__(self) -> None:
            self.ends: list[str] = []

        def on_job_end(self, job_state: JobState) -> None:
            self.ends.append(job_state.status)

    duck = Duck()
    chain(Doubler(), Collect()).execute("source", hooks=[duck])
    assert duck.ends == ["completed"]
    with pytest.raises(InvalidArgumentError, match="not a hook"):
        Flow(hooks=[object()])
    with pytest.raises(InvalidArgumentError, match="not a hook"):
        chain(Doubler(), Collect()).execute("source", hooks=["on_emit"])
    with pytest.raises(InvalidArgumentError, match="list of JobHooks"):
        Flow(hooks=Recorder())  # type: ignore[arg-type]
    flow = Flow()
    flow.add_hooks()  # adding nothing is fine
    assert flow.hooks == ()


# ---------------------------------------------------------------------------
# Failures, retries, timers
# ---------------------------------------------------------------------------


class Flaky(Routine):
    """Fails its first ``failures`` deliveries of a job, then doubles."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.define_slot("input", handler=self.on_input)
        self.define_event("out", ["i"])

    def on_input(self, i: int) -> None:
        with self.context.job_state.lock:
            state = self.context.job_state.shared_data
            state["calls"] = state.get("calls", 0) + 1
            if state["calls"] <= self.failures:
                raise ValueError(f"attempt {state['calls']} fails")
        self.emit("out", i=2 * i)


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_a_retried_delivery_reports_each_attempt(strategy: str) -> None:
    hook = Recorder()
    flaky = Flaky(failures=2)
    flaky.set_error_handler(ErrorHandler("retry", max_retries=3, retry_delay=0.001))
    js = chain(flaky, Collect(), strategy).execute("source", {"n": 1}, hooks=[hook])
    assert js.status == "completed"
    ends = [e for e in hook.check_deliveries_pair() if e[0].routine_id == "middle"]
    assert [d.attempt for d, _, _ in ends] == [1, 2, 3]
    assert [str(e) if e else None for _, _, e in ends] == [
        "attempt 1 fails",
        "attempt 2 fails",
        None,
    ]
    assert [c[2:4] for c in hook.of("timer")] == [("middle", "input")] * 2
    assert all(c[4] > 0 for c in hook.of("timer"))


def test_a_stop_failure_ends_the_delivery_with_its_error_and_fails_the_job() -> None:
    hook = Recorder()
    js = chain(Flaky(failures=1), Collect()).execute("source", {"n": 1}, hooks=[hook])
    assert js.status == "failed"
    (end,) = [e for e in hook.check_deliveries_pair() if e[0].routine_id == "middle"]
    assert isinstance(end[2], ValueError)
    assert hook.statuses() == [("pending", "running"), ("running", "failed")]
    assert hook.of("job_end") == [("job_end", js.job_id, "failed")]
    # The status change was reported after the error strategy had acted, and
    # before the delivery's end.
    kinds = hook.kinds()
    assert kinds.index("status", 1) < len(kinds) - 1 - kinds[::-1].index("delivery_end")


def test_a_continued_failure_is_reported_and_the_job_goes_on() -> None:
    hook = Recorder()
    flaky = Flaky(failures=1)
    flaky.set_error_handler(ErrorHandler("continue"))
    js = chain(flaky, Collect()).execute("source", {"n": 2}, hooks=[hook])
    assert js.status == "completed"
    errors = [e for _, _, e in hook.check_deliveries_pair() if e is not None]
    assert [str(e) for e in errors] == ["attempt 1 fails"]


# ---------------------------------------------------------------------------
# Pause and resume
# ---------------------------------------------------------------------------


class PauseOnce(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_input)
        self.define_event("out", ["i"])

    def on_input(self, i: int) -> None:
        ctx = self.context
        if i == 0 and not ctx.job_state.shared_data.get("paused"):
            ctx.job_state.update_shared_data("paused", True)
            ctx.flow.pause(ctx.job_state, reason="wait")
        self.emit("out", i=i)


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_pause_and_resume_each_are_a_run_with_their_own_call_hooks(strategy: str) -> None:
    first, second, both = Recorder(), Recorder(), Recorder()
    flow = chain(PauseOnce(), Collect(), strategy, hooks=[both])
    js = flow.execute("source", {"n": 3}, hooks=[first])
    assert js.status == "paused"
    assert first.statuses() == [("pending", "running"), ("running", "paused")]
    assert first.of("job_end") == [("job_end", js.job_id, "paused")]
    first.check_deliveries_pair()

    flow.resume(js, hooks=[second])
    assert js.status == "completed"
    assert sorted(js.shared_data["seen"]) == [0, 1, 2]
    assert second.statuses() == [("paused", "running"), ("running", "completed")]
    assert second.of("job_start") == [("job_start", js.job_id, "paused")]
    assert second.kinds()[0] == "job_start" and second.kinds()[-1] == "job_end"
    second.check_deliveries_pair()
    assert first.statuses()[-1] == ("running", "paused")  # nothing of the resumed run
    assert both.statuses() == first.statuses() + second.statuses()
    assert len(both.of("job_start")) == len(both.of("job_end")) == 2


def test_a_resume_with_nothing_to_run_reports_to_the_previous_runs_hooks() -> None:
    before, after = Recorder(), Recorder()
    flow = chain(Doubler(), Collect())
    js = flow.execute("source", {"n": 1}, hooks=[before])
    flow.pause(js)  # paused after completion
    flow.resume(js, hooks=[after])
    assert js.status == "completed"
    assert before.statuses()[-2:] == [("completed", "paused"), ("paused", "completed")]
    assert after.calls == []


def test_cancel_of_a_paused_job_is_reported() -> None:
    hook = Recorder()
    flow = chain(PauseOnce(), Collect())
    js = flow.execute("source", {"n": 2}, hooks=[hook])
    flow.cancel(js, "no")
    assert hook.statuses()[-1] == ("paused", "cancelled")


# ---------------------------------------------------------------------------
# A hook never breaks a job
# ---------------------------------------------------------------------------


class Raising(JobHooks):
    def __init__(self) -> None:
        self.called: set[str] = set()

    def _boom(self, name: str) -> None:
        self.called.add(name)
        raise RuntimeError(f"hook broke in {name}")

    def on_job_start(self, job_state: JobState) -> None:
        self._boom("on_job_start")

    def on_job_end(self, job_state: JobState) -> None:
        self._boom("on_job_end")

    def on_status(self, job_state: JobState, old: str, new: str) -> None:
        self._boom("on_status")

    def on_delivery_start(self, job_state: JobState, delivery: Delivery) -> None:
        self._boom("on_delivery_start")

    def on_delivery_end(self, job_state: JobState, *args: Any) -> None:
        self._boom("on_delivery_end")

    def on_emit(self, job_state: JobState, record: ExecutionRecord) -> None:
        self._boom("on_emit")

    def on_output(self, job_state: JobState, *args: Any) -> None:
        self._boom("on_output")

    def on_timer(self, job_state: JobState, *args: Any) -> None:
        self._boom("on_timer")


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_a_raising_hook_does_not_fail_the_job_and_is_logged(
    strategy: str, caplog: pytest.LogCaptureFixture
) -> None:
    broken, after = Raising(), Recorder()
    flaky = Flaky(failures=1)
    flaky.set_error_handler(ErrorHandler("retry", max_retries=2, retry_delay=0.001))
    flow = chain(flaky, AsyncCollect(), strategy, hooks=[broken])
    outputs: list[Any] = []
    with caplog.at_level(logging.ERROR, logger="routilux.hooks"):
        js = flow.execute(
            "source",
            {"n": 3},
            hooks=[after],
            output_handler=CallbackOutputHandler(lambda *a: outputs.append(a[3])),
        )
    assert js.status == "completed"
    assert sorted(js.shared_data["seen"]) == [0, 2, 4]
    assert outputs == [{"started": 3}]
    assert broken.called == {
        "on_job_start",
        "on_job_end",
        "on_status",
        "on_delivery_start",
        "on_delivery_end",
        "on_emit",
        "on_output",
        "on_timer",
    }
    logged = {r.getMessage().rsplit(" in ", 1)[-1] for r in caplog.records}
    assert logged == broken.called
    assert all(r.name == "routilux.hooks" and r.exc_info for r in caplog.records)
    # The hook after the broken one still saw everything.
    assert len(after.check_deliveries_pair()) == 1 + 4 + 3
    assert after.statuses() == [("pending", "running"), ("running", "completed")]


def test_no_hooks_the_tracker_and_output_log_still_work() -> None:
    flow = chain(Doubler(), Collect())
    js = flow.execute("source", {"n": 2})
    assert flow.execution_tracker is js.execution_tracker
    tracker = js.execution_tracker
    assert [e["event_name"] for e in tracker.event_flow] == ["out"] * 4
    (start,) = tracker.routine_executions["source"]
    assert start["status"] == "completed" and start["params"] == {"n": 2}
    assert js.output_log[0]["data"] == {"started": 2}

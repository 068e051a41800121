"""The compiled plan: jobs run on it and never write to the definition; edits rebuild it."""

from __future__ import annotations

from typing import Any

import pytest

from routilux import ErrorHandler, ErrorStrategy, Flow, Routine


class Source(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.run)
        self.define_event("out", ["value"])

    def run(self, n: int = 1, poison: bool = False, **_: Any) -> None:
        for i in range(n):
            self.emit("out", value=-1 if poison else i)


class Flaky(Routine):
    """Fails the first ``failures`` deliveries of each job (counted in the job), and
    every delivery of the value -1."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.failures = failures
        self.define_slot("input", handler=self.take, merge_strategy="append")
        self.define_event("out", ["value"])

    def take(self, value: Any) -> None:
        ctx = self.context
        with ctx.job_state.lock:
            seen = ctx.job_state.shared_data.get("seen", 0) + 1
            ctx.job_state.shared_data["seen"] = seen
        if seen <= self.failures or value == [-1]:
            raise RuntimeError(f"failure {seen}")
        self.emit("out", value=value)


class Sink(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.take)

    def take(self, total: Any) -> None:
        ctx = self.context
        with ctx.job_state.lock:
            ctx.job_state.shared_log.append({"total": total})


def build(strategy: str, failures: int, handler: ErrorHandler) -> Flow:
    flow = Flow(flow_id=f"plan-{strategy}", execution_strategy=strategy, max_workers=3)
    flow.add_routine(Source(), "src")
    flaky = Flaky(failures)
    flaky.set_error_handler(handler)
    flow.add_routine(flaky, "flaky")
    flow.add_routine(Sink(), "sink")
    flow.connect("src", "out", "flaky", "input")
    flow.connect("flaky", "out", "sink", "input", {"value": "total"})
    return flow


def _fingerprint(value: Any) -> Any:
    """A comparable snapshot of one attribute (containers copied one level)."""
    if isinstance(value, dict):
        return ("dict", dict(value))
    if isinstance(value, list):
        return ("list", list(value))
    return ("value", value)


def definition_snapshot(flow: Flow) -> dict[str, Any]:
    """Every attribute of every definition object of ``flow``, plus its saved form."""
    objects: list[Any] = [flow.error_handler]
    for routine in flow.routines.values():
        objects.append(routine)
        objects.append(routine.get_error_handler())
        objects.extend(routine._slots.values())
        objects.extend(routine._events.values())
    objects.extend(flow.connections)
    snapshot: dict[str, Any] = {"serialized": flow.serialize()}
    for index, obj in enumerate(objects):
        if obj is None:
            continue
        snapshot[f"{index}:{type(obj).__name__}"] = {
            name: _fingerprint(value)
            for name, value in vars(obj).items()
            if name != "_lock"  # a slot's lock for deliveries outside a job
        }
    return snapshot


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_jobs_leave_the_definition_unchanged(strategy: str) -> None:
    # One handler object shared by the routine: a retry must not count in it.
    retrying = ErrorHandler(ErrorStrategy.RETRY, max_retries=3, retry_delay=0.0)
    flow = build(strategy, failures=2, handler=retrying)
    before = definition_snapshot(flow)

    retried = flow.execute("src", {"n": 1}, timeout=30)
    assert retried.status == "completed"
    assert retried.get_routine_state("flaky")["retry_count"] == 2
    assert retried.shared_log == [{"total": [0]}]
    # Retries run out: the failure stops the job.
    failed = flow.execute("src", {"n": 1, "poison": True}, timeout=30)
    assert failed.status == "failed"
    assert failed.get_routine_state("flaky")["retry_count"] == 3
    several = flow.execute("src", {"n": 4}, timeout=30)
    assert len(several.shared_log) == 4 and several.status == "completed"

    assert definition_snapshot(flow) == before
    assert retrying.retry_count == 0  # the job counted its retries itself


def test_the_plan_is_compiled_once_and_rebuilt_after_an_edit() -> None:
    flow = build("sequential", failures=0, handler=ErrorHandler(ErrorStrategy.STOP))
    plan = flow.plan
    assert flow.plan is plan  # nothing changed: the same read-only plan
    flow.execute("src", {"n": 1})
    assert flow.plan is plan

    # Editing the flow after a run: a new routine and connection.
    extra = Sink()
    flow.add_routine(extra, "extra")
    flow.connect("src", "out", "extra", "input", {"value": "total"})
    rebuilt = flow.plan
    assert rebuilt is not plan
    job = flow.execute("src", {"n": 1})
    assert job.shared_log == [{"total": 0}, {"total": [0]}]  # breadth-first
    assert ("extra", "input") in rebuilt.slots


def test_edits_of_routines_and_slots_rebuild_the_plan() -> None:
    flow = build("sequential", failures=1, handler=ErrorHandler(ErrorStrategy.STOP))
    assert flow.execute("src", {"n": 1}).status == "failed"
    plan = flow.plan
    # The routine's own error handler changes: the next job continues instead.
    flow.routines["flaky"].set_error_handler(ErrorHandler(ErrorStrategy.CONTINUE))
    assert flow.plan is not plan
    assert flow.execute("src", {"n": 1}).status == "completed"

    calls: list[Any] = []
    plan = flow.plan
    flow.routines["sink"].get_slot("input").handler = calls.append
    assert flow.plan is not plan
    flow.routines["flaky"].set_error_handler(None)
    flow.routines["flaky"].failures = 0
    flow.execute("src", {"n": 1})
    assert calls == [{"total": [0]}]


def test_which_error_handler_applies_is_decided_by_the_plan() -> None:
    own = ErrorHandler(ErrorStrategy.SKIP)
    flow = build("sequential", failures=0, handler=own)
    shared = ErrorHandler(ErrorStrategy.CONTINUE)
    flow.set_error_handler(shared)
    plan = flow.plan
    assert plan.error_handlers == {"src": shared, "flaky": own, "sink": shared}
    assert plan.slots[("flaky", "input")].error_handler is own
    assert plan.slots[("sink", "input")].error_handler is shared


def test_a_running_job_keeps_the_plan_it_started_with() -> None:
    flow = build("sequential", failures=0, handler=ErrorHandler(ErrorStrategy.STOP))
    seen: list[Any] = []

    class Editor(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.run)
            self.define_event("out", ["value"])

        def run(self, **_: Any) -> None:
            # Editing the definition mid-job (not supported usage, but harmless):
            # this job goes on with its plan; the next one sees the edit.
            flow.routines["sink"].get_slot("input").handler = seen.append
            self.emit("out", value=1)

    flow.add_routine(Editor(), "editor")
    flow.connect("editor", "out", "sink", "input", {"value": "total"})
    job = flow.execute("editor")
    assert job.shared_log == [{"total": 1}] and seen == []
    flow.execute("editor")
    assert seen == [{"total": 1}]

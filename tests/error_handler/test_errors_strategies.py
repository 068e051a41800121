"""What each error strategy does to a job (spec 40 §3, README decision 6,
docs/execution-model.md "Failures").

The same rules apply to the entry routine and to downstream routines, and to a
handler set on the flow or on the routine.  Each test builds a small flow::

    src --out--> mid --out--> sink
       \\--out--> after        (queued after mid)

and makes one routine (``src`` = entry or ``mid`` = downstream) emit and then
raise.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any, Callable

import pytest

from helpers import Step, failures, forward
from routilux import ErrorHandler, ErrorStrategy, Flow, Routine


class Calls:
    """Thread-safe log of the data each routine was called with."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_routine: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def add(self, rid: str, data: dict[str, Any]) -> int:
        with self._lock:
            self.by_routine[rid].append(dict(data))
            return len(self.by_routine[rid])

    def count(self, rid: str) -> int:
        with self._lock:
            return len(self.by_routine[rid])


def build_chain(
    failing: str,
    errors: Callable[[int], BaseException | None],
    execution_strategy: str = "sequential",
    hold_mid: threading.Event | None = None,
):
    """src -> mid -> sink, src -> after.  ``failing`` emits, then raises ``errors(n)``
    on its n-th call (no raise when it returns None).  ``mid`` first waits for
    ``hold_mid`` when given."""
    flow = Flow(execution_strategy=execution_strategy, max_workers=1)
    calls = Calls()

    def make(rid: str, slot: str) -> Step:
        def action(routine: Routine, data: dict[str, Any]) -> None:
            if rid == "mid" and hold_mid is not None:
                assert hold_mid.wait(10)
            n = calls.add(rid, data)
            routine.emit("out", **data)
            if rid == failing:
                error = errors(n)
                if error is not None:
                    raise error

        return Step(action, slot)

    flow.add_routine(make("src", "trigger"), "src")
    for rid in ("mid", "after", "sink"):
        flow.add_routine(make(rid, "in"), rid)
    flow.connect("src", "out", "mid", "in")
    flow.connect("src", "out", "after", "in")
    flow.connect("mid", "out", "sink", "in")
    return flow, calls


def first_call_fails(n: int) -> BaseException | None:
    return ValueError("boom") if n == 1 else None


def always_fails(n: int) -> BaseException | None:
    return ValueError(f"boom {n}")


def install(flow: Flow, rid: str, level: str, handler: ErrorHandler) -> None:
    if level == "flow":
        flow.set_error_handler(handler)
    else:
        flow.routines[rid].set_error_handler(handler)


POSITIONS = {"entry": "src", "downstream": "mid"}


# -- the matrix: strategy x position x handler level ---------------------------------


@pytest.mark.parametrize("level", ["flow", "routine"])
@pytest.mark.parametrize("position", ["entry", "downstream"])
@pytest.mark.parametrize("strategy", list(ErrorStrategy))
def test_strategy_matrix(strategy, position, level):
    rid = POSITIONS[position]
    flow, calls = build_chain(rid, first_call_fails)
    install(flow, rid, level, ErrorHandler(strategy, max_retries=1, retry_delay=0.01))

    job = flow.execute("src", {"n": 1})

    records = failures(job, rid)
    assert len(records) == 1
    record = records[0]
    assert record.data["slot"] == ("trigger" if position == "entry" else "in")
    assert record.data["error"] == "boom"
    assert record.data["error_type"] == "ValueError"
    assert record.data["attempt"] == 1
    assert record.data["action"] == strategy.value
    state = job.get_routine_state(rid) or {}
    downstream = {r: calls.count(r) for r in ("mid", "after", "sink")}

    if strategy is ErrorStrategy.STOP:
        assert job.status == "failed"
        assert record.event_name == "error"
        assert "retry_delay" not in record.data
        assert state["status"] == "failed"
        assert state["error"] == "boom"
        assert "error_time" in state
        assert calls.count(rid) == 1
        # Every task still queued when the failure happened is dropped.
        if position == "entry":
            assert downstream == {"mid": 0, "after": 0, "sink": 0}
        else:
            assert downstream == {"mid": 1, "after": 0, "sink": 0}
    elif strategy is ErrorStrategy.CONTINUE:
        assert job.status == "completed"
        assert record.event_name == "error_continued"
        assert state["status"] == "error_continued"
        assert state["error"] == "boom"
        assert calls.count(rid) == 1
        assert downstream == {"mid": 1, "after": 1, "sink": 1}
    elif strategy is ErrorStrategy.SKIP:
        assert job.status == "completed"
        assert record.event_name == "error"
        assert state["status"] == "skipped"
        assert state["error"] == "boom"
        assert calls.count(rid) == 1
        assert downstream == {"mid": 1, "after": 1, "sink": 1}
    else:
        assert job.status == "completed"
        assert record.event_name == "error"
        assert record.data["retry_delay"] == pytest.approx(0.01)
        assert state["retry_count"] == 1
        assert calls.count(rid) == 2
        # The same data is re-delivered, and what the failed attempt emitted is not
        # withdrawn: the routine after the retried one hears from both attempts.
        assert calls.by_routine[rid] == [{"n": 1}, {"n": 1}]
        if position == "entry":
            assert downstream == {"mid": 2, "after": 2, "sink": 2}
            assert state["status"] == "completed"
        else:
            assert downstream == {"mid": 2, "after": 1, "sink": 2}


@pytest.mark.parametrize("position", ["entry", "downstream"])
def test_no_handler_means_stop(position):
    rid = POSITIONS[position]
    flow, calls = build_chain(rid, first_call_fails)
    job = flow.execute("src", {"n": 1})
    assert job.status == "failed"
    assert [r.data["action"] for r in failures(job, rid)] == ["stop"]
    assert job.get_routine_state(rid)["status"] == "failed"
    assert calls.count("after") == 0


@pytest.mark.parametrize("position", ["entry", "downstream"])
def test_stop_in_concurrent_strategy_drops_queued_tasks(position):
    """With one worker, ``after`` is still queued when the failure happens.

    The entry runs on the calling thread while the worker may already have
    picked up ``mid``: ``mid`` is held until execute(wait=False) has returned,
    that is until the entry has failed.
    """
    rid = POSITIONS[position]
    hold = threading.Event()
    flow, calls = build_chain(rid, first_call_fails, execution_strategy="concurrent", hold_mid=hold)
    job = flow.execute("src", {"n": 1}, wait=False)
    if position == "entry":
        assert job.status == "failed"  # the entry handler ran on this thread
    hold.set()
    assert job.wait_for_completion(timeout=10)
    assert job.status == "failed"
    assert calls.count("after") == 0
    assert calls.count("sink") == 0  # also what a still running mid emitted
    flow.shutdown()


@pytest.mark.parametrize("strategy", ["continue", "skip"])
def test_other_deliveries_to_a_failing_downstream_routine_still_run(strategy):
    flow = Flow()
    seen = []

    def emit_three(routine, data):
        for n in (1, 2, 3):
            routine.emit("out", n=n)

    def picky(routine, data):
        seen.append(data["n"])
        if data["n"] == 2:
            raise KeyError("two")

    flow.add_routine(Step(emit_three, "trigger"), "src")
    flow.add_routine(Step(picky), "picky")
    flow.connect("src", "out", "picky", "in")
    flow.set_error_handler(ErrorHandler(strategy))
    job = flow.execute("src")
    assert job.status == "completed"
    assert seen == [1, 2, 3]
    assert [r.data["attempt"] for r in failures(job, "picky")] == [1]


def test_stop_after_an_earlier_continue_still_fails_the_job():
    """Each failure is judged by its own routine's handler."""
    flow, calls = build_chain("mid", first_call_fails)
    flow.routines["src"].set_error_handler(ErrorHandler("continue"))
    job = flow.execute("src", {"n": 1})
    assert job.status == "failed"
    assert job.get_routine_state("mid")["status"] == "failed"


# -- precedence (spec 40 §2) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("routine_strategy", "flow_strategy", "status", "action"),
    [
        ("continue", "stop", "completed", "continue"),
        ("stop", "continue", "failed", "stop"),
        ("skip", "retry", "completed", "skip"),
        ("retry", "skip", "completed", "retry"),
    ],
)
@pytest.mark.parametrize("position", ["entry", "downstream"])
def test_routine_level_handler_wins_over_flow_level(
    routine_strategy, flow_strategy, status, action, position
):
    rid = POSITIONS[position]
    flow, calls = build_chain(rid, first_call_fails)
    flow.set_error_handler(ErrorHandler(flow_strategy, max_retries=1, retry_delay=0.01))
    flow.routines[rid].set_error_handler(
        ErrorHandler(routine_strategy, max_retries=1, retry_delay=0.01)
    )
    job = flow.execute("src", {"n": 1})
    assert job.status == status
    assert [r.data["action"] for r in failures(job, rid)] == [action]


def test_flow_level_handler_applies_to_routines_without_their_own():
    flow = Flow()
    calls = Calls()

    def failing(rid):
        def action(routine, data):
            calls.add(rid, data)
            routine.emit("out", **data)
            raise RuntimeError(rid)

        return action

    flow.add_routine(Step(failing("src"), "trigger"), "src")
    flow.add_routine(Step(failing("mid")), "mid")
    flow.add_routine(Step(lambda r, d: calls.add("sink", d)), "sink")
    flow.connect("src", "out", "mid", "in")
    flow.connect("mid", "out", "sink", "in")
    flow.set_error_handler(ErrorHandler("skip"))
    flow.routines["src"].set_error_handler(ErrorHandler("continue"))
    job = flow.execute("src", {"n": 1})
    assert job.status == "completed"
    assert job.get_routine_state("src")["status"] == "error_continued"
    assert job.get_routine_state("mid")["status"] == "skipped"
    assert calls.count("sink") == 1


# -- pinned observables of spec 40 §3 (and the same for a downstream routine) ----------------


def _retry_flow(position, errors, **handler_kwargs):
    rid = POSITIONS[position]
    flow, calls = build_chain(rid, errors)
    handler = ErrorHandler("retry", retry_delay=0.01, **handler_kwargs)
    flow.routines[rid].set_error_handler(handler)
    return flow, calls, rid, handler


@pytest.mark.parametrize("position", ["entry", "downstream"])
def test_always_failing_with_two_retries_calls_three_times_and_fails(position):
    flow, calls, rid, _ = _retry_flow(position, always_fails, max_retries=2)
    job = flow.execute("src", {"n": 1})
    assert calls.count(rid) == 3
    assert job.get_routine_state(rid)["retry_count"] == 2
    assert job.status == "failed"
    assert [(r.data["attempt"], r.data["action"]) for r in failures(job, rid)] == [
        (1, "retry"),
        (2, "retry"),
        (3, "stop"),
    ]
    assert failures(job, rid)[-1].data["error"] == "boom 3"


@pytest.mark.parametrize("position", ["entry", "downstream"])
def test_succeeding_on_the_second_call_completes_with_retry_count_one(position):
    flow, calls, rid, _ = _retry_flow(position, first_call_fails, max_retries=3)
    job = flow.execute("src", {"n": 1})
    assert calls.count(rid) == 2
    assert job.get_routine_state(rid)["retry_count"] == 1
    assert job.status == "completed"


@pytest.mark.parametrize("position", ["entry", "downstream"])
def test_retryable_then_non_retryable_error_fails_after_two_calls(position):
    def errors(n):
        return ConnectionError("net") if n == 1 else ValueError("bad")

    flow, calls, rid, _ = _retry_flow(
        position, errors, max_retries=5, retryable_exceptions=(ConnectionError,)
    )
    job = flow.execute("src", {"n": 1})
    assert calls.count(rid) == 2
    assert job.status == "failed"
    assert [
        (r.data["error_type"], r.data["attempt"], r.data["action"]) for r in failures(job, rid)
    ] == [("ConnectionError", 1, "retry"), ("ValueError", 2, "stop")]


@pytest.mark.parametrize("position", ["entry", "downstream"])
def test_non_retryable_first_error_is_not_retried(position):
    flow, calls, rid, handler = _retry_flow(
        position, first_call_fails, max_retries=3, retryable_exceptions=(ConnectionError,)
    )
    job = flow.execute("src", {"n": 1})
    assert calls.count(rid) == 1
    assert job.status == "failed"
    assert job.get_routine_state(rid).get("retry_count", 0) == 0
    assert handler.retry_count == 0
    [record] = failures(job, rid)
    assert record.data["action"] == "stop"
    assert "retry_delay" not in record.data


@pytest.mark.parametrize("position", ["entry", "downstream"])
def test_subclass_of_a_retryable_exception_is_retried(position):
    def errors(n):
        return ConnectionResetError("reset") if n == 1 else None

    flow, calls, rid, _ = _retry_flow(
        position, errors, max_retries=1, retryable_exceptions=(OSError,)
    )
    job = flow.execute("src", {"n": 1})
    assert calls.count(rid) == 2
    assert job.status == "completed"


# -- critical and optional routines ---------------------------------------------------------


@pytest.mark.parametrize("position", ["entry", "downstream"])
def test_critical_routine_is_retried_and_recovers(position):
    rid = POSITIONS[position]
    flow, calls = build_chain(rid, first_call_fails)
    flow.routines[rid].set_as_critical(max_retries=2, retry_delay=0.01)
    job = flow.execute("src", {"n": 1})
    assert calls.count(rid) == 2
    assert job.status == "completed"
    assert calls.count("sink") >= 1


@pytest.mark.parametrize("position", ["entry", "downstream"])
def test_critical_routine_that_keeps_failing_fails_the_job(position):
    rid = POSITIONS[position]
    flow, calls = build_chain(rid, always_fails)
    flow.set_error_handler(ErrorHandler("continue"))  # the routine's own handler wins
    flow.routines[rid].set_as_critical(max_retries=2, retry_delay=0.01, retry_backoff=1.0)
    job = flow.execute("src", {"n": 1})
    assert calls.count(rid) == 3
    assert job.status == "failed"
    assert job.get_routine_state(rid)["status"] == "failed"
    assert [r.data["action"] for r in failures(job, rid)] == ["retry", "retry", "stop"]


@pytest.mark.parametrize(
    ("optional_strategy", "status", "event"),
    [(None, "error_continued", "error_continued"), ("skip", "skipped", "error")],
)
@pytest.mark.parametrize("position", ["entry", "downstream"])
def test_optional_routine_failure_does_not_stop_the_job(optional_strategy, status, event, position):
    rid = POSITIONS[position]
    flow, calls = build_chain(rid, always_fails)
    flow.set_error_handler(ErrorHandler("stop"))
    flow.routines[rid].set_as_optional(optional_strategy)
    job = flow.execute("src", {"n": 1})
    assert job.status == "completed"
    assert job.get_routine_state(rid)["status"] == status
    assert [r.event_name for r in failures(job, rid)] == [event]
    assert {r: calls.count(r) for r in ("mid", "after", "sink")} == {
        "mid": 1,
        "after": 1,
        "sink": 1,
    }


@pytest.mark.parametrize("position", ["entry", "downstream"])
def test_optional_retry_routine_continues_once_retries_run_out(position):
    rid = POSITIONS[position]
    flow, calls = build_chain(rid, always_fails)
    routine = flow.routines[rid]
    routine.set_as_optional(ErrorStrategy.RETRY)
    handler = routine.get_error_handler()
    handler.max_retries, handler.retry_delay = 2, 0.01
    job = flow.execute("src", {"n": 1})
    assert calls.count(rid) == 3
    assert job.status == "completed"
    assert [(r.event_name, r.data["action"]) for r in failures(job, rid)] == [
        ("error", "retry"),
        ("error", "retry"),
        ("error_continued", "continue"),
    ]
    assert job.get_routine_state(rid)["status"] == "error_continued"


@pytest.mark.parametrize("position", ["entry", "downstream"])
def test_optional_retry_routine_continues_on_a_non_retryable_error(position):
    rid = POSITIONS[position]
    flow, calls = build_chain(rid, always_fails)
    routine = flow.routines[rid]
    routine.set_as_optional("retry")
    routine.get_error_handler().retryable_exceptions = (ConnectionError,)
    job = flow.execute("src", {"n": 1})
    assert calls.count(rid) == 1
    assert job.status == "completed"
    assert [r.data["action"] for r in failures(job, rid)] == ["continue"]


# -- a missing trigger slot (spec 90 D20) ---------------------------------------------------


def _no_trigger_flow():
    flow = Flow()
    flow.add_routine(Step(lambda r, d: None, "input"), "entry")
    return flow


def test_missing_trigger_slot_fails_the_job():
    job = _no_trigger_flow().execute("entry", {"x": 1})
    assert job.status == "failed"
    [record] = failures(job, "entry")
    assert record.data["error_type"] == "FlowError"
    assert "entry" in record.data["error"]
    assert "trigger" in record.data["error"]
    state = job.get_routine_state("entry")
    assert state["status"] == "failed"
    assert "trigger" in state["error"]


def test_missing_trigger_slot_completes_when_optional():
    flow = _no_trigger_flow()
    flow.routines["entry"].set_as_optional()
    job = flow.execute("entry", {"x": 1})
    assert job.status == "completed"
    assert job.get_routine_state("entry")["status"] == "error_continued"
    [record] = failures(job, "entry")
    assert record.event_name == "error_continued"
    assert record.data["error_type"] == "FlowError"


# -- failures are never swallowed ------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(ErrorStrategy))
def test_every_handled_failure_leaves_a_typed_record(strategy):
    class CustomError(Exception):
        pass

    flow, calls = build_chain("mid", lambda n: CustomError(f"custom {n}") if n == 1 else None)
    flow.set_error_handler(ErrorHandler(strategy, max_retries=1, retry_delay=0.01))
    job = flow.execute("src", {"n": 1})
    [record] = failures(job, "mid")
    assert record.data["error_type"] == "CustomError"
    assert record.data["error"] == "custom 1"


@pytest.mark.parametrize("strategy", ["stop", "retry"])
@pytest.mark.parametrize("execution_strategy", ["sequential", "concurrent"])
def test_async_handler_failures_follow_the_same_rules(strategy, execution_strategy):
    calls = Calls()

    class AsyncStep(Routine):
        def __init__(self):
            super().__init__()
            self.define_slot("in", handler=self.handle)

        async def handle(self, n):
            if calls.add("async", {"n": n}) == 1:
                raise TimeoutError("slow")

    flow = Flow(execution_strategy=execution_strategy, max_workers=2)
    flow.add_routine(Step(forward, "trigger"), "src")
    flow.add_routine(AsyncStep(), "async")
    flow.connect("src", "out", "async", "in")
    flow.set_error_handler(ErrorHandler(strategy, max_retries=1, retry_delay=0.01))
    job = flow.execute("src", {"n": 1}, timeout=10)
    records = failures(job, "async")
    assert [(r.data["error_type"], r.data["action"]) for r in records] == [
        ("TimeoutError", strategy)
    ]
    if strategy == "stop":
        assert job.status == "failed"
        assert calls.count("async") == 1
    else:
        assert job.status == "completed"
        assert calls.count("async") == 2
    flow.shutdown()


class _BrokenPolicy(ErrorHandler):
    """An error policy that itself raises: an unexpected error inside the engine."""

    def decide(self, error, retries_done):
        raise RuntimeError("policy exploded")


class _UnprintableError(Exception):
    def __str__(self):
        raise RuntimeError("cannot render the error")


@pytest.mark.parametrize("position", ["entry", "downstream"])
@pytest.mark.parametrize("execution_strategy", ["sequential", "concurrent"])
@pytest.mark.parametrize(
    ("fault", "message"),
    [("policy", "policy exploded"), ("unprintable", "cannot render the error")],
)
def test_engine_failure_fails_the_job_instead_of_hanging(
    fault, message, execution_strategy, position
):
    rid = POSITIONS[position]
    if fault == "policy":
        flow, _ = build_chain(rid, first_call_fails, execution_strategy)
        flow.set_error_handler(_BrokenPolicy())
    else:
        flow, _ = build_chain(rid, lambda n: _UnprintableError(), execution_strategy)
    job = flow.execute("src", {"n": 1}, timeout=10)
    assert job.wait_for_completion(timeout=10)
    assert job.status == "failed"
    texts = [
        str(r.data.get("error")) for r in job.get_execution_history() if r.event_name == "error"
    ]
    assert any("RuntimeError" in t and message in t for t in texts), texts
    flow.shutdown()


def test_stop_drops_the_jobs_scheduled_retries():
    """A STOP failure drops retries already waiting on the timer: execute() returns
    without waiting for them and they never run."""
    flow = Flow()
    calls = Calls()

    def waits_for_retry(routine, data):
        calls.add("retrying", data)
        raise ConnectionError("later")

    def stops(routine, data):
        calls.add("stopping", data)
        raise ValueError("fatal")

    flow.add_routine(Step(forward, "trigger"), "src")
    flow.add_routine(Step(waits_for_retry), "retrying")
    flow.add_routine(Step(stops), "stopping")
    flow.connect("src", "out", "retrying", "in")  # fails first, retry in 30 s
    flow.connect("src", "out", "stopping", "in")  # then this one stops the job
    flow.routines["retrying"].set_error_handler(ErrorHandler("retry", retry_delay=30.0))
    job = flow.execute("src", {"n": 1}, timeout=20)
    assert job.status == "failed"
    assert job.wait_for_completion(timeout=0)
    assert calls.count("retrying") == 1
    assert [r.data["action"] for r in failures(job, "retrying")] == ["retry"]
    assert [r.data["action"] for r in failures(job, "stopping")] == ["stop"]


@pytest.mark.parametrize("strategy", ["stop", "retry"])
def test_a_failing_merge_function_is_handled_like_a_handler_failure(strategy):
    merges = Calls()
    delivered = Calls()

    def merge_once_broken(current, new):
        if merges.add("merge", new) == 1:
            raise KeyError("merge broke")
        return dict(new)

    flow = Flow()
    flow.add_routine(Step(forward, "trigger"), "src")
    flow.add_routine(
        Step(lambda r, d: delivered.add("m", d), merge_strategy=merge_once_broken), "m"
    )
    flow.connect("src", "out", "m", "in")
    flow.set_error_handler(ErrorHandler(strategy, retry_delay=0.01))
    job = flow.execute("src", {"n": 1})
    [record] = failures(job, "m")
    assert record.data["error_type"] == "KeyError"
    assert record.data["action"] == strategy
    if strategy == "stop":
        assert job.status == "failed"
        assert delivered.count("m") == 0
    else:
        # Nothing was merged by the failed attempt, so the retry merges once.
        assert job.status == "completed"
        assert merges.count("merge") == 2
        assert delivered.by_routine["m"] == [{"n": 1}]


@pytest.mark.parametrize("execution_strategy", ["sequential", "concurrent"])
def test_async_handler_raising_cancelled_error_is_not_swallowed(execution_strategy):
    import asyncio

    class Cancelling(Routine):
        def __init__(self):
            super().__init__()
            self.define_slot("in", handler=self.handle)

        async def handle(self, **data):
            raise asyncio.CancelledError("handler gave up")

    flow = Flow(execution_strategy=execution_strategy)
    flow.add_routine(Step(forward, "trigger"), "src")
    flow.add_routine(Cancelling(), "cancelling")
    flow.connect("src", "out", "cancelling", "in")
    job = flow.execute("src", {"n": 1}, timeout=10)
    flow.shutdown()
    assert job.status == "failed"
    [record] = failures(job, "cancelling")
    assert record.data["error_type"] == "CancelledError"


class _Abort(BaseException):
    """Not an Exception: ``except Exception`` does not catch it."""


def test_a_base_exception_in_a_handler_does_not_leave_the_job_running_forever():
    """No strategy applies to it, but the job fails and settles (in a pool worker
    there is nobody to re-raise it to)."""

    def aborts(routine, data):
        raise _Abort("abort")

    flow = Flow(execution_strategy="concurrent", max_workers=1)
    flow.add_routine(Step(forward, "trigger"), "src")
    flow.add_routine(Step(aborts), "aborts")
    flow.connect("src", "out", "aborts", "in")
    job = flow.execute("src", {"n": 1}, wait=False)
    settled = job.wait_for_completion(timeout=10)
    flow.shutdown(wait=False)
    assert settled
    assert job.status == "failed"
    [record] = failures(job, "aborts")
    assert (record.data["error_type"], record.data["error"]) == ("_Abort", "abort")
    assert job.get_routine_state("aborts")["status"] == "failed"

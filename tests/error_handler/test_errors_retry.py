"""Retries: the backoff schedule, per-delivery and per-job counters, merge
buffers, and retry delays that wait on the engine's timer instead of a worker
(spec 40 §3-§5, README decision 6, DESIGN invariants 2 and 5).

Delays are asserted through the ``retry_delay`` the engine records on each
failed attempt, never by measuring wall time; the ordering tests use
threading.Event with timeouts, never sleeps.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest

from helpers import Step, failures, forward
from routilux import ErrorHandler, Flow

WAIT = 10.0  # generous upper bound for an Event wait; the tests normally take ms


def two_step_flow(action, execution_strategy="sequential", max_workers=1, merge="override"):
    """src (entry, forwards its params) -> work (runs ``action``)."""
    flow = Flow(execution_strategy=execution_strategy, max_workers=max_workers)
    flow.add_routine(Step(forward, "trigger"), "src")
    flow.add_routine(Step(action, merge_strategy=merge), "work")
    flow.connect("src", "out", "work", "in")
    return flow


# -- the backoff schedule ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_delay", "retry_backoff", "expected"),
    [
        (0.01, 2.0, [0.01, 0.02, 0.04]),
        (0.02, 1.5, [0.02, 0.03, 0.045]),
        (0.01, 1.0, [0.01, 0.01, 0.01]),
        (0.005, 3.0, [0.005, 0.015, 0.045]),
        (0.0, 2.0, [0.0, 0.0, 0.0]),
    ],
)
@pytest.mark.parametrize("position", ["entry", "downstream"])
def test_backoff_delays_are_recorded_per_attempt(retry_delay, retry_backoff, expected, position):
    """The n-th retry waits retry_delay * retry_backoff ** (n - 1)."""
    calls = Counter()

    def always(routine, data):
        calls["n"] += 1
        raise ConnectionError(f"attempt {calls['n']}")

    if position == "entry":
        flow = Flow()
        flow.add_routine(Step(always, "trigger"), "work")
        entry = "work"
    else:
        flow = two_step_flow(always)
        entry = "src"
    flow.set_error_handler(
        ErrorHandler("retry", max_retries=3, retry_delay=retry_delay, retry_backoff=retry_backoff)
    )
    job = flow.execute(entry, {"x": 1})

    records = failures(job, "work")
    assert [r.data["attempt"] for r in records] == [1, 2, 3, 4]
    assert [r.data["action"] for r in records] == ["retry", "retry", "retry", "stop"]
    assert [r.data["retry_delay"] for r in records[:3]] == pytest.approx(expected)
    assert "retry_delay" not in records[3].data
    assert [r.data["error"] for r in records] == [f"attempt {n}" for n in (1, 2, 3, 4)]
    assert calls["n"] == 4


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_exhausted_retries_stop_the_job(max_retries):
    calls = Counter()

    def always(routine, data):
        calls["n"] += 1
        raise ValueError("nope")

    flow = two_step_flow(always)
    flow.routines["work"].set_error_handler(
        ErrorHandler("retry", max_retries=max_retries, retry_delay=0.01, retry_backoff=1.0)
    )
    job = flow.execute("src", {"x": 1})
    assert calls["n"] == max_retries + 1
    assert job.status == "failed"
    last = failures(job, "work")[-1]
    assert (last.data["attempt"], last.data["action"]) == (max_retries + 1, "stop")
    state = job.get_routine_state("work")
    assert state["status"] == "failed"
    assert state["error"] == "nope"
    assert state.get("retry_count", 0) == max_retries


# -- what a retry re-delivers -----------------------------------------------------------


def test_retry_of_an_append_slot_does_not_append_twice():
    seen = []

    def flaky(routine, data):
        seen.append({k: list(v) for k, v in data.items()})
        if len(seen) == 1:
            raise ConnectionError("first delivery fails once")

    flow = Flow()

    def emit_two(routine, data):
        routine.emit("out", item="a")
        routine.emit("out", item="b")

    flow.add_routine(Step(emit_two, "trigger"), "src")
    flow.add_routine(Step(flaky, merge_strategy="append"), "work")
    flow.connect("src", "out", "work", "in")
    flow.routines["work"].set_error_handler(ErrorHandler("retry", retry_delay=0.01))
    job = flow.execute("src")

    assert job.status == "completed"
    # Delivery "a" fails; "b" is merged while "a" waits for its retry, and the
    # retry re-delivers the already merged data without merging "a" again.
    assert seen[0] == {"item": ["a"]}
    assert sorted(seen[-1]["item"]) == ["a", "b"]
    assert len(seen) == 3
    assert all(entry["item"].count("a") == 1 for entry in seen)


def test_retry_re_delivers_the_mapped_data():
    seen = []

    def flaky(routine, data):
        seen.append(dict(data))
        if len(seen) == 1:
            raise ConnectionError("once")

    flow = Flow()
    flow.add_routine(Step(forward, "trigger"), "src")
    flow.add_routine(Step(flaky), "work")
    flow.connect("src", "out", "work", "in", param_mapping={"value": "renamed"})
    flow.set_error_handler(ErrorHandler("retry", retry_delay=0.01))
    job = flow.execute("src", {"value": 5})
    assert job.status == "completed"
    assert seen == [{"renamed": 5}, {"renamed": 5}]


# -- retry counters: per delivery, per job -------------------------------------------------


def test_retry_counts_are_per_delivery():
    """Two deliveries to one routine each fail once; with max_retries=1 both recover."""
    attempts = Counter()

    def flaky(routine, data):
        attempts[data["n"]] += 1
        if attempts[data["n"]] == 1:
            raise ConnectionError(f"delivery {data['n']}")

    def emit_two(routine, data):
        routine.emit("out", n=1)
        routine.emit("out", n=2)

    flow = Flow()
    flow.add_routine(Step(emit_two, "trigger"), "src")
    flow.add_routine(Step(flaky), "work")
    flow.connect("src", "out", "work", "in")
    flow.set_error_handler(ErrorHandler("retry", max_retries=1, retry_delay=0.01))
    job = flow.execute("src")
    assert job.status == "completed"
    assert attempts == Counter({1: 2, 2: 2})
    assert [(r.data["error"], r.data["attempt"]) for r in failures(job, "work")] == [
        ("delivery 1", 1),
        ("delivery 2", 1),
    ]


@pytest.mark.parametrize("position", ["entry", "downstream"])
@pytest.mark.parametrize("level", ["flow", "routine"])
def test_each_execution_starts_its_retry_count_from_zero(position, level):
    calls = Counter()

    def always(routine, data):
        calls[data["run"]] += 1
        raise ConnectionError("down")

    if position == "entry":
        flow = Flow()
        flow.add_routine(Step(always, "trigger"), "work")
        entry = "work"
    else:
        flow = two_step_flow(always)
        entry = "src"
    handler = ErrorHandler("retry", max_retries=2, retry_delay=0.01, retry_backoff=1.0)
    if level == "flow":
        flow.set_error_handler(handler)
    else:
        flow.routines["work"].set_error_handler(handler)

    first = flow.execute(entry, {"run": 1})
    second = flow.execute(entry, {"run": 2})

    assert calls == Counter({1: 3, 2: 3})
    for job in (first, second):
        assert job.status == "failed"
        assert job.get_routine_state("work")["retry_count"] == 2
        assert [r.data["attempt"] for r in failures(job, "work")] == [1, 2, 3]
        assert [r.data["retry_delay"] for r in failures(job, "work")[:2]] == pytest.approx(
            [0.01, 0.01]
        )


def test_a_recovered_retry_does_not_carry_its_count_into_the_next_execution():
    calls = Counter()

    def first_call_of_each_run_fails(routine, data):
        calls[data["run"]] += 1
        if calls[data["run"]] == 1:
            raise ConnectionError("cold start")

    flow = two_step_flow(first_call_of_each_run_fails)
    flow.set_error_handler(ErrorHandler("retry", max_retries=1, retry_delay=0.01))
    jobs = [flow.execute("src", {"run": n}) for n in (1, 2, 3)]
    for job in jobs:
        assert job.status == "completed"
        assert job.get_routine_state("work")["retry_count"] == 1
        assert [r.data["attempt"] for r in failures(job, "work")] == [1]


def test_two_jobs_running_at_once_never_share_a_retry_counter():
    """Both jobs fail in the same window; each must get its own max_retries."""
    both_failed_once = threading.Barrier(2, timeout=WAIT)
    calls = Counter()
    lock = threading.Lock()

    def always(routine, data):
        with lock:
            calls[data["job"]] += 1
            n = calls[data["job"]]
        if n == 1:
            both_failed_once.wait()  # the two first attempts overlap
        raise ConnectionError(f"{data['job']} down")

    flow = two_step_flow(always, execution_strategy="concurrent", max_workers=2)
    flow.set_error_handler(ErrorHandler("retry", max_retries=2, retry_delay=0.01))
    jobs = [flow.execute("src", {"job": name}, wait=False) for name in ("A", "B")]
    for job in jobs:
        assert job.wait_for_completion(timeout=WAIT)
    assert calls == Counter({"A": 3, "B": 3})
    for job in jobs:
        assert job.status == "failed"
        assert [r.data["attempt"] for r in failures(job, "work")] == [1, 2, 3]
        assert job.get_routine_state("work")["retry_count"] == 2
    flow.shutdown()


# -- a waiting retry blocks nothing --------------------------------------------------------


@pytest.mark.parametrize("execution_strategy", ["sequential", "concurrent"])
def test_a_waiting_retry_does_not_block_other_tasks_or_jobs(execution_strategy):
    """Job A's ``work`` fails and waits 1 s for its retry.  Meanwhile A's other
    ready task runs, and job B runs to completion; then A's retry fires.

    Concurrent runs with max_workers=1: the retry must not hold the only worker.
    Sequential starts each job with wait=False, so each has its own draining thread.
    """
    calls = Counter()
    lock = threading.Lock()
    a_failed = threading.Event()
    a_other_ran = threading.Event()

    def work(routine, data):
        with lock:
            calls[data["job"]] += 1
            n = calls[data["job"]]
        if data["job"] == "A" and n == 1:
            a_failed.set()
            raise ConnectionError("A is not ready yet")
        routine.emit("out", **data)  # recorded, with its time, in the job's history

    def other(routine, data):
        routine.emit("out", **data)
        if data["job"] == "A":
            a_other_ran.set()

    flow = Flow(execution_strategy=execution_strategy, max_workers=1)
    flow.add_routine(Step(forward, "trigger"), "src")
    flow.add_routine(Step(work), "work")
    flow.add_routine(Step(other), "other")
    flow.connect("src", "out", "work", "in")  # queued first: fails first
    flow.connect("src", "out", "other", "in")  # queued behind the failing task
    flow.routines["work"].set_error_handler(ErrorHandler("retry", max_retries=1, retry_delay=1.0))

    job_a = flow.execute("src", {"job": "A"}, wait=False)
    assert a_failed.wait(WAIT)
    # A's other ready task runs while A's work waits for its retry.
    assert a_other_ran.wait(WAIT)
    with lock:
        assert calls["A"] == 1

    job_b = flow.execute("src", {"job": "B"}, wait=False)
    assert job_b.wait_for_completion(timeout=WAIT)
    assert job_b.status == "completed"
    with lock:
        assert calls["A"] == 1  # B finished before A's retry fired
        assert calls["B"] == 1
    assert job_a.status == "running"

    assert job_a.wait_for_completion(timeout=WAIT)
    assert job_a.status == "completed"
    assert calls == Counter({"A": 2, "B": 1})
    [record] = failures(job_a, "work")
    assert (record.data["attempt"], record.data["retry_delay"]) == (1, 1.0)
    assert failures(job_b, "work") == []
    assert job_b.get_routine_state("work") is None
    # The engine's own timestamps say the same: A's other task and all of job B
    # ran before A's retry was due.  (A worker sleeping through the delay would
    # have run them only afterwards, in the same order, so the counts alone
    # could not tell.)  The margin is the whole 1 s delay.
    due = record.timestamp + timedelta(seconds=record.data["retry_delay"])
    [a_other] = job_a.get_execution_history("other")
    assert a_other.timestamp < due
    assert job_b.get_execution_history("work")
    assert all(r.timestamp < due for r in job_b.get_execution_history())
    [a_retried] = job_a.get_execution_history("work")[1:]
    assert a_retried.event_name == "out"
    flow.shutdown()


def test_execute_returns_only_after_all_retries():
    """execute() waits for scheduled retries: the job is settled when it returns."""
    calls = Counter()

    def flaky(routine, data):
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError("not yet")

    flow = two_step_flow(flaky)
    flow.set_error_handler(ErrorHandler("retry", max_retries=5, retry_delay=0.02))
    job = flow.execute("src", {"x": 1})
    assert job.status == "completed"
    assert calls["n"] == 3
    assert job.wait_for_completion(timeout=0)  # already settled


# -- a retry timer that fires while the job stops or pauses ---------------------------------
#
# These tests widen a race window by instrumenting two engine methods (the
# timer callback and JobRun.stop/pause); they depend on those internal names.


def _hold_timer_callbacks(monkeypatch, release_after: str):
    """Make each retry timer's callback wait, once it has fired, until
    ``JobRun.<release_after>`` has returned.  Returns the "a timer fired" event."""
    from routilux.engine.run import JobRun

    fired, released = threading.Event(), threading.Event()
    original_fired = JobRun._timer_fired
    original_method = getattr(JobRun, release_after)

    def timer_fired(self, handle):
        fired.set()
        released.wait(WAIT)
        original_fired(self, handle)

    def method(self, *args, **kwargs):
        try:
            return original_method(self, *args, **kwargs)
        finally:
            released.set()

    monkeypatch.setattr(JobRun, "_timer_fired", timer_fired)
    monkeypatch.setattr(JobRun, release_after, method)
    return fired


def _retry_then_act(action):
    """src -> retrying (fails once, retry in 0.01 s), src -> actor (runs ``action``)."""
    calls = Counter()

    def retrying(routine, data):
        calls["retrying"] += 1
        if calls["retrying"] == 1:
            raise ConnectionError("once")

    flow = Flow()
    flow.add_routine(Step(forward, "trigger"), "src")
    flow.add_routine(Step(retrying), "retrying")
    flow.add_routine(Step(action), "actor")
    flow.connect("src", "out", "retrying", "in")
    flow.connect("src", "out", "actor", "in")
    flow.routines["retrying"].set_error_handler(ErrorHandler("retry", retry_delay=0.01))
    return flow, calls


def test_stop_while_a_retry_timer_is_firing_still_settles_the_job(monkeypatch):
    fired = _hold_timer_callbacks(monkeypatch, "stop")

    def fails_once_the_timer_fired(routine, data):
        assert fired.wait(WAIT)
        raise ValueError("fatal")

    flow, _ = _retry_then_act(fails_once_the_timer_fired)
    job = flow.execute("src", {"x": 1}, wait=False)
    settled = job.wait_for_completion(timeout=1.0)
    assert job.status == "failed"
    assert settled


def test_pause_while_a_retry_timer_is_firing_keeps_the_retry(monkeypatch):
    fired = _hold_timer_callbacks(monkeypatch, "pause")
    holder = {}

    def pauses_once_the_timer_fired(routine, data):
        assert fired.wait(WAIT)
        ctx = routine.get_execution_context()
        holder["flow"].pause(ctx.job_state, reason="hold on")

    flow, _ = _retry_then_act(pauses_once_the_timer_fired)
    holder["flow"] = flow
    job = flow.execute("src", {"x": 1}, wait=False)
    settled = job.wait_for_completion(timeout=1.0)
    assert job.status == "paused"
    assert settled
    assert [t["slot_routine_id"] for t in job.pending_tasks] == ["retrying"]

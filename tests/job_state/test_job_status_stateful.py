"""Stateful test of the job status machine (hypothesis, issue 9 item 3).

Random sequences of execute / pause / resume / cancel / save-and-load against the jobs
of one flow; pause, resume and cancel fire from several threads at once (a thread
pool, started together by a Barrier), racing each other and the job's own run.
Checked throughout:

* every delivery runs at most once, and a job that ends ``completed`` ran every
  delivery exactly once -- never ``completed`` with work missing;
* ``failed`` and ``cancelled`` never change again; ``completed`` only ever becomes
  ``paused`` (after completion) and back;
* on a settled job whose status is final, every operation raises JobStateError, and
  so does cancelling a completed job; no operation raises anything else;
* a copy saved while the job was running refuses pause and resume.

Deliveries are counted per (job, routine, item) in a dict outside the jobs, under a
lock; the job's key travels in its shared data, so it survives save and load.  The
flow: ``src`` emits every item, ``a`` forwards it to ``b``; ``a`` may pause the job
from its handler on one item, or fail it (STOP) on another.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from routilux import Flow, JobState, JobStateError, Routine, register_serializable

LONG = 30.0  # seconds; only reached when something is broken
FINAL = ("failed", "cancelled")
OPS = ("pause", "pause_nowait", "resume", "resume_nowait", "cancel")

COUNTS: Counter[tuple[str, str, int]] = Counter()
COUNTS_LOCK = threading.Lock()


def count(ctx: Any, item: int) -> dict[str, Any]:
    control: dict[str, Any] = ctx.job_state.get_shared_data("control")
    with COUNTS_LOCK:
        COUNTS[(control["token"], ctx.routine_id, item)] += 1
    return control


@register_serializable
class SmSource(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("out", ["item"])

    def start(self, items: Any = (), control: Any = None) -> None:
        ctx = self.context
        ctx.job_state.update_shared_data("control", dict(control))
        for item in items:
            count(ctx, item)
            self.emit("out", item=item)


@register_serializable
class SmForward(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_item)
        self.define_event("out", ["item"])

    def on_item(self, item: int) -> None:
        ctx = self.context
        control = count(ctx, item)
        if item == control.get("fail_at"):
            raise RuntimeError(f"failing on item {item}")
        if item == control.get("pause_at"):
            ctx.flow.pause(ctx.job_state, reason=f"item {item}")
        self.emit("out", item=item)


@register_serializable
class SmSink(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_item)

    def on_item(self, item: int) -> None:
        count(self.context, item)


class Job:
    """One job of the machine: its current JobState object (replaced by the loaded
    copy on save-and-load) and the final status it was last seen with."""

    def __init__(self, js: JobState, token: str, items: int) -> None:
        self.js = js
        self.token = token
        self.items = items
        self.final: str | None = None

    def counts(self) -> dict[tuple[str, int], int]:
        with COUNTS_LOCK:
            return {
                (rid, item): COUNTS[(self.token, rid, item)]
                for rid in ("src", "a", "b")
                for item in range(self.items)
            }


def json_copy(js: JobState, through_file: bool) -> JobState:
    if not through_file:
        return JobState().deserialize(json.loads(json.dumps(js.serialize())))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "job.json")
        js.save(path)
        return JobState.load(path)


class JobStatusMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="sm-ops")
        self.flow: Flow | None = None
        self.jobs: list[Job] = []

    # -- set-up ----------------------------------------------------------------

    @initialize(
        strategy=st.sampled_from(["sequential", "concurrent"]),
        workers=st.integers(1, 3),
        items=st.integers(1, 24),
        pause_at=st.none() | st.integers(0, 23),
    )
    def make_flow(self, strategy: str, workers: int, items: int, pause_at: int | None) -> None:
        flow = Flow(f"sm-{uuid.uuid4().hex[:8]}", execution_strategy=strategy, max_workers=workers)
        flow.add_routine(SmSource(), "src")
        flow.add_routine(SmForward(), "a")
        flow.add_routine(SmSink(), "b")
        flow.connect("src", "out", "a", "input")
        flow.connect("a", "out", "b", "input")
        self.flow = flow
        self.execute(items, pause_at, None, wait=False)  # a first job, racing what follows

    def pick(self, data: Any) -> Job:
        return self.jobs[data.draw(st.integers(0, len(self.jobs) - 1), label="job")]

    # -- rules -----------------------------------------------------------------

    @rule(
        items=st.integers(1, 24),
        pause_at=st.none() | st.integers(0, 23),
        fail_at=st.none() | st.integers(0, 30),
        wait=st.booleans(),
    )
    def execute(self, items: int, pause_at: int | None, fail_at: int | None, wait: bool) -> None:
        assert self.flow is not None
        token = uuid.uuid4().hex
        control = {"token": token, "pause_at": pause_at, "fail_at": fail_at}
        js = self.flow.execute("src", {"items": list(range(items)), "control": control}, wait=wait)
        self.jobs.append(Job(js, token, items))

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=3))
    def fire_together(self, data: Any, ops: list[str]) -> None:
        job = self.pick(data)
        js = job.js
        before = js.status if js.wait_for_completion(0) else None
        barrier = threading.Barrier(len(ops), timeout=LONG)
        futures = [self.pool.submit(self.operate, js, op, barrier) for op in ops]
        results = [future.result(timeout=LONG) for future in futures]
        for op, result in zip(ops, results):
            event(f"{op} on {before or 'active'}: {result}")
            assert result in ("ok", "refused"), f"{op}: {result}"
            if before in FINAL:
                assert result == "refused", f"{op} on a {before} job did not raise"
            if before == "completed" and op == "cancel":
                assert result == "refused", "cancel of a completed job did not raise"

    def operate(self, js: JobState, op: str, barrier: threading.Barrier) -> str:
        assert self.flow is not None
        barrier.wait()
        try:
            if op == "pause":
                self.flow.pause(js, reason="machine")
            elif op == "pause_nowait":
                self.flow.pause(js, reason="machine", wait_timeout=0)
            elif op == "resume":
                self.flow.resume(js)
            elif op == "resume_nowait":
                self.flow.resume(js, wait=False)
            else:
                self.flow.cancel(js, reason="machine")
        except JobStateError:
            return "refused"
        except Exception as exc:  # noqa: BLE001 - reported by the rule
            return repr(exc)
        return "ok"

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), through_file=st.booleans())
    def save_and_load(self, data: Any, through_file: bool) -> None:
        assert self.flow is not None
        job = self.pick(data)
        js = job.js
        with js.lock:  # the status and the snapshot agree
            if js.status == "running":
                copy = json_copy(js, through_file)
                running = True
            else:
                running = False
        event(f"saved while {'running' if running else 'settled'}")
        if running:
            # Saved mid-run: it carries no pending work, so it cannot go on.
            assert copy.status == "running"
            for call in (self.flow.resume, self.flow.pause):
                try:
                    call(copy)
                except JobStateError as exc:
                    assert "saved while it was running" in str(exc)
                else:
                    raise AssertionError(f"{call.__name__} of a copy saved while running")
            return  # the original goes on; the copy is dropped
        # A paused job may still be finishing its handlers: save once it settled.
        assert js.wait_for_completion(LONG)
        copy = json_copy(js, through_file)
        assert copy.status == js.status
        job.js = copy  # from now on the job lives in the copy only

    # -- invariants ------------------------------------------------------------

    @invariant()
    def statuses_and_counts_hold(self) -> None:
        for job in self.jobs:
            counts = job.counts()
            assert max(counts.values(), default=0) <= 1, "a delivery ran twice"
            js = job.js
            if not js.wait_for_completion(0):
                continue  # still running: look again later
            status = js.status
            if job.final in FINAL:
                assert status == job.final, f"{job.final} job became {status}"
            elif job.final == "completed":
                assert status == "completed" or js._paused_after_completion, status
            if status in FINAL or status == "completed":
                job.final = status
            if status == "completed":
                assert set(counts.values()) == {1}, f"completed with work missing: {counts}"
                assert js.pending_tasks == []

    def teardown(self) -> None:
        try:
            assert self.flow is not None or not self.jobs
            for job in self.jobs:
                assert self.flow is not None
                js = job.js
                assert js.wait_for_completion(LONG)
                for _ in range(4):  # a resumed job may pause itself once more
                    if js.status != "paused":
                        break
                    self.flow.resume(js)
                assert js.status in ("completed", *FINAL), js.status
                if job.final is not None:
                    assert js.status == job.final
                counts = job.counts()
                assert max(counts.values()) <= 1
                if js.status == "completed":
                    assert set(counts.values()) == {1}, f"completed with work missing: {counts}"
        finally:
            self.pool.shutdown(wait=True)
            if self.flow is not None:
                assert self.flow.wait_for_completion(LONG)
                self.flow.shutdown(wait=False)


JobStatusMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("SM_EXAMPLES", "200")),
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestJobStatusMachine = JobStatusMachine.TestCase

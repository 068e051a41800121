"""``flow.recover()`` and ``flow.resume(job_id)``: taking journaled jobs over.

The jobs to take over are left in the store by a child process that dies in the
middle of its job (``os._exit``: no clean-up, no atexit, like ``kill -9`` after the
last commit), so their owner is a dead PID on this host.  The child imports this
module and builds the same flow (``build``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import Collector, Numbers
from routilux import Flow, JobState, Routine
from routilux.engine.journal import Durable
from routilux.flow.recovery import RecoveryError
from routilux.store import Store, open_store

HERE = Path(__file__).resolve().parent
FLOW_ID = "recover-test"


class Adder(Routine):
    """``input(value)``: adds to shared ``total`` and emits ``out(value)``.  In the
    child (``DIE_AT`` set) the delivery of that value makes the journal durable and
    ends the process: every earlier delivery is in the store, this one is not."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.add)
        self.define_event("out", ["value"])

    def add(self, value: int = 0, **_: Any) -> None:
        js = self.context.job_state
        if str(value) == os.environ.get("DIE_AT"):
            Durable.of(js_store(js)).flush()
            print(f"DELIVERY {self.context.delivery_id}", flush=True)
            os._exit(17)
        if str(value) == os.environ.get("PAUSE_AT"):
            FLOWS[js.flow_id].pause(js, reason="for later")
        with js.lock:
            js.shared_data["total"] = js.shared_data.get("total", 0) + value
            js.shared_data[f"id{value}"] = self.context.delivery_id
        self.emit("out", value=value)


def js_store(js: JobState) -> Store:
    store = FLOWS[js.flow_id].store
    assert store is not None
    return store


FLOWS: dict[str, Flow] = {}


def build(url: str, strategy: str = "sequential", with_sink: bool = True) -> Flow:
    flow = Flow(flow_id=FLOW_ID, execution_strategy=strategy, store=url)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(Adder(), "adder")
    flow.connect("source", "output", "adder", "input")
    if with_sink:
        flow.add_routine(Collector(), "sink")
        flow.connect("adder", "out", "sink", "input")
    FLOWS[FLOW_ID] = flow
    return flow


def child_main(url: str, strategy: str, n: int) -> None:
    build(url, strategy).execute("source", entry_params={"n": n})


def crash(url: str, strategy: str = "sequential", n: int = 10, die_at: int = 4) -> str:
    """Run a job in a child process that dies at the delivery of ``die_at``; returns
    the id of the delivery it died in."""
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import test_recover; "
        "test_recover.child_main(sys.argv[3], sys.argv[4], int(sys.argv[5]))"
    )
    env = {**os.environ, "DIE_AT": str(die_at)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(HERE.parent), str(HERE), url, strategy, str(n)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 17, done.stderr
    return done.stdout.split("DELIVERY ", 1)[1].strip()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


sys.path.insert(0, str(HERE.parent))

from services import postgres_dsn, postgres_server  # noqa: E402,F401


@pytest.fixture(params=["sqlite", "postgres"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store: a SQLite file, or the PostgreSQL test database emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    dsn: str = request.getfixturevalue("postgres_dsn")
    with open_store(dsn) as first:
        del first
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE routilux_job, routilux_task, routilux_delta, routilux_runner, routilux_batch"
        )
    return dsn


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_recover_finishes_a_job_whose_process_died(any_url: str, strategy: str) -> None:
    url = any_url
    died_in = crash(url, strategy, n=10, die_at=4)
    store = open_store(url)
    (summary,) = store.list_jobs(flow_id=FLOW_ID)
    assert summary.status == "running"
    # The row of the delivery that was cut short, if its parent's record made it
    # durable (always, sequentially: the entry had finished).
    cut = [
        row
        for row in store.load(summary.job_id).tasks
        if row["routine"] == "adder" and row["data"] == {"value": 4}
    ]
    if strategy == "sequential":
        assert len(cut) == 1
    flow = build(url, strategy)
    recovered = flow.recover()
    assert recovered.errors == []
    (job,) = recovered
    assert job.job_id == summary.job_id
    assert job.status == "completed"
    # Every value added exactly once: nothing lost, nothing applied twice.
    assert job.shared_data["total"] == sum(range(10))
    assert sorted(item["value"] for item in job.shared_data["sink"]) == list(range(10))
    if cut:
        # The delivery that was cut short ran again under the same idempotency key.
        assert died_in == f"{job.job_id}:{cut[0]['seq']}" == job.shared_data["id4"]
    assert len({job.shared_data[f"id{v}"] for v in range(10)}) == 10
    after = store.load(job.job_id)
    assert (after.status, after.epoch, after.tasks) == ("completed", 2, [])
    rebuilt = store.load_job(job.job_id).serialize()
    live = job.serialize()
    for data in (rebuilt, live):
        data.pop("updated_at")
    assert rebuilt == live
    # Nothing left to recover.
    assert list(build(url, strategy).recover()) == []


def test_recover_wait_false_returns_running_jobs(url: str) -> None:
    crash(url, n=6, die_at=2)
    flow = build(url)
    jobs = flow.recover(wait=False)
    (job,) = jobs
    assert job.wait_for_completion(30)
    assert job.status == "completed"
    assert job.shared_data["total"] == sum(range(6))


def test_a_flow_that_lost_a_routine_skips_the_job_and_leaves_it(url: str) -> None:
    crash(url, n=6, die_at=2)
    flow = build(url, with_sink=False)  # the job's pending tasks need "sink"
    with pytest.warns(Warning, match="sink"):
        recovered = flow.recover()
    assert list(recovered) == []
    (error,) = recovered.errors
    assert isinstance(error, RecoveryError)
    store = open_store(url)
    (summary,) = store.list_jobs(flow_id=FLOW_ID)
    assert error.job_id == summary.job_id
    assert summary.job_id in str(error) and "routine 'sink'" in str(error)
    # Left in the store, unclaimed: the full flow recovers it.
    assert (summary.status, summary.owner) == ("running", None)
    (job,) = build(url).recover()
    assert job.status == "completed" and job.shared_data["total"] == sum(range(6))


def test_resume_by_id_takes_over_a_dead_owners_job(url: str) -> None:
    crash(url, n=5, die_at=1)
    (summary,) = open_store(url).list_jobs(flow_id=FLOW_ID)
    job = build(url).resume(summary.job_id)
    assert job.job_id == summary.job_id
    assert job.status == "completed"
    assert job.shared_data["total"] == sum(range(5))


def test_resume_by_id_without_a_store_is_refused() -> None:
    flow = Flow(flow_id="plain")
    with pytest.raises(Exception, match="no store"):
        flow.resume("some-id")


# -- timers, at-job-end, paused jobs ----------------------------------------------------


class Planner(Routine):
    """Entry: schedules ``late`` in ``LATE`` seconds, a timer it cancels at once, and
    ``final`` at the job's end; then emits ``output(value=i)`` for ``i < n``."""

    LATE = 0.6

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_slot("late", handler=self.late)
        self.define_slot("final", handler=self.final)
        self.define_event("output", ["value"])

    def start(self, n: int = 1, **_: Any) -> None:
        self.schedule(self.LATE, "late", tag="kept")
        handle = self.schedule(0.05, "late", tag="cancelled")
        assert handle is not None and handle.cancel()
        self.schedule_at_job_end("final")
        for i in range(n):
            self.emit("output", value=i)

    def late(self, tag: str = "", **_: Any) -> None:
        js = self.context.job_state
        if os.environ.get("DIE_LATE"):  # the child dies in the timer's delivery
            Durable.of(js_store(js)).flush()
            os._exit(17)
        with js.lock:
            js.shared_data.setdefault("late", []).append(tag)
            js.shared_data["late_at"] = time.time()

    def final(self, **_: Any) -> None:
        js = self.context.job_state
        with js.lock:
            js.shared_data["final"] = js.shared_data.get("final", 0) + 1
            js.shared_data["final_saw_late"] = list(js.shared_data.get("late", []))


def build_timed(url: str, strategy: str = "sequential") -> Flow:
    flow = Flow(flow_id=FLOW_ID, execution_strategy=strategy, store=url)
    flow.add_routine(Planner(), "source")
    flow.add_routine(Adder(), "adder")
    flow.connect("source", "output", "adder", "input")
    FLOWS[FLOW_ID] = flow
    return flow


def timed_child_main(url: str, strategy: str, n: int) -> None:
    build_timed(url, strategy).execute("source", entry_params={"n": n})


def paused_child_main(url: str, strategy: str, n: int) -> None:
    os.environ["PAUSE_AT"] = "2"  # the adder's third delivery pauses the job
    job = build(url, strategy).execute("source", entry_params={"n": n})
    assert job.status == "paused"
    os._exit(17)  # no clean exit: the runner row stays, its PID dies


def run_child(
    main: str,
    url: str,
    strategy: str = "sequential",
    n: int = 5,
    die_at: int = -1,
    die_late: bool = False,
) -> None:
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import test_recover; "
        f"test_recover.{main}(sys.argv[3], sys.argv[4], int(sys.argv[5]))"
    )
    env = {**os.environ, "DIE_AT": str(die_at)}
    if die_late:
        env["DIE_LATE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", code, str(HERE.parent), str(HERE), url, strategy, str(n)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 17, done.stderr


@pytest.mark.parametrize(
    "strategy, die_at, die_late",
    # Sequential: the child dies in the adder's 4th delivery, before the timer is due
    # (the entry has finished: its record with the timer's row is durable).  Both:
    # the child dies in the timer's own delivery (its row stays until it is consumed).
    [("sequential", 3, False), ("sequential", -1, True), ("concurrent", -1, True)],
)
def test_timers_and_at_job_end_survive_the_crash(
    url: str, strategy: str, die_at: int, die_late: bool
) -> None:
    run_child("timed_child_main", url, strategy, n=6, die_at=die_at, die_late=die_late)
    store = open_store(url)
    (summary,) = store.list_jobs(flow_id=FLOW_ID)
    rows = store.load(summary.job_id).tasks
    (timer,) = [row for row in rows if row["kind"] == "timer"]
    assert (timer["routine"], timer["slot"], timer["data"]) == ("source", "late", {"tag": "kept"})
    assert [row["slot"] for row in rows if row["kind"] == "at_end"] == ["final"]
    (job,) = build_timed(url, strategy).recover()
    assert job.status == "completed"
    assert job.shared_data["total"] == sum(range(6))
    # The kept timer fired once, not before its wall-clock due time; the cancelled one
    # never; the at-job-end delivery ran once, after the timer.
    assert job.shared_data["late"] == ["kept"]
    assert job.shared_data["late_at"] >= timer["due_at"] - 0.05
    assert job.shared_data["final"] == 1
    assert job.shared_data["final_saw_late"] == ["kept"]
    assert store.load(job.job_id).tasks == []


class Reminder(Routine):
    """Entry: sets the named timer ``reminder`` (due in ``LONG`` seconds) and a short
    unnamed one to ``stop``, whose delivery cancels the reminder by name; then emits
    ``output(value=i)`` for ``i < n``."""

    LONG = 5.0

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_slot("remind", handler=self.remind)
        self.define_slot("stop", handler=self.stop)
        self.define_event("output", ["value"])

    def start(self, n: int = 1, **_: Any) -> None:
        assert self.set_timer("reminder", self.LONG, "remind")
        self.schedule(0.3, "stop")
        for i in range(n):
            self.emit("output", value=i)

    def remind(self, **_: Any) -> None:
        js = self.context.job_state
        with js.lock:
            js.shared_data["reminded"] = True

    def stop(self, **_: Any) -> None:
        js = self.context.job_state
        if os.environ.get("DIE_LATE"):  # the child dies in this delivery
            Durable.of(js_store(js)).flush()
            os._exit(17)
        cancelled = self.cancel_timer("reminder")
        with js.lock:
            js.shared_data["cancelled"] = cancelled


def build_reminder(url: str, strategy: str = "sequential") -> Flow:
    flow = Flow(flow_id=FLOW_ID, execution_strategy=strategy, store=url)
    flow.add_routine(Reminder(), "source")
    flow.add_routine(Adder(), "adder")
    flow.connect("source", "output", "adder", "input")
    FLOWS[FLOW_ID] = flow
    return flow


def reminder_child_main(url: str, strategy: str, n: int) -> None:
    build_reminder(url, strategy).execute("source", entry_params={"n": n})


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_a_named_timer_keeps_its_name_across_a_crash(url: str, strategy: str) -> None:
    # The child dies in the short timer's delivery, before it cancels the reminder:
    # the entry's record (both timers' rows) is durable.
    run_child("reminder_child_main", url, strategy, n=6, die_late=True)
    store = open_store(url)
    (summary,) = store.list_jobs(flow_id=FLOW_ID)
    timers = [row for row in store.load(summary.job_id).tasks if row["kind"] == "timer"]
    assert sorted(row["slot"] for row in timers) == ["remind", "stop"]
    (job,) = build_reminder(url, strategy).recover()
    assert job.status == "completed"
    # The recovered timer is still named: cancelling it by name works, so it never
    # fires (the job ends with the short timer, not LONG seconds later).
    assert job.shared_data["cancelled"] is True
    assert "reminded" not in job.shared_data
    assert job.shared_data["total"] == sum(range(6))
    assert store.load(job.job_id).tasks == []


def test_a_paused_job_stays_paused_across_a_crash(url: str) -> None:
    run_child("paused_child_main", url, n=5)
    store = open_store(url)
    (summary,) = store.list_jobs(flow_id=FLOW_ID)
    assert summary.status == "paused"
    flow = build(url)
    assert list(flow.recover()) == []  # recover() leaves paused jobs alone
    assert store.load(summary.job_id).status == "paused"
    job = flow.resume(summary.job_id)  # resume(job_id) takes it
    assert job.status == "completed"
    assert job.shared_data.get("total", 0) == sum(range(5))
    assert store.load(summary.job_id).status == "completed"


# -- two processes recovering at once -----------------------------------------------------


def recover_main(url: str, barrier: Any, results: Any) -> None:
    flow = build(url)
    barrier.wait()
    jobs = flow.recover()
    results.put(sorted(job.job_id for job in jobs if job.status == "completed"))


def test_two_processes_recovering_at_once_take_each_job_exactly_once(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiprocessing

    # The spawned processes import this module by its name under the project root.
    monkeypatch.syspath_prepend(str(HERE.parents[1]))

    for _ in range(4):
        crash(url, n=30, die_at=1)
    store = open_store(url)
    job_ids = sorted(s.job_id for s in store.list_jobs(flow_id=FLOW_ID))
    assert len(job_ids) == 4
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [ctx.Process(target=recover_main, args=(url, barrier, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert sorted(got[0] + got[1]) == job_ids  # every job, each by exactly one process
    assert not set(got[0]) & set(got[1])
    for job_id in job_ids:
        job = store.load_job(job_id)
        assert job.status == "completed"
        assert job.shared_data["total"] == sum(range(30))


# -- the journaling examples of docs/durability.md -------------------------------------


def test_the_journaling_examples_of_the_docs_run(tmp_path: Path) -> None:
    import re
    import textwrap

    page = (HERE.parents[1] / "docs" / "durability.md").read_text()
    part = page[page.index("## Journaling a job") :]
    part = part[: part.index("\n## ", 1)]  # that section only
    first, charge, _ = (
        textwrap.dedent(b) for b in re.findall(r"^ *```python\n(.*?)^ *```$", part, re.S | re.M)
    )
    done = subprocess.run(
        [sys.executable, "-c", first], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["completed 4950", "completed"]
    compile(charge, "durability.md: Charge", "exec")  # the second example is valid code

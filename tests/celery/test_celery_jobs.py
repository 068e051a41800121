"""Jobs on Celery workers: real worker processes, a private Redis, a SQLite store.

Each test starts its own workers (``conftest.Cluster``); the gate routine of the
``gated`` flow blocks until the test lets it go, so a test knows exactly where a job
is when it kills a worker, sends a duplicate or asks for a pause or a cancel.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import PATIENCE, Cluster
from routilux import Flow, InvalidInputError, JobStateError, Routine
from routilux.celery import _next_message
from routilux.store import open_store

HERE = Path(__file__).resolve().parent


def kept(job) -> list[int]:
    """What the keep routine logged, in order."""
    return [entry["kept"] for entry in job.shared_log]


def emitted(job, routine_id: str) -> int:
    """How many events ``routine_id`` emitted in the job's history."""
    return sum(1 for record in job.execution_history if record.routine_id == routine_id)


def test_jobs_across_two_worker_processes(shared: Cluster) -> None:
    cluster = shared
    ids = {cluster.rc.submit("chain", "start", {"n": n}): n for n in range(200)}
    pids = set()
    for job_id, n in ids.items():
        job = cluster.rc.wait(job_id, timeout=PATIENCE)
        assert job.status == "completed", (job_id, job.status)
        assert job.job_id == job_id
        assert job.shared_data["result"] == 2 * n
        assert kept(job) == [2 * n]
        assert [emitted(job, r) for r in ("start", "double")] == [1, 1]
        pids.add(job.shared_data["pid"])
    assert pids == {worker.pid for worker in cluster.workers}, "both workers ran jobs"


def test_a_killed_worker_s_job_is_finished_by_another_exactly_once(cluster: Cluster) -> None:
    cluster.start_workers(2)
    job_id = cluster.rc.submit("gated", "start", {"n": 21})
    first = cluster.started(job_id)
    cluster.worker_of(first).kill()  # mid-delivery: the gate has started, not finished
    second = cluster.started(job_id)  # the other worker's sweeper re-sent it
    assert second != first
    cluster.let_go(job_id)
    job = cluster.rc.wait(job_id, timeout=PATIENCE)
    assert job.status == "completed"
    assert job.shared_data["result"] == 42
    assert job.shared_data["pid"] == second
    # On the JobState every delivery counts once; outside it, the gate ran twice.
    assert job.shared_data["gate_passes"] == 1
    assert kept(job) == [42]
    assert [emitted(job, r) for r in ("start", "count", "gate", "double")] == [1, 1, 1, 1]
    assert cluster.attempts(job_id) == 2
    # Without a journal the job ran again from its start: so did the routines before
    # the gate (a flow with a store of its own resumes from its last delivery instead).
    assert cluster.count(job_id) == 2


def test_a_journaled_job_resumes_from_its_last_delivery_on_another_worker(
    cluster: Cluster,
) -> None:
    cluster.start_workers(2)
    job_id = cluster.rc.submit("journaled", "start", {"n": 21})
    first = cluster.started(job_id)
    cluster.worker_of(first).kill()
    second = cluster.started(job_id)
    assert second != first
    cluster.let_go(job_id)
    job = cluster.rc.wait(job_id, timeout=PATIENCE)
    assert job.status == "completed"
    assert (job.shared_data["result"], job.shared_data["pid"]) == (42, second)
    assert job.shared_data["gate_passes"] == 1
    assert kept(job) == [42]
    assert [emitted(job, r) for r in ("start", "count", "gate", "double")] == [1, 1, 1, 1]
    # The deliveries committed before the kill did not run again; the gate did.
    assert (cluster.count(job_id), cluster.attempts(job_id)) == (1, 2)


SUBMITTER = """
import os, signal, sys
import routilux_test_app
rc = routilux_test_app.make(sys.argv[1], sys.argv[2])
if sys.argv[3] == "before-send":
    # Die after the job's row is written, before its message is sent.
    rc._send = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
job_id = rc.submit("chain", "start", {"n": 5}, job_id="killed-submitter-" + sys.argv[3])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_job_survives_its_submitter_killed(cluster: Cluster) -> None:
    cluster.start_workers(1, ROUTILUX_TEST_ORPHAN_AFTER="1")
    for when in ("after-submit", "before-send"):
        result = subprocess.run(
            [sys.executable, "-c", SUBMITTER, cluster.broker, cluster.store_url, when],
            env=cluster.env,
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
        assert result.returncode == -signal.SIGKILL, result.stderr
    for when in ("after-submit", "before-send"):
        job = cluster.rc.wait(f"killed-submitter-{when}", timeout=PATIENCE)
        assert job.status == "completed", when
        assert job.shared_data["result"] == 10
        assert kept(job) == [10]


@pytest.mark.parametrize("flow_id", ["gated", "journaled"])
def test_a_duplicated_message_does_no_work(shared: Cluster, flow_id: str) -> None:
    cluster = shared
    job_id = cluster.rc.submit(flow_id, "start", {"n": 1})
    runner = cluster.worker_of(cluster.started(job_id))
    other = next(worker for worker in cluster.workers if worker is not runner)
    duplicate = cluster.rc.task.apply_async(args=(flow_id, job_id, "start", {"n": 1}))
    # The other worker takes the copy while the first still runs the job: a no-op.
    other.wait_for_line(rf"run_job\[{duplicate.id}\] succeeded .*: None")
    cluster.let_go(job_id)
    job = cluster.rc.wait(job_id, timeout=PATIENCE)
    assert job.status == "completed"
    assert job.shared_data["gate_passes"] == 1
    assert kept(job) == [2]
    assert cluster.attempts(job_id) == 1
    # And a copy that arrives after the end finds a finished job.
    late = cluster.rc.task.apply_async(args=(flow_id, job_id, "start", {"n": 1}))
    other.wait_for_line(rf"run_job\[{late.id}\] succeeded .*: None")
    assert cluster.attempts(job_id) == 1


@pytest.mark.parametrize("flow_id", ["gated", "journaled"])
def test_pause_and_resume_across_processes(shared: Cluster, flow_id: str) -> None:
    cluster = shared
    job_id = cluster.rc.submit(flow_id, "start", {"n": 4})
    cluster.started(job_id)
    with cluster.rc._subscribed(job_id) as notifications:
        paused: list[object] = []
        pausing = threading.Thread(target=lambda: paused.append(cluster.rc.pause(job_id)))
        pausing.start()
        # The worker's JobState says paused (its status hook announces it) while the
        # gate still blocks; only then is the gate let go.
        while True:
            message = _next_message(notifications, PATIENCE)
            assert message is not None, "no notification of the pause"
            if b'"paused"' in message["data"]:
                break
    cluster.let_go(job_id)
    pausing.join(PATIENCE)
    job = paused[0]
    assert job.status == "paused"
    assert job.shared_data["gate_passes"] == 1
    assert "result" not in job.shared_data
    if flow_id == "journaled":  # the journal keeps pending work as the job's task rows
        assert [row["routine"] for row in cluster.rc.store.load(job_id).tasks] == ["double"]
    else:
        assert [task["slot_routine_id"] for task in job.pending_tasks] == ["double"]
    assert cluster.rc.store.load(job_id).owner is None, "a paused job holds no worker"

    cluster.rc.resume(job_id)
    job = cluster.rc.wait(job_id, timeout=PATIENCE)
    assert job.status == "completed"
    assert job.shared_data["result"] == 8
    assert job.shared_data["gate_passes"] == 1
    assert cluster.attempts(job_id) == 1
    with pytest.raises(JobStateError, match="completed"):
        cluster.rc.resume(job_id)


def test_queued_jobs_paused_and_cancelled_before_they_start(cluster: Cluster) -> None:
    paused = cluster.rc.submit("chain", "start", {"n": 3})  # no worker yet
    cancelled = cluster.rc.submit("chain", "start", {"n": 4})
    assert cluster.rc.pause(paused).status == "paused"
    assert cluster.rc.cancel(cancelled).status == "cancelled"
    (worker,) = cluster.start_workers(1)
    # The queued messages reach the worker, which leaves both jobs alone.
    worker.wait_for_line(r"run_job\[.*\] succeeded .*: None", count=2)
    assert cluster.rc.status(paused) == "paused"
    job = cluster.rc.wait(cancelled, timeout=PATIENCE)
    assert job.status == "cancelled"
    assert "result" not in job.shared_data
    cluster.rc.resume(paused)
    assert cluster.rc.wait(paused, timeout=PATIENCE).shared_data["result"] == 6


@pytest.mark.parametrize("flow_id", ["gated", "journaled"])
def test_cancel_reaches_the_running_worker_at_once(shared: Cluster, flow_id: str) -> None:
    cluster = shared
    job_id = cluster.rc.submit(flow_id, "start", {"n": 4})
    worker = cluster.worker_of(cluster.started(job_id))
    written = len([line for line in worker.lines if ": 'cancelled'" in line])
    began = time.monotonic()
    job = cluster.rc.cancel(job_id, reason="no longer needed")
    took = time.monotonic() - began
    # The gate blocks for 30 s unless let go: the cancel got through while it ran.
    assert job.status == "cancelled"
    assert took < 10, took
    cluster.let_go(job_id)
    worker.wait_for_line(r"succeeded .*: 'cancelled'", count=written + 1)  # written back
    job = cluster.rc.wait(job_id, timeout=PATIENCE)
    assert job.status == "cancelled"
    assert "result" not in job.shared_data  # what the gate emitted was dropped
    with pytest.raises(JobStateError, match="cancelled"):
        cluster.rc.cancel(job_id)


@pytest.mark.parametrize("flow_id", ["gated", "journaled"])
def test_a_control_request_in_the_store_reaches_the_worker(shared: Cluster, flow_id: str) -> None:
    """What the web UI does for a job another process runs: a row in the store, taken
    by the worker's heartbeat (no Celery client, no broker message)."""

    cluster = shared
    job_id = cluster.rc.submit(flow_id, "start", {"n": 4})
    cluster.started(job_id)
    with open_store(cluster.store_url) as store:
        store.request_control(job_id, "cancel", "from the web UI")
    job = cluster.rc.wait(job_id, timeout=PATIENCE)
    assert job.status == "cancelled"
    cluster.let_go(job_id)
    assert "result" not in cluster.rc.wait(job_id, timeout=PATIENCE).shared_data


@pytest.mark.parametrize("flow_id", ["review", "review-journaled"])
def test_send_input_across_processes(shared: Cluster, flow_id: str) -> None:
    cluster = shared
    job_id = cluster.rc.submit(flow_id, "reviewer", {"n": 7})
    job = cluster.rc.wait(job_id, timeout=PATIENCE)
    assert job.status == "waiting"
    assert [r["slot"] for r in job.waiting_for] == ["decision"]
    assert cluster.rc.store.load(job_id).owner is None, "a waiting job holds no worker"
    with pytest.raises(InvalidInputError, match="'approved'"):
        cluster.rc.send_input(job_id, "reviewer", "decision", {"approved": "yes"})
    with pytest.raises(InvalidInputError, match="no request"):
        cluster.rc.send_input(job_id, "keep", "input", {"n": 1})
    assert cluster.rc.status(job_id) == "waiting"
    cluster.rc.send_input(job_id, "reviewer", "decision", {"approved": True})
    job = cluster.rc.wait(job_id, timeout=PATIENCE)
    assert job.status == "completed"
    assert job.shared_data["result"] == 7
    assert job.waiting_for == []
    assert cluster.rc.store.load(job_id).tasks == [], "the input was consumed"
    with pytest.raises(JobStateError, match="completed"):
        cluster.rc.send_input(job_id, "reviewer", "decision", {"approved": True})


def test_input_to_a_job_its_worker_parked_reaches_the_same_worker(cluster: Cluster) -> None:
    """One worker: it runs the job to 'waiting' and keeps that JobState, then takes
    the message send_input queued. The job must continue from the store (which holds
    the input), not from the JobState the worker kept."""
    (worker,) = cluster.start_workers(1)
    job_id = cluster.rc.submit("review-journaled", "reviewer", {"n": 7})
    assert cluster.rc.wait(job_id, timeout=PATIENCE).status == "waiting"
    cluster.rc.send_input(job_id, "reviewer", "decision", {"approved": True})
    # The second run's end (a stale JobState would end 'waiting' again, input unread).
    worker.wait_for_line(r"run_job\[.*\] succeeded .*: '(waiting|completed)'", count=2)
    job = cluster.rc.wait(job_id, timeout=PATIENCE)
    assert job.status == "completed"
    assert job.shared_data["result"] == 7
    assert cluster.rc.store.load(job_id).tasks == [], "the input was consumed"


def test_input_sent_while_the_worker_holds_a_journaled_job_is_delivered(
    cluster: Cluster,
) -> None:
    """send_input finds the job held by its worker (the gate blocks after the request
    was asked and committed), stores the input and leaves the resend to that worker:
    the run settles 'waiting' with the input unread, and the worker must queue it."""
    cluster.start_workers(1)
    job_id = cluster.rc.submit("review-gated", "reviewer", {"n": 7})
    cluster.started(job_id)  # the gate blocks: the worker holds the job
    cluster.rc.send_input(job_id, "reviewer", "decision", {"approved": True})
    held = cluster.rc.store.load(job_id)
    assert held.owner is not None, "send_input could not queue it: the worker holds it"
    assert [task["kind"] for task in held.tasks if task["kind"] == "input"] == ["input"]
    cluster.let_go(job_id)
    # wait() passes over the run's 'waiting' (its input is stored: it is queued again).
    job = cluster.rc.wait(job_id, timeout=PATIENCE)
    assert job.status == "completed"
    assert job.shared_data["result"] == 7
    assert job.shared_data["gate_passes"] == 1
    assert cluster.rc.store.load(job_id).tasks == [], "the input was consumed"


class AskOnce(Routine):
    """``trigger`` asks for ``decision`` (``approved: bool``); the job then waits."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_slot("decision", handler=self.decide)

    def start(self, **_: Any) -> None:
        self.request_input("decision", schema={"approved": bool})

    def decide(self, approved: bool) -> None:
        self.context.job_state.update_shared_data("approved", approved)


def test_wait_passes_over_a_waiting_job_whose_input_is_stored(tmp_path: Path) -> None:
    """A released waiting job is what wait() returns for, unless its input is stored
    already: then its worker (or the send_input that stored it) queues it again at
    once, and returning the waiting job would tell the caller its input is unread."""
    from routilux.celery import _settled
    from routilux.inputs import input_row

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    flow = Flow("ask", store=url)
    flow.add_routine(AskOnce(), "ask")
    store = open_store(url)
    try:
        job = flow.execute("ask")
        stored = store.load(job.job_id)
        assert (stored.status, stored.owner) == ("waiting", None)
        assert _settled(stored)
        store.add_input(job.job_id, input_row(stored, "ask", "decision", {"approved": True}))
        assert not _settled(store.load(job.job_id))
    finally:
        store.close()
        flow.shutdown()


def test_trace_context_rides_in_the_message_headers(shared: Cluster) -> None:
    import routilux_test_app

    cluster = shared
    token = routilux_test_app.TRACE.set("trace-4bf92f35")
    try:
        job_id = cluster.rc.submit("chain", "start", {"n": 1})
    finally:
        routilux_test_app.TRACE.reset(token)
    job = cluster.rc.wait(job_id, timeout=PATIENCE)
    assert job.shared_data["trace"] == "trace-4bf92f35"


def test_wait_returns_at_its_timeout_with_the_stored_job(cluster: Cluster) -> None:
    job_id = cluster.rc.submit("chain", "start", {"n": 1})  # no worker runs it
    job = cluster.rc.wait(job_id, timeout=0.2)
    assert job.status == "pending"
    assert job.job_id == job_id
    assert "result" not in job.shared_data
    assert os.path.exists(cluster.store_url[len("sqlite:///") :])


def test_bad_input_names_what_is_at_fault(cluster: Cluster) -> None:
    from celery import Celery

    from routilux import ConfigError, FlowError, InvalidArgumentError
    from routilux.celery import RoutiluxCelery

    rc = cluster.rc
    with pytest.raises(FlowError, match="'nope' is not registered.*chain"):
        rc.submit("nope", "start")
    with pytest.raises(FlowError, match="flow 'chain' has no entry routine 'keep'"):
        rc.submit("chain", "keep")
    with pytest.raises(InvalidArgumentError, match="entry_params for flow 'chain' must be a dict"):
        rc.submit("chain", "start", [1])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="not JSON-safe"):
        rc.submit("chain", "start", {"n": object()})
    assert rc.store.list_jobs() == [], "nothing is stored for a refused submit"
    job_id = rc.submit("chain", "start", {"n": 1})
    with pytest.raises(JobStateError, match=f"resume: job {job_id} of flow 'chain' is pending"):
        rc.resume(job_id)
    with pytest.raises(InvalidInputError, match="no request for it is open"):
        rc.send_input(job_id, "keep", "input", {"n": 1})
    with pytest.raises(FlowError, match="flow_id 'chain' is registered"):
        rc.register(routilux_test_app_flows()["chain"])
    with pytest.raises(ConfigError, match="not Redis"):
        RoutiluxCelery(Celery("x", broker="amqp://127.0.0.1//"), store=cluster.store_url)
    with pytest.raises(InvalidArgumentError, match="heartbeat_interval .* shorter"):
        RoutiluxCelery(
            Celery("x", broker=cluster.broker),
            store=cluster.store_url,
            stale_after=1,
            heartbeat_interval=1,
        )
    with pytest.raises(InvalidArgumentError, match="app must be a celery.Celery"):
        RoutiluxCelery("app", store=cluster.store_url)


def routilux_test_app_flows() -> dict[str, object]:
    import routilux_test_app

    return {"chain": routilux_test_app.build_chain()}


def test_jobs_with_a_postgres_store(cluster: Cluster, postgres_url: str) -> None:
    """Workers on several hosts share a PostgreSQL store: the same jobs on it."""
    cluster.use_store(postgres_url)
    cluster.start_workers(2)
    ids = {cluster.rc.submit("chain", "start", {"n": n}): n for n in range(20)}
    for job_id, n in ids.items():
        job = cluster.rc.wait(job_id, timeout=PATIENCE)
        assert (job.status, job.shared_data["result"]) == ("completed", 2 * n)
    job_id = cluster.rc.submit("gated", "start", {"n": 2})
    cluster.worker_of(cluster.started(job_id)).kill()
    cluster.started(job_id)
    cluster.let_go(job_id)
    job = cluster.rc.wait(job_id, timeout=PATIENCE)
    assert (job.status, job.shared_data["gate_passes"], kept(job)) == ("completed", 1, [4])


def test_a_message_for_a_row_held_elsewhere_is_delivered_again(
    cluster: Cluster, postgres_url: str
) -> None:
    """PostgreSQL claims skip a row another transaction holds (any reader, for an
    instant): the message must come back later, not be dropped."""
    import psycopg

    cluster.use_store(postgres_url)
    job_id = cluster.rc.submit("chain", "start", {"n": 8})  # no worker yet
    with psycopg.connect(postgres_url) as reader:
        reader.execute("SELECT 1 FROM routilux_job WHERE job_id = %s FOR SHARE", (job_id,))
        (worker,) = cluster.start_workers(1)
        worker.wait_for_line(r"run_job\[.*\] retry: Retry in")
        assert cluster.rc.status(job_id) == "pending"
    # The reader's transaction is over: the message delivered again runs the job.
    job = cluster.rc.wait(job_id, timeout=PATIENCE)
    assert (job.status, job.shared_data["result"]) == ("completed", 16)


@pytest.mark.parametrize(
    ("status", "owner", "settled"),
    [
        ("completed", "runner-1", True),
        ("failed", None, True),
        ("waiting", None, True),
        ("paused", None, True),
        # A worker commits the status, then releases the job: between the two, the
        # job is not settled yet for wait() (its caller may act on it at once).
        ("waiting", "runner-1", False),
        ("paused", "runner-1", False),
        ("running", None, False),
    ],
)
def test_wait_returns_only_for_a_job_its_worker_has_let_go(
    status: str, owner: str | None, settled: bool
) -> None:
    from routilux.celery import _settled
    from routilux.store import JournaledJob

    job = JournaledJob("j", "f", status, owner, 1, 0.0, 0.0, None, {}, 0, 0)
    assert _settled(job) is settled

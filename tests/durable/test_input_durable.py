"""Durable human input: a journaled job waiting for input survives its process (also
``kill -9``), takes ``send_input`` from any process, and never re-runs a delivery
that completed before the wait (handler calls are counted in a file across processes)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from routilux import Flow, InvalidInputError, JobStateError, Routine, register_serializable
from routilux.store import open_store

MODULE = textwrap.dedent(
    """
    import os, signal
    from pathlib import Path
    from routilux import Flow, Routine

    class Review(Routine):
        '''Counts each handler call in a file; asks for a decision after two steps.'''

        def __init__(self, log):
            super().__init__()
            self.log = Path(log)
            self.define_slot("trigger", handler=self.start)
            self.define_slot("step", handler=self.step)
            self.define_slot("decision", handler=self.decide)
            self.define_event("next", ["n"])

        def _count(self, what):
            with self.log.open("a") as f:
                f.write(what + "\\n")

        def start(self, **kwargs):
            self._count("start")
            self.emit("next", n=1)

        def step(self, n):
            self._count(f"step {n}")
            js = self.context.job_state
            with js.lock:
                js.update_shared_data("steps", js.get_shared_data("steps", 0) + 1)
            if n < 2:
                self.emit("next", n=n + 1)
            else:
                self.request_input(
                    "decision", prompt="Publish?", schema={"approved": bool, "note": (str, "")}
                )

        def decide(self, approved, note):
            marker = self.log.with_suffix(".crashed")
            if note == "crash" and not marker.exists():  # dies inside the input's delivery
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
            self._count(f"decide {approved} {note}")
            self.context.job_state.update_shared_data("decision", [approved, note])

    def build(log, store, strategy="sequential", durability="batch"):
        flow = Flow("review", execution_strategy=strategy, store=store, durability=durability)
        flow.add_routine(Review(log), "review")
        flow.connect("review", "next", "review", "step")
        return flow
    """
)

RUN = textwrap.dedent(
    """
    import json, os, signal, sys
    sys.path.insert(0, sys.argv[1])
    from review_flow import build

    log, store, strategy, action = sys.argv[2:6]
    flow = build(log, store, strategy)
    if action == "start":
        job = flow.execute("review")
        print(json.dumps([job.job_id, job.status]), flush=True)
        if sys.argv[6] == "crash":
            os.kill(os.getpid(), signal.SIGKILL)  # no clean exit: the runner stays registered
    elif action == "answer":
        job = flow.send_input(sys.argv[6], "review", "decision", json.loads(sys.argv[7]))
        print(json.dumps([job.job_id, job.status, job.shared_data, job.waiting_for]))
    elif action == "answer-and-crash":
        # Every record is committed before the next step: whatever the resume wrote
        # before the input's delivery is in the store when the process dies.
        flow = build(log, store, strategy, "sync")
        job = flow.execute("review")
        print(json.dumps([job.job_id, job.status]), flush=True)
        flow.send_input(job.job_id, "review", "decision", {"approved": True, "note": "crash"})
    elif action == "recover-then-resume":
        recovered = flow.recover()
        job = flow.resume(sys.argv[6])
        print(json.dumps([len(recovered), job.status, job.shared_data, job.waiting_for]))
    elif action == "recover-then-answer":
        recovered = flow.recover()
        job = flow.resume(sys.argv[6])
        before = [job.status, len(job.waiting_for)]
        job = flow.send_input(sys.argv[6], "review", "decision", {"approved": False})
        print(json.dumps([len(recovered), before, job.status, job.shared_data]))
    flow.shutdown()
    """
)

STRATEGIES = ("sequential", "concurrent")


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "review_flow.py").write_text(MODULE)
    return {
        "dir": tmp_path,
        "log": tmp_path / "calls.log",
        "store": f"sqlite:///{tmp_path / 'jobs.db'}",
    }


def child(world: dict[str, Any], strategy: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUN, str(world["dir"]), str(world["log"]), world["store"]]
        + [strategy, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def calls(world: dict[str, Any]) -> list[str]:
    return world["log"].read_text().splitlines()


def build_here(world: dict[str, Any], strategy: str) -> Any:
    sys.path.insert(0, str(world["dir"]))
    try:
        import review_flow  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(world["dir"]))
        sys.modules.pop("review_flow", None)
    return review_flow.build(str(world["log"]), world["store"], strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_waiting_is_journaled_and_answered_in_this_process(
    world: dict[str, Any], strategy: str
) -> None:
    flow = build_here(world, strategy)
    job = flow.execute("review")
    assert job.status == "waiting"
    store = open_store(world["store"])
    try:
        (summary,) = store.list_jobs(flow_id="review")
        assert summary.status == "waiting" and summary.owner is None  # no lease held
        assert summary.waiting_for == job.waiting_for
        assert store.load_job(job.job_id).waiting_for == job.waiting_for

        flow.send_input(job.job_id, "review", "decision", {"approved": True, "note": "go"})
        assert job.status == "completed" and job.shared_data["decision"] == [True, "go"]
        (summary,) = store.list_jobs(flow_id="review")
        assert summary.status == "completed" and summary.waiting_for is None
    finally:
        store.close()
        flow.shutdown()
    assert calls(world) == ["start", "step 1", "step 2", "decide True go"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_input_from_another_process(world: dict[str, Any], strategy: str) -> None:
    flow = build_here(world, strategy)
    job = flow.execute("review")
    assert job.status == "waiting"

    answered = child(world, strategy, "answer", job.job_id, json.dumps({"approved": True}))
    assert answered.returncode == 0, answered.stderr
    job_id, status, shared, waiting_for = json.loads(answered.stdout)
    assert (job_id, status, waiting_for) == (job.job_id, "completed", [])
    assert shared == {"steps": 2, "decision": [True, ""]}
    assert calls(world) == ["start", "step 1", "step 2", "decide True "]

    # This process's copy is out of date: the job was taken over elsewhere.
    with pytest.raises((JobStateError, InvalidInputError)):
        flow.send_input(job, "review", "decision", {"approved": False})
    store = open_store(world["store"])
    try:
        assert store.load_job(job.job_id).shared_data["decision"] == [True, ""]
    finally:
        store.close()
        flow.shutdown()
    assert calls(world) == ["start", "step 1", "step 2", "decide True "]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_waiting_job_survives_kill_9_and_nothing_runs_twice(
    world: dict[str, Any], strategy: str
) -> None:
    started = child(world, strategy, "start", "crash")
    assert started.returncode == -signal.SIGKILL, started.stderr
    job_id, status = json.loads(started.stdout)
    assert status == "waiting"
    assert calls(world) == ["start", "step 1", "step 2"]

    resumed = child(world, strategy, "recover-then-answer", job_id)
    assert resumed.returncode == 0, resumed.stderr
    recovered, before, status, shared = json.loads(resumed.stdout)
    assert recovered == 0  # a waiting job is not "unfinished work": recover() leaves it
    assert before == ["waiting", 1]  # resume(job_id) after the crash: still waiting
    assert status == "completed"
    assert shared == {"steps": 2, "decision": [False, ""]}
    assert calls(world) == ["start", "step 1", "step 2", "decide False "]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_crash_inside_the_answer_never_reruns_the_work_before_the_wait(
    world: dict[str, Any], strategy: str
) -> None:
    """A process that dies while delivering the answer (durability="sync": the input's
    task row is committed before the delivery starts): after recovery the answer is
    delivered again (at least once, like any interrupted delivery) and its request is
    closed -- the job does not wait for an answer it already has -- and the
    deliveries made before the wait are not run again."""
    crashed = child(world, strategy, "answer-and-crash")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    job_id, status = json.loads(crashed.stdout)
    assert status == "waiting"
    assert calls(world) == ["start", "step 1", "step 2"]

    resumed = child(world, strategy, "recover-then-resume", job_id)
    assert resumed.returncode == 0, resumed.stderr
    _, status, shared, waiting_for = json.loads(resumed.stdout)
    assert (status, waiting_for) == ("completed", [])
    assert shared == {"steps": 2, "decision": [True, "crash"]}
    assert calls(world) == ["start", "step 1", "step 2", "decide True crash"]
    store = open_store(world["store"])
    assert store.load(job_id).waiting_for is None and store.load(job_id).tasks == []
    # The same answer sent again finds no open request: it is not delivered twice.
    with pytest.raises(InvalidInputError, match="no request"):
        build_here(world, strategy).send_input(
            job_id, "review", "decision", {"approved": True, "note": "crash"}
        )
    assert calls(world) == ["start", "step 1", "step 2", "decide True crash"]


def test_bad_input_through_the_store_keeps_the_job_waiting(world: dict[str, Any]) -> None:
    started = child(world, "sequential", "start", "exit")
    assert started.returncode == 0, started.stderr
    job_id, _ = json.loads(started.stdout)
    flow = build_here(world, "sequential")
    store = open_store(world["store"])
    try:
        before = store.load(job_id)
        with pytest.raises(InvalidInputError, match="field 'approved' must be a bool") as info:
            flow.send_input(job_id, "review", "decision", {"approved": "yes"})
        assert job_id in str(info.value)
        with pytest.raises(InvalidInputError, match="'review'.'step'.*no request for it"):
            flow.send_input(job_id, "review", "step", {"n": 1})
        after = store.load(job_id)
        assert after.status == "waiting" and after.waiting_for == before.waiting_for
        assert after.tasks == before.tasks == []
        assert after.epoch == before.epoch  # nothing was claimed
    finally:
        store.close()
        flow.shutdown()
    assert calls(world) == ["start", "step 1", "step 2"]


def test_a_paused_journaled_job_keeps_stored_input_for_its_resume(world: dict[str, Any]) -> None:
    flow = build_here(world, "sequential")
    job = flow.execute("review")
    flow.pause(job, reason="weekend")
    flow.shutdown()
    other = build_here(world, "sequential")
    store = open_store(world["store"])
    try:
        # Another flow (its own store connection) does not hold the job: the input
        # goes into the store.
        other.send_input(job.job_id, "review", "decision", {"approved": True})
        stored = store.load(job.job_id)
        assert stored.status == "paused"
        assert [(t["kind"], t["slot"]) for t in stored.tasks] == [("input", "decision")]
        with pytest.raises(InvalidInputError, match="no request for it is open"):
            other.send_input(job.job_id, "review", "decision", {"approved": False})
        resumed = other.resume(job.job_id)
        assert resumed.status == "completed" and resumed.waiting_for == []
        assert resumed.shared_data["decision"] == [True, ""]
    finally:
        store.close()
        other.shutdown()
    assert calls(world) == ["start", "step 1", "step 2", "decide True "]


@pytest.mark.parametrize(
    ("parked", "answer_here"), [("waiting", False), ("paused", False), ("waiting", True)]
)
def test_input_added_through_the_store_reaches_the_process_that_parked_the_job(
    world: dict[str, Any], parked: str, answer_here: bool
) -> None:
    """The process that parked the job keeps its JobState; input another process adds
    through the store (as a Celery submitter does) must reach ``resume(job_id)`` here,
    not be hidden by that kept JobState -- and a ``send_input`` here finds the request
    answered (not answered again from the kept JobState, the store's input unread)."""
    from routilux.inputs import input_row

    flow = build_here(world, "sequential")
    store = open_store(world["store"])  # another connection: "another process"
    try:
        job = flow.execute("review")
        assert job.status == "waiting"
        if parked == "paused":
            flow.pause(job, reason="weekend")
        stored = store.load(job.job_id)
        assert (stored.status, stored.owner) == (parked, None)
        store.add_input(job.job_id, input_row(stored, "review", "decision", {"approved": True}))
        if answer_here:
            with pytest.raises(InvalidInputError, match="no request for it is open"):
                flow.send_input(job.job_id, "review", "decision", {"approved": False})
        resumed = flow.resume(job.job_id)
        assert resumed.status == "completed" and resumed.waiting_for == []
        assert resumed.shared_data["decision"] == [True, ""]
        assert store.load(job.job_id).tasks == [], "the input was consumed"
    finally:
        store.close()
        flow.shutdown()
    assert calls(world) == ["start", "step 1", "step 2", "decide True "]


def test_jobs_input_command_stores_checked_input(world: dict[str, Any]) -> None:
    pytest.importorskip("typer", reason="the command line needs the cli extra (typer, rich)")
    from typer.testing import CliRunner

    from routilux.cli import app

    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:  # click >= 8.2 keeps them apart already
        runner = CliRunner()
    started = child(world, "sequential", "start", "exit")
    job_id, _ = json.loads(started.stdout)
    base = ["jobs", "input", job_id, "review", "decision", "--store", world["store"]]

    bad = runner.invoke(app, [*base, "--data", '{"approved": "x"}'], catch_exceptions=False)
    assert bad.exit_code == 1 and "field 'approved' must be a bool" in bad.stderr
    good = runner.invoke(app, [*base, "--data", '{"approved": true}'], catch_exceptions=False)
    assert good.exit_code == 0, good.stderr
    again = runner.invoke(app, [*base, "--data", '{"approved": false}'], catch_exceptions=False)
    assert again.exit_code == 1 and "no request for it is open" in again.stderr

    store = open_store(world["store"])
    try:
        stored = store.load(job_id)
        assert stored.status == "waiting"
        assert [(t["kind"], t["data"]) for t in stored.tasks] == [
            ("input", {"approved": True, "note": ""})
        ]
    finally:
        store.close()
    flow = build_here(world, "sequential")
    job = flow.resume(job_id)  # taken over from the store: the stored input is delivered
    assert job.status == "completed" and job.waiting_for == []
    assert job.shared_data["decision"] == [True, ""]
    flow.shutdown()
    assert calls(world) == ["start", "step 1", "step 2", "decide True "]


@register_serializable
class CliInputAsker(Routine):
    """For a flow file: asks for ``{"ok": bool}`` and keeps the answer in shared data."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.ask)
        self.define_slot("decision", handler=self.decide)

    def ask(self, **kwargs: Any) -> None:
        self.request_input("decision", schema={"ok": bool})

    def decide(self, ok: bool) -> None:
        self.context.job_state.update_shared_data("ok", ok)


def test_jobs_input_command_with_the_flow_file_continues_the_job(tmp_path: Path) -> None:
    pytest.importorskip("typer", reason="the command line needs the cli extra (typer, rich)")
    from typer.testing import CliRunner

    from routilux.cli import app

    flow_file = tmp_path / "asker.yaml"
    flow_file.write_text(
        "flow_id: asker\nentry: asker\nroutines:\n  asker: {class: CliInputAsker}\n"
    )
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    flow = Flow.from_file(flow_file)
    flow.use_store(url)
    job = flow.execute("asker")
    assert job.status == "waiting"
    flow.shutdown()

    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:  # click >= 8.2 keeps them apart already
        runner = CliRunner()
    args = ["jobs", "input", job.job_id, "asker", "decision", "--store", url]
    args += ["--data", '{"ok": true}', "--flow", str(flow_file)]
    done = runner.invoke(app, args, catch_exceptions=False)
    assert done.exit_code == 0, done.stderr
    assert "completed" in done.stdout
    store = open_store(url)
    try:
        stored = store.load_job(job.job_id)
        assert stored.status == "completed" and stored.shared_data == {"ok": True}
    finally:
        store.close()

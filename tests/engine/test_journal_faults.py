"""Store failures fail the journaled job, with the StoreError in its JobState.

A lost lease (another runner claimed the job: ``StaleEpochError``) and a full disk
(SQLite ``PRAGMA max_page_count``) must never be silent: the job stops as
``failed``, its history holds an error record naming the StoreError, and this process
writes nothing more for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import Numbers
from routilux import Flow, JobState, Routine
from routilux.engine.journal import Durable
from routilux.exceptions import StoreError
from routilux.store import SQLiteStore, open_store


def journal_errors(job: JobState) -> list[dict[str, Any]]:
    return [
        r.data for r in job.execution_history if r.event_name == "error" and r.data.get("journal")
    ]


class Counter(Routine):
    """``input(value)``: records it in shared data; ``action(self, value)`` runs first."""

    def __init__(self, action: Any) -> None:
        super().__init__()
        self.define_slot("input", handler=self.take)
        self.action = action

    def take(self, value: int = 0, **_: Any) -> None:
        self.action(self, value)
        js = self.context.job_state
        with js.lock:
            js.shared_data.setdefault("seen", []).append(value)


def flow_with(store: Any, action: Any) -> Flow:
    flow = Flow(flow_id="faults", store=store)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(Counter(action), "counter")
    flow.connect("source", "output", "counter", "input")
    return flow


def test_a_stale_epoch_fails_the_job_and_stops_it_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    other = open_store(url)
    claimed: dict[str, Any] = {}

    def steal(routine: Routine, value: int) -> None:
        js = routine.context.job_state
        durable = Durable.of(flow.store)  # type: ignore[arg-type]
        durable.flush()  # the next commit happens now (is refused after the claim)
        if value != 2:
            return
        # Another process takes the job over: this runner looks dead to it.
        other.remove_runner(durable.runner_id)
        claimed["epoch"] = other.claim(js.job_id, "thief", 30.0)
        claimed["commit_seq"] = other.load(js.job_id).commit_seq

    flow = flow_with(url, steal)
    job = flow.execute("source", entry_params={"n": 50})
    assert claimed["epoch"] == 2
    assert job.status == "failed"
    (error,) = journal_errors(job)
    assert error["error_type"] == "StaleEpochError"
    assert job.job_id in error["error"]
    # The job stopped as soon as the store refused a commit (the first after the
    # claim, made when delivery 3 flushed): nothing after delivery 3 ran...
    assert job.shared_data["seen"] == [0, 1, 2, 3]
    # ...and the store never saw this process advance it past the claim.
    after = other.load(job.job_id)
    assert (after.epoch, after.owner, after.status) == (2, "thief", "running")
    assert after.commit_seq == claimed["commit_seq"]
    other.close()
    # (Its runner row is gone: stop its heartbeat, which would keep reporting that.)
    Durable.of(flow.store).shutdown()  # type: ignore[arg-type]


def test_a_full_disk_fails_the_job_with_a_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "jobs.db"))

    def fill(routine: Routine, value: int) -> None:
        if value == 1:
            Durable.of(store).flush()
            pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
            store._conn.execute(f"PRAGMA max_page_count = {pages}")
        routine.context.job_state.shared_data[f"blob{value}"] = "x" * 20_000

    flow = flow_with(store, fill)
    job = flow.execute("source", entry_params={"n": 30})
    assert job.status == "failed"
    errors = journal_errors(job)
    assert len(errors) == 1
    assert "full" in errors[0]["error"].lower()
    assert errors[0]["error_type"] == StoreError.__name__
    assert str(tmp_path / "jobs.db") in errors[0]["error"]

"""``durability="sync"``: a delivery's record is durable before the tasks it queued
start.  A store wrapper logs each commit's new task rows; handlers log their start;
every task's row must have been committed before its delivery began."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from helpers import Numbers, Sink
from routilux import Flow, Routine
from routilux.store import DeltaRecord, SQLiteStore
from routilux.store._base import BuiltRecords, delta_of


class LoggingStore(SQLiteStore):
    """A SQLite store that logs ("commit", seqs of the rows it added) per transaction."""

    def __init__(self, path: str, events: list[tuple[str, Any]], lock: threading.Lock) -> None:
        super().__init__(path)
        self.events = events
        self.events_lock = lock

    def commit_many(self, batches: Sequence[tuple[str, int, Sequence[DeltaRecord]]]) -> None:
        super().commit_many(batches)
        # The engine's records come as built records (arrays): read as DeltaRecords.
        deltas = [
            delta_of(r) if type(records) is BuiltRecords else r
            for _, _, records in batches
            for r in records
        ]
        added = {row["seq"] for delta in deltas for row in delta["tasks_added"]}
        with self.events_lock:
            self.events.append(("commit", added))


class Fan(Routine):
    """``input(value)``: logs its start, emits ``out`` twice while value < limit."""

    def __init__(self, events: list[tuple[str, Any]], lock: threading.Lock, asynchronous: bool):
        super().__init__()
        self.events, self.lock = events, lock
        self.define_slot("input", handler=self.take_async if asynchronous else self.take)
        self.define_event("out", ["value"])

    def take(self, value: int = 0, **_: Any) -> None:
        seq = int(self.context.delivery_id.rsplit(":", 1)[1])
        with self.lock:
            self.events.append(("start", seq))
        if value < 4:
            self.emit("out", value=value + 1)
            self.emit("out", value=value + 1)

    async def take_async(self, value: int = 0, **_: Any) -> None:
        await asyncio.sleep(0)
        self.take(value)


@pytest.mark.parametrize(
    "strategy, asynchronous",
    [("sequential", False), ("concurrent", False), ("concurrent", True)],
)
def test_children_start_only_after_their_parents_record_is_durable(
    tmp_path: Path, strategy: str, asynchronous: bool
) -> None:
    events: list[tuple[str, Any]] = []
    lock = threading.Lock()
    store = LoggingStore(str(tmp_path / "jobs.db"), events, lock)
    flow = Flow(
        flow_id="sync", store=store, durability="sync", execution_strategy=strategy, max_workers=4
    )
    flow.add_routine(Numbers(), "source")
    flow.add_routine(Fan(events, lock, asynchronous), "fan")
    flow.connect("source", "output", "fan", "input")
    flow.connect("fan", "out", "fan", "input")
    job = flow.execute("source", entry_params={"n": 1})
    assert job.status == "completed"
    durable: set[int] = set()
    starts = 0
    for kind, value in events:
        if kind == "commit":
            durable |= value
        else:
            starts += 1
            assert value in durable, f"delivery {value} started before its row was durable"
    assert starts == 2**5 - 1  # 1 + 2 + 4 + 8 + 16 deliveries


@pytest.mark.parametrize("durability, per_job", [("sync", 4), ("batch", 2)])
def test_a_finished_jobs_status_record_shares_the_final_snapshots_transaction(
    tmp_path: Path, durability: str, per_job: int
) -> None:
    # A trivial job (entry -> one delivery): its row, then in sync mode one commit
    # per delivery and one for the status record -- which carries the job-level
    # writes of its end (a record of their own before) -- with the final snapshot
    # (two before); in batch mode everything after the row in one.
    from routilux.engine.journal import Durable

    store = SQLiteStore(str(tmp_path / "jobs.db"))
    flow = Flow(flow_id="trivial", store=store, durability=durability)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(Sink(), "sink")
    flow.connect("source", "output", "sink", "input")
    flow.execute("source", entry_params={"n": 1})  # the writer started
    writer = Durable.of(store).writer(durability)
    before = writer.transactions
    jobs = [flow.execute("source", entry_params={"n": 1}) for _ in range(3)]
    assert [job.status for job in jobs] == ["completed"] * 3
    # create_job is the store's own transaction, outside the writer.
    assert writer.transactions - before == (per_job - 1) * 3
    for job in jobs:
        stored = store.load(job.job_id)
        assert (stored.status, stored.tasks, stored.deltas) == ("completed", [], [])
        loaded = store.load_job(job.job_id)
        assert loaded.execution_history == job.execution_history
        assert loaded.routine_states == job.routine_states  # the end's job-level writes
    flow.shutdown()

"""The serial lane of the journal (engine/journal.py): a sequential run's deliveries
are journaled without a bound change-capture scope, their rows built the short way
and their records appended to one open group the writer takes.

What must hold: nothing of a delivery that is still running reaches the store (also
when another thread flushes the journal meanwhile), writes from other threads are
journaled once, a delivery that needs the general way still gets it, and the
writer's open group commits every record appended before the writer took it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from helpers import Collector, Numbers, comparable
from routilux import Flow, JobState, Routine
from routilux.engine.journal import GROUP_RECORDS, Durable
from routilux.hooks import JobHooks
from routilux.store import JournalWriter, SQLiteStore, Store, open_store
from routilux.store._base import built_record
from routilux.store.writer import OpenRecords

WAIT = 30.0


class Blocker(Routine):
    """``input(value)``: adds ``value`` to shared ``total``; the delivery of value 2
    first writes ``half`` and then waits for ``go`` (its delivery is running while
    the test looks at the store)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.go = threading.Event()
        self.job: JobState | None = None
        self.define_slot("input", handler=self.take)
        self.define_event("out", ["value"])

    def take(self, value: int = 0, **_: Any) -> None:
        js = self.context.job_state
        if value == 2:
            self.job = js
            js.shared_data["half"] = True
            self.entered.set()
            assert self.go.wait(WAIT)
        with js.lock:
            js.shared_data["total"] = js.shared_data.get("total", 0) + value
        self.emit("out", value=value)


def build(store: Any, blocker: Routine) -> Flow:
    flow = Flow(flow_id="lane-test", store=store)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(blocker, "blocker")
    flow.add_routine(Collector(), "sink")
    flow.connect("source", "output", "blocker", "input")
    flow.connect("blocker", "out", "sink", "input")
    return flow


class Running:
    """A job of :func:`build` executed on a thread of its own, its delivery of value
    2 blocked (``live``: the JobState; ``finish()`` lets it go and returns the job)."""

    def __init__(self, url: str, n: int) -> None:
        self.blocker = Blocker()
        self.flow = build(url, self.blocker)
        self.done: list[JobState] = []
        self.thread = threading.Thread(
            target=lambda: self.done.append(self.flow.execute("source", entry_params={"n": n}))
        )
        self.thread.start()
        assert self.blocker.entered.wait(WAIT)
        assert self.blocker.job is not None
        self.live: JobState = self.blocker.job

    def finish(self) -> JobState:
        self.blocker.go.set()
        self.thread.join(WAIT)
        assert self.done
        return self.done[0]


def test_a_pause_meanwhile_never_stores_a_running_delivery_half_done(
    url: str, store: Store
) -> None:
    """flow.pause (with no wait) while a delivery runs flushes the journal: the
    running delivery's write must not be stored before the delivery ends, and its
    task stays pending; once it ends, its write and its consumption are stored
    together, and the job resumes to the same state as the live one."""
    running = Running(url, 5)
    job_id = running.live.job_id
    running.flow.pause(running.live, wait_timeout=0.0)
    mid = store.load_job(job_id)
    assert "half" not in mid.shared_data
    # The blocked delivery (value 2) has not consumed its row: it runs again after
    # a crash now, and its write is applied once.
    pending = [row["data"] for row in store.load(job_id).tasks if row["routine"] == "blocker"]
    assert {"value": 2} in pending
    job = running.finish()
    assert job.status == "paused"
    after = store.load_job(job_id)
    assert after.shared_data["half"] is True
    assert after.shared_data["total"] == job.shared_data["total"]
    resumed = running.flow.resume(job)
    assert resumed.status == "completed"
    assert resumed.shared_data["total"] == sum(range(5))
    assert comparable(store.load_job(job_id)) == comparable(resumed)


def test_a_write_from_another_thread_is_journaled_once(url: str, store: Store) -> None:
    """A write to the JobState from outside the job while a delivery runs belongs to
    that delivery's record (as a job-level write travels with the next record): the
    rebuilt JobState holds it once."""
    running = Running(url, 4)
    job_id = running.live.job_id
    running.live.shared_data["outside"] = [1, 2]
    job = running.finish()
    assert job.status == "completed"
    rebuilt = store.load_job(job_id)
    assert rebuilt.shared_data["outside"] == [1, 2]
    assert comparable(rebuilt) == comparable(job)


class Mixed(Routine):
    """Emits data the short way cannot take (a list value) beside plain data, and
    sets and withdraws timers in the same delivery: the general way, in the lane."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.take)
        self.define_slot("ring", handler=self.ring)
        self.define_event("out", ["value"])

    def take(self, value: int = 0, **_: Any) -> None:
        if value % 2:
            self.emit("out", value=[value, value])
        else:
            assert self.set_timer(f"t{value}", 60.0, "ring")
            self.emit("out", value=value)
            assert self.cancel_timer(f"t{value}")

    def ring(self, **_: Any) -> None:
        raise AssertionError("a withdrawn timer fired")


def test_deliveries_the_short_way_cannot_take_are_journaled_the_general_way(
    url: str, store: Store
) -> None:
    flow = Flow(flow_id="lane-test", store=url)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(Mixed(), "mixed")
    flow.add_routine(Collector(), "sink")
    flow.connect("source", "output", "mixed", "input")
    flow.connect("mixed", "out", "sink", "input")
    job = flow.execute("source", entry_params={"n": 12})
    assert job.status == "completed"
    assert store.load(job.job_id).tasks == []
    assert comparable(store.load_job(job.job_id)) == comparable(job)


def test_a_long_job_commits_its_records_in_far_fewer_transactions(url: str, store: Store) -> None:
    """Records of a sequential job are handed over in open groups: every record is
    committed, in transactions that each hold many of them."""
    flow = Flow(flow_id="lane-test", store=url)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(Collector(), "sink")
    flow.connect("source", "output", "sink", "input")
    from routilux.engine.journal import Durable

    writer = Durable.of(flow.store).writer("batch")  # type: ignore[arg-type]
    before = (writer.transactions, writer.records_written)
    job = flow.execute("source", entry_params={"n": 300})
    assert job.status == "completed"
    transactions = writer.transactions - before[0]
    records = writer.records_written - before[1]
    assert records >= 301  # the entry, 300 deliveries (and the status record)
    assert transactions * 4 <= records
    assert comparable(store.load_job(job.job_id)) == comparable(job)


def test_an_open_group_commits_what_was_appended_before_the_writer_took_it(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    epoch = store.create_job("j1", "f", "running", {"job_id": "j1"}, [])
    writer = JournalWriter(store, max_delay=10.0)  # it takes the group only when flushed
    try:
        group = OpenRecords()
        group.append(_record(1))
        writer.put_open("j1", epoch, group)
        with group.lock:
            assert group.open
            group.append(_record(2))
        assert writer.flush(WAIT)
        assert not group.open  # taken: a later record goes into a new group
        assert [d["seq"] for d in store.load("j1").deltas] == [1, 2]
    finally:
        writer.close()
        store.close()


def _record(seq: int) -> list[Any]:
    """A record as the engine's journal builds it (store._base.RECORD_FIELDS order)."""
    return built_record(
        {
            "seq": seq,
            "consumed": None,
            "ops": [["shared_set", f"k{seq}", seq]],
            "tasks_added": [],
            "tasks_removed": [],
            "status": None,
            "waiting_for": None,
        }
    )


def test_a_short_job_s_last_records_join_its_open_group(
    url: str, store: Store, monkeypatch: Any
) -> None:
    """A job that settles while its lane records still wait in the writer's open
    group appends its last records there (the job-level writes of its end, its
    status record): one queue entry for them all and one for the final snapshot,
    stored as the live job ended."""
    flow = Flow(flow_id="lane-test", store=url)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(Collector(), "sink")
    flow.connect("source", "output", "sink", "input")
    from routilux.engine.journal import Durable

    flow.execute("source", entry_params={"n": 1})  # the writer thread, made
    writer = Durable.of(flow.store).writer("batch")  # type: ignore[arg-type]
    # The thread takes nothing by itself meanwhile: the job's flush writes it all.
    monkeypatch.setattr(writer, "max_delay", 10.0)
    calls: list[str] = []
    for name in ("put_many", "put_open", "put_snapshot"):
        real = getattr(writer, name)
        monkeypatch.setattr(
            writer,
            name,
            lambda *a, _real=real, _name=name, **k: (calls.append(_name), _real(*a, **k))[1],
        )
    before = writer.transactions
    job = flow.execute("source", entry_params={"n": 3})
    assert job.status == "completed"
    assert calls == ["put_open", "put_snapshot"]
    assert writer.transactions - before == 1
    assert store.load(job.job_id).tasks == []


class Redact(JobHooks):
    """An emit hook that changes the history record's data in place (its dict is
    the one the emission's task carries): the source's value 3 becomes 30."""

    def on_emit(self, job_state: JobState, record: Any) -> None:
        if record.routine_id == "source" and record.data.get("value") == 3:
            record.data["value"] = 30


def test_an_emit_hook_that_changes_the_data_is_journaled_as_the_job_holds_it(
    url: str, store: Store
) -> None:
    """The lane writes a task's row from the text of its emission's history op only
    when no emit hook could have changed the data in between; and a snapshot encodes
    a record a hook saw again.  So the row the job's next delivery consumes holds
    the changed data, and the stored job is the live one."""
    blocker = Blocker()
    flow = build(url, blocker)
    flow.add_hooks(Redact())
    done: list[JobState] = []
    thread = threading.Thread(
        target=lambda: done.append(flow.execute("source", entry_params={"n": 5}))
    )
    thread.start()
    try:
        assert blocker.entered.wait(WAIT)
        assert blocker.job is not None
        flow.pause(blocker.job, wait_timeout=0.0)
        pending = [row["data"] for row in store.load(blocker.job.job_id).tasks]
        assert {"value": 30} in pending and {"value": 3} not in pending
    finally:
        blocker.go.set()
        thread.join(WAIT)
    job = flow.resume(done[0])
    assert job.status == "completed"
    assert job.shared_data["total"] == 0 + 1 + 2 + 30 + 4
    assert comparable(store.load_job(job.job_id)) == comparable(job)


def test_the_lanes_per_delivery_objects_keep_their_fields_in_slots() -> None:
    # The serial lane reads these objects' fields on every delivery; Python 3.11 does
    # not specialize reading a class-level default through an instance, nor a method
    # lookup on an instance whose dict outgrew its shared keys: an instance dict
    # here would slow every delivery without failing anything else.
    from routilux.changes import Record
    from routilux.engine.journal import JobJournal

    for cls in (Record, JobJournal):
        assert cls.__dictoffset__ == 0, f"{cls.__name__} instances have a __dict__"


class Tally(Routine):
    """``trigger(n)`` starts a countdown through its own ``input``: each delivery of
    ``input(value)`` counts itself in shared ``count`` (``action(job, value)`` runs
    first) and queues ``value - 1`` while above 1 -- ``n`` deliveries one after
    another, under either strategy."""

    def __init__(self, action: Any = None) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_slot("input", handler=self.take)
        self.define_event("out", ["value"])
        self.action = action

    def start(self, n: int = 1, **_: Any) -> None:
        self.emit("out", value=n)

    def take(self, value: int = 0, **_: Any) -> None:
        js = self.context.job_state
        if self.action is not None:
            self.action(js, value)
        with js.lock:
            js.shared_data["count"] = js.shared_data.get("count", 0) + 1
        if value > 1:
            self.emit("out", value=value - 1)


def _tally_flow(url: str, monkeypatch: Any, strategy: str, action: Any = None) -> Any:
    """A flow of one :class:`Tally`, and its batch writer made a thread that falls
    behind at once: it takes nothing by itself (no batch fills, no record grows old
    enough) and says it is behind as soon as a second entry is queued."""
    flow = Flow(flow_id="lane-test", store=url, execution_strategy=strategy)
    flow.add_routine(Tally(action), "tally")
    flow.connect("tally", "out", "tally", "input")
    writer = Durable.of(flow.store).writer("batch")  # type: ignore[arg-type]
    monkeypatch.setattr(writer, "max_delay", 10.0)
    monkeypatch.setattr(writer, "max_batch", 100_000)
    monkeypatch.setattr(writer, "max_lag", 0.0)
    return flow, writer


def _count(batch: list[Any]) -> int:
    """The records in a batch the writer takes (groups of records, snapshots...)."""
    return sum(len(payload) for _, _, _, payload in batch if isinstance(payload, list))


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_a_job_never_runs_far_ahead_of_a_writer_thread_that_falls_behind(
    url: str, store: Store, monkeypatch: Any, strategy: str
) -> None:
    """A writer thread that falls behind (here: one that never looks by itself) does
    not let the job's records pile up: the job writes the backlog itself between
    deliveries, so no transaction holds more than the two open groups of records
    (GROUP_RECORDS each) that can be queued when it looks."""
    flow, writer = _tally_flow(url, monkeypatch, strategy)
    sizes: list[int] = []
    real_write = writer._write
    monkeypatch.setattr(
        writer, "_write", lambda batch: (sizes.append(_count(batch)), real_write(batch))[1]
    )
    job = flow.execute("tally", entry_params={"n": 1000})
    assert job.status == "completed"
    assert job.shared_data["count"] == 1000
    assert sum(sizes) >= 1001  # every delivery's record, the entry's
    assert len(sizes) >= 15
    assert max(sizes) <= 2 * GROUP_RECORDS + 2
    assert comparable(store.load_job(job.job_id)) == comparable(job)


def test_a_refusal_found_while_catching_up_stops_the_job_there(url: str, monkeypatch: Any) -> None:
    """Another process claims the job mid-run: the commit the job makes while
    catching up with a writer thread that fell behind is refused (a stale epoch),
    and the job stops there, not after running all its deliveries ahead of a store
    that refuses them."""
    other = open_store(url)
    claimed: list[int] = []

    def steal(js: JobState, value: int) -> None:
        if value == 598:  # the third delivery
            durable = Durable.of(flow.store)  # type: ignore[arg-type]
            other.remove_runner(durable.runner_id)  # this runner looks dead to it
            epoch = other.claim(js.job_id, "thief", 30.0)
            assert epoch is not None
            claimed.append(epoch)

    flow, _ = _tally_flow(url, monkeypatch, "sequential", steal)
    try:
        job = flow.execute("tally", entry_params={"n": 600})
        assert claimed
        assert job.status == "failed"
        errors = [
            r.data
            for r in job.execution_history
            if r.event_name == "error" and r.data.get("journal")
        ]
        assert [e["error_type"] for e in errors] == ["StaleEpochError"]
        # At most the two open groups queued when it looked ran after the claim.
        assert job.shared_data["count"] <= 3 + 2 * GROUP_RECORDS
    finally:
        other.close()
        Durable.of(flow.store).shutdown()  # type: ignore[arg-type]

"""One behaviour, two stores: every test here runs on SQLite and on PostgreSQL.

The journal contract (docs/durability.md): atomic commits with strict seqs, epoch
fencing, snapshots that truncate deltas, summaries, leases that pass a dead owner's
job to exactly one claimer, input from any process, schema version refusal, and the
group-commit writer.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import subprocess
import sys
import threading
from typing import Any

import pytest

import routilux  # noqa: F401  (registers the JobState layout)
from routilux.job_state import JobState
from routilux.store import (
    JobNotFoundError,
    JobSummary,
    JournalWriter,
    SchemaVersionError,
    StaleEpochError,
    Store,
    StoreError,
    open_store,
)
from routilux.store._base import _ENCODE, EncodedSnapshot
from store.records import as_built, snapshot_of, task


def record(seq: int, consumed: int | None = None, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "consumed": consumed, "ops": [["shared_set", f"k{seq}", seq]], **fields}


def fake_apply(state: JobState, ops: list[Any]) -> None:
    """Stands in for routilux.changes.apply_ops: only the shared_set op."""
    for op in ops:
        assert op[0] == "shared_set"
        state.shared_data[op[1]] = op[2]


def new_job(store: Store, job_id: str = "j1", flow_id: str = "flow", **kw: Any) -> int:
    kw.setdefault("status", "running")
    kw.setdefault("snapshot", snapshot_of())
    kw.setdefault("tasks", [task(0)])
    return store.create_job(job_id, flow_id, **kw)


# ---------------------------------------------------------------- create / commit / load


def test_stores_implement_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)
    assert store.location


def test_create_and_load_round_trip(store: Store) -> None:
    snapshot = snapshot_of(a=[1, {"b": None}])
    epoch = new_job(
        store,
        snapshot=snapshot,
        tasks=[task(0), task(1, "timer", due_at=1e9, extra={"name": "t"})],
    )
    assert epoch == 1
    job = store.load("j1")
    assert (job.job_id, job.flow_id, job.status, job.epoch) == ("j1", "flow", "running", 1)
    assert job.owner is None and job.commit_seq == 0 and job.snapshot_seq == 0
    assert job.deltas == []
    assert [t["seq"] for t in job.tasks] == [0, 1]
    assert job.tasks[1] == {
        "seq": 1,
        "kind": "timer",
        "routine": "r",
        "slot": "in",
        "data": {"n": 1},
        "retries": 0,
        "due_at": 1e9,
        "extra": {"name": "t"},
    }
    assert job.snapshot == snapshot


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seq": -1}, r"job 'j1' tasks\[0\]\.seq must be a non-negative integer"),
        ({"seq": True}, r"job 'j1' tasks\[0\]\.seq must be a non-negative integer"),
        ({"kind": "later"}, r"job 'j1' tasks\[0\]\.kind must be one of"),
        ({"routine": ""}, r"job 'j1' tasks\[0\]\.routine must be a non-empty string"),
        ({"slot": 3}, r"job 'j1' tasks\[0\]\.slot must be a non-empty string"),
        ({"retries": -2}, r"job 'j1' tasks\[0\]\.retries must be a non-negative integer"),
        ({"due_at": float("nan")}, r"job 'j1' tasks\[0\]\.due_at must be a Unix time"),
        ({"extra": ["x"]}, r"job 'j1' tasks\[0\]\.extra must be a dict"),
        ({"colour": "red"}, r"job 'j1' tasks\[0\] has unknown keys \['colour'\]"),
        ({"data": {1, 2}}, r"job 'j1' task 0 data is not JSON-safe"),
        ({"extra": {"x": {1}}}, r"job 'j1' task 0 extra is not JSON-safe"),
        ({"flow_id": ""}, r"job 'j1': flow_id must be a non-empty string"),
        ({"status": None}, r"job 'j1': status must be a non-empty string"),
        ({"owner": ""}, r"job 'j1': owner must be a non-empty string"),
    ],
)
@pytest.mark.parametrize("every_key", [False, True])
def test_a_new_jobs_one_task_and_fields_are_checked(
    store: Store, change: dict[str, Any], message: str, every_key: bool
) -> None:
    # A new job with one task (the engine's usual entry) takes the short path; every
    # check of the general one holds there, naming the job and the field, and a
    # refused job writes nothing.
    job_fields = ("flow_id", "status", "owner")
    fields = {key: value for key, value in change.items() if key in job_fields}
    given = dict(task(0), retries=0, due_at=None, extra={}) if every_key else task(0)
    row = dict(given, **{key: value for key, value in change.items() if key not in fields})
    with pytest.raises(StoreError, match=message):
        new_job(store, tasks=[row], **fields)
    assert store.list_jobs() == []
    with pytest.raises(JobNotFoundError):
        store.load("j1")


def test_a_new_jobs_one_task_is_stored_normalised(store: Store) -> None:
    # The short path stores what the general one would: defaults filled in, a due
    # time as a float, no extra as {}.
    new_job(store, "j1", tasks=[dict(task(0, "timer"), due_at=7, extra=None)], owner="me")
    new_job(store, "j2", tasks=[dict(task(0), extra={"entry": True}, retries=2, due_at=None)])
    assert store.load("j1").tasks == [
        {
            "seq": 0,
            "kind": "timer",
            "routine": "r",
            "slot": "in",
            "data": {"n": 0},
            "retries": 0,
            "due_at": 7.0,
            "extra": {},
        }
    ]
    assert type(store.load("j1").tasks[0]["due_at"]) is float
    (row,) = store.load("j2").tasks
    assert row == dict(task(0), retries=2, due_at=None, extra={"entry": True})
    assert store.load("j1").owner == "me"


def test_an_encoded_snapshot_is_stored_as_its_text(store: Store) -> None:
    # The journal hands its snapshots over encoded (EncodedSnapshot): each store
    # writes the text as it is, and it loads back as the saved form it encodes.
    first, later = snapshot_of(a=[1, "\u00e9", None]), snapshot_of(b={"c": 2.5})
    new_job(store, snapshot=EncodedSnapshot(_ENCODE(first)))
    assert store.load("j1").snapshot == first
    fold = store.commit_then_snapshot  # type: ignore[attr-defined]
    fold([("j1", 1, [record(1, consumed=0)])], "j1", 1, EncodedSnapshot(_ENCODE(later)), 1)
    job = store.load("j1")
    assert (job.snapshot, job.snapshot_seq, job.tasks) == (later, 1, [])


def test_duplicate_job_is_refused(store: Store) -> None:
    new_job(store)
    with pytest.raises(StoreError, match="'j1' already exists"):
        new_job(store)


def test_unknown_job_is_named(store: Store) -> None:
    with pytest.raises(JobNotFoundError, match="'nope'"):
        store.load("nope")
    with pytest.raises(JobNotFoundError, match="'nope'"):
        store.commit("nope", 1, [record(1)])
    with pytest.raises(JobNotFoundError, match="'nope'"):
        store.delete_job("nope")


def test_commit_applies_tasks_status_and_waiting(store: Store) -> None:
    new_job(store)
    store.commit(
        "j1",
        1,
        [
            record(1, consumed=0, tasks_added=[task(1), task(2)]),
            record(2, consumed=1, tasks_added=[task(3)], tasks_removed=[2]),
            record(3, status="waiting", waiting_for={"set": {"slot": "decision"}}),
        ],
    )
    job = store.load("j1")
    assert job.commit_seq == 3
    assert [d["seq"] for d in job.deltas] == [1, 2, 3]
    assert job.deltas[0]["ops"] == [["shared_set", "k1", 1]]
    assert [t["seq"] for t in job.tasks] == [3]
    assert job.status == "waiting" and job.waiting_for == {"slot": "decision"}
    store.commit("j1", 1, [record(4, waiting_for={"clear": True}, status="running")])
    job = store.load("j1")
    assert job.waiting_for is None and job.status == "running"


# Each batch follows a first commit (seq 1, which added task 5; task 0 is pending).
@pytest.mark.parametrize(
    "records, message",
    [
        ([record(3)], "seq must be 2"),
        ([record(2), record(2)], "seq must be 3"),
        ([record(2), record(4)], "seq must be 3"),
        ([record(2, consumed=7)], r"tasks \[7\] that are not pending"),
        ([record(2, consumed=0), record(3, consumed=0)], "consumed twice"),
        ([record(2, waiting_for="x")], "waiting_for"),
        ([record(2, ops=[{1, 2}])], "not JSON-safe"),
        ([record(2, tasks_added=[task(0)])], r"'j1'.*tasks \[0\] that are already pending"),
        ([record(2, tasks_added=[task(8), task(8)])], "appears twice"),
        ([record(2, surprise=1)], "unknown keys"),
        ([record(2, tasks_added={"seq": 9})], r"record\[0\]\.tasks_added must be a list"),
        (
            [record(2), record(3, tasks_added=[{"seq": 9, "kind": "nope", "routine": "r"}])],
            r"'j1' record\[1\]\.tasks_added\[0\]\.kind must be one of",
        ),
        ([record(2, tasks_added=[task(9, data={1, 2})])], "task 9 data is not JSON-safe"),
        ([record(2, consumed="0")], "consumed must be a task seq"),
        ([record(2, status="")], "status must be a status name"),
    ],
)
def test_bad_batches_write_nothing(store: Store, records: list[Any], message: str) -> None:
    new_job(store)
    store.commit("j1", 1, [record(1, tasks_added=[task(5)])])
    with pytest.raises(StoreError, match=message):
        store.commit("j1", 1, records)
    job = store.load("j1")
    assert job.commit_seq == 1
    assert [d["seq"] for d in job.deltas] == [1]
    assert [t["seq"] for t in job.tasks] == [0, 5]


def test_commit_many_is_all_or_nothing(store: Store) -> None:
    new_job(store, "a")
    new_job(store, "b")
    with pytest.raises(StaleEpochError):
        store.commit_many([("a", 1, [record(1)]), ("b", 9, [record(1)])])
    assert store.load("a").commit_seq == 0
    store.commit_many([("a", 1, [record(1)]), ("b", 1, [record(1), record(2)])])
    assert (store.load("a").commit_seq, store.load("b").commit_seq) == (1, 2)


def test_epoch_fencing_refuses_and_writes_nothing(store: Store) -> None:
    new_job(store, owner=None)
    assert store.claim("j1", "r2", stale_after=60) == 2
    for call in (
        lambda: store.commit("j1", 1, [record(1, consumed=0)]),
        lambda: store.set_status("j1", 1, "failed"),
        lambda: store.write_snapshot("j1", 1, snapshot_of(), 0),
        lambda: store.release("j1", 1),
    ):
        with pytest.raises(StaleEpochError, match="epoch 1 refused.*epoch is 2"):
            call()
    job = store.load("j1")
    assert (job.commit_seq, job.status, job.owner, job.epoch) == (0, "running", "r2", 2)
    assert [t["seq"] for t in job.tasks] == [0]
    store.commit("j1", 2, [record(1, consumed=0)])
    assert store.load("j1").commit_seq == 1


def test_snapshot_truncates_deltas_and_load_job_replays_the_rest(store: Store) -> None:
    new_job(store, snapshot=snapshot_of(base=0))
    store.commit("j1", 1, [record(1), record(2), record(3)])
    store.write_snapshot("j1", 1, snapshot_of(base=1, k1=1, k2=2), upto_seq=2)
    job = store.load("j1")
    assert job.snapshot_seq == 2 and [d["seq"] for d in job.deltas] == [3]
    state = store.load_job("j1", apply_ops=fake_apply)
    assert isinstance(state, JobState)
    assert state.job_id == "j1" and state.status == "running"
    assert state.shared_data == {"base": 1, "k1": 1, "k2": 2, "k3": 3}
    with pytest.raises(StoreError, match="from 2 .* to 3"):
        store.write_snapshot("j1", 1, snapshot_of(), upto_seq=1)
    with pytest.raises(StoreError, match="from 2 .* to 3"):
        store.write_snapshot("j1", 1, snapshot_of(), upto_seq=4)


def test_a_snapshot_folded_with_its_records_keeps_only_the_later_ones(store: Store) -> None:
    # What the journal writer does for a finished job: its last records and the
    # snapshot after them in one transaction; deltas it covers are not kept.
    new_job(store, snapshot=snapshot_of(base=0))
    store.commit("j1", 1, [record(1), record(2)])
    fold = store.commit_then_snapshot  # type: ignore[attr-defined]
    fold([("j1", 1, [record(3), record(4), record(5)])], "j1", 1, snapshot_of(k=4), 4)
    job = store.load("j1")
    assert (job.commit_seq, job.snapshot_seq) == (5, 4)
    assert [d["seq"] for d in job.deltas] == [5]
    assert store.load_job("j1", apply_ops=fake_apply).shared_data == {"k": 4, "k5": 5}
    fold([("j1", 1, [record(6)])], "j1", 1, snapshot_of(k=6), 6)
    job = store.load("j1")
    assert (job.commit_seq, job.snapshot_seq, job.deltas) == (6, 6, [])
    # A snapshot beyond its records is refused with them: nothing is written.
    with pytest.raises(StoreError, match="from 6 .* to 7"):
        fold([("j1", 1, [record(7)])], "j1", 1, snapshot_of(), 8)
    assert store.load("j1").commit_seq == 6


def built(seq: int, consumed: int | None = None) -> dict[str, Any]:
    """A record as the engine's journal builds it: every field present."""
    base = {"tasks_added": [], "tasks_removed": [], "status": None, "waiting_for": None}
    return {**base, **record(seq, consumed)}


def test_records_the_engine_built_still_get_their_seqs_checked(store: Store) -> None:
    new_job(store)
    with pytest.raises(StoreError, match=r"seq must be 1 .* got 2"):
        store.commit("j1", 1, as_built([built(2)]))
    with pytest.raises(StoreError, match=r"seq must be 2 .* got 1"):
        store.commit("j1", 1, as_built([built(1), built(1)]))
    store.commit("j1", 1, as_built([built(1, consumed=0), built(2)]))
    job = store.load("j1")
    assert job.commit_seq == 2 and job.tasks == []


def test_a_batch_may_add_again_the_seq_it_consumes_or_removes(store: Store) -> None:
    # A retry's row replaces the failed attempt's (same seq, retries + 1) in the
    # attempt's record; a removed timer's seq may come back in the same batch.
    new_job(store, tasks=[task(0), task(1, "timer", due_at=5.0)])
    store.commit(
        "j1",
        1,
        [
            record(1, consumed=0, tasks_added=[task(0, retries=1, due_at=7.5)]),
            record(2, tasks_removed=[1], tasks_added=[task(1, "timer", due_at=9.25)]),
        ],
    )
    tasks = {row["seq"]: row for row in store.load("j1").tasks}
    assert (tasks[0]["retries"], tasks[0]["due_at"]) == (1, 7.5)
    assert (tasks[1]["kind"], tasks[1]["due_at"]) == ("timer", 9.25)


def test_a_refused_job_rolls_back_the_whole_transaction(store: Store) -> None:
    new_job(store, "a")
    new_job(store, "b")
    with pytest.raises(StoreError, match=r"'b': records consume tasks \[3\] that are not"):
        store.commit_many(
            [
                ("a", 1, [record(1, consumed=0, tasks_added=[task(1)])]),
                ("b", 1, [record(1, consumed=3)]),
            ]
        )
    with pytest.raises(StoreError, match=r"'b': records add tasks \[0\] that are already"):
        store.commit_many(
            [
                ("a", 1, [record(1, consumed=0, tasks_added=[task(1)])]),
                ("b", 1, [record(1, tasks_added=[task(n) for n in range(1, 80)] + [task(0)])]),
            ]
        )
    for job_id in ("a", "b"):
        job = store.load(job_id)
        assert (job.commit_seq, [row["seq"] for row in job.tasks]) == (0, [0])


def test_a_folded_snapshot_refuses_records_consuming_a_task_not_pending(store: Store) -> None:
    new_job(store)
    fold = store.commit_then_snapshot  # type: ignore[attr-defined]
    for records, message in (
        ([record(1, consumed=4)], "consume tasks .*not pending"),
        ([record(1, tasks_added=[task(0)])], "already pending"),
    ):
        with pytest.raises(StoreError, match=message):
            fold([("j1", 1, records)], "j1", 1, snapshot_of(k=1), 1)
    job = store.load("j1")
    assert (job.commit_seq, job.snapshot_seq, [row["seq"] for row in job.tasks]) == (0, 0, [0])


def test_records_read_back_as_written(store: Store) -> None:
    # The store writes a record's text from its parts' encodings: every field, odd
    # strings and numbers included, must come back as the normalised record.
    new_job(store)
    odd = 'sl\u00f6t "q" \\ \n \u2603'
    rows = [
        task(1, data=None, extra={"source": ["r", odd]}),
        task(2, "timer", due_at=1234567890.125, data="text", extra={}),
        task(3, "at_end", data=[1, 2.5, True, None], extra={"source": ["a"], "more": 1}),
        {"seq": 4, "kind": "ready", "routine": odd, "slot": odd, "data": {odd: odd}, "retries": 3},
    ]
    records = [
        record(1, consumed=0, tasks_added=rows[:2], tasks_removed=[7, 8]),
        record(2, tasks_added=rows[2:], status="waiting", waiting_for={"set": [{odd: 1e-7}]}),
        record(3, ops=[], waiting_for={"clear": True}),
    ]
    store.commit("j1", 1, records)
    job = store.load("j1")
    full = {"retries": 0, "due_at": None, "extra": {}}
    expected = [{**full, **row, "due_at": row.get("due_at")} for row in rows]
    assert job.tasks == expected
    assert [d["tasks_added"] for d in job.deltas] == [expected[:2], expected[2:], []]
    assert [d["tasks_removed"] for d in job.deltas] == [[7, 8], [], []]
    assert [d["waiting_for"] for d in job.deltas] == [None, {"set": [{odd: 1e-7}]}, {"clear": True}]
    assert [d["status"] for d in job.deltas] == [None, "waiting", None]
    assert [d["consumed"] for d in job.deltas] == [0, None, None]


def test_unencodable_parts_of_built_records_are_named(store: Store) -> None:
    new_job(store)
    bad_due = {**task(1), "retries": 0, "due_at": float("inf"), "extra": {}}
    bad_extra = {**task(1), "retries": 0, "due_at": None, "extra": {"source": {1, 2}}}
    good = built(1, consumed=0)
    for bad in (
        {**built(2), "tasks_added": [bad_due]},
        {**built(2), "tasks_added": [bad_extra]},
        {**built(2), "ops": [["shared_set", "k", {1, 2}]]},
    ):
        # The record at fault is named (the job's and its seq), nothing is written.
        with pytest.raises(StoreError, match="job 'j1' delta seq 2 is not JSON-safe"):
            store.commit("j1", 1, as_built([good, bad]))
    job = store.load("j1")
    assert (job.commit_seq, job.deltas, [row["seq"] for row in job.tasks]) == (0, [], [0])


def test_load_job_without_deltas_needs_no_replay(store: Store) -> None:
    new_job(store, snapshot=snapshot_of(x=1))
    state = store.load_job("j1")
    assert state.shared_data == {"x": 1} and state.job_id == "j1"


def test_load_job_names_a_bad_delta(store: Store) -> None:
    new_job(store)
    store.commit("j1", 1, [record(1, ops=[["nonsense"]])])
    with pytest.raises(StoreError, match="'j1': delta seq 1"):
        store.load_job("j1", apply_ops=fake_apply)


def test_delete_job(store: Store) -> None:
    new_job(store)
    store.commit("j1", 1, [record(1, consumed=0, tasks_added=[task(1)])])
    store.delete_job("j1")
    with pytest.raises(JobNotFoundError):
        store.load("j1")
    new_job(store)  # the id is free again, with nothing left over
    assert store.load("j1").deltas == [] and [t["seq"] for t in store.load("j1").tasks] == [0]


# ---------------------------------------------------------------- list_jobs


def test_list_jobs_filters_orders_and_pages(store: Store) -> None:
    for index, (flow, status) in enumerate(
        [
            ("f1", "running"),
            ("f2", "running"),
            ("f1", "completed"),
            ("f1", "paused"),
            ("f2", "failed"),
        ]
    ):
        new_job(store, f"j{index}", flow, status=status)
    listed = store.list_jobs()
    assert [s.job_id for s in listed] == ["j4", "j3", "j2", "j1", "j0"]
    assert all(isinstance(s, JobSummary) for s in listed)
    assert [s.job_id for s in store.list_jobs(flow_id="f1")] == ["j3", "j2", "j0"]
    assert [s.job_id for s in store.list_jobs(status="running")] == ["j1", "j0"]
    assert [s.job_id for s in store.list_jobs(flow_id="f1", status={"running", "paused"})] == [
        "j3",
        "j0",
    ]
    assert [s.job_id for s in store.list_jobs(limit=2, offset=1)] == ["j3", "j2"]
    assert store.list_jobs(offset=10) == []
    first = listed[0]
    assert (first.flow_id, first.status, first.epoch, first.owner) == ("f2", "failed", 1, None)
    assert first.created_at <= first.updated_at
    for bad in ({"limit": 0}, {"limit": 10_001}, {"offset": -1}, {"limit": "5"}, {"status": []}):
        with pytest.raises(StoreError, match="list_jobs"):
            store.list_jobs(**bad)


def test_set_status_and_waiting_for(store: Store) -> None:
    new_job(store)
    store.set_status("j1", 1, "waiting", waiting_for={"slot": "decision"})
    (summary,) = store.list_jobs()
    assert (summary.status, summary.waiting_for) == ("waiting", {"slot": "decision"})
    store.set_status("j1", 1, "running")  # waiting_for unchanged
    assert store.list_jobs()[0].waiting_for == {"slot": "decision"}
    store.set_status("j1", 1, "running", waiting_for=None)
    assert store.list_jobs()[0].waiting_for is None


# ---------------------------------------------------------------- leases


def dead_pid() -> int:
    """The PID of a real process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_claim_takes_a_dead_owners_job(store: Store) -> None:
    pid = dead_pid()
    store.register_runner("dead", pid=pid)
    new_job(store, owner="dead")
    assert store.claimable_jobs("flow", stale_after=60) == ["j1"]
    assert store.claim("j1", "me", stale_after=60) == 2
    job = store.load("j1")
    assert (job.owner, job.epoch) == ("me", 2)


def test_claim_leaves_a_live_owner_alone(store: Store) -> None:
    store.register_runner("alive")  # this process: alive, fresh heartbeat
    new_job(store, owner="alive")
    assert store.claim("j1", "me", stale_after=60) is None
    assert store.claimable_jobs(None, stale_after=60) == []
    assert store.load("j1").epoch == 1


def test_claim_by_heartbeat_age_on_another_host(store: Store) -> None:
    store.register_runner("far", host="elsewhere.invalid", pid=1)
    new_job(store, owner="far")
    assert store.claim("j1", "me", stale_after=3600) is None  # fresh heartbeat
    # Any heartbeat is older than a nanosecond by the time claim looks at it.
    assert store.claim("j1", "me", stale_after=1e-9) == 2


def test_claim_without_runner_row_and_after_release(store: Store) -> None:
    new_job(store, owner="ghost")  # no runner row: dead
    assert store.claim("j1", "a", 60) == 2
    store.register_runner("a")
    assert store.claim("j1", "b", 60) is None
    store.release("j1", 2)
    assert store.load("j1").owner is None
    assert store.claim("j1", "b", 60) == 3


def test_finished_parked_and_unknown_jobs(store: Store) -> None:
    new_job(store, "done", status="completed", owner="ghost")
    new_job(store, "parked", status="paused", owner="ghost")
    new_job(store, "wait", status="waiting", owner="ghost")
    new_job(store, "run", status="running", owner="ghost")
    new_job(store, "other", flow_id="flow2", status="running", owner="ghost")
    assert store.claimable_jobs("flow", 60) == ["run"]
    assert sorted(store.claimable_jobs(None, 60)) == ["other", "run"]
    assert store.claim("done", "me", 60) is None
    assert store.claim("parked", "me", 60) == 2  # explicitly: yes
    with pytest.raises(JobNotFoundError, match="'nope'"):
        store.claim("nope", "me", 60)
    with pytest.raises(StoreError, match="stale_after"):
        store.claim("run", "me", 0)


def test_runner_rows(store: Store) -> None:
    with pytest.raises(JobNotFoundError, match="runner 'x'"):
        store.heartbeat("x")
    store.register_runner("x")
    store.heartbeat("x")
    new_job(store, owner="x")
    assert store.claim("j1", "me", 60) is None
    store.remove_runner("x")
    assert store.claim("j1", "me", 60) == 2
    with pytest.raises(StoreError, match="pid"):
        store.register_runner("y", pid=0)


CONTESTED = [f"contested-{index}" for index in range(40)]


def _claimer(url: str, index: int, barrier: Any, done: Any, results: Any) -> None:
    with open_store(url) as child:
        runner = f"runner-{index}"
        child.register_runner(runner)
        barrier.wait()
        won = {}
        for job_id in CONTESTED:
            won[job_id] = child.claim(job_id, runner, stale_after=60)
        results.put((runner, won))
        # Stay alive (the winners' leases must look live) until everyone has claimed.
        done.wait()


def _race(store: Store, store_url: str, claimer: Any, count: int = 3) -> dict[str, Any]:
    """Run ``count`` processes of ``claimer`` against the store at once (released by a
    barrier); each one's ``(runner, what it won)``, once all have finished."""
    # No open connection may cross a fork (SQLite's rule); the children open their own.
    store.close()
    context = multiprocessing.get_context("fork")
    barrier, done, results = context.Barrier(count), context.Barrier(count + 1), context.Queue()
    children = [
        context.Process(target=claimer, args=(store_url, i, barrier, done, results))
        for i in range(count)
    ]
    for child in children:
        child.start()
    outcomes = dict(results.get(timeout=60) for _ in children)
    done.wait(timeout=60)
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    return outcomes


def test_concurrent_claims_have_exactly_one_winner(store: Store, store_url: str) -> None:
    for job_id in CONTESTED:
        new_job(store, job_id, owner="ghost")
    outcomes = _race(store, store_url, _claimer)
    with open_store(store_url) as reopened:
        for job_id in CONTESTED:
            winners = [runner for runner, won in outcomes.items() if won[job_id] is not None]
            assert len(winners) == 1, (job_id, outcomes)
            assert outcomes[winners[0]][job_id] == 2
            job = reopened.load(job_id)
            assert (job.owner, job.epoch) == (winners[0], 2)


def test_claim_many_takes_the_claimable_jobs_in_one_call(store: Store) -> None:
    store.register_runner("alive")
    store.register_runner("far", host="elsewhere.invalid", pid=1)
    new_job(store, "dead1", owner="ghost")
    new_job(store, "dead2", owner="ghost")
    new_job(store, "mine", owner="alive")
    new_job(store, "done", status="completed", owner="ghost")
    new_job(store, "parked", status="paused", owner="ghost")
    new_job(store, "far", owner="far")
    new_job(store, "free")  # no owner
    store.claim("dead2", "ghost2", 60)  # epoch 2 now
    ids = ["dead1", "dead2", "mine", "done", "parked", "far", "free", "dead1"]
    assert store.claim_many(ids, "me", stale_after=3600) == {  # type: ignore[attr-defined]
        "dead1": 2,
        "dead2": 3,
        "parked": 2,
        "free": 2,
    }
    for job_id, epoch in (("dead1", 2), ("dead2", 3), ("free", 2)):
        job = store.load(job_id)
        assert (job.owner, job.epoch) == ("me", epoch)
    assert (store.load("mine").owner, store.load("mine").epoch) == ("alive", 1)
    assert store.load("done").epoch == 1
    # The same rule as claim: an old heartbeat on another host is dead.
    assert store.claim_many(["far"], "me", stale_after=1e-9) == {"far": 2}  # type: ignore[attr-defined]
    assert store.claim_many([], "me", 60) == {}  # type: ignore[attr-defined]
    # Many more jobs than one statement's chunk.
    for index in range(150):
        new_job(store, f"bulk-{index:03d}", owner="ghost")
    bulk = [f"bulk-{index:03d}" for index in range(150)]
    claimed = store.claim_many(bulk, "me", 60)  # type: ignore[attr-defined]
    assert claimed == dict.fromkeys(bulk, 2)
    with pytest.raises(StoreError, match="stale_after"):
        store.claim_many(["free"], "me", 0)  # type: ignore[attr-defined]


def _many_claimer(url: str, index: int, barrier: Any, done: Any, results: Any) -> None:
    with open_store(url) as child:
        runner = f"runner-{index}"
        child.register_runner(runner)
        barrier.wait()
        won: dict[str, int] = {}
        # Overlapping halves, in different orders: every job is contested.
        for part in (CONTESTED[index % 2 :: 2], CONTESTED[::-1]):
            won.update(child.claim_many(part, runner, stale_after=60))  # type: ignore[attr-defined]
        results.put((runner, won))
        done.wait()


def test_concurrent_claim_many_give_each_job_to_exactly_one(store: Store, store_url: str) -> None:
    for job_id in CONTESTED:
        new_job(store, job_id, owner="ghost")
    outcomes = _race(store, store_url, _many_claimer)
    with open_store(store_url) as reopened:
        for job_id in CONTESTED:
            winners = [runner for runner, won in outcomes.items() if job_id in won]
            assert len(winners) == 1, (job_id, outcomes)
            assert outcomes[winners[0]][job_id] == 2
            job = reopened.load(job_id)
            assert (job.owner, job.epoch) == (winners[0], 2)


def test_load_many_reads_like_load(store: Store, store_url: str) -> None:
    new_job(store, "a", snapshot=snapshot_of(x=1), tasks=[task(0), task(2), task(5)])
    store.commit("a", 1, [record(1, consumed=0, tasks_added=[task(7)])])
    new_job(store, "b", tasks=[])
    new_job(store, "c", status="waiting", tasks=[task(1)])
    store.add_input("c", {"routine": "r", "slot": "in", "data": {"v": 1}})
    store.add_input("c", {"routine": "r", "slot": "in", "data": {"v": 2}})
    store.write_snapshot("a", 1, snapshot_of(x=2), 0)
    for index in range(100):
        new_job(store, f"bulk-{index:03d}", tasks=[task(index)])
    ids = ["c", "a", "b", *(f"bulk-{index:03d}" for index in range(100)), "a"]
    many = store.load_many(ids)  # type: ignore[attr-defined]
    assert [job.job_id for job in many] == ids
    assert many == [store.load(job_id) for job_id in ids]
    assert [t["seq"] for t in many[0].tasks] == [1, -1, -2]  # own tasks, then inputs
    assert [t["seq"] for t in many[1].tasks] == [2, 5, 7]
    assert [d["seq"] for d in many[1].deltas] == [1]
    assert many[1].snapshot["shared_data"] == {"x": 2}
    assert many[2].tasks == [] and many[2].deltas == []
    with pytest.raises(JobNotFoundError, match="'nope'"):
        store.load_many(["a", "nope"])  # type: ignore[attr-defined]
    assert store.load_many([]) == []  # type: ignore[attr-defined]


# ---------------------------------------------------------------- input


def test_add_input_from_anyone(store: Store, store_url: str) -> None:
    new_job(store, status="waiting", tasks=[task(0), task(3)])
    with open_store(store_url) as other:  # another connection: no epoch needed
        assert (
            other.add_input("j1", {"routine": "rev", "slot": "decision", "data": {"ok": 1}}) == -1
        )
        assert other.add_input("j1", {"routine": "rev", "slot": "decision", "data": 2}) == -2
    job = store.load("j1")
    assert [(t["seq"], t["kind"]) for t in job.tasks] == [
        (0, "ready"),
        (3, "ready"),
        (-1, "input"),
        (-2, "input"),
    ]
    assert job.tasks[2]["data"] == {"ok": 1} and job.tasks[2]["routine"] == "rev"
    store.commit("j1", 1, [record(1, consumed=-1, status="running")])
    assert [t["seq"] for t in store.load("j1").tasks] == [0, 3, -2]
    with pytest.raises(StoreError, match="slot"):
        store.add_input("j1", {"routine": "rev", "data": 1})
    with pytest.raises(StoreError, match="kind"):
        store.add_input("j1", {"routine": "rev", "slot": "s", "kind": "ready"})
    with pytest.raises(JobNotFoundError):
        store.add_input("nope", {"routine": "rev", "slot": "s"})
    store.set_status("j1", 1, "completed")
    with pytest.raises(StoreError, match="completed: it takes no more input"):
        store.add_input("j1", {"routine": "rev", "slot": "s"})


# ---------------------------------------------------------------- schema version


def _set_version(store_url: str, version: str) -> None:
    if store_url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(store_url[len("sqlite:///") :])
        with conn:
            conn.execute(
                "UPDATE routilux_meta SET value = ? WHERE key = 'schema_version'", (version,)
            )
        conn.close()
    else:
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE routilux_meta SET value = %s WHERE key = 'schema_version'", (version,)
            )


def test_newer_schema_is_refused(store: Store, store_url: str) -> None:
    new_job(store)
    store.close()
    _set_version(store_url, "99")
    with pytest.raises(SchemaVersionError, match="schema version 99.*version 3 and older"):
        open_store(store_url)
    _set_version(store_url, "banana")
    with pytest.raises(StoreError, match="schema_version is missing or bad"):
        open_store(store_url)
    _set_version(store_url, "2")
    with open_store(store_url) as again:
        assert again.load("j1").epoch == 1


def test_closed_store_refuses(store: Store) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.list_jobs()


# ---------------------------------------------------------------- the writer


def chain(count: int, start: int = 1) -> list[dict[str, Any]]:
    """Records that each consume the previous one's task and add their own."""
    return [
        record(seq, consumed=seq - 1, tasks_added=[task(seq)])
        for seq in range(start, start + count)
    ]


def test_writer_groups_records_and_flush_makes_them_durable(store: Store) -> None:
    new_job(store)
    # A long max_delay: batches close only when full or when flush() asks.
    with JournalWriter(store, max_batch=64, max_delay=10) as writer:
        for item in chain(200):
            writer.put("j1", 1, item)
        assert writer.flush(timeout=60)
        assert store.load("j1").commit_seq == 200
        assert (writer.transactions, writer.records_written) == (4, 200)
    job = store.load("j1")
    assert [t["seq"] for t in job.tasks] == [200] and len(job.deltas) == 200


def test_writer_shares_a_transaction_between_jobs(store: Store) -> None:
    for name in "abc":
        new_job(store, name)
    with JournalWriter(store, max_batch=64, max_delay=10) as writer:
        for item in chain(10):
            for name in "abc":
                writer.put(name, 1, item)
        writer.flush()
        assert writer.transactions == 1
    assert [store.load(name).commit_seq for name in "abc"] == [10, 10, 10]


def _built(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` in the shape the engine builds: every field of a record and a task row."""
    full = {"tasks_added": [], "tasks_removed": [], "status": None, "waiting_for": None}
    rows = [
        {"retries": 0, "due_at": None, "extra": {}, **row} for row in item.get("tasks_added", [])
    ]
    return {**full, **item, "tasks_added": rows}


def _put(writer: JournalWriter, built: bool, item: dict[str, Any]) -> None:
    """Put one record as any caller does, or as the engine's journal does (built)."""
    if built:
        writer.put_many("j1", 1, as_built([_built(item)]))
    else:
        writer.put("j1", 1, item)


@pytest.mark.parametrize("built", [False, True], ids=["records", "built-records"])
def test_writer_commits_a_snapshot_with_the_records_before_it(store: Store, built: bool) -> None:
    new_job(store)
    with JournalWriter(store, max_batch=64, max_delay=10) as writer:
        for item in chain(3):
            _put(writer, built, item)
        writer.put_snapshot("j1", 1, snapshot_of(done=True), 3)
        assert writer.flush(timeout=60)
        assert (writer.transactions, writer.records_written) == (1, 3)
    job = store.load("j1")
    assert (job.commit_seq, job.snapshot_seq, job.deltas) == (3, 3, [])
    assert job.snapshot["shared_data"] == {"done": True}


def test_writer_joins_the_engines_records_and_plain_ones_of_one_job(store: Store) -> None:
    # Groups of both kinds queued for one job go in one transaction: the engine's
    # built records are read as DeltaRecords there, and every one is checked.
    new_job(store)
    items = chain(4)
    with JournalWriter(store, max_batch=64, max_delay=10) as writer:
        for index, item in enumerate(items):
            _put(writer, index % 2 == 1, item)
        assert writer.flush(timeout=60)
        assert (writer.transactions, writer.records_written) == (1, 4)
    job = store.load("j1")
    assert job.commit_seq == 4
    assert job.deltas == [_built(item) for item in items]


@pytest.mark.parametrize("built", [False, True], ids=["records", "built-records"])
def test_a_refused_snapshot_does_not_take_the_records_before_it_along(
    store: Store, built: bool
) -> None:
    new_job(store)
    with JournalWriter(store, max_batch=64, max_delay=10) as writer:
        for item in chain(2):
            _put(writer, built, item)
        writer.put_snapshot("j1", 1, snapshot_of(), 7)  # beyond the last commit
        with pytest.raises(StoreError, match="snapshot must cover"):
            writer.flush(timeout=60)
    job = store.load("j1")
    assert (job.commit_seq, job.snapshot_seq, len(job.deltas)) == (2, 0, 2)


@pytest.mark.parametrize("built", [False, True], ids=["records", "built-records"])
def test_a_refused_record_before_a_snapshot_is_named_and_nothing_is_written(
    store: Store, built: bool
) -> None:
    new_job(store)
    errors: list[str] = []
    with JournalWriter(
        store, max_batch=64, max_delay=10, on_error=lambda job, error: errors.append(job)
    ) as writer:
        _put(writer, built, record(1, consumed=0))
        # What the store refuses: for any caller, a task that is not pending (5); the
        # engine's records are trusted with that and checked for their seqs (a gap).
        bad, named = (record(3, consumed=1), "got 3") if built else (record(2, consumed=5), "5")
        _put(writer, built, bad)
        writer.put_snapshot("j1", 1, snapshot_of(done=True), 2)
        with pytest.raises(StoreError, match=named):
            writer.flush(timeout=60)
        assert errors == ["j1"]
        error = writer.error_of("j1")
        assert error is not None and named in str(error)
        # Another job's records and snapshot still share one transaction.
        new_job(store, "j2")
        before = writer.transactions
        writer.put_many("j2", 1, as_built([_built(record(1, consumed=0))]))
        writer.put_snapshot("j2", 1, snapshot_of(done=True), 1)
        assert writer.flush(timeout=60)
        assert writer.transactions == before + 1
        assert store.load("j2").snapshot_seq == 1
    job = store.load("j1")
    assert (job.commit_seq, job.snapshot_seq, [row["seq"] for row in job.tasks]) == (0, 0, [0])


def test_writer_sync_commits_before_put_returns(store: Store, store_url: str) -> None:
    new_job(store)
    with (
        open_store(store_url) as reader,
        JournalWriter(store, durability="sync", max_delay=10) as w,
    ):
        for item in chain(5):
            w.put("j1", 1, item)
            assert reader.load("j1").commit_seq == item["seq"]


def _commits_on(store: Store) -> list[threading.Thread]:
    """The threads ``store``'s commit_many runs on, from now on."""
    threads: list[threading.Thread] = []
    commit_many = store.commit_many

    def recording(batches: Any) -> None:
        threads.append(threading.current_thread())
        commit_many(batches)

    store.commit_many = recording  # type: ignore[method-assign]
    return threads


@pytest.mark.parametrize("durability", ["batch", "sync"])
def test_a_waiting_caller_writes_the_batch_itself(store: Store, durability: str) -> None:
    # No hand-off to the writer thread and back: flush (batch mode, the thread
    # holding the batch open for 10 s) and a sync put commit on the calling thread.
    new_job(store)
    threads = _commits_on(store)
    with JournalWriter(store, durability=durability, max_batch=64, max_delay=10) as writer:
        for item in chain(3):
            writer.put("j1", 1, item)
        assert writer.flush()
        assert store.load("j1").commit_seq == 3
    assert threads and set(threads) == {threading.current_thread()}
    assert len(threads) == (1 if durability == "batch" else 3)


def _count_wakeups(writer: JournalWriter) -> list[int]:
    """How often ``writer``'s thread is woken for work from now on (one list item per
    ``notify``)."""
    wakeups: list[int] = []
    notify = writer._work.notify

    def counting(n: int = 1) -> None:
        wakeups.append(n)
        notify(n)

    writer._work.notify = counting  # type: ignore[method-assign]
    return wakeups


def test_a_caller_that_flushes_soon_costs_the_writer_thread_no_wakeup(store: Store) -> None:
    # The thread looks again by itself once the first record is max_delay old, so a
    # put does not wake it; the caller's flush writes the records on its own thread.
    new_job(store)
    threads = _commits_on(store)
    with JournalWriter(store, max_batch=64, max_delay=10) as writer:
        wakeups = _count_wakeups(writer)
        for item in chain(3):
            writer.put("j1", 1, item)
        assert writer.flush()
        assert wakeups == []
    assert threads == [threading.current_thread()]
    assert store.load("j1").commit_seq == 3


def test_a_put_behind_the_oldest_queued_entry_by_max_lag_says_the_thread_is_behind(
    store: Store,
) -> None:
    # The thread takes nothing by itself here (max_delay 10 s, no batch fills): the
    # second put finds the first entry max_lag (0) old, and the flush that writes
    # the backlog clears the flag.  With a max_lag not reached, it stays clear.
    new_job(store)
    items = chain(4)
    with JournalWriter(store, max_batch=64, max_delay=10, max_lag=0) as writer:
        writer.put("j1", 1, items[0])
        assert not writer.behind  # one entry: nothing waits behind another
        writer.put("j1", 1, items[1])
        assert writer.behind
        assert writer.flush()
        assert not writer.behind
    with JournalWriter(store, max_batch=64, max_delay=10, max_lag=60) as writer:
        writer.put("j1", 1, items[2])
        writer.put("j1", 1, items[3])
        assert not writer.behind
    assert store.load("j1").commit_seq == 4


def _parked(writer: JournalWriter) -> bool:
    """Wait (at most 30 s) until the writer thread waits for work without a timeout."""
    with writer._cond:
        return writer._cond.wait_for(lambda: writer._parked, timeout=30)


def test_a_parked_writer_thread_is_woken_and_commits_without_a_flush(store: Store) -> None:
    # After a whole max_delay with nothing put the thread parks; the next put wakes
    # it, and it commits the record by itself once the record is max_delay old.
    new_job(store)
    committed = threading.Event()
    threads: list[threading.Thread] = []
    commit_many = store.commit_many

    def recording(batches: Any) -> None:
        commit_many(batches)
        threads.append(threading.current_thread())
        committed.set()

    store.commit_many = recording  # type: ignore[method-assign]
    with JournalWriter(store, max_batch=64, max_delay=0.01) as writer:
        writer._work = _NotifyingCondition(writer._work, writer._cond)
        assert _parked(writer)
        wakeups = _count_wakeups(writer)
        writer.put("j1", 1, record(1))
        writer.put("j1", 1, record(2))
        assert wakeups == [1]  # the first put only
        assert committed.wait(30)
        assert threads == [writer._thread]
    assert store.load("j1").commit_seq == 2


class _NotifyingCondition(threading.Condition):
    """The writer's work condition that also wakes waiters on ``others`` when its
    thread is about to wait (so a test can wait until the thread parks)."""

    def __init__(self, work: threading.Condition, others: threading.Condition) -> None:
        super().__init__(work._lock)  # type: ignore[attr-defined]
        self._others = others

    def wait(self, timeout: float | None = None) -> bool:
        self._others.notify_all()
        return super().wait(timeout)


def test_writer_close_raises_what_nobody_reported(store: Store) -> None:
    new_job(store)
    writer = JournalWriter(store, max_delay=10)
    writer.put("j1", 1, record(3))  # a gap
    with pytest.raises(StoreError, match="seq must be 1"):
        writer.close()
    writer.close()  # reported once


def test_writer_close_commits_what_is_queued(store: Store) -> None:
    new_job(store)
    writer = JournalWriter(store, max_delay=10)
    for item in chain(7):
        writer.put("j1", 1, item)
    writer.close()
    assert store.load("j1").commit_seq == 7
    with pytest.raises(StoreError, match="closed"):
        writer.put("j1", 1, record(8))


def test_writer_errors_are_kept_reported_and_isolated(store: Store) -> None:
    new_job(store, "bad")
    new_job(store, "good")
    seen: list[tuple[str, StoreError]] = []
    reported = threading.Event()

    def on_error(job_id: str, error: StoreError) -> None:
        seen.append((job_id, error))
        reported.set()

    with JournalWriter(store, max_delay=10, on_error=on_error) as writer:
        writer.put("good", 1, record(1))
        writer.put("bad", 1, record(5))  # a gap: seq must be 1
        writer.put("good", 1, record(2))
        with pytest.raises(StoreError, match="'bad'.*seq must be 1"):
            writer.flush()
        assert reported.wait(60)
        assert [job for job, _ in seen] == ["bad"]
        assert store.load("good").commit_seq == 2  # the other job's records went in
        assert store.load("bad").commit_seq == 0
        # The failed job stays failed; later records for it are refused at once.
        with pytest.raises(StoreError, match="seq must be 1"):
            writer.put("bad", 1, record(1))
        assert isinstance(writer.error_of("bad"), StoreError)
        writer.flush()  # reported once: the next flush is clean
        writer.forget("bad")
        writer.put("bad", 1, record(1))
        writer.flush()
    assert store.load("bad").commit_seq == 1


def test_writer_stale_epoch_reaches_the_caller(store: Store) -> None:
    new_job(store, owner="ghost")
    assert store.claim("j1", "thief", 60) == 2
    with JournalWriter(store, durability="sync") as writer:
        with pytest.raises(StaleEpochError):
            writer.put("j1", 1, record(1))
        with pytest.raises(StaleEpochError):
            writer.put("j1", 1, record(1))
        writer.flush()  # the sync put already raised it: nothing left to report
    assert store.load("j1").commit_seq == 0


def test_writer_flush_async_does_not_block_the_loop(store: Store) -> None:
    new_job(store)

    async def main() -> int:
        with JournalWriter(store, max_delay=10) as writer:
            for item in chain(3):
                writer.put("j1", 1, item)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            tick = asyncio.ensure_future(ticker())
            assert await writer.flush_async(timeout=60)
            tick.cancel()
            return ticks

    assert asyncio.run(main()) >= 1
    assert store.load("j1").commit_seq == 3


def test_writer_rejects_bad_settings(store: Store) -> None:
    for bad in (
        {"durability": "eventually"},
        {"max_batch": 0},
        {"max_delay": -1},
        {"max_lag": -0.5},
        {"max_lag": True},
        {"max_lag": 61},
    ):
        with pytest.raises(StoreError, match="JournalWriter"):
            JournalWriter(store, **bad)


def test_list_jobs_orders_by_creation_not_by_id(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from routilux.store import _sql

    # Every job created in the same clock tick: the insertion order must decide.
    monkeypatch.setattr(_sql, "time", SimpleNamespace(time=lambda: 1_000.0))
    names = ["m", "z", "a", "k", "b"]
    for name in names:
        new_job(store, name)
    assert [s.job_id for s in store.list_jobs()] == names[::-1]
    assert store.claimable_jobs("flow", 60) == names


def test_heartbeat_keeps_a_lease_and_stop_releases_it(store: Store) -> None:
    from routilux.store import Heartbeat

    with Heartbeat(store, "beating", interval=0.01) as beat:
        new_job(store, owner="beating")
        assert beat.wait_beats(3, timeout=60)
        # Alive: this process's PID and a heartbeat renewed a moment ago.
        assert store.claim("j1", "me", stale_after=60) is None
    # Stopped and removed: the job is free.
    assert store.claim("j1", "me", stale_after=60) == 2
    with pytest.raises(StoreError, match="interval"):
        Heartbeat(store, interval=0)


def test_heartbeat_ends_quietly_when_its_store_is_closed(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from routilux.store import Heartbeat

    store = open_store(store_url)
    beat = Heartbeat(store, "closing", interval=0.01)
    assert beat.wait_beats(1, timeout=60)
    assert not store.closed
    with caplog.at_level(logging.WARNING, logger="routilux.store"):
        store.close()
        assert store.closed
        # The next beat finds the store closed: the thread ends instead of warning
        # at every beat for as long as the process lives.
        beat._thread.join(60)
        assert not beat._thread.is_alive()
    # Only this runner's: a runner another test left behind in this process may
    # report its own store meanwhile.
    assert not [r for r in caplog.records if "runner 'closing'" in r.getMessage()]


def test_heartbeat_reports_failures(store: Store) -> None:
    from routilux.store import Heartbeat

    failures: list[StoreError] = []
    got = threading.Event()

    def on_error(error: StoreError) -> None:
        failures.append(error)
        got.set()

    beat = Heartbeat(store, "short-lived", interval=0.01, on_error=on_error)
    store.remove_runner("short-lived")  # the next renewal finds no row
    assert got.wait(60)
    beat.stop(remove=False)
    assert "runner 'short-lived'" in str(failures[0])

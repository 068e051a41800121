"""The journal's records stored one row per transaction (``routilux_batch``), on
SQLite and PostgreSQL: the engine's records leave the task table as of the snapshot,
and a load applies the later records, so every way of writing a job loads the same.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any, cast

import pytest

from routilux.store import SCHEMA_VERSION, StaleEpochError, Store, StoreError, open_store
from routilux.store._sql import SQLStore
from store.records import as_built, as_encoded, snapshot_of, task

FORMS = {"arrays": as_built, "encoded": as_encoded}


def new_job(store: Store, job_id: str = "j1", *, tasks: list[dict[str, Any]]) -> int:
    return store.create_job(job_id, "flow", "running", snapshot_of(), tasks)


def built(seq: int, consumed: int | None = None, **fields: Any) -> dict[str, Any]:
    """A record as the engine's journal builds it: every field present."""
    return {
        "seq": seq,
        "consumed": consumed,
        "ops": [["shared_set", f"k{seq}", seq]],
        "tasks_added": fields.get("tasks_added", []),
        "tasks_removed": fields.get("tasks_removed", []),
        "status": fields.get("status"),
        "waiting_for": fields.get("waiting_for"),
    }


def pending_after(tasks: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[Any]:
    """The pending tasks' seqs and rows once ``records`` are applied (the model)."""
    pending = {row["seq"]: dict(row) for row in tasks}
    for rec in records:
        if rec["consumed"] is not None:
            del pending[rec["consumed"]]
        for seq in rec["tasks_removed"]:
            pending.pop(seq, None)
        for row in rec["tasks_added"]:
            pending[row["seq"]] = dict(row)
    return sorted(pending.items(), key=lambda item: (item[0] < 0, abs(item[0])))


def full(row: dict[str, Any]) -> dict[str, Any]:
    return {"retries": 0, "due_at": None, "extra": {}, **row}


def chain(count: int, lag: int) -> list[dict[str, Any]]:
    """Records 1..count: record n consumes task n - 1 and queues task n + lag - 1,
    so a task is consumed ``lag`` records after the one that queued it (W2's
    breadth-first queue). Some retry their own task (same seq again, retries + 1),
    some cancel a timer and set it again."""
    records = []
    for n in range(1, count + 1):
        added = [full(task(n + lag - 1))]
        removed: list[int] = []
        if n % 7 == 0:
            added.append(full(task(n - 1, retries=1, due_at=float(n))))
        if n % 11 == 0:
            removed = [10_000]
            added.append(full(task(10_000, "timer", due_at=n + 0.5)))
        records.append(built(n, consumed=n - 1, tasks_added=added, tasks_removed=removed))
    return records


def first_tasks(lag: int) -> list[dict[str, Any]]:
    return [full(task(seq)) for seq in range(lag)] + [full(task(10_000, "timer", due_at=1.0))]


def commit_in_groups(
    store: Store, job_id: str, records: list[dict[str, Any]], sizes: list[int], plain: bool
) -> None:
    start = 0
    for size in sizes:
        group = records[start : start + size]
        store.commit(job_id, 1, [dict(rec) for rec in group] if plain else as_built(group))
        start += size
    assert start == len(records)


def loaded(store: Store, job_id: str) -> tuple[list[Any], list[Any], int, int]:
    job = store.load(job_id)
    return (
        [(row["seq"], row) for row in job.tasks],
        [rec["seq"] for rec in job.deltas],
        job.snapshot_seq,
        job.commit_seq,
    )


def test_records_over_several_transactions_and_snapshots_load_as_before(store: Store) -> None:
    # The engine's records (task table left as of the snapshot) and the same records
    # from an outside caller (task table changed by each commit) load the same
    # pending tasks and deltas, at every point, and as the model says.
    lag = 9
    records = chain(60, lag)
    for job_id in ("built", "plain"):
        new_job(store, job_id, tasks=first_tasks(lag))
    steps = [(list(range(0, 25)), None), (list(range(25, 40)), 31), (list(range(40, 60)), 52)]
    done = 0
    for indexes, upto in steps:
        sizes = [len(indexes) // 2, len(indexes) - len(indexes) // 2]
        group = [records[i] for i in indexes]
        commit_in_groups(store, "built", group, sizes, plain=False)
        commit_in_groups(store, "plain", group, sizes, plain=True)
        done += len(group)
        if upto is not None:
            for job_id in ("built", "plain"):
                store.write_snapshot(job_id, 1, snapshot_of(upto=upto), upto_seq=upto)
        tasks, deltas, snapshot_seq, commit_seq = loaded(store, "built")
        assert (tasks, deltas, snapshot_seq, commit_seq) == loaded(store, "plain")
        assert tasks == pending_after(first_tasks(lag), records[:done])
        assert deltas == list(range(snapshot_seq + 1, done + 1))
        assert store.load("built").deltas == store.load("plain").deltas
    # A finished job's last records and snapshot in one transaction: nothing pending
    # is lost, nothing consumed comes back.
    fold = store.commit_then_snapshot  # type: ignore[attr-defined]
    last = [built(61, consumed=60, status="completed")]
    fold([("built", 1, as_built(last))], "built", 1, snapshot_of(), 61)
    fold([("plain", 1, [dict(last[0])])], "plain", 1, snapshot_of(), 61)
    assert loaded(store, "built") == loaded(store, "plain")
    assert loaded(store, "built")[0] == pending_after(first_tasks(lag), records + last)
    assert store.load("built").status == "completed"


def test_a_snapshot_splits_a_stored_batch(store: Store, store_url: str) -> None:
    new_job(store, tasks=[full(task(0))])
    records = [built(n, consumed=n - 1, tasks_added=[full(task(n))]) for n in range(1, 7)]
    store.commit("j1", 1, as_built(records))
    store.write_snapshot("j1", 1, snapshot_of(), upto_seq=3)
    job = store.load("j1")
    assert [rec["seq"] for rec in job.deltas] == [4, 5, 6]
    assert job.deltas == [dict(rec) for rec in records[3:]]
    assert [row["seq"] for row in job.tasks] == [6]
    # Another store (which did not write the rows) splits the rest again.
    with open_store(store_url) as other:
        other.write_snapshot("j1", 1, snapshot_of(), upto_seq=5)
        assert [rec["seq"] for rec in other.load("j1").deltas] == [6]
    store.commit("j1", 1, as_built([built(7, consumed=6)]))
    store.write_snapshot("j1", 1, snapshot_of(), upto_seq=6)
    job = store.load("j1")
    assert [rec["seq"] for rec in job.deltas] == [7] and job.tasks == []
    store.write_snapshot("j1", 1, snapshot_of(), upto_seq=7)
    assert (store.load("j1").deltas, store.load("j1").tasks) == ([], [])


def test_rows_rewritten_by_another_store_are_folded_as_they_are(
    store: Store, store_url: str
) -> None:
    # A store folds a batch row by the task effects it kept when it wrote the row
    # only while the row is still the one it wrote.
    new_job(store, tasks=[full(task(0))])
    store.commit("j1", 1, as_built([built(1, consumed=0, tasks_added=[full(task(1))])]))
    with open_store(store_url) as other:
        other.delete_job("j1")
        new_job(other, tasks=[full(task(0))])
        other.commit("j1", 1, as_built([built(1, consumed=0, tasks_added=[full(task(5))])]))
    store.write_snapshot("j1", 1, snapshot_of(), upto_seq=1)
    assert [row["seq"] for row in store.load("j1").tasks] == [5]


def test_plain_records_after_the_engines_are_checked_against_the_pending_tasks(
    store: Store,
) -> None:
    new_job(store, tasks=[full(task(0)), full(task(1))])
    store.commit(
        "j1",
        1,
        as_built([built(1, consumed=0, tasks_added=[full(task(2)), full(task(3))])]),
    )
    plain = {"seq": 2, "ops": [], "consumed": 0}
    with pytest.raises(StoreError, match=r"consume tasks \[0\] that are not pending"):
        store.commit("j1", 1, [plain])
    with pytest.raises(StoreError, match=r"add tasks \[2\] that are already pending"):
        store.commit("j1", 1, [{"seq": 2, "ops": [], "tasks_added": [task(2)]}])
    with pytest.raises(StoreError, match=r"seq must be 2 .* got 3"):
        store.commit("j1", 1, [{"seq": 3, "ops": []}])
    store.commit("j1", 1, [{"seq": 2, "ops": [], "consumed": 2}])
    store.commit("j1", 1, as_built([built(3, consumed=3)]))
    with pytest.raises(StoreError, match=r"consume tasks \[3\] that are not pending"):
        store.commit("j1", 1, [{"seq": 4, "ops": [], "consumed": 3}])
    job = store.load("j1")
    assert [row["seq"] for row in job.tasks] == [1] and job.commit_seq == 3
    assert [rec["seq"] for rec in job.deltas] == [1, 2, 3]
    # The engine's records keep the seq and epoch checks.
    with pytest.raises(StoreError, match=r"seq must be 4 .* got 5"):
        store.commit("j1", 1, as_built([built(5)]))
    with pytest.raises(StoreError, match="epoch 2 refused"):
        store.commit("j1", 2, as_built([built(4)]))


# Statements of the store before routilux_batch: each commit deleted its consumed
# task rows, inserted its added ones and one routilux_delta row per record.
def _old_layout(store_url: str) -> Any:
    if store_url.startswith("sqlite"):
        conn = sqlite3.connect(store_url[len("sqlite:///") :], isolation_level=None)
        return conn, "?"
    import psycopg

    return psycopg.connect(store_url, autocommit=True), "%s"


def _version(store_url: str) -> str:
    conn, _ = _old_layout(store_url)
    try:
        row = conn.execute("SELECT value FROM routilux_meta WHERE key = 'schema_version'")
        return str(row.fetchone()[0])
    finally:
        conn.close()


def test_a_store_written_the_old_way_opens_loads_and_takes_new_commits(store_url: str) -> None:
    import json

    with open_store(store_url) as first:
        new_job(first, tasks=[full(task(0)), full(task(1))])
    conn, mark = _old_layout(store_url)
    try:
        conn.execute("DROP TABLE routilux_batch")
        old = [
            built(1, consumed=0, tasks_added=[full(task(2))]),
            built(2, consumed=1, tasks_added=[full(task(3))]),
        ]
        for rec in old:
            conn.execute(
                f"INSERT INTO routilux_delta (job_id, seq, consumed, record)"
                f" VALUES ('j1', {mark}, {mark}, {mark})",
                (rec["seq"], rec["consumed"], json.dumps(rec)),
            )
        conn.execute("DELETE FROM routilux_task WHERE job_id = 'j1' AND seq IN (0, 1)")
        for seq in (2, 3):
            conn.execute(
                "INSERT INTO routilux_task (job_id, seq, kind, routine, slot, data, retries,"
                f" due_at, extra) VALUES ('j1', {mark}, 'ready', 'r', 'in', {mark}, 0, NULL,"
                f" {mark})",
                (seq, json.dumps({"n": seq}), "{}"),
            )
        conn.execute("UPDATE routilux_job SET commit_seq = 2 WHERE job_id = 'j1'")
        conn.execute("UPDATE routilux_meta SET value = '1' WHERE key = 'schema_version'")
    finally:
        conn.close()
    if store_url.startswith("sqlite"):
        from routilux.store import SQLiteStore

        with SQLiteStore(store_url[len("sqlite:///") :], read_only=True) as reader:
            job = reader.load("j1")
            assert [row["seq"] for row in job.tasks] == [2, 3]
            assert job.deltas == old
    assert _version(store_url) == "1"  # read as it is
    with open_store(store_url) as reopened:
        # Opened for writing: upgraded, so code that reads version 1 refuses it.
        assert _version(store_url) == str(SCHEMA_VERSION)
        job = reopened.load("j1")
        assert [row["seq"] for row in job.tasks] == [2, 3] and job.deltas == old
        new = [built(3, consumed=2, tasks_added=[full(task(4))]), built(4, consumed=3)]
        reopened.commit("j1", 1, as_built(new))
        job = reopened.load("j1")
        assert [row["seq"] for row in job.tasks] == [4]
        assert job.deltas == old + new
        reopened.write_snapshot("j1", 1, snapshot_of(), upto_seq=3)
        job = reopened.load("j1")
        assert ([row["seq"] for row in job.tasks], job.deltas) == ([4], new[1:])
        # The old rows the snapshot covers are dropped with it.
        assert _rows(store_url, "SELECT seq FROM routilux_delta WHERE job_id = 'j1'") == []
        with pytest.raises(StoreError, match=r"consume tasks \[3\] that are not pending"):
            reopened.commit("j1", 1, [{"seq": 5, "ops": [], "consumed": 3}])
        reopened.commit("j1", 1, [{"seq": 5, "ops": [], "consumed": 4}])
        reopened.write_snapshot("j1", 1, snapshot_of(), upto_seq=5)
        job = reopened.load("j1")
        assert (job.tasks, job.deltas, job.snapshot_seq) == ([], [], 5)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_folded_snapshot_inside_the_engines_records_keeps_the_later_ones(
    store: Store, form: str
) -> None:
    # commit_then_snapshot with the engine's records: the ones the snapshot covers
    # change the task table, the later ones are stored -- with no deltas before them
    # (one statement fewer) and with some.
    fold = store.commit_then_snapshot  # type: ignore[attr-defined]
    for job_id in ("fresh", "older"):
        new_job(store, job_id, tasks=[full(task(0))])
    store.commit("older", 1, as_built([built(1, consumed=0, tasks_added=[full(task(1))])]))
    for job_id, first in (("fresh", 1), ("older", 2)):
        records = [
            built(n, consumed=n - 1, tasks_added=[full(task(n))]) for n in range(first, first + 4)
        ]
        fold([(job_id, 1, FORMS[form](records))], job_id, 1, snapshot_of(), first + 1)
        job = store.load(job_id)
        assert (job.snapshot_seq, job.commit_seq) == (first + 1, first + 3)
        assert job.deltas == [dict(rec) for rec in records[2:]]
        assert [row["seq"] for row in job.tasks] == [first + 3]
    assert store.load_many(["older", "fresh"]) == [store.load("older"), store.load("fresh")]
    # The fold keeps the fast UPDATE's checks: a stale epoch writes nothing.
    with pytest.raises(StoreError, match="epoch 2 refused"):
        fold([("fresh", 2, as_built([built(5, consumed=4)]))], "fresh", 2, snapshot_of(), 5)
    assert store.load("fresh").commit_seq == 4


def _rows(store_url: str, statement: str) -> list[Any]:
    conn, _ = _old_layout(store_url)
    try:
        return list(conn.execute(statement).fetchall())
    finally:
        conn.close()


def _stored_records(store_url: str, job_id: str) -> list[Any]:
    import json

    found = _rows(
        store_url, f"SELECT records FROM routilux_batch WHERE job_id = '{job_id}' ORDER BY seq"
    )
    return [json.loads(row[0]) for row in found]


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_row_holds_arrays_and_loads_back_as_the_records_committed(
    store: Store, store_url: str, form: str
) -> None:
    new_job(store, "built", tasks=first_tasks(3))
    new_job(store, "plain", tasks=first_tasks(3))
    records = chain(8, 3)
    records[4]["status"] = "waiting"
    records[4]["waiting_for"] = {"set": [{"prompt": "go?"}]}
    records[6]["status"] = "running"
    records[6]["waiting_for"] = {"clear": True}
    store.commit("built", 1, FORMS[form](records[:5]))
    store.commit("built", 1, FORMS[form](records[5:]))
    store.commit("plain", 1, [dict(rec) for rec in records])
    for job_id in ("built", "plain"):
        rows = _stored_records(store_url, job_id)
        # Every record in the version-3 form: an array of the record's fields.
        assert rows and all(type(rec) is list and len(rec) == 7 for row in rows for rec in row)
        assert [rec[0] for row in rows for rec in row] == list(range(1, 9))
        job = store.load(job_id)
        assert job.deltas == records
        assert job.status == "running" and job.waiting_for is None
        assert [row["seq"] for row in job.tasks] == [
            seq for seq, _ in pending_after(first_tasks(3), records)
        ]


def test_engine_records_with_a_gap_are_refused_and_write_nothing(
    store: Store, store_url: str
) -> None:
    new_job(store, tasks=[full(task(0))])
    with pytest.raises(StoreError, match=r"record\[1\]: seq must be 2 .* got 3"):
        store.commit("j1", 1, as_built([built(1, consumed=0), built(3)]))
    with pytest.raises(StoreError, match=r"record\[1\]: seq must be 2 .* got 1"):
        store.commit("j1", 1, as_built([built(1, consumed=0), built(1)]))
    job = store.load("j1")
    assert (job.commit_seq, job.deltas, [row["seq"] for row in job.tasks]) == (0, [], [0])
    assert _stored_records(store_url, "j1") == []


@pytest.mark.parametrize("form", sorted(FORMS))
def test_the_net_taken_from_the_records_in_memory_is_the_general_paths(
    store: Store, store_url: str, form: str
) -> None:
    # The same records through the engine's path (net effect computed at the fold,
    # from the records this store kept) and through the general path (each commit
    # applied to the task table): the task tables are the same, column by column.
    lag = 5
    records = chain(40, lag)
    records[12]["tasks_added"][0]["extra"] = {"source": ["a", "b"], "more": [1.5, None]}
    records[30]["tasks_added"][0]["data"] = ["é", {"nested": [True, 2.25]}]
    for job_id in ("built", "plain"):
        new_job(store, job_id, tasks=first_tasks(lag))
    for start, stop, upto in ((0, 17, 17), (17, 30, 24), (30, 40, 40)):
        store.commit("built", 1, FORMS[form](records[start:stop]))
        store.commit("plain", 1, [dict(rec) for rec in records[start:stop]])
        for job_id in ("built", "plain"):
            store.write_snapshot(job_id, 1, snapshot_of(), upto_seq=upto)
        tables = [
            _rows(
                store_url,
                f"SELECT seq, kind, routine, slot, data, retries, due_at, extra FROM"
                f" routilux_task WHERE job_id = '{job_id}' ORDER BY seq",
            )
            for job_id in ("built", "plain")
        ]
        if upto == stop:  # else the general path's table is ahead of the snapshot
            assert tables[0] == tables[1] and tables[0]
        assert loaded(store, "built") == loaded(store, "plain")
    assert loaded(store, "built")[0] == pending_after(first_tasks(lag), records)


def _v2_store(store_url: str, records: list[dict[str, Any]]) -> None:
    """A store as schema version 2 wrote it: one batch row of ``records`` as objects
    (the task table as of the snapshot, the row's effects not applied)."""
    import json

    with open_store(store_url) as first:
        new_job(first, tasks=first_tasks(3))
    conn, mark = _old_layout(store_url)
    try:
        conn.execute(
            "INSERT INTO routilux_batch (job_id, seq, first_seq, applied, records)"
            f" VALUES ('j1', {mark}, 1, 0, {mark})",
            (records[-1]["seq"], json.dumps(records)),
        )
        conn.execute(f"UPDATE routilux_job SET commit_seq = {records[-1]['seq']}")
        conn.execute("UPDATE routilux_meta SET value = '2' WHERE key = 'schema_version'")
    finally:
        conn.close()


def test_a_version_2_store_opens_upgraded_loads_and_folds_its_object_rows(
    store_url: str,
) -> None:
    records = chain(12, 3)
    _v2_store(store_url, records[:6])
    expected = pending_after(first_tasks(3), records[:6])
    if store_url.startswith("sqlite"):
        from routilux.store import SQLiteStore

        with SQLiteStore(store_url[len("sqlite:///") :], read_only=True) as reader:
            job = reader.load("j1")
            assert job.deltas == records[:6]
            assert [(row["seq"], row) for row in job.tasks] == expected
        assert _version(store_url) == "2"  # read as it is
    with open_store(store_url) as reopened:
        assert _version(store_url) == str(SCHEMA_VERSION) == "3"
        job = reopened.load("j1")
        assert job.deltas == records[:6]
        assert [(row["seq"], row) for row in job.tasks] == expected
        # A new row of arrays after the row of objects; a snapshot splits the new
        # row and folds both.
        reopened.commit("j1", 1, as_built(records[6:]))
        assert [type(row[0]) for row in _stored_records(store_url, "j1")] == [dict, list]
        reopened.write_snapshot("j1", 1, snapshot_of(), upto_seq=9)
        job = reopened.load("j1")
        assert job.deltas == records[9:]
        assert [(row["seq"], row) for row in job.tasks] == pending_after(first_tasks(3), records)
        assert [rec[0] for row in _stored_records(store_url, "j1") for rec in row] == [10, 11, 12]
    with open_store(store_url) as other:
        other.write_snapshot("j1", 1, snapshot_of(), upto_seq=12)
        job = other.load("j1")
        assert job.deltas == [] and [(row["seq"], row) for row in job.tasks] == pending_after(
            first_tasks(3), records
        )


def test_only_committed_engine_rows_are_kept_for_the_fold(store: Store) -> None:
    # The batch rows a commit writes are kept in memory for the snapshot that folds
    # them only once the transaction has committed: a transaction that fails after
    # writing one keeps none, and leaves the store's lock free for other threads.
    sql = cast(SQLStore, store)
    for job_id in ("j1", "j2"):
        new_job(store, job_id, tasks=[full(task(0))])
    with pytest.raises(StaleEpochError, match="'j2'"):
        store.commit_many(
            [("j1", 1, as_built([built(1, consumed=0)])), ("j2", 2, as_built([built(1)]))]
        )
    assert (sql._nets, sql._new_nets) == ({}, {})
    free: list[bool] = []

    def take_lock() -> None:
        free.append(sql._lock.acquire(timeout=10))
        if free[-1]:
            sql._lock.release()

    other = threading.Thread(target=take_lock)
    other.start()
    other.join()
    assert free == [True]
    store.commit_many([("j1", 1, as_built([built(1, consumed=0)]))])
    assert list(sql._nets) == [("j1", 1)] and sql._new_nets == {}
    assert store.load("j1").commit_seq == 1 and store.load("j2").commit_seq == 0


@pytest.mark.parametrize("form", ["plain", "arrays"])
def test_more_tasks_than_one_statement_takes_leave_together(
    store: Store, store_url: str, form: str
) -> None:
    # 150 tasks consumed by one commit (plain records delete them as they go in) or
    # folded by one snapshot (the engine's): deleted a chunk of seqs per statement.
    count = 150
    new_job(store, tasks=[full(task(seq)) for seq in range(count)])
    records = [built(seq + 1, consumed=seq) for seq in range(count)]
    store.commit("j1", 1, [dict(r) for r in records] if form == "plain" else as_built(records))
    store.write_snapshot("j1", 1, snapshot_of(), upto_seq=count)
    assert store.load("j1").tasks == []
    assert _rows(store_url, "SELECT seq FROM routilux_task WHERE job_id = 'j1'") == []


def test_a_store_without_old_deltas_makes_no_delete_of_them(tmp_path: Any) -> None:
    # Nothing writes routilux_delta since schema version 2: a store that finds it
    # empty when it opens folds its snapshots without a DELETE there, whichever path
    # the snapshot takes (after a commit of its own, or with its records).
    from routilux.store import SQLiteStore

    with SQLiteStore(tmp_path / "jobs.db") as store:
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)
        new_job(store, tasks=[full(task(0))])
        store.commit("j1", 1, as_built([built(1, consumed=0, tasks_added=[full(task(1))])]))
        store.write_snapshot("j1", 1, snapshot_of(), upto_seq=1)
        store.commit("j1", 1, [dict(built(2, consumed=1))])
        store.write_snapshot("j1", 1, snapshot_of(), upto_seq=2)
        assert not [text for text in statements if "routilux_delta" in text]
        assert statements and store.load("j1").tasks == []


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_jobs_end_folds_the_rows_it_stored_before_in_the_same_step(
    store: Store, store_url: str, form: str
) -> None:
    # A sync job's end: its earlier records are stored rows (this store wrote them)
    # when its last record comes with the final snapshot.  The fold takes them from
    # the job row's one checked UPDATE, whether the snapshot covers the last record
    # or not, and keeps every check: a stale epoch or a seq that does not continue
    # the job's writes nothing.
    fold = store.commit_then_snapshot  # type: ignore[attr-defined]
    for job_id in ("all", "some"):
        new_job(store, job_id, tasks=[full(task(0))])
        store.commit(job_id, 1, FORMS[form]([built(1, consumed=0, tasks_added=[full(task(1))])]))
        store.commit(job_id, 1, FORMS[form]([built(2, consumed=1, tasks_added=[full(task(2))])]))
    with pytest.raises(StaleEpochError, match="epoch 2 refused"):
        fold([("all", 2, as_built([built(3, consumed=2)]))], "all", 2, snapshot_of(), 3)
    with pytest.raises(StoreError, match="seq must be 3"):
        fold([("all", 1, as_built([built(4, consumed=2)]))], "all", 1, snapshot_of(), 3)
    assert loaded(store, "all") == loaded(store, "some")
    assert loaded(store, "all")[1:] == ([1, 2], 0, 2)
    last = built(3, consumed=2, tasks_added=[full(task(3))], status="completed")
    fold([("all", 1, FORMS[form]([last]))], "all", 1, snapshot_of(), 3)
    fold([("some", 1, FORMS[form]([last]))], "some", 1, snapshot_of(), 2)
    for job_id, deltas, snapshot_seq in (("all", [], 3), ("some", [last], 2)):
        job = store.load(job_id)
        assert (job.status, job.snapshot_seq, job.commit_seq) == ("completed", snapshot_seq, 3)
        assert job.deltas == deltas
        assert [(row["seq"], row) for row in job.tasks] == [(3, full(task(3)))]
    assert [rec[0] for row in _stored_records(store_url, "some") for rec in row] == [3]
    assert _stored_records(store_url, "all") == []


def test_a_fold_on_rows_this_store_no_longer_holds_reads_what_is_stored(
    store: Store, store_url: str
) -> None:
    # What this store remembers of a job's rows only picks the statement: rows
    # another store folded since, or rows only another store wrote, are taken as
    # the database holds them.
    fold = store.commit_then_snapshot  # type: ignore[attr-defined]
    for job_id in ("folded", "foreign"):
        new_job(store, job_id, tasks=[full(task(0))])
    store.commit("folded", 1, as_built([built(1, consumed=0, tasks_added=[full(task(1))])]))
    with open_store(store_url) as other:
        other.write_snapshot("folded", 1, snapshot_of(), upto_seq=1)
        other.commit("foreign", 1, as_built([built(1, consumed=0, tasks_added=[full(task(1))])]))
    for job_id in ("folded", "foreign"):
        fold([(job_id, 1, as_built([built(2, consumed=1)]))], job_id, 1, snapshot_of(), 2)
        assert loaded(store, job_id) == ([], [], 2, 2)
        assert _stored_records(store_url, job_id) == []


def _statements_of(store: Any, call: Any) -> list[str]:
    """What ``call`` runs on a SQLite store: each statement's verb and table."""
    import re

    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    try:
        call()
    finally:
        store._conn.set_trace_callback(None)
    return [
        " ".join([text.split()[0], *re.findall(r"routilux_\w+", text)[:1]]) for text in statements
    ]


def test_a_jobs_end_takes_as_few_statements_as_it_needs(tmp_path: Any) -> None:
    # A short job's end (no rows stored): the job row's checked UPDATE, the
    # snapshot, the consumed task.  A sync job's end (this store wrote its rows):
    # the same with its rows read and deleted -- no SELECT of the job row, no
    # UPDATE that misses first.
    from routilux.store import SQLiteStore

    with SQLiteStore(tmp_path / "jobs.db") as store:
        for job_id in ("short", "sync"):
            new_job(store, job_id, tasks=[full(task(0))])
        first = built(1, consumed=0, tasks_added=[full(task(1))])
        store.commit("sync", 1, as_built([first]))
        end = [built(2, consumed=1, status="completed")]
        short = _statements_of(
            store,
            lambda: store.commit_then_snapshot(
                [("short", 1, as_built([first, *end]))], "short", 1, snapshot_of(), 2
            ),
        )
        sync = _statements_of(
            store,
            lambda: store.commit_then_snapshot(
                [("sync", 1, as_built(end))], "sync", 1, snapshot_of(), 2
            ),
        )
        writes = ["BEGIN", "UPDATE routilux_job", "UPDATE routilux_snapshot"]
        assert short == [*writes, "DELETE routilux_task", "COMMIT"]
        assert sync == [
            *writes,
            "SELECT routilux_batch",
            "DELETE routilux_batch",
            "DELETE routilux_task",
            "COMMIT",
        ]
        for job_id in ("short", "sync"):
            assert loaded(store, job_id) == ([], [], 2, 2)
            assert store.load(job_id).status == "completed"

"""What only the SQLite store does: its settings, its refusal of bad files (without
touching them), full disks, read-only files, URL forms, and a kill -9 in the middle of
group commits."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import routilux  # noqa: F401  (registers the JobState layout)
from routilux.job_state import JobState
from routilux.serialization import layout_of
from routilux.store import SQLiteStore, StoreError, open_store

SNAPSHOT = layout_of(JobState).serialize(JobState("flow"))


def make_store_file(path: Path, padding: int = 200_000) -> None:
    """A real store of several pages (a big snapshot), closed and checkpointed."""
    with SQLiteStore(path) as store:
        snapshot = dict(SNAPSHOT, shared_data={"pad": "x" * padding})
        store.create_job("j1", "flow", "running", snapshot, [])


def pragma(store: SQLiteStore, name: str) -> Any:
    return store._conn.execute(f"PRAGMA {name}").fetchone()[0]


def test_wal_and_synchronous_settings(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "a.db") as store:
        assert pragma(store, "journal_mode") == "wal"
        assert pragma(store, "synchronous") == 1  # NORMAL
        assert pragma(store, "busy_timeout") == 5000
    with SQLiteStore(tmp_path / "b.db", synchronous="full", busy_timeout=0.25) as store:
        assert pragma(store, "synchronous") == 2  # FULL
        assert pragma(store, "busy_timeout") == 250
    with pytest.raises(StoreError, match="synchronous must be 'NORMAL' or 'FULL'"):
        SQLiteStore(tmp_path / "c.db", synchronous="OFF")
    with pytest.raises(StoreError, match="busy_timeout"):
        SQLiteStore(tmp_path / "c.db", busy_timeout=-1)


def test_connection_tuned_for_large_transactions(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "a.db") as store:
        assert pragma(store, "cache_size") == -16000  # 16 MB
        assert pragma(store, "wal_autocheckpoint") == 4000
        assert pragma(store, "secure_delete") == 2  # FAST


def test_freed_pages_are_not_written_again_as_zeros(tmp_path: Path) -> None:
    # A job's megabyte of snapshot freed by delete_job: with secure_delete ON (the
    # default of many builds) each freed page would be zeroed and written to the WAL.
    with SQLiteStore(tmp_path / "a.db") as store:
        store.create_job("j1", "flow", "running", dict(SNAPSHOT, shared_data={"pad": "x" * 2**20}))
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.delete_job("j1")
        _, frames, _ = store._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert frames < 32  # the 256 pages of the snapshot are not among them


@pytest.mark.parametrize(
    "content",
    [
        os.urandom(8192),
        b"SQLite format 3\x00" + os.urandom(4000),
        b"hello",
    ],
    ids=["random", "header-then-garbage", "short"],
)
def test_corrupt_file_is_refused_and_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "jobs.db"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=str(path)):
        SQLiteStore(path)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.db"]


def test_truncated_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    make_store_file(path)
    whole = path.read_bytes()
    assert len(whole) > 16 * 4096
    cut = whole[: len(whole) // 2]
    path.write_bytes(cut)
    with pytest.raises(StoreError, match=f"{path}.*truncated"):
        open_store(f"sqlite:///{path}")
    assert path.read_bytes() == cut


def test_other_database_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=f"{path}.*customers.*not a Routilux store"):
        SQLiteStore(path)
    assert path.read_bytes() == before


def test_missing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "jobs.db"
    with pytest.raises(StoreError, match=str(path)):
        SQLiteStore(path)


def test_a_failed_transaction_rolls_back_and_frees_the_store(tmp_path: Path) -> None:
    # A driver error inside a transaction is a StoreError naming the store; any other
    # error passes as it is; either way the transaction is rolled back and the store
    # (its lock, its connection) serves the next call -- from another thread too.
    import threading

    with SQLiteStore(tmp_path / "a.db") as store:
        with pytest.raises(StoreError, match="a.db"):
            with store._transaction(write=True) as cur:
                cur.execute("INSERT INTO routilux_meta (key, value) VALUES ('k', 'v')")
                cur.execute("SELECT * FROM no_such_table")
        with pytest.raises(KeyError):
            with store._transaction(write=True) as cur:
                cur.execute("INSERT INTO routilux_meta (key, value) VALUES ('k', 'v')")
                raise KeyError("boom")
        assert not store._conn.in_transaction
        done: list[bool] = []
        other = threading.Thread(
            target=lambda: done.append(store.create_job("j1", "flow", "running", SNAPSHOT))
        )
        other.start()
        other.join()
        assert done == [1]
        assert store._conn.execute(
            "SELECT count(*) FROM routilux_meta WHERE key = 'k'"
        ).fetchone() == (0,)
        store.close()
        with pytest.raises(StoreError, match="closed"):
            with store._transaction(write=False):
                pass


def test_a_new_jobs_one_task_is_checked_and_kept_as_given(tmp_path: Path) -> None:
    # create_job's one-task path: a seq already stored (a row left over under the
    # job's id) refuses the job, writing nothing; an entry flag is kept as given
    # (1 is not written as true).
    entry = {"seq": 0, "kind": "ready", "routine": "r", "slot": "trigger", "data": {}}
    with SQLiteStore(tmp_path / "a.db") as store:
        store._conn.execute(
            "INSERT INTO routilux_task (job_id, seq, kind, routine, slot, data, retries,"
            " due_at, extra) VALUES ('j1', 0, 'ready', 'r', 'trigger', '{}', 0, NULL, '{}')"
        )
        with pytest.raises(StoreError, match=r"'j1'.*seq of \[0\]"):
            store.create_job(
                "j1", "flow", "running", SNAPSHOT, [dict(entry, extra={"entry": True})]
            )
        assert store._conn.execute("SELECT count(*) FROM routilux_job").fetchone() == (0,)
        store.create_job("j2", "flow", "running", SNAPSHOT, [dict(entry, extra={"entry": 1})])
        store.create_job("j3", "flow", "running", SNAPSHOT, [dict(entry, extra={"entry": True})])
        extras = store._conn.execute(
            "SELECT job_id, extra FROM routilux_task WHERE job_id != 'j1' ORDER BY job_id"
        ).fetchall()
        assert extras == [("j2", '{"entry":1}'), ("j3", '{"entry":true}')]
        assert store.load("j3").tasks[0]["extra"] == {"entry": True}


def test_full_disk_fails_the_commit_and_keeps_the_store(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with SQLiteStore(path) as store:
        store.create_job("j1", "flow", "running", SNAPSHOT, [])
        # A cap on the file's pages is how SQLite reports a full disk (SQLITE_FULL).
        pages = pragma(store, "page_count")
        store._conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        big = {"seq": 1, "consumed": None, "ops": [["shared_set", "k", "x" * 100_000]]}
        with pytest.raises(StoreError, match=f"{path}.*full"):
            store.commit("j1", 1, [big])
        assert store.load("j1").commit_seq == 0
        store.commit("j1", 1, [{"seq": 1, "consumed": None, "ops": []}])
        assert store.load("j1").commit_seq == 1


def test_read_only_mode_reads_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    make_store_file(path, padding=10)
    with SQLiteStore(path, read_only=True) as store:
        assert [s.job_id for s in store.list_jobs()] == ["j1"]
        with pytest.raises(StoreError, match=f"{path}.*readonly"):
            store.set_status("j1", 1, "failed")
    with pytest.raises(StoreError, match="no such file"):
        SQLiteStore(tmp_path / "absent.db", read_only=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; see the mode=ro test")
def test_read_only_file_fails_with_store_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    make_store_file(path, padding=10)
    for name in os.listdir(tmp_path):
        os.chmod(tmp_path / name, 0o444)
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(StoreError, match=str(path)):
            with SQLiteStore(path) as store:
                store.set_status("j1", 1, "failed")
    finally:
        os.chmod(tmp_path, 0o755)


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///rel.db") as store:
        assert isinstance(store, SQLiteStore) and store.path == Path("rel.db")
    assert (tmp_path / "rel.db").exists()
    with open_store(f"sqlite:///{tmp_path / 'abs.db'}") as store:
        assert store.path == tmp_path / "abs.db"
    for plain in ("plain.db", "plain.sqlite", "plain.sqlite3", tmp_path / "p.db"):
        with open_store(plain) as store:
            assert isinstance(store, SQLiteStore)
    with open_store("sqlite:///opt.db", synchronous="FULL") as store:
        assert store.synchronous == "FULL"
    for bad in ("redis://x", "jobs.txt", "sqlite://", "sqlite:///", "", "mysql://h/db"):
        with pytest.raises(StoreError, match="sqlite:///relative/path.db"):
            open_store(bad)


# ---------------------------------------------------------------- kill -9

CHILD = textwrap.dedent(
    """
    import os, sys
    import routilux
    from routilux.job_state import JobState
    from routilux.serialization import layout_of
    from routilux.store import SQLiteStore, JournalWriter

    path, report = sys.argv[1], int(sys.argv[2])
    store = SQLiteStore(path)
    store.create_job("crash", "flow", "running", layout_of(JobState).serialize(JobState("flow")),
                     [{"seq": 0, "kind": "ready", "routine": "r", "slot": "in", "data": 0}])
    writer = JournalWriter(store, durability="batch", max_batch=64, max_delay=0.002)
    seq = 0
    while True:
        seq += 1
        writer.put("crash", 1, {
            "seq": seq, "consumed": seq - 1,
            "ops": [["shared_set", "count", seq]],
            "tasks_added": [{"seq": seq, "kind": "ready", "routine": "r", "slot": "in",
                             "data": seq}],
        })
        if seq % 50 == 0:
            writer.flush()
            os.write(report, f"{seq}\\n".encode())
    """
)


@pytest.mark.parametrize("flushes", [1, 7, 23])
def test_kill_9_keeps_every_flushed_record_and_no_partial_batch(
    tmp_path: Path, flushes: int
) -> None:
    path = tmp_path / "crash.db"
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(write_end)], pass_fds=(write_end,)
    )
    os.close(write_end)
    flushed = 0
    try:
        with os.fdopen(read_end, "rb") as reports:
            for _ in range(flushes):
                line = reports.readline()
                assert line, f"child died early with {child.wait()}"
                flushed = int(line)
            os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    with SQLiteStore(path) as store:
        job = store.load("crash")
    assert job.commit_seq >= flushed
    # Every committed record is there, once, in order, and the task table matches the
    # last of them: a transaction is either wholly there or not at all.
    assert [delta["seq"] for delta in job.deltas] == list(range(1, job.commit_seq + 1))
    assert [task["seq"] for task in job.tasks] == [job.commit_seq]
    assert job.deltas[-1]["ops"] == [["shared_set", "count", job.commit_seq]]


def test_full_disk_reaches_the_writers_caller(tmp_path: Path) -> None:
    from routilux.store import JournalWriter

    with SQLiteStore(tmp_path / "jobs.db") as store:
        store.create_job("j1", "flow", "running", SNAPSHOT, [])
        pages = pragma(store, "page_count")
        store._conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        errors: list[str] = []
        with JournalWriter(store, on_error=lambda job, error: errors.append(job)) as writer:
            writer.put("j1", 1, {"seq": 1, "consumed": None, "ops": [["s", "k", "x" * 100_000]]})
            with pytest.raises(StoreError, match="full"):
                writer.flush()
            with pytest.raises(StoreError, match="full"):
                writer.put("j1", 1, {"seq": 1, "consumed": None, "ops": []})
        assert errors == ["j1"]
        assert store.load("j1").commit_seq == 0

"""Control requests (pause/cancel asked of a job's owner from another process) and the
watcher's query of changed jobs, on SQLite and PostgreSQL; and an older SQLite store
(without the control table) gains the table when opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import routilux  # noqa: F401  (registers the JobState layout)
from routilux.job_state import JobState
from routilux.serialization import layout_of
from routilux.store import JobNotFoundError, SQLiteStore, Store, StoreError


def _new_job(store: Store, job_id: str, owner: str | None = "runner-a") -> int:
    snapshot = layout_of(JobState).serialize(JobState("flow"))
    return store.create_job(job_id, "flow", "running", snapshot, owner=owner)


def test_requests_reach_the_owner_once_in_order(store: Store) -> None:
    store.register_runner("runner-a")
    store.register_runner("runner-b")
    _new_job(store, "j1", "runner-a")
    _new_job(store, "j2", "runner-b")
    store.request_control("j1", "pause", "from the UI")
    store.request_control("j2", "cancel")
    store.request_control("j1", "cancel")
    assert store.take_control_requests("runner-a") == [
        ("j1", "pause", "from the UI"),
        ("j1", "cancel", ""),
    ]
    assert store.take_control_requests("runner-a") == []  # taken once
    assert store.take_control_requests("runner-b") == [("j2", "cancel", "")]


def test_requests_for_idle_or_finished_jobs_are_dropped(store: Store) -> None:
    store.register_runner("runner-a")
    epoch = _new_job(store, "j1")
    _new_job(store, "j2")
    store.request_control("j1", "pause")
    store.request_control("j2", "cancel")
    store.set_status("j1", epoch, "completed")
    store.set_status("j2", 1, "paused")
    assert store.take_control_requests("runner-a") == []
    store.set_status("j2", 1, "running")
    assert store.take_control_requests("runner-a") == []  # dropped, not kept for later


def test_bad_requests_are_refused(store: Store) -> None:
    _new_job(store, "j1")
    with pytest.raises(JobNotFoundError):
        store.request_control("nope", "pause")
    with pytest.raises(StoreError, match="one of"):
        store.request_control("j1", "explode")
    with pytest.raises(StoreError, match="reason"):
        store.request_control("j1", "pause", 3)  # type: ignore[arg-type]


def test_jobs_changed_since(store: Store) -> None:
    _new_job(store, "j1")
    first = store.load("j1").updated_at
    _new_job(store, "j2")
    store.set_status("j1", 1, "paused")
    changed = store.jobs_changed_since(first)
    assert [summary.job_id for summary, _ in changed] == ["j2", "j1"]
    assert changed[-1][0].status == "paused" and changed[-1][1] == 0
    later = store.load("j1").updated_at
    assert [s.job_id for s, _ in store.jobs_changed_since(later + 1)] == []
    with pytest.raises(StoreError, match="since"):
        store.jobs_changed_since("yesterday")  # type: ignore[arg-type]


def test_an_older_sqlite_store_gains_the_control_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:  # the store as the first version wrote it
        conn.execute("DROP TABLE routilux_control")
        conn.execute("DROP INDEX routilux_job_by_update")
    store = SQLiteStore(path)
    try:
        _new_job(store, "j1")
        store.request_control("j1", "pause")
        assert store.take_control_requests("runner-a") == [("j1", "pause", "")]
    finally:
        store.close()

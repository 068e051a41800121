"""W7 (store): commit throughput of the SQLite job store beside plain ``sqlite3``.

Three ways of making N delivery records durable in one WAL-mode SQLite file
(``synchronous=NORMAL``), all in this process:

- ``plain sqlite3``: an ``INSERT`` of the record's JSON per transaction, no checks —
  the floor for one commit per record;
- ``store.commit`` with 1 record per call, and with 64 records per call: each record
  consumes the previous record's task and adds its own (a delete, an insert, a delta
  row, the job row update), as a chain of deliveries does;
- ``JournalWriter`` in batch mode (``put`` per record, one ``flush`` at the end): what
  a running job pays per delivery.

Reported as records per second and microseconds per record.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

from _common import row  # noqa: E402

import routilux  # noqa: E402,F401
from routilux.job_state import JobState  # noqa: E402
from routilux.serialization import layout_of  # noqa: E402
from routilux.store import JournalWriter, SQLiteStore  # noqa: E402


def records(count: int) -> list[dict[str, Any]]:
    return [
        {
            "seq": seq,
            "consumed": seq - 1,
            "ops": [["shared_set", "count", seq]],
            "tasks_added": [
                {"seq": seq, "kind": "ready", "routine": "worker", "slot": "in", "data": seq}
            ],
        }
        for seq in range(1, count + 1)
    ]


def fresh_store(folder: str, name: str) -> SQLiteStore:
    store = SQLiteStore(os.path.join(folder, name))
    first = {"seq": 0, "kind": "ready", "routine": "worker", "slot": "in", "data": 0}
    store.create_job("job", "w7", "running", layout_of(JobState).serialize(JobState("w7")), [first])
    return store


def plain_loop(folder: str, count: int) -> float:
    conn = sqlite3.connect(os.path.join(folder, "plain.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE delta (job TEXT, seq INTEGER, record TEXT, PRIMARY KEY (job, seq))")
    items = records(count)
    start = time.perf_counter()
    for item in items:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO delta VALUES (?, ?, ?)", ("job", item["seq"], json.dumps(item)))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def store_commits(folder: str, count: int, batch: int) -> float:
    store = fresh_store(folder, f"store-{batch}.db")
    items = records(count)
    start = time.perf_counter()
    for index in range(0, count, batch):
        store.commit("job", 1, items[index : index + batch])
    elapsed = time.perf_counter() - start
    assert store.load("job").commit_seq == count
    store.close()
    return elapsed


def writer_puts(folder: str, count: int) -> tuple[float, int]:
    store = fresh_store(folder, "writer.db")
    items = records(count)
    with JournalWriter(store) as writer:
        start = time.perf_counter()
        for item in items:
            writer.put("job", 1, item)
        writer.flush()
        elapsed = time.perf_counter() - start
        transactions = writer.transactions
    assert store.load("job").commit_seq == count
    store.close()
    return elapsed, transactions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5_000)
    args = parser.parse_args()
    count = args.records
    print(f"W7 store: {count:,} records, SQLite WAL synchronous=NORMAL")
    with tempfile.TemporaryDirectory() as folder:
        results = [
            ("plain sqlite3, 1 insert per transaction", plain_loop(folder, count), ""),
            ("store.commit, 1 record per transaction", store_commits(folder, count, 1), ""),
            ("store.commit, 64 records per transaction", store_commits(folder, count, 64), ""),
        ]
        elapsed, transactions = writer_puts(folder, count)
        results.append(("JournalWriter batch: put + flush", elapsed, f"{transactions} txns"))
    for label, seconds, note in results:
        row(label, count / seconds, "records/s")
        row("", seconds / count * 1e6, "us/record", note)


if __name__ == "__main__":
    main()

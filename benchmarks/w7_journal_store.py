"""W7 (W2, store side): what the journal writer and the SQLite store cost per delivery.

W2's journal overhead has two halves: the engine's bookkeeping on the job's thread
(the change capture, the journal's observer calls, the writer's ``put``) and the
writer's batches written to SQLite. This script separates them by running the same
journaled W2 job (source -> 10-stage chain -> sink, batch mode) on:

- ``SQLiteStore``: the real store;
- a **null store**: a ``SQLiteStore`` whose ``commit_many``, ``commit``,
  ``write_snapshot``, ``commit_then_snapshot`` and ``release`` do nothing (the job
  row is still created, so the job runs exactly as journaled);

beside the same flow without a store. The store side per delivery is
(real - null) / deliveries. CPU time of the whole process (the writer thread
included), median of ``--repeats`` runs.

For an instruction counter, ``--count real N`` / ``--count null N`` run one journaled
W2 job of N messages and print nothing; one delivery's cost is the difference of two
sizes divided by the deliveries (every thread counted)::

    for store in real null; do for n in 200 600; do
      valgrind --tool=callgrind --separate-threads=no --callgrind-out-file=/dev/null \\
        python benchmarks/w7_journal_store.py --count $store $n 2>&1 | grep Collected
    done; done
    # store side per delivery = ((R600 - R200) - (N600 - N200)) / (400 * 11)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(__file__))

from _common import row  # noqa: E402
from w1_w2_core import STAGES  # noqa: E402
from w7_durable import build_w2, median_cpu  # noqa: E402

from routilux import Flow  # noqa: E402
from routilux.store import SQLiteStore  # noqa: E402


class NullStore(SQLiteStore):
    """A SQLite store whose journal writes do nothing: what the engine's side of the
    journal costs without the writer's transactions."""

    def commit(self, job_id: str, epoch: int, records: Any) -> None:
        pass

    def commit_many(self, batches: Any) -> None:
        pass

    def write_snapshot(self, job_id: str, epoch: int, snapshot: Any, upto_seq: int) -> None:
        pass

    def commit_then_snapshot(self, *args: Any) -> None:
        pass

    def release(self, job_id: str, epoch: int) -> None:
        pass


def flow_on(kind: str, folder: str) -> Flow:
    path = os.path.join(folder, f"w2-{kind}.db")
    store = SQLiteStore(path) if kind == "real" else NullStore(path)
    return build_w2(store=store, durability="batch")


def run(flow: Flow, messages: int) -> Callable[[], None]:
    def go() -> None:
        job = flow.execute("source", {"n": messages})
        assert job.status == "completed", job.status

    return go


def count(kind: str, messages: int) -> None:
    """One journaled W2 job of ``messages`` messages (for an instruction counter)."""
    with tempfile.TemporaryDirectory(prefix="routilux-w7s-") as folder:
        flow = flow_on(kind, folder)
        flow.execute("source", {"n": 1})  # the first job (plan, writer thread) apart
        flow.execute("source", {"n": messages})
        flow.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--count", nargs=2, metavar=("STORE", "N"), help="real|null N")
    args = parser.parse_args()
    if args.count:
        kind, size = args.count
        if kind not in ("real", "null"):
            parser.error(f"--count: unknown store {kind!r}: use real or null")
        count(kind, int(size))
        return
    deliveries = args.messages * (STAGES + 1)
    with tempfile.TemporaryDirectory(prefix="routilux-w7s-") as folder:
        plain = median_cpu(run(build_w2(), args.messages), args.repeats)
        null = median_cpu(run(flow_on("null", folder), args.messages), args.repeats)
        real = median_cpu(run(flow_on("real", folder), args.messages), args.repeats)
    per = 1e6 / deliveries
    print(
        f"W2 store side: {args.messages:,} messages ({deliveries:,} deliveries per job), "
        f"CPU time, median of {args.repeats}"
    )
    row("routilux, no store", plain * per, "us/delivery")
    row("routilux, null store (engine side only)", null * per, "us/delivery")
    row("routilux, SQLite journal (batch)", real * per, "us/delivery")
    row("engine side (null - no store)", (null - plain) * per, "us/delivery")
    row("writer + SQLite store (real - null)", (real - null) * per, "us/delivery")


if __name__ == "__main__":
    main()

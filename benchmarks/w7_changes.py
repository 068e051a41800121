"""W7 (change capture): what recording a job's changes as ops costs (``routilux.changes``).

Per op: one JobState mutator with no ChangeLog attached and with one, beside a plain
dict update.  Per delivery: a trivial delivery (one history record and one
routine-state merge) plain, and journaled (``with log.delivery(key):`` around it, and
the journal's ``take_ready()`` once per 64 deliveries, as a group commit would call
it).  Medians of 5 runs; the issue's budget for the whole journal is 10 us per
delivery in batch mode, so the capture has to be a small part of that.  Times are
the process's CPU time (see :func:`median_seconds`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

sys.path.insert(0, os.path.dirname(__file__))

from _common import median_cpu, row  # noqa: E402

from routilux.changes import ChangeLog  # noqa: E402
from routilux.job_state import JobState  # noqa: E402

REPEATS = 5


def median_seconds(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """:func:`median_cpu` with this script's default number of runs."""
    return median_cpu(fn, repeats)


def op_runs(js: JobState, n: int) -> list[tuple[str, Callable[[], None]]]:
    """The timed loops of one op each, on ``js``."""

    def shared() -> None:
        for i in range(n):
            js.update_shared_data("k", i)

    def direct() -> None:
        data = js.shared_data
        for i in range(n):
            data["k"] = i

    def merge() -> None:
        for i in range(n):
            js.merge_routine_state("r", {"n": i})

    def history() -> None:
        js.execution_history.clear()
        for i in range(n):
            js.record_execution("r", "out", {"value": i})

    return [
        ("update_shared_data", shared),
        ("shared_data[k] = v", direct),
        ("merge_routine_state", merge),
        ("record_execution", history),
    ]


def per_op(n: int) -> None:
    print(f"per op (microseconds, median of {REPEATS} runs of {n:,} ops)")

    def plain_dict() -> None:
        d: dict[str, int] = {}
        for i in range(n):
            d["k"] = i

    row("plain dict update (baseline)", median_seconds(plain_dict, REPEATS) / n * 1e6, "us")
    for label, journaled in (("no ChangeLog", False), ("ChangeLog attached", True)):
        js = JobState("w7")
        log = ChangeLog(js) if journaled else None
        for name, fn in op_runs(js, n):
            row(f"{name} ({label})", median_seconds(fn, REPEATS) / n * 1e6, "us")
            if log is not None:
                log.take_ready(flush=True)  # drop what was recorded between runs


def per_delivery(n: int) -> None:
    print(f"per delivery (microseconds, median of {REPEATS} runs of {n:,} deliveries)")

    def plain() -> None:
        js = JobState("w7")
        for i in range(n):
            js.record_execution("r", "out", {"value": i})
            js.merge_routine_state("r", {"n": i})

    def journaled() -> None:
        js = JobState("w7")
        log = ChangeLog(js)
        released = 0
        for i in range(n):
            with log.delivery(i):
                js.record_execution("r", "out", {"value": i})
                js.merge_routine_state("r", {"n": i})
            if i % 64 == 63:
                released += len(log.take_ready())
        released += len(log.take_ready(flush=True))
        assert released == n

    def dicts() -> None:
        state: dict[str, object] = {}
        history: list[object] = []
        for i in range(n):
            history.append({"value": i})
            state["n"] = i

    base = median_seconds(dicts, REPEATS) / n * 1e6
    off = median_seconds(plain, REPEATS) / n * 1e6
    on = median_seconds(journaled, REPEATS) / n * 1e6
    row("plain dict + list updates (baseline)", base, "us")
    row("trivial delivery, no ChangeLog", off, "us")
    row("trivial delivery, journaled", on, "us", f"capture +{on - off:.2f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=50_000, help="ops per timed run")
    parser.add_argument("--deliveries", type=int, default=20_000, help="deliveries per run")
    args = parser.parse_args()
    per_op(args.ops)
    per_delivery(args.deliveries)


if __name__ == "__main__":
    main()

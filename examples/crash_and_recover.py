"""Crash and recover: a journaled job is killed with SIGKILL half-way; another process
finishes it, and every order is booked exactly once.

    orders --order--> book --booked--> total

Run with ``.venv/bin/python examples/crash_and_recover.py``. This process only
directs; the work happens in two child processes running this same file:

1. ``--crash DB``: builds the flow with ``store="sqlite:///DB"`` (every delivery is
   journaled automatically) and starts a job over ten orders. While booking the sixth
   order the process kills itself with ``SIGKILL`` — no ``finally``, no flush, no
   goodbye, as if the machine had pulled the plug on it.
2. ``--recover DB``: a fresh process builds the same flow on the same store and calls
   ``flow.recover()``: the job's owner is dead, so the job is claimed and resumed
   where its journal ends. It prints the JobState.

In the JobState every order is booked exactly once: a delivery's effects and the
consumption of its input reach the journal together, so a delivery is either wholly
in the journal (and not run again) or not at all (and run again from scratch).

Outside the JobState, a delivery cut short by the crash runs again (at least once).
The ``book`` routine's external write — a row in a ledger table — is keyed by
``ctx.delivery_id``, which a re-run keeps, so ``INSERT OR IGNORE`` makes it
idempotent: the ledger, too, holds every order once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from typing import Any, Optional

from routilux import Flow, Routine
from routilux.store import open_store

ORDERS = [f"order-{i}" for i in range(10)]
CRASH_AT = "order-5"  # the first process dies while booking this order

# Set in the crashing process only: the crash is the process's fate, not the job's,
# so the recovering process books the same order without dying.
_crash_at: Optional[str] = None
_ledger: Optional[str] = None


class Orders(Routine):
    """Entry routine: one ``order`` event per order id."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("order", ["order"])

    def start(self, orders: Any = (), **_: Any) -> None:
        for order in orders:
            self.emit("order", order=order)


class Book(Routine):
    """Books an order: a ledger row keyed by the delivery id (idempotent), a count in
    its routine state, then ``booked``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("order", handler=self.book)
        self.define_event("booked", ["order"])

    def book(self, order: str, **_: Any) -> None:
        ctx = self.context
        if order == _crash_at:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9, half-way through the job
        assert _ledger is not None
        ledger = sqlite3.connect(_ledger)
        try:
            with ledger:  # one transaction
                # The external write: a re-run of this delivery has the same
                # delivery_id, so its INSERT is ignored.
                ledger.execute(
                    "INSERT OR IGNORE INTO ledger (delivery_id, orders) VALUES (?, ?)",
                    (ctx.delivery_id, order),
                )
                # Counts every run of a delivery, re-runs included.
                ledger.execute("UPDATE attempts SET n = n + 1 WHERE orders = ?", (order,))
        finally:
            ledger.close()
        js = ctx.job_state
        state = js.get_routine_state(ctx.routine_id) or {}
        js.update_routine_state(ctx.routine_id, {"booked": state.get("booked", 0) + 1})
        self.emit("booked", order=order)


class Total(Routine):
    """Collects the booked orders in shared data (a read-modify-write of a list)."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("booked", handler=self.add)

    def add(self, order: str, **_: Any) -> None:
        js = self.context.job_state
        js.update_shared_data("booked", [*js.get_shared_data("booked", []), order])
        js.append_to_shared_log({"booked": order})


def build_flow(db: str) -> Flow:
    """The same flow in every process: same flow id, same routine ids, same store."""
    flow = Flow(flow_id="orders", store=f"sqlite:///{db}")
    flow.add_routine(Orders(), "orders")
    flow.add_routine(Book(), "book")
    flow.add_routine(Total(), "total")
    flow.connect("orders", "order", "book", "order")
    flow.connect("book", "booked", "total", "booked")
    return flow


def crash(folder: str) -> None:
    """The first process: start the job; it never comes back from order 5."""
    global _crash_at, _ledger
    _crash_at, _ledger = CRASH_AT, os.path.join(folder, "ledger.db")
    ledger = sqlite3.connect(_ledger)
    with ledger:
        ledger.execute("CREATE TABLE ledger (delivery_id TEXT PRIMARY KEY, orders TEXT)")
        ledger.execute("CREATE TABLE attempts (orders TEXT PRIMARY KEY, n INTEGER)")
        ledger.executemany("INSERT INTO attempts VALUES (?, 0)", [(o,) for o in ORDERS])
    ledger.close()
    flow = build_flow(os.path.join(folder, "jobs.db"))
    flow.execute("orders", entry_params={"orders": ORDERS})
    print("not reached: the process was killed")


def recover(folder: str) -> None:
    """The second process: resume every unfinished job of the flow, print the result."""
    global _ledger
    _ledger = os.path.join(folder, "ledger.db")
    db = os.path.join(folder, "jobs.db")
    store = open_store(f"sqlite:///{db}")
    unfinished = store.list_jobs(flow_id="orders", status="running")
    print(f"Unfinished jobs in the store: {len(unfinished)}")
    done_before = store.load_job(unfinished[0].job_id)
    booked_before = (done_before.get_routine_state("book") or {}).get("booked", 0)
    print(f"Booked before the crash (journaled): {booked_before} of {len(ORDERS)}")
    store.close()

    flow = build_flow(db)
    for job in flow.recover():
        print(f"Recovered job: {job.job_id == unfinished[0].job_id}")
        print(f"Status: {job.status}")
        print(f"book: {job.get_routine_state('book')}")
        booked = job.get_shared_data("booked", [])
        print(f"Booked: {booked}")
        print(f"Every order exactly once: {sorted(booked) == sorted(ORDERS)}")
        print(f"Shared log entries: {len(job.shared_log)}")
    flow.shutdown()
    ledger = sqlite3.connect(_ledger)
    rows = ledger.execute("SELECT COUNT(*), COUNT(DISTINCT orders) FROM ledger").fetchone()
    runs = ledger.execute("SELECT SUM(n) FROM attempts").fetchone()[0]
    ledger.close()
    print(f"Ledger rows: {rows[0]} ({rows[1]} distinct orders)")
    print(f"Runs of book (re-runs after the crash included): {runs}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crash", metavar="DIR", help="(child) run the job and crash")
    parser.add_argument("--recover", metavar="DIR", help="(child) recover the job")
    args = parser.parse_args(argv)
    if args.crash:
        crash(args.crash)
        return 0
    if args.recover:
        recover(args.recover)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        print("[first process]", flush=True)
        first = subprocess.run([sys.executable, __file__, "--crash", folder], check=False)
        killed = first.returncode == -signal.SIGKILL
        print(f"Killed by SIGKILL: {killed}", flush=True)
        if not killed:
            return 1
        print("[second process]", flush=True)
        second = subprocess.run([sys.executable, __file__, "--recover", folder], check=False)
        return second.returncode


if __name__ == "__main__":
    sys.exit(main())

"""Human approval: a job waits for a person's decision, and another process gives it.

    orders --order--> review --approved--> ledger
                        |  (over the limit: request_input("decision"))
                        '-- decision <-- flow.send_input(job_id, "review", "decision", ...)

The reviewer passes small orders straight to the ledger. An order over the limit needs a
person: the reviewer asks with ``request_input("decision", prompt=..., schema=...)`` and
the job goes on with the other orders. When nothing else is left it becomes
``waiting`` -- it holds no thread, and as the flow has a store (a SQLite file in a
temporary directory) its status and open request are journaled there.

This process then starts a second one, the reviewer's, running this same file with
``--answer``. It builds the same flow on the same store and answers by job id:
``flow.send_input(job_id, "review", "decision", {"approved": ..., "by": ...})``. Input
that does not fit the request's schema is refused (``InvalidInputError``) and the job
keeps waiting; the good answer is stored, the job is taken over and finishes there. The
orders booked before the wait are not booked again.

Run with ``.venv/bin/python examples/human_approval.py`` (add ``--decision reject`` to see
the escalated order turned down instead).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from routilux import Flow, InvalidInputError, Routine

ORDERS = [("A-1", 250), ("A-2", 4800), ("A-3", 90)]
APPROVER = "alice"


class Orders(Routine):
    """Entry routine: emits one ``order`` event per (order id, amount) pair."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("order", ["order", "amount"])

    def start(self, orders: Sequence[Sequence[Any]] = (), **kwargs: Any) -> None:
        for order, amount in orders:
            self.emit("order", order=order, amount=amount)


class Review(Routine):
    """Approves orders up to ``limit``; asks a person about larger ones."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.check)
        self.define_slot("decision", handler=self.decide)
        self.define_event("approved", ["order", "amount", "approved_by"])
        self.set_config(limit=1000)

    def check(self, order: str = "", amount: int = 0, **kwargs: Any) -> None:
        if amount <= self.get_config("limit"):
            self.emit("approved", order=order, amount=amount, approved_by="auto")
            return
        js = self.context.job_state
        with js.lock:  # the orders waiting for a person, oldest first (as the requests)
            escalated = list(js.get_shared_data("escalated", []))
            js.update_shared_data("escalated", [*escalated, [order, amount]])
        self.request_input(
            "decision",
            prompt=f"Approve order {order} ({amount})?",
            schema={"approved": bool, "by": str},
        )

    def decide(self, approved: bool, by: str) -> None:
        js = self.context.job_state
        with js.lock:
            (order, amount), *rest = js.get_shared_data("escalated")
            js.update_shared_data("escalated", rest)
            if not approved:
                js.update_shared_data("rejected", [*js.get_shared_data("rejected", []), order])
        if approved:
            self.emit("approved", order=order, amount=amount, approved_by=by)


class Ledger(Routine):
    """Books approved orders into the job's shared data."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.book)

    def book(self, order: str = "", amount: int = 0, approved_by: str = "", **kwargs: Any) -> None:
        js = self.context.job_state
        with js.lock:
            booked = list(js.get_shared_data("booked", []))
            booked.append(f"{order} ({amount}, approved by {approved_by})")
            js.update_shared_data("booked", booked)
            js.update_shared_data("total", js.get_shared_data("total", 0) + amount)


def build_flow(store: str) -> Flow:
    flow = Flow(flow_id="human_approval", store=store)
    flow.add_routine(Orders(), "orders")
    flow.add_routine(Review(), "review")
    flow.add_routine(Ledger(), "ledger")
    flow.connect("orders", "order", "review", "input")
    flow.connect("review", "approved", "ledger", "input")
    return flow


def run_until_waiting(decision: str) -> None:
    """First process: run the job until it waits, then have the reviewer answer."""
    with tempfile.TemporaryDirectory(prefix="routilux-approval-") as tmp:
        store = f"sqlite:///{Path(tmp) / 'jobs.db'}"
        flow = build_flow(store)
        job = flow.execute("orders", {"orders": ORDERS})
        (request,) = job.waiting_for
        print("[first process]")
        print(f"  Status: {job.status}")
        print(f"  Waiting for: {request['routine_id']}.{request['slot']}: {request['prompt']}")
        print(f"  Schema: {request['schema']}")
        print(f"  Booked so far: {job.get_shared_data('booked', [])}")
        sys.stdout.flush()

        reviewer = subprocess.run(
            [sys.executable, __file__, "--answer", store, job.job_id, "--decision", decision],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        flow.shutdown()
    print(reviewer.stdout, end="")
    if reviewer.returncode != 0:
        sys.stderr.write(reviewer.stderr)
        raise SystemExit(f"the reviewer's process failed with exit code {reviewer.returncode}")


def answer(store: str, job_id: str, decision: str) -> None:
    """Second process: the reviewer answers the waiting job by its id."""
    flow = build_flow(store)
    print("[reviewer process]")
    try:
        flow.send_input(job_id, "review", "decision", {"approved": "yes", "by": APPROVER})
    except InvalidInputError as exc:
        # The message names the job, the routine and slot, then the field: show the field.
        print(f"  Refused: {str(exc).split(': ', 2)[-1]}")
    approved = decision == "approve"
    job = flow.send_input(job_id, "review", "decision", {"approved": approved, "by": APPROVER})
    print(f"  Decision: A-2 {'approved' if approved else 'rejected'} by {APPROVER}")
    print(f"  Final status: {job.status}")
    print("  Booked:")
    for line in job.get_shared_data("booked", []):
        print(f"    {line}")
    print(f"  Total: {job.get_shared_data('total', 0)}")
    print(f"  Rejected: {job.get_shared_data('rejected', [])}")
    flow.shutdown()


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--answer", nargs=2, metavar=("STORE", "JOB_ID"), help="answer the waiting job"
    )
    parser.add_argument(
        "--decision",
        choices=("approve", "reject"),
        default="approve",
        help="what the person decides about the escalated order (default: approve)",
    )
    args = parser.parse_args(argv)
    if args.answer:
        answer(args.answer[0], args.answer[1], args.decision)
    else:
        run_until_waiting(args.decision)


if __name__ == "__main__":
    main()

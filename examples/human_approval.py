"""Human approval: a job pauses for a person's decision and resumes in another process.

    orders --order--> review --approved----------------------> ledger
                             \\--escalated (deferred)--> decision --approved--> ledger

The reviewer passes small orders straight to the ledger. An order over the limit is
held back: the reviewer queues a *deferred* ``escalated`` event and pauses the job
(``flow.pause(..., reason=..., checkpoint=...)``). This process then saves the flow
(``flow.serialize()`` as JSON) and the job (``job.save(path)``) into a temporary
directory and starts a second process running this same file with ``--resume <dir>``.

The second process imports the routine classes (they are ``@register_serializable``),
rebuilds the flow from its JSON, loads the job, records the person's decision in the
job's shared data and calls ``flow.resume(job)``: the deferred event is emitted first,
then the deliveries that were pending when the job paused. It prints the final result,
which this process passes on.

Run with ``.venv/bin/python examples/human_approval.py`` (add ``--decision reject`` to see
the escalated order turned down instead).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from routilux import Flow, JobState, Routine, register_serializable

FLOW_FILE = "flow.json"
JOB_FILE = "job.json"
ORDERS = [("A-1", 250), ("A-2", 4800), ("A-3", 90)]
APPROVER = "alice"


@register_serializable
class Orders(Routine):
    """Entry routine: emits one ``order`` event per (order id, amount) pair."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("order", ["order", "amount"])

    def start(self, orders: Sequence[Sequence[Any]] = (), **kwargs: Any) -> None:
        for order, amount in orders:
            self.emit("order", order=order, amount=amount)


@register_serializable
class Review(Routine):
    """Approves orders up to ``limit``; escalates larger ones and pauses the job."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.check)
        self.define_event("approved", ["order", "amount", "approved_by"])
        self.define_event("escalated", ["order", "amount"])
        self.set_config(limit=1000)

    def check(self, order: str = "", amount: int = 0, **kwargs: Any) -> None:
        ctx = self.context
        if amount <= self.get_config("limit"):
            self.emit("approved", order=order, amount=amount, approved_by="auto")
            return
        # Held back until the job is resumed, then delivered before anything else.
        self.emit_deferred_event("escalated", order=order, amount=amount)
        ctx.flow.pause(
            ctx.job_state,
            reason=f"order {order} needs approval",
            checkpoint={"order": order, "amount": amount},
        )


@register_serializable
class Decision(Routine):
    """Applies the decision a person recorded in the job's shared data."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.decide)
        self.define_event("approved", ["order", "amount", "approved_by"])

    def decide(self, order: str = "", amount: int = 0, **kwargs: Any) -> None:
        ctx = self.context
        decisions = ctx.job_state.get_shared_data("decisions", {})
        verdict = decisions.get(order, {})
        if verdict.get("approved"):
            self.emit("approved", order=order, amount=amount, approved_by=verdict["by"])
        else:
            with ctx.job_state.lock:
                rejected = list(ctx.job_state.get_shared_data("rejected", []))
                ctx.job_state.update_shared_data("rejected", [*rejected, order])


@register_serializable
class Ledger(Routine):
    """Books approved orders into the job's shared data."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.book)

    def book(self, order: str = "", amount: int = 0, approved_by: str = "", **kwargs: Any) -> None:
        ctx = self.context
        with ctx.job_state.lock:
            booked = list(ctx.job_state.get_shared_data("booked", []))
            booked.append(f"{order} ({amount}, approved by {approved_by})")
            ctx.job_state.update_shared_data("booked", booked)
            total = ctx.job_state.get_shared_data("total", 0)
            ctx.job_state.update_shared_data("total", total + amount)


def build_flow() -> Flow:
    flow = Flow(flow_id="human_approval")
    flow.add_routine(Orders(), "orders")
    flow.add_routine(Review(), "review")
    flow.add_routine(Decision(), "decision")
    flow.add_routine(Ledger(), "ledger")
    flow.connect("orders", "order", "review", "input")
    flow.connect("review", "approved", "ledger", "input")
    flow.connect("review", "escalated", "decision", "input")
    flow.connect("decision", "approved", "ledger", "input")
    return flow


def run_until_paused(decision: str) -> None:
    """First process: run the job until it pauses, save it, resume it elsewhere."""
    flow = build_flow()
    job = flow.execute("orders", {"orders": ORDERS})
    point = job.pause_points[-1]
    print("[first process]")
    print(f"  Status: {job.status}")
    print(f"  Pause reason: {point['reason']}")
    print(f"  Checkpoint: {point['checkpoint']}")
    print(f"  Pending tasks: {len(job.pending_tasks)}")
    print(f"  Booked so far: {job.get_shared_data('booked', [])}")
    sys.stdout.flush()

    with tempfile.TemporaryDirectory(prefix="routilux-approval-") as tmp:
        directory = Path(tmp)
        (directory / FLOW_FILE).write_text(json.dumps(flow.serialize()))
        job.save(directory / JOB_FILE)
        second = subprocess.run(
            [sys.executable, __file__, "--resume", str(directory), "--decision", decision],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    print(second.stdout, end="")
    if second.returncode != 0:
        sys.stderr.write(second.stderr)
        raise SystemExit(f"the resuming process failed with exit code {second.returncode}")


def resume_from(directory: Path, decision: str) -> None:
    """Second process: load the flow and the job, record the decision, resume."""
    flow = Flow().deserialize(json.loads((directory / FLOW_FILE).read_text()))
    job = JobState.load(directory / JOB_FILE)
    print("[second process]")
    print(f"  Loaded job: status={job.status}, pending tasks={len(job.pending_tasks)}")

    # The person looks at the checkpoint saved with the pause and decides.
    order = job.pause_points[-1]["checkpoint"]["order"]
    approved = decision == "approve"
    job.update_shared_data("decisions", {order: {"approved": approved, "by": APPROVER}})
    print(f"  Decision: {order} {'approved' if approved else 'rejected'} by {APPROVER}")

    flow.resume(job)
    print(f"  Final status: {job.status}")
    print("  Booked:")
    for line in job.get_shared_data("booked", []):
        print(f"    {line}")
    print(f"  Total: {job.get_shared_data('total', 0)}")
    print(f"  Rejected: {job.get_shared_data('rejected', [])}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--resume", metavar="DIR", help="resume the job saved in DIR")
    parser.add_argument(
        "--decision",
        choices=("approve", "reject"),
        default="approve",
        help="what the person decides about the escalated order (default: approve)",
    )
    args = parser.parse_args(argv)
    if args.resume:
        resume_from(Path(args.resume), args.decision)
    else:
        run_until_paused(args.decision)


if __name__ == "__main__":
    main()

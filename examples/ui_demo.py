"""The web UI over a store whose job waits for a person.

    orders --order--> review --approved--> ledger
                        |  (over the limit: request_input("decision"))

One job is started on a SQLite store (in a temporary directory, or ``--store URL``);
the order over the limit makes it wait for a decision. Then the web UI serves the
store with the flow registered: open the printed address, pick the job, and answer
the form generated from the request's schema -- the job finishes in the UI's process.

Run with ``.venv/bin/python examples/ui_demo.py`` (needs ``pip install
'routilux[ui]'``); Ctrl-C stops it. ``--check`` starts the server on a free port,
reads ``/api/jobs`` and the job once over HTTP, prints what it found and exits.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from routilux import Flow, Routine

LIMIT = 1000


class Orders(Routine):
    """Entry routine: emits one ``order`` event per (order id, amount) pair."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("order", ["order", "amount"])

    def start(self, orders: Sequence[Sequence[Any]] = (), **_: Any) -> None:
        for order, amount in orders:
            self.emit("order", order=order, amount=amount)


class Review(Routine):
    """Passes small orders on; asks a person about the others."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("order", handler=self.review)
        self.define_slot("decision", handler=self.decide)
        self.define_event("approved", ["order", "amount"])

    def review(self, order: str, amount: int) -> None:
        if amount <= LIMIT:
            self.emit("approved", order=order, amount=amount)
            return
        self.context.job_state.update_shared_data("escalated", {"order": order, "amount": amount})
        self.request_input(
            "decision",
            prompt=f"Approve order {order} ({amount})?",
            schema={"approved": bool, "by": str, "note": (str, "")},
        )

    def decide(self, approved: bool, by: str, note: str) -> None:
        escalated = self.context.job_state.get_shared_data("escalated")
        if approved:
            self.emit("approved", **escalated)
        self.context.job_state.send_output("review", "decision", {"approved": approved, "by": by})


class Ledger(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("approved", handler=self.book)

    def book(self, order: str, amount: int) -> None:
        self.context.job_state.append_to_shared_log({"booked": order, "amount": amount})


def build(store: str) -> Flow:
    flow = Flow("approvals", store=store)
    flow.add_routine(Orders(), "orders")
    flow.add_routine(Review(), "review")
    flow.add_routine(Ledger(), "ledger")
    flow.connect("orders", "order", "review", "order")
    flow.connect("review", "approved", "ledger", "approved")
    return flow


def get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=30) as response:
        return json.load(response)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="the store's URL (default: a temporary SQLite file)")
    parser.add_argument("--port", type=int, default=8321)
    parser.add_argument("--check", action="store_true", help="start, read the API once, exit")
    args = parser.parse_args(argv)
    try:
        from routilux.ui import make_server
    except ImportError as exc:
        raise SystemExit(str(exc)) from None
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or f"sqlite:///{Path(tmp) / 'jobs.db'}"
        flow = build(store)
        job = flow.execute("orders", entry_params={"orders": [["A-1", 250], ["A-2", 4800]]})
        print(f"Job {job.job_id}: {job.status}")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0 if args.check else args.port))
        sock.listen(64)
        port = sock.getsockname()[1]
        server = make_server(flow.store, [flow], port=port)
        base = f"http://127.0.0.1:{port}"
        if not args.check:
            print(f"Web UI: {base}/ (the job: {base}/jobs/{job.job_id}); Ctrl-C stops it")
            server.run(sockets=[sock])
            return
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            jobs = get(base, "/api/jobs")["jobs"]
            print(f"Jobs in the store: {len(jobs)}")
            view = get(base, f"/api/jobs/{job.job_id}")
            print(f"Status: {view['status']}")
            for request in view["waiting_for"]:
                print(
                    f"Waiting for: {request['routine_id']}.{request['slot']}: {request['prompt']}"
                )
                print(f"Schema: {request['schema']}")
            print(f"Booked so far: {[entry['booked'] for entry in view['shared_log']]}")
        finally:
            server.should_exit = True
            thread.join(timeout=30)
        flow.shutdown()


if __name__ == "__main__":
    main()

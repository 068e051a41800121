"""Built-in routines: a small order pipeline assembled almost entirely from built-ins.

    orders --output--> split (Splitter) --output--> paid_only (Filter)
        --output--> line_total (Mapper) --output--> batch (Batcher) --output--> shipping
                                        \\--output--> route (ConditionalRouter)
                                                        --large--> review

``split`` emits one item per order, ``paid_only`` keeps the paid ones (a string
condition), ``line_total`` turns each into a compact shipping line (a string
expression), ``batch`` groups the lines in threes for shipping (the last, partial batch
is flushed when the job has nothing else to do), and ``route`` sends the large orders
to a review routine with a string condition. Only the sources and sinks are custom
routines. Conditions and transforms are *safe expressions*: parsed and interpreted,
never passed to ``eval``.

Run with ``.venv/bin/python examples/builtin_pipeline.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from routilux import Flow, Routine
from routilux.builtin_routines import Batcher, ConditionalRouter, Filter, Mapper, Splitter

ORDERS = [
    {"id": "A-1", "status": "paid", "qty": 2, "price": 15},
    {"id": "A-2", "status": "pending", "qty": 1, "price": 99},
    {"id": "A-3", "status": "paid", "qty": 10, "price": 30},
    {"id": "A-4", "status": "paid", "qty": 1, "price": 5},
    {"id": "A-5", "status": "cancelled", "qty": 3, "price": 12},
    {"id": "A-6", "status": "paid", "qty": 4, "price": 25},
    {"id": "A-7", "status": "paid", "qty": 1, "price": 480},
    {"id": "A-8", "status": "paid", "qty": 6, "price": 8},
    {"id": "A-9", "status": "paid", "qty": 3, "price": 7},
]


class Orders(Routine):
    """Entry routine: emits the whole list of orders at once."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("output", ["data"])

    def start(self, orders: Sequence[dict[str, Any]] = (), **kwargs: Any) -> None:
        self.emit("output", data=list(orders))


class Shipping(Routine):
    """Sink: keeps every batch it receives in the job's shared data."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.ship)

    def ship(
        self, batch: Sequence[Any] = (), batch_index: int = 0, reason: str = "", **kwargs: Any
    ) -> None:
        ctx = self.context
        with ctx.job_state.lock:
            batches = list(ctx.job_state.get_shared_data("batches", []))
            batches.append({"index": batch_index, "reason": reason, "lines": list(batch)})
            ctx.job_state.update_shared_data("batches", batches)


class Review(Routine):
    """Sink: lists the orders the router sent for review."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.review)

    def review(self, data: Any = None, route: str = "", **kwargs: Any) -> None:
        ctx = self.context
        with ctx.job_state.lock:
            flagged = list(ctx.job_state.get_shared_data("review", []))
            flagged.append(f"{data['id']} ({data['total']}, route {route!r})")
            ctx.job_state.update_shared_data("review", flagged)


def build_flow() -> Flow:
    paid_only = Filter()
    paid_only.set_config(condition="data['status'] == 'paid'")

    line_total = Mapper()
    line_total.set_config(expression="{'id': data['id'], 'total': data['qty'] * data['price']}")

    batch = Batcher()
    batch.set_config(batch_size=3)

    route = ConditionalRouter()
    route.add_route("large", "data['total'] >= 250")

    flow = Flow(flow_id="builtin_pipeline")
    flow.add_routine(Orders(), "orders")
    flow.add_routine(Splitter(), "split")
    flow.add_routine(paid_only, "paid_only")
    flow.add_routine(line_total, "line_total")
    flow.add_routine(batch, "batch")
    flow.add_routine(Shipping(), "shipping")
    flow.add_routine(route, "route")
    flow.add_routine(Review(), "review")
    flow.connect("orders", "output", "split", "input")
    flow.connect("split", "output", "paid_only", "input")
    flow.connect("paid_only", "output", "line_total", "input")
    flow.connect("line_total", "output", "batch", "input")
    flow.connect("line_total", "output", "route", "input")
    flow.connect("batch", "output", "shipping", "input")
    flow.connect("route", "large", "review", "input")
    return flow


def main() -> None:
    flow = build_flow()
    job = flow.execute("orders", {"orders": ORDERS})

    print(f"Status: {job.status}")
    # The Filter's "rejected" event is not connected, but its emissions are recorded.
    rejected = [
        r.data["data"]["id"]
        for r in job.get_execution_history("paid_only")
        if r.event_name == "rejected"
    ]
    print(f"Filtered out (not paid): {rejected}")
    print("\nShipping batches:")
    for batch in job.get_shared_data("batches", []):
        print(f"  #{batch['index']} ({batch['reason']}): {batch['lines']}")
    print("\nSent for review:")
    for line in job.get_shared_data("review", []):
        print(f"  {line}")


if __name__ == "__main__":
    main()

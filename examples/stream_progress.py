"""Live progress: a job's events streamed while it runs, one line per routine.

    orders --order--> validate --valid--> price --priced--> store

``flow.stream(...)`` starts the job and yields its events as they happen: this
script watches every delivery end and prints a progress line for the routine that
finished one, then the outputs the job sent (``send_output``) and its final status.
A failed delivery shows up as an error on its line (one order is invalid).

The job runs on a thread of its own; the loop below reads its events on this one.
A slow reader holds the job back (the buffer is bounded) rather than losing
events; ``overflow="drop_oldest"`` would keep the job at full speed and count what
it dropped.

Run with ``.venv/bin/python examples/stream_progress.py``.
"""

from __future__ import annotations

from typing import Any

from routilux import ErrorHandler, ErrorStrategy, Flow, Routine

ORDERS = [
    {"id": "A-1", "qty": 2, "unit": 15.0},
    {"id": "A-2", "qty": 0, "unit": 99.0},  # invalid: no quantity
    {"id": "A-3", "qty": 1, "unit": 300.0},
    {"id": "A-4", "qty": 5, "unit": 1.0},
]


class Orders(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("order", ["order"])

    def start(self, orders: list[dict[str, Any]], **_: Any) -> None:
        for order in orders:
            self.emit("order", order=order)


class Validate(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.check)
        self.define_event("valid", ["order"])
        # An invalid order is recorded and skipped; the job goes on.
        self.set_error_handler(ErrorHandler(strategy=ErrorStrategy.CONTINUE))

    def check(self, order: dict[str, Any]) -> None:
        if order["qty"] <= 0:
            raise ValueError(f"order {order['id']} has no quantity")
        self.emit("valid", order=order)


class Price(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.price)
        self.define_event("priced", ["order", "total"])

    def price(self, order: dict[str, Any]) -> None:
        self.emit("priced", order=order, total=order["qty"] * order["unit"])


class Store(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.store)

    def store(self, order: dict[str, Any], total: float) -> None:
        self.send_output("stored", id=order["id"], total=total)


def build() -> Flow:
    flow = Flow("orders")
    flow.add_routine(Orders(), "orders")
    flow.add_routine(Validate(), "validate")
    flow.add_routine(Price(), "price")
    flow.add_routine(Store(), "store")
    flow.connect("orders", "order", "validate", "input")
    flow.connect("validate", "valid", "price", "input")
    flow.connect("price", "priced", "store", "input")
    return flow


def bar(done: int, total: int, width: int = 8) -> str:
    filled = round(width * done / total) if total else width
    return "#" * filled + "." * (width - filled)


def main() -> None:
    flow = build()
    # How many deliveries each routine will get: known here, from the data.
    valid = sum(1 for order in ORDERS if order["qty"] > 0)
    expected = {"orders": 1, "validate": len(ORDERS), "price": valid, "store": valid}
    done = dict.fromkeys(expected, 0)
    errors = dict.fromkeys(expected, 0)
    outputs = []
    kinds = ["delivery_finished", "output", "job_finished"]
    for event in flow.stream("orders", {"orders": ORDERS}, kinds=kinds):
        if event.kind == "delivery_finished":
            rid = event.routine_id
            done[rid] += 1
            errors[rid] += event.error is not None
            note = f" ({errors[rid]} failed: {event.error})" if event.error else ""
            print(f"{rid:<9} [{bar(done[rid], expected[rid])}] {done[rid]}/{expected[rid]}{note}")
        elif event.kind == "output":
            outputs.append(event.data)
        elif event.kind == "job_finished":
            print(f"Status: {event.status}")
    for data in outputs:
        print(f"stored {data['id']}: {data['total']:.2f}")


if __name__ == "__main__":
    main()

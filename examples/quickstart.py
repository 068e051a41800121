"""Quick start: a four-routine flow whose run-time state lives in its JobState.

    source --output--> validator --output--> aggregator
           \\--output--> logger

Run with ``make demo`` (or ``.venv/bin/python examples/quickstart.py``).
"""

from __future__ import annotations

from typing import Any

from routilux import Flow, Routine


class Source(Routine):
    """Emits ``count`` items on its ``output`` event."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.generate)
        self.define_event("output", ["item"])

    def generate(self, count: int = 5, **kwargs: Any) -> None:
        ctx = self.get_execution_context()
        if ctx is not None:
            ctx.job_state.update_routine_state(ctx.routine_id, {"generated": count})
        for i in range(count):
            # Every fourth item is deliberately malformed so the validator has work to do.
            item = f"item_{i}" if i % 4 != 3 else f"bad_{i}"
            self.emit("output", item=item)


class Validator(Routine):
    """Forwards each item with a ``valid`` flag and counts valid/invalid items."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.validate)
        self.define_event("output", ["item", "valid"])

    def validate(self, item: str = "", **kwargs: Any) -> None:
        valid = item.startswith("item_")
        ctx = self.get_execution_context()
        if ctx is not None:
            # Read first, then write the whole dict: update_routine_state replaces it.
            state = ctx.job_state.get_routine_state(ctx.routine_id) or {}
            key = "valid" if valid else "invalid"
            ctx.job_state.update_routine_state(
                ctx.routine_id, {**state, key: state.get(key, 0) + 1}
            )
        self.emit("output", item=item, valid=valid)


class Aggregator(Routine):
    """Collects the valid items into the job's shared data."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.aggregate)

    def aggregate(self, item: str = "", valid: bool = False, **kwargs: Any) -> None:
        ctx = self.get_execution_context()
        if ctx is None:
            return
        state = ctx.job_state.get_routine_state(ctx.routine_id) or {}
        ctx.job_state.update_routine_state(
            ctx.routine_id, {**state, "received": state.get("received", 0) + 1}
        )
        if valid:
            accepted = list(ctx.job_state.get_shared_data("accepted", []))
            accepted.append(item)
            ctx.job_state.update_shared_data("accepted", accepted)


class Logger(Routine):
    """Listens to the source's event too, writing each item to the shared log."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.log)

    def log(self, item: str = "", **kwargs: Any) -> None:
        ctx = self.get_execution_context()
        if ctx is not None:
            ctx.job_state.append_to_shared_log({"routine": ctx.routine_id, "seen": item})


def build_flow() -> Flow:
    flow = Flow(flow_id="quickstart")
    flow.add_routine(Source(), "source")
    flow.add_routine(Validator(), "validator")
    flow.add_routine(Aggregator(), "aggregator")
    flow.add_routine(Logger(), "logger")
    flow.connect("source", "output", "validator", "input")
    flow.connect("validator", "output", "aggregator", "input")
    flow.connect("source", "output", "logger", "input")
    return flow


def main() -> None:
    flow = build_flow()
    job = flow.execute("source", entry_params={"count": 5})

    print(f"Status: {job.status}")
    print("\nRoutine states:")
    for rid in ("source", "validator", "aggregator", "logger"):
        print(f"  {rid}: {job.get_routine_state(rid)}")
    print("\nExecution history:")
    for rec in job.get_execution_history():
        print(f"  {rec.routine_id} {rec.event_name} {rec.data}")
    print("\nShared data:")
    print(f"  accepted: {job.get_shared_data('accepted', [])}")
    print("\nShared log:")
    for entry in job.get_shared_log():
        print(f"  {entry}")


if __name__ == "__main__":
    main()

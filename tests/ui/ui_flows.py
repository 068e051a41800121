"""Flows of the web UI tests, shared by the tests and by the other processes they start.

``review`` asks for human input; ``steps`` runs ``n`` work items one delivery each,
every delivery passing :data:`GATE` first (the test process's gate lets tests step a
job; the other process's gate waits for a line on its stdin). Run as a script
(``python ui_flows.py STORE_URL N``) it is that other process: it starts one ``steps``
job with a short heartbeat, prints ``STARTED <job id>`` when the first item's
delivery begins, ``STATUS <new>`` on every status change, and ``EXIT <status>`` when
``execute`` returns.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from routilux import Flow, JobHooks, Routine

#: Called by each ``work`` delivery with the item's number before it does anything.
GATE: Callable[[int], None] = lambda i: None  # noqa: E731


class Reviewer(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.ask)
        self.define_slot("decision", handler=self.decide)

    def ask(self, draft: str = "") -> None:
        self.context.job_state.update_shared_data("draft", draft)
        self.request_input(
            "decision",
            prompt="Publish this draft?",
            schema={"approved": bool, "count": int, "note": (str, "")},
        )

    def decide(self, approved: bool, count: int, note: str) -> None:
        self.context.job_state.send_output("reviewer", "verdict", {"approved": approved})


class Batch(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("item", ["i"])

    def start(self, n: int = 3) -> None:
        for i in range(n):
            self.emit("item", i=i)


class Work(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.work)

    def work(self, i: int) -> None:
        GATE(i)
        self.context.job_state.update_shared_data(f"item{i}", i)


class Failing(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.boom)

    def boom(self, **_: Any) -> None:
        raise ValueError("boom from the handler")


def review_flow() -> Flow:
    flow = Flow("review")
    flow.add_routine(Reviewer(), "reviewer")
    return flow


def steps_flow() -> Flow:
    flow = Flow("steps")
    flow.add_routine(Batch(), "batch")
    flow.add_routine(Work(), "work")
    flow.connect("batch", "item", "work", "input")
    return flow


def failing_flow() -> Flow:
    flow = Flow("failing")
    flow.add_routine(Failing(), "bad")
    return flow


class _Report(JobHooks):
    def on_status(self, job_state: Any, old: str, new: str) -> None:
        print(f"STATUS {new}", flush=True)


def _child(url: str, n: int) -> None:
    import routilux.engine.runner as runner

    runner.HEARTBEAT_INTERVAL = 0.05  # control requests are taken at each beat
    started: list[bool] = []

    def stdin_gate(i: int) -> None:
        if not started:
            started.append(True)
            print(f"STARTED {job_id[0]}", flush=True)
        sys.stdin.readline()

    global GATE
    GATE = stdin_gate
    job_id: list[str] = []
    flow = steps_flow()
    flow.use_store(url)

    class _Id(JobHooks):
        def on_job_start(self, job_state: Any) -> None:
            job_id.append(job_state.job_id)

    flow.add_hooks(_Id(), _Report())
    state = flow.execute("batch", entry_params={"n": n})
    print(f"EXIT {state.status}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _child(sys.argv[1], int(sys.argv[2]))

"""A job interrupted in one process and finished in another ends exactly like an
uninterrupted run (issue 5, item 2).

Process 1 runs a 4-stage flow over 100 items and pauses it from a handler midway, then
saves the flow and the JobState. Process 2 deserializes both (the routine classes come
from a helper module both processes import, registered with ``register_serializable``)
and resumes. A third process runs the same flow without interruption. Their final
routine states, shared data and history must agree, with no item processed twice or
skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

HELPER = "routilux_interrupt_helper"
# Not a multiple of the batch size: the sink then still has deliveries queued.
PAUSE_AT = 45

# The helper module written into tmp_path for the child processes. The source emits
# the items in batches of 10 through a self-connection, so when the pause comes every
# stage has work queued; the sink merges with "append", so its slot buffer is half
# full. Whether (and where) to pause comes from the environment, not from saved state.
HELPER_SOURCE = textwrap.dedent(
    '''
    """Routines and entry points for the two-process resume test."""

    from __future__ import annotations

    import json
    import os
    import sys
    from typing import Any

    from routilux import Flow, JobState, Routine, register_serializable

    PAUSE_AT = int(os.environ.get("ROUTILUX_TEST_PAUSE_AT", "-1"))
    TIMING = ("execution_time", "start_time", "end_time")


    def _bump(routine: Routine, item: int) -> None:
        ctx = routine.get_execution_context()
        assert ctx is not None
        js = ctx.job_state
        with js.lock:
            state = dict(js.get_routine_state(ctx.routine_id) or {})
            state["count"] = state.get("count", 0) + 1
            state["seen"] = list(state.get("seen", [])) + [item]
            js.update_routine_state(ctx.routine_id, state)


    @register_serializable
    class BatchSource(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.start)
            self.define_slot("more", handler=self.more)
            self.define_event("output", ["item"])
            self.define_event("next", ["start", "count"])
            self.set_config(batch=10)

        def start(self, count: int = 0, **_: Any) -> None:
            self.more(start=0, count=count)

        def more(self, start: int, count: int) -> None:
            end = min(count, start + self.get_config("batch"))
            for item in range(start, end):
                _bump(self, item)
                self.emit("output", item=item)
            if end < count:
                self.emit("next", start=end, count=count)


    @register_serializable
    class Scale(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", handler=self.on_item)
            self.define_event("output", ["item", "value"])
            self.set_config(factor=1, offset=0)

        def on_item(self, item: int, value: int | None = None) -> None:
            _bump(self, item)
            base = item if value is None else value
            result = base * self.get_config("factor") + self.get_config("offset")
            self.emit("output", item=item, value=result)


    @register_serializable
    class Collect(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", handler=self.on_items, merge_strategy="append")
            self.define_event("done", ["total"])

        def on_items(self, item: list, value: list) -> None:
            ctx = self.get_execution_context()
            assert ctx is not None
            js = ctx.job_state
            _bump(self, item[-1])
            js.update_shared_data("received", len(item))
            if len(item) == 100:
                js.update_shared_data("items", list(item))
                js.update_shared_data("total", sum(value))
                self.emit("done", total=sum(value))
            if len(item) == PAUSE_AT:
                ctx.flow.pause(js, reason="waiting for a human", checkpoint={"seen": len(item)})


    def build_flow() -> Flow:
        flow = Flow("interrupt-demo")
        flow.add_routine(BatchSource(), "source")
        double = Scale()
        double.set_config(factor=2, offset=0)
        flow.add_routine(double, "double")
        shift = Scale()
        shift.set_config(factor=1, offset=7)
        flow.add_routine(shift, "shift")
        flow.add_routine(Collect(), "collect")
        flow.connect("source", "next", "source", "more")
        flow.connect("source", "output", "double", "input")
        flow.connect("double", "output", "shift", "input")
        flow.connect("shift", "output", "collect", "input")
        return flow


    def summary(js: JobState) -> dict[str, Any]:
        return {
            "status": js.status,
            "routine_states": {
                rid: {k: v for k, v in state.items() if k not in TIMING}
                for rid, state in js.routine_states.items()
            },
            "shared_data": js.shared_data,
            "history": [[r.routine_id, r.event_name, r.data] for r in js.execution_history],
            "pending_tasks": len(js.pending_tasks),
            "slot_buffers": js.slot_buffers,
            "pause_points": len(js.pause_points),
        }


    def main(argv: list[str]) -> None:
        phase, workdir = argv
        flow_file = os.path.join(workdir, "flow.json")
        job_file = os.path.join(workdir, "job.json")
        if phase == "uninterrupted":
            js = build_flow().execute("source", {"count": 100})
        elif phase == "first":
            flow = build_flow()
            js = flow.execute("source", {"count": 100})
            with open(flow_file, "w", encoding="utf-8") as handle:
                json.dump(flow.serialize(), handle)
            js.save(job_file)
        elif phase == "second":
            with open(flow_file, encoding="utf-8") as handle:
                flow = Flow().deserialize(json.load(handle))
            js = JobState.load(job_file)
            flow.resume(js)
        else:
            raise SystemExit(f"unknown phase {phase}")
        with open(os.path.join(workdir, phase + ".out.json"), "w", encoding="utf-8") as out:
            json.dump(summary(js), out)


    if __name__ == "__main__":
        main(sys.argv[1:])
    '''
)


def run_phase(workdir: Path, phase: str, pause_at: int | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("ROUTILUX_TEST_PAUSE_AT", None)
    if pause_at is not None:
        env["ROUTILUX_TEST_PAUSE_AT"] = str(pause_at)
    env["PYTHONPATH"] = os.pathsep.join([str(workdir), env.get("PYTHONPATH", "")])
    code = f"import sys, {HELPER}; {HELPER}.main(sys.argv[1:])"
    proc = subprocess.run(
        [sys.executable, "-c", code, phase, str(workdir)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{phase} failed:\n{proc.stdout}\n{proc.stderr}"
    result: dict[str, Any] = json.loads((workdir / f"{phase}.out.json").read_text())
    return result


def history_multiset(summary: dict[str, Any]) -> Counter[tuple[str, str, str]]:
    return Counter(
        (rid, event, json.dumps(data, sort_keys=True)) for rid, event, data in summary["history"]
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("interrupt")
    (workdir / f"{HELPER}.py").write_text(HELPER_SOURCE, encoding="utf-8")
    return {
        "uninterrupted": run_phase(workdir, "uninterrupted"),
        "first": run_phase(workdir, "first", pause_at=PAUSE_AT),
        "second": run_phase(workdir, "second"),
        "files": {"job": json.loads((workdir / "job.json").read_text())},
    }


def test_first_process_paused_midway(runs: dict[str, dict[str, Any]]) -> None:
    first = runs["first"]
    assert first["status"] == "paused"
    assert first["pause_points"] == 1
    assert first["shared_data"]["received"] == PAUSE_AT
    assert "items" not in first["shared_data"]
    # Every stage still had work to do: it was saved as pending tasks.
    saved = runs["files"]["job"]
    pending_targets = {task["slot_routine_id"] for task in saved["pending_tasks"]}
    assert {"source", "double", "shift", "collect"} <= pending_targets
    assert first["pending_tasks"] == len(saved["pending_tasks"])
    # The sink's append buffer holds the items it has seen.
    assert len(saved["slot_buffers"]["collect"]["input"]["item"]) == PAUSE_AT


def test_second_process_finishes_like_an_uninterrupted_run(
    runs: dict[str, dict[str, Any]],
) -> None:
    whole, second = runs["uninterrupted"], runs["second"]
    assert whole["status"] == "completed"
    assert second["status"] == "completed"
    assert second["pending_tasks"] == 0
    assert second["routine_states"] == whole["routine_states"]
    assert second["shared_data"] == whole["shared_data"]
    assert history_multiset(second) == history_multiset(whole)
    # Part of the work really happened in the second process.
    assert len(second["history"]) > len(runs["first"]["history"])


def test_no_item_processed_twice_or_skipped(runs: dict[str, dict[str, Any]]) -> None:
    states = runs["second"]["routine_states"]
    for rid in ("source", "double", "shift", "collect"):
        assert sorted(states[rid]["seen"]) == list(range(100)), rid
        assert states[rid]["count"] == 100, rid
    data = runs["second"]["shared_data"]
    assert sorted(data["items"]) == list(range(100))
    assert data["total"] == sum(2 * i + 7 for i in range(100))
    emitted = Counter(
        (rid, event) for rid, event, _ in runs["second"]["history"] if event == "output"
    )
    assert emitted == {
        ("source", "output"): 100,
        ("double", "output"): 100,
        ("shift", "output"): 100,
    }

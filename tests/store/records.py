"""What the store tests write: a saved JobState for a snapshot and task rows."""

from __future__ import annotations

from typing import Any

from routilux.job_state import JobState
from routilux.serialization import layout_of


def snapshot_of(**shared: Any) -> dict[str, Any]:
    state = JobState("flow")
    state.shared_data.update(shared)
    return layout_of(JobState).serialize(state)


def task(seq: int, kind: str = "ready", **extra: Any) -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "routine": "r", "slot": "in", "data": {"n": seq}, **extra}

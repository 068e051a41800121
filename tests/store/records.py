"""What the store tests write: a saved JobState for a snapshot and task rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from routilux.job_state import JobState
from routilux.serialization import layout_of
from routilux.store._base import BuiltRecords, built_record


def snapshot_of(**shared: Any) -> dict[str, Any]:
    state = JobState("flow")
    state.shared_data.update(shared)
    return layout_of(JobState).serialize(state)


def task(seq: int, kind: str = "ready", **extra: Any) -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "routine": "r", "slot": "in", "data": {"n": seq}, **extra}


def as_built(records: Iterable[dict[str, Any]]) -> BuiltRecords:
    """DeltaRecords with every key present (tasks too), as the engine's journal
    hands them to the store: built records (arrays)."""
    return BuiltRecords([built_record(record) for record in records])

"""What the store tests write: a saved JobState for a snapshot and task rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from routilux.job_state import JobState
from routilux.serialization import layout_of
from routilux.store._base import _ENCODE, BuiltRecords, built_record, built_task, encoded_record


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


def as_encoded(records: Iterable[dict[str, Any]]) -> BuiltRecords:
    """:func:`as_built`, but as the journal's serial lane hands over what it encoded
    itself: a record that withdraws no task and sets no status as an EncodedRecord
    (a tuple holding its text), any other as an array."""
    out = BuiltRecords()
    for record in records:
        if record["status"] is not None or record["tasks_removed"]:
            out.append(built_record(record))
            continue
        out.append(
            encoded_record(
                record["seq"],
                record["consumed"],
                _ENCODE(record["ops"]),
                tuple(
                    (row["seq"], _ENCODE(built_task(row)), _columns(row))
                    for row in record["tasks_added"]
                ),
                record["waiting_for"],
            )
        )
    return out


def _columns(row: dict[str, Any]) -> tuple[Any, ...]:
    """A TaskRow's column values as the store writes them (data and extra as text)."""
    return (
        row["seq"],
        row["kind"],
        row["routine"],
        row["slot"],
        _ENCODE(row["data"]),
        row["retries"],
        row["due_at"],
        _ENCODE(row["extra"]),
    )

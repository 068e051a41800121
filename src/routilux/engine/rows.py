"""The rows of a durable job's pending work: engine tasks and saved pending tasks as
the store's :data:`~routilux.store.TaskRow` dicts, and back; what a flow is missing to
run a row; timer clock readings as wall-clock due times."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..changes import encode_value
from .timers import timer_service

if TYPE_CHECKING:
    from ..store import TaskRow
    from .plan import Plan
    from .tasks import Task

#: Types a task's data holds as they are in JSON (floats are checked: NaN is refused).
_ATOMS = frozenset({str, int, bool, type(None)})


def task_row(task: Task, kind: str, due_at: float | None = None) -> TaskRow:
    """The TaskRow of an engine task (its data encoded as a save writes it)."""
    route = task.route
    if (
        route is not None
        and not task.premerged
        and not task.entry
        and task.timer is None
        and task.answers is None
    ):
        extra: dict[str, Any] = {"source": [route.source_rid, route.event_name]}  # the usual
    else:
        extra = {}
        if route is not None:
            extra["source"] = [route.source_rid, route.event_name]
        if task.premerged:
            extra["premerged"] = True
        if task.entry:
            extra["entry"] = True
        if task.timer is not None:
            extra["timer"] = task.timer
        if task.answers is not None:
            extra["request"] = task.answers  # its request closes when the row is taken over
    data = task.data
    # encode_value's result for the usual data -- a dict of strings, ints, bools and
    # Nones under string keys -- without its calls: a copy of the dict.
    if type(data) is dict:
        for key, value in data.items():
            if type(key) is not str or type(value) not in _ATOMS:
                data = encode_value(data, f"task {task.rid}.{task.target.name} data")
                break
        else:
            data = dict(data)
    else:
        data = encode_value(data, f"task {task.rid}.{task.target.name} data")
    return {
        "seq": task.seq,
        "kind": kind,
        "routine": task.rid,
        "slot": task.target.name,
        "data": data,
        "retries": task.retries,
        "due_at": due_at,
        "extra": extra,
    }


def row_of_entry(entry: dict[str, Any]) -> TaskRow:
    """The TaskRow of a saved pending task (``job_state.pending_tasks``)."""
    rid = entry.get("slot_routine_id") or ""
    slot = entry.get("slot_name") or ""
    extra: dict[str, Any] = {}
    src = entry.get("connection_source_routine_id")
    event = entry.get("connection_source_event_name")
    if src and event:
        extra["source"] = [src, event]
    if entry.get("premerged"):
        extra["premerged"] = True
    if entry.get("entry"):
        extra["entry"] = True
    answers = entry.get("answers")
    if type(answers) is str and answers:
        extra["request"] = answers  # an answer to a request for input (see task_row)
    return {
        "seq": int(entry["seq"]),
        "kind": "at_end" if entry.get("at_job_end") else "ready",
        "routine": rid,
        "slot": slot,
        "data": encode_value(entry.get("data") or {}, f"task {rid}.{slot} data"),
        "retries": int(entry.get("retry_count") or 0),
        "due_at": None,
        "extra": extra,
    }


def entry_of_row(row: TaskRow) -> dict[str, Any]:
    """A row as the saved-task dict ``task_from_dict`` reads."""
    extra = row.get("extra") or {}
    source = extra.get("source") or [None, None]
    return {
        "slot_routine_id": row["routine"],
        "slot_name": row["slot"],
        "data": row.get("data") or {},
        "connection_source_routine_id": source[0],
        "connection_source_event_name": source[1],
        "retry_count": row.get("retries") or 0,
        "premerged": bool(extra.get("premerged")),
        "entry": bool(extra.get("entry")),
        "at_job_end": row["kind"] == "at_end",
        "seq": row["seq"] if row["seq"] >= 0 else None,
    }


def missing_target(plan: Plan, row: TaskRow) -> str | None:
    """Why ``row`` cannot run in a flow compiled to ``plan`` (None: it can)."""
    rid, slot = row["routine"], row["slot"]
    if (rid, slot) in plan.slots:
        return None
    if rid not in plan.routine_ids.values():
        return f"routine '{rid}' (pending task seq {row['seq']}, slot '{slot}')"
    return f"slot '{slot}' of routine '{rid}' (pending task seq {row['seq']})"


def wall_time(due: float) -> float:
    """A timer clock reading as a Unix time."""
    return time.time() + (due - timer_service.clock())

"""The JSON the web UI serves, made from the store and the registered flows.

Everything here is plain data in, plain data out (no web framework): a job's summary
and its full view (status, open requests with their schemas, the timeline, routine
states, shared data and log, outputs, errors with tracebacks, per-routine delivery
counts, the flow's Mermaid text with activity when the flow is registered), a flow's
description (its entry routines and their parameters), and the live event one
committed delta becomes on a job's stream.

A job's state is read from the store (its snapshot with the later deltas applied), so
a job run by any process -- this one, another one, a Celery worker -- looks the same.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

from routilux.flow.diagram import activity
from routilux.store import JobSummary, JournaledJob
from routilux.store._base import build_job_state

if TYPE_CHECKING:
    from routilux.flow.flow import Flow
    from routilux.job_state import JobState

#: Every status a job can have, for the filters and for checking ``?status=``.
STATUSES = ("pending", "running", "paused", "waiting", "completed", "failed", "cancelled")

#: How many history records a job view shows (the newest ones).
TIMELINE_LIMIT = 2000


def summary_view(summary: JobSummary) -> dict[str, Any]:
    """One line of the jobs list."""
    return {
        "job_id": summary.job_id,
        "flow_id": summary.flow_id,
        "status": summary.status,
        "owner": summary.owner,
        "created_at": summary.created_at,
        "updated_at": summary.updated_at,
        "waiting": len(summary.waiting_for or []),
    }


def requests_view(waiting_for: Any) -> list[dict[str, Any]]:
    """The open requests for input, as a form is generated from them."""
    out = []
    for request in waiting_for or []:
        if not isinstance(request, Mapping):
            continue
        out.append(
            {
                "id": request.get("id"),
                "routine_id": request.get("routine_id"),
                "slot": request.get("slot"),
                "prompt": request.get("prompt", ""),
                "schema": request.get("schema"),
                "defaults": request.get("defaults") or {},
                "requested_at": request.get("requested_at"),
            }
        )
    return out


def job_view(job: JournaledJob, flow: Optional[Flow]) -> dict[str, Any]:
    """The full view of a stored job; ``flow`` (when registered) adds the diagram and
    the routines that have not run yet."""
    state = build_job_state(job, None)
    history = list(state.execution_history)
    dropped = max(0, len(history) - TIMELINE_LIMIT)
    timeline = []
    errors = []
    for record in history[dropped:]:
        data = record.data if isinstance(record.data, dict) else {}
        entry = {
            "routine_id": record.routine_id,
            "event": record.event_name,
            "time": record.timestamp.isoformat(),
            "data": data,
        }
        timeline.append(entry)
        if record.event_name in ("error", "error_continued"):
            errors.append(
                {
                    "routine_id": record.routine_id,
                    "time": entry["time"],
                    "slot": data.get("slot"),
                    "error": data.get("error"),
                    "error_type": data.get("error_type"),
                    "traceback": data.get("traceback"),
                    "action": data.get("action") or record.event_name,
                }
            )
    counts = delivery_counts(state, flow)
    routine_ids = list(flow.routines) if flow is not None else []
    for rid in list(state.routine_states) + list(counts):
        if rid not in routine_ids:
            routine_ids.append(rid)
    routines = []
    for rid in routine_ids:
        routine = flow.routines.get(rid) if flow is not None else None
        routines.append(
            {
                "routine_id": rid,
                "class": type(routine).__name__ if routine is not None else None,
                "deliveries": counts.get(rid, 0),
                "state": state.routine_states.get(rid) or {},
            }
        )
    return {
        **summary_view(job.summary),
        "commit_seq": job.commit_seq,
        "snapshot_seq": job.snapshot_seq,
        "current_routine_id": state.current_routine_id,
        "waiting_for": requests_view(job.waiting_for),
        "timeline": timeline,
        "timeline_dropped": dropped + state.history_dropped,
        "routines": routines,
        "shared_data": state.shared_data,
        "shared_log": state.shared_log,
        "outputs": state.output_log,
        "errors": errors,
        "pause_points": state.pause_points,
        "pending_tasks": len(job.tasks),
        "flow_registered": flow is not None,
        "mermaid": flow.to_mermaid(state) if flow is not None else None,
    }


def delivery_counts(state: JobState, flow: Optional[Flow]) -> dict[str, int]:
    """Routine id -> deliveries made to it, from the diagram's activity when the flow
    is known. Without the flow the connections are unknown: the routines the history
    names are listed with 0 (a job's live stream still counts its deliveries)."""
    if flow is not None:
        return {rid: act.delivered for rid, act in activity(flow, state).items()}
    counts: dict[str, int] = {}
    for record in state.execution_history:
        counts.setdefault(record.routine_id, 0)
    return counts


def flow_view(flow: Flow, detail: bool = False) -> dict[str, Any]:
    """A registered flow: its routines and entry routines; with ``detail`` also the
    entries' parameters and the diagram."""
    entries = [rid for rid, routine in flow.routines.items() if routine.get_slot("trigger")]
    view: dict[str, Any] = {
        "flow_id": flow.flow_id,
        "routines": list(flow.routines),
        "entries": entries,
        "mermaid": flow.to_mermaid(),
    }
    if detail:
        view["entry_params"] = {rid: entry_params(flow, rid) for rid in entries}
        view["connections"] = [
            {
                "source": connection._source_routine_id,
                "event": connection.source_event.name if connection.source_event else None,
                "target": connection._target_routine_id,
                "slot": connection.target_slot.name if connection.target_slot else None,
            }
            for connection in flow.connections
        ]
    return view


def entry_params(flow: Flow, routine_id: str) -> list[dict[str, Any]]:
    """The parameters the entry routine's ``trigger`` handler takes (name, whether it
    is required, its default when that is JSON-safe)."""
    slot = flow.routines[routine_id].get_slot("trigger")
    handler = getattr(slot, "handler", None)
    if handler is None:
        return []
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return []
    params = []
    for name, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or name == "self":
            continue
        item: dict[str, Any] = {"name": name, "required": param.default is param.empty}
        if param.default is not param.empty and _json_safe(param.default):
            item["default"] = param.default
        params.append(item)
    return params


def _json_safe(value: Any) -> bool:
    if value is None or isinstance(value, (bool, str, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return False


def delta_event(delta: Mapping[str, Any], task_routines: dict[int, tuple[str, str]]) -> dict:
    """The live event of one committed delta of a job's journal.

    ``task_routines`` maps the job's task seqs to ``(routine, slot)``; the tasks the
    delta adds are entered in it, so the delivery of a later delta is named.
    """
    for task in delta.get("tasks_added") or []:
        task_routines[task["seq"]] = (task["routine"], task["slot"])
    delivery = None
    consumed = delta.get("consumed")
    if isinstance(consumed, int):
        routine, slot = task_routines.pop(consumed, (None, None))
        delivery = {"routine_id": routine, "slot": slot, "task": consumed}
    outputs = []
    history = []
    shared = []
    for op in delta.get("ops") or []:
        if not isinstance(op, list) or not op:
            continue
        if op[0] == "output" and len(op) >= 5:
            outputs.append(
                {"routine_id": op[1], "output_type": op[2], "data": op[3], "timestamp": op[4]}
            )
        elif op[0] == "history" and len(op) >= 5:
            history.append({"routine_id": op[1], "event": op[2], "time": op[4]})
        elif op[0].startswith("shared_") and len(op) >= 2:
            shared.append(op[1])
    waiting = delta.get("waiting_for")
    return {
        "seq": delta.get("seq"),
        "delivery": delivery,
        "status": delta.get("status"),
        "outputs": outputs,
        "history": history,
        "shared_keys": shared,
        "waiting_for": (
            requests_view(waiting["set"])
            if isinstance(waiting, Mapping) and "set" in waiting
            else ([] if isinstance(waiting, Mapping) else None)
        ),
    }


def task_routines_of(job: JournaledJob) -> dict[int, tuple[str, str]]:
    """Task seq -> (routine, slot) for every task of ``job`` the load shows: its
    pending tasks, the tasks its deltas added, and its entry delivery (seq 0 unless
    the snapshot says otherwise)."""
    known: dict[int, tuple[str, str]] = {}
    entry = job.snapshot.get("current_routine_id") if isinstance(job.snapshot, dict) else None
    if isinstance(entry, str) and job.snapshot_seq == 0:
        known[0] = (entry, "trigger")
    for delta in job.deltas:
        for task in delta.get("tasks_added") or []:
            known[task["seq"]] = (task["routine"], task["slot"])
    for task in job.tasks:
        known[task["seq"]] = (task["routine"], task["slot"])
    return known

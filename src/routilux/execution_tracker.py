"""Execution tracker: timings of routine runs and the list of emitted events of one job.

This module owns ``ExecutionTracker`` (spec 70 §2): per-routine start/end records, the
event flow, and the performance summaries computed from them. A tracker belongs to one job
(DESIGN invariant 2); ``flow.execution_tracker`` points at the tracker of the latest job.

Hot path: the engine calls ``record_emission`` once per emission with the job's own
history record, which is appended as is (no copy, no new object; the routine that
received the event is worked out from the flow's wiring only when the event flow is
read). ``record_event`` appends a tuple ``(timestamp, source, event, target, data)``.
Both are single list appends -- atomic under the GIL, so several threads may record at
once without a lock.
Building the public dicts (ISO timestamps, ``data or {}``) is deferred to the first read of
``event_flow``, which converts only what was recorded since the previous read, under a lock
that the recording side never takes.

The engine does not know the tracker: the flow installs a :class:`TrackerHooks` (a
lifecycle hook, ``hooks.py``) for every run, which feeds the run's tracker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Union

from routilux.hooks import JobHooks
from routilux.serialization import layout_of, register_serializable

if TYPE_CHECKING:
    from routilux.job_state import ExecutionRecord, JobState

__all__ = ["ExecutionTracker", "TrackerHooks"]

logger = logging.getLogger("routilux.execution_tracker")

# A recorded event before formatting: (timestamp, source, event name, target, data).
# The timestamp is a time.time() float, or the datetime the caller passed.
_RawEvent = tuple[Union[float, datetime], str, str, Union[str, None], Any]

_clock = time.time  # module global: one lookup cheaper than time.time on the hot path


def _format_event(raw: Any, target_of: Callable[[str, str], str | None] | None) -> dict[str, Any]:
    if not isinstance(raw, tuple):  # an ExecutionRecord given to record_emission
        source, event_name = raw.routine_id, raw.event_name
        target = target_of(source, event_name) if target_of is not None else None
        raw = (raw.timestamp, source, event_name, target, raw.data)
    ts, source, event_name, target, data = raw
    moment = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts)
    return {
        "timestamp": moment.isoformat(),
        "source_routine_id": source,
        "event_name": event_name,
        "target_routine_id": target,
        "data": data or {},
    }


@register_serializable
class ExecutionTracker:
    """Records routine executions and emitted events of one job.

    Attributes:
        flow_id: id of the flow the job runs.
        routine_executions: routine id -> list of execution records (dicts).
        event_flow: list of event dicts, oldest first (see ``record_event``).
        performance_metrics: free-form dict, kept for compatibility (never filled).
    """

    def __init__(self, flow_id: str = "", max_events: int | None = None) -> None:
        if max_events is not None and max_events < 1:
            raise ValueError(f"max_events must be a positive integer, got {max_events}")
        self.flow_id = flow_id
        #: Keep only the newest N events (None: all), like a job's history_limit.
        self.max_events = max_events
        self.routine_executions: dict[str, list[dict[str, Any]]] = {}
        self.performance_metrics: dict[str, Any] = {}
        # Recorded, not yet formatted: _RawEvent tuples and ExecutionRecords.
        self._pending: list[Any] = []
        #: (source routine id, event name) -> the routine of its first connected slot;
        #: set by the engine, used to format records given to record_emission.
        self._target_of: Callable[[str, str], str | None] | None = None
        self._events: list[dict[str, Any]] = []  # formatted; the list event_flow returns
        self._format_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"ExecutionTracker(flow_id={self.flow_id!r}, "
            f"routines={len(self.routine_executions)}, events={self._event_count()})"
        )

    # -- events -------------------------------------------------------------------------

    def record_event(
        self,
        source_routine_id: str,
        event_name: str,
        target_routine_id: str | None = None,
        data: Any = None,
        timestamp: datetime | None = None,
    ) -> None:
        """Record one emission. ``timestamp`` defaults to now (naive local time).

        ``data`` is kept by reference, not copied.
        """
        self._pending.append(
            (timestamp or _clock(), source_routine_id, event_name, target_routine_id, data)
        )
        if self.max_events is not None:
            self._bound_pending(self.max_events)

    def record_emission(self, record: Any) -> None:
        """Record one emission given as the job's history record (an ExecutionRecord)."""
        self._pending.append(record)
        if self.max_events is not None:
            self._bound_pending(self.max_events)

    def _bound_pending(self, limit: int) -> None:
        # Trim in batches (at twice the limit) so recording stays cheap.
        if len(self._pending) > 2 * limit:
            with self._format_lock:
                excess = len(self._pending) - limit
                if excess > 0:
                    del self._pending[:excess]
                    del self._events[:]  # all older than what is kept

    @property
    def event_flow(self) -> list[dict[str, Any]]:
        """Every recorded event as ``{"timestamp": iso, "source_routine_id", "event_name",
        "target_routine_id", "data"}``, oldest first.

        Always the same list object; events recorded later are appended to it on the next
        read of this property.
        """
        if self._pending:
            self._format_pending()
        return self._events

    @event_flow.setter
    def event_flow(self, events: list[dict[str, Any]]) -> None:
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise TypeError("event_flow must be a list of dicts")
        with self._format_lock:
            self._pending.clear()
            self._events = [dict(e) for e in events]

    def _format_pending(self) -> None:
        with self._format_lock:
            count = len(self._pending)
            if not count:
                return
            batch = self._pending[:count]
            # Events appended meanwhile sit after index count and stay pending.
            del self._pending[:count]
            target_of = self._target_of
            self._events.extend(_format_event(raw, target_of) for raw in batch)
            limit = self.max_events
            if limit is not None and len(self._events) > limit:
                del self._events[: len(self._events) - limit]

    def _event_count(self) -> int:
        with self._format_lock:
            return len(self._events) + len(self._pending)

    # -- routine runs -------------------------------------------------------------------

    def record_routine_start(
        self,
        routine_id: str,
        params: dict[str, Any] | None = None,
        *,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """Append a ``running`` record for ``routine_id`` stamped with the start time
        (``at``, default now); returns the record."""
        record = {
            "routine_id": routine_id,
            "start_time": (at or datetime.now()).isoformat(),
            "params": params or {},
            "status": "running",
        }
        self.routine_executions.setdefault(routine_id, []).append(record)
        return record

    def record_routine_end(
        self,
        routine_id: str,
        status: str = "completed",
        result: Any = None,
        error: str | None = None,
    ) -> None:
        """Close the latest record of ``routine_id``; a no-op when it has none.

        Sets ``end_time``, ``status``, ``execution_time`` (seconds since ``start_time``)
        and, when not None, ``result`` and ``error``.
        """
        records = self.routine_executions.get(routine_id)
        if not records:
            return
        record = records[-1]
        end = datetime.now()
        self._close(record, status, result, error, end.isoformat())
        # Parsed inline (no helper call): a flow closes the entry's record once per job.
        start_text = record.get("start_time")
        start = None
        if isinstance(start_text, str):
            try:
                start = datetime.fromisoformat(start_text)
            except ValueError:
                pass
        if start is None:
            logger.debug("record of %r has no valid start_time; no execution_time", routine_id)
            return
        if start.tzinfo is not None:
            end = end.astimezone(start.tzinfo)  # naive `end` is local time
        record["execution_time"] = (end - start).total_seconds()

    @staticmethod
    def _close(
        record: dict[str, Any], status: str, result: Any, error: str | None, end_time: str
    ) -> None:
        record["end_time"] = end_time
        record["status"] = status
        if result is not None:
            record["result"] = result
        if error is not None:
            record["error"] = error

    # -- summaries ----------------------------------------------------------------------

    def get_routine_performance(self, routine_id: str) -> dict[str, Any] | None:
        """Counts and timings of ``routine_id``'s runs; None when it never ran."""
        records = self.routine_executions.get(routine_id)
        if not records:
            return None
        records = list(records)
        total = len(records)
        completed = sum(1 for r in records if r.get("status") == "completed")
        failed = sum(1 for r in records if r.get("status") == "failed")
        times = [
            float(r["execution_time"])
            for r in records
            if isinstance(r.get("execution_time"), (int, float))
        ]
        return {
            "total_executions": total,
            "completed": completed,
            "failed": failed,
            "success_rate": completed / total,
            "avg_execution_time": sum(times) / len(times) if times else 0.0,
            "min_execution_time": min(times) if times else 0.0,
            "max_execution_time": max(times) if times else 0.0,
        }

    def get_flow_performance(self) -> dict[str, Any]:
        """Totals over all routines: count, events, and sum/mean of per-routine averages."""
        averages = []
        for routine_id in list(self.routine_executions):
            perf = self.get_routine_performance(routine_id)
            if perf is not None and perf["avg_execution_time"]:
                averages.append(perf["avg_execution_time"])
        total_time = sum(averages, 0.0)
        return {
            "total_routines": len(self.routine_executions),
            "total_events": self._event_count(),
            "total_execution_time": total_time,
            "avg_routine_time": total_time / len(averages) if averages else 0.0,
        }

    # -- serialization ------------------------------------------------------------------

    def serialize(self) -> dict[str, Any]:
        """``{"_type", "flow_id", "routine_executions", "event_flow",
        "performance_metrics"}`` (and ``max_events`` when set); records are copied,
        event data is not. The layout is in ``routilux.persistence``."""
        return layout_of(type(self)).serialize(self)

    def deserialize(self, data: Mapping[str, Any]) -> ExecutionTracker:
        """Replace this tracker's contents with ``data`` (from ``serialize``); returns self.

        Unknown keys are ignored; missing ones get their defaults. Wrongly typed values
        raise :class:`SerializationError`.
        """
        layout_of(type(self)).deserialize(self, data)
        return self


class TrackerHooks(JobHooks):
    """The lifecycle hook that feeds a job's tracker (``job_state.execution_tracker``).

    The flow makes a new :class:`ExecutionTracker` for every run and records the
    entry routine's start in it (``record_routine_start``, with the entry
    parameters); this hook records every emission and closes the entry's record
    when the run ends: with its final status, or ``failed`` and the error when a
    STOP failure of the entry routine failed the job (spec 70 §2).  A resumed
    run's tracker has no routine record: it gets emissions only.  The hook keeps
    no state, so one instance serves every job.
    """

    # Called directly by the engine (see hooks.py): it never raises and its
    # on_emit runs once per emission.
    _routilux_trusted = True

    def __repr__(self) -> str:
        return "TrackerHooks()"

    def on_emit(self, job_state: JobState, record: ExecutionRecord) -> None:
        # record_emission, inlined: this runs once per emission.
        tracker = job_state.execution_tracker
        if tracker is not None:
            tracker._pending.append(record)
            if tracker.max_events is not None:
                tracker._bound_pending(tracker.max_events)

    def on_job_end(self, job_state: JobState) -> None:
        tracker = job_state.execution_tracker
        if tracker is None or not tracker.routine_executions:
            return
        status = job_state.status
        for entry in tuple(tracker.routine_executions):  # the entry routine only
            # Read past the change capture (``dict.get``): the hook only reads the
            # state, so a durable job's journal need not mark it taken, encode it now
            # and again when the job settles to find it unchanged.
            state = dict.get(job_state.routine_states, entry) or {}
            if status == "completed" or job_state._paused_after_completion:
                # The engine has merged the entry's final status into its state,
                # with its times (measured from the record's start): reuse them.
                final = str(state.get("status", "completed"))
                records = tracker.routine_executions[entry]
                end_time, took = state.get("end_time"), state.get("execution_time")
                if (
                    records
                    and isinstance(end_time, str)
                    and isinstance(took, float)
                    and records[-1].get("start_time") == state.get("start_time")
                ):
                    tracker._close(records[-1], final, None, None, end_time)
                    records[-1]["execution_time"] = took
                else:
                    tracker.record_routine_end(entry, final)
            elif status == "failed" and state.get("status") == "failed":
                # A STOP failure of the entry routine.
                tracker.record_routine_end(entry, "failed", error=state.get("error"))


#: The one instance every job uses.
TRACKER_HOOKS = TrackerHooks()

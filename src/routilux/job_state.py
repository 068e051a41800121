"""Everything that changes while a job runs: :class:`JobState` and :class:`ExecutionRecord`.

A JobState is data plus a lock.  The engine writes into it (status, history,
slot buffers, pending tasks); handlers write into it through
``self.get_execution_context().job_state``.  Each public mutator is atomic, so
handlers of one job running on several threads never lose an update; a
read-modify-write made of several calls is atomic only under :attr:`JobState.lock`.
While a :class:`routilux.changes.ChangeLog` is attached (``_changes``), each mutator
hands it the op to record, under the lock, before it changes anything.
"""

from __future__ import annotations

import os
import threading
import warnings
from datetime import datetime
from typing import Any, Callable, Optional, Protocol

from .exceptions import InvalidArgumentError, JobStateError
from .serialization import layout_of, register_serializable

__all__ = ["ExecutionRecord", "JobState", "register_serializable"]

#: A hook caller (``routilux.hooks.Caller``): None when nobody listens.
_Caller = Optional[Callable[..., None]]


class ChangeRecorder(Protocol):
    """What a JobState hands its attached change capture (``routilux.changes.ChangeLog``,
    a layer above, which imports this module): one call per mutation, under the lock."""

    def merge_state(self, routine_id: str, updates: dict[str, Any]) -> None: ...
    def history(self, record: ExecutionRecord) -> None: ...
    def log(self, entry: dict[str, Any]) -> None: ...
    def deferred(self, event: dict[str, Any]) -> None: ...
    def encode_output(self, data: Any) -> Any: ...
    def output(self, entry: dict[str, Any], encoded: Any) -> None: ...


class InstalledHooks(Protocol):
    """What is read of the hooks installed on a job (``routilux.hooks.HookSet``, a
    layer above): the hooks themselves, the stream door, and the callers read from
    the JobState rather than kept by the engine."""

    hooks: tuple[Any, ...]
    attach: Any
    status: _Caller
    output: _Caller
    timer: _Caller
    job_end: _Caller


#: Statuses after which the job does no more work until it is resumed.
#: (``waiting`` is not one: an input sent to the job resumes it by itself.)
FINISHED_STATUSES = frozenset({"completed", "failed", "cancelled"})

#: Statuses that never change again (spec README item 8).
FINAL_STATUSES = frozenset({"failed", "cancelled"})

#: The job status state machine: status -> the statuses it may become.  Every
#: change of ``JobState.status`` made by the library goes through a ``_set_*``
#: method of JobState (most through :meth:`JobState._transition`, which checks
#: this table; the two taken once per job inline their check).  A job ``waiting``
#: for human input (``Routine.request_input``) has nothing left to run but an open
#: request: ``flow.send_input`` (or a resume) makes it ``running`` again; it can be
#: paused (it stays waiting for its input, and resumes to ``waiting``) or cancelled,
#: and it never completes while a request is open.  Two extra rules:
#: a ``running`` status with no run behind it (a JobState saved while running
#: and loaded) carries no pending work, so it cannot be paused or resumed; and a
#: completed job that was paused afterwards ("paused after completion", flagged in
#: its pause point) is still completed: it resumes to ``completed`` and cannot be
#: cancelled or failed.
TRANSITIONS: dict[str, frozenset[str]] = {
    # pending -> paused: a JobState built by hand (pending tasks filled in) to be resumed.
    "pending": frozenset({"running", "paused", "cancelled"}),
    "running": frozenset({"paused", "waiting", "completed", "failed", "cancelled"}),
    # waiting: nothing runs, so nothing can fail it; an input or a resume runs it.
    "waiting": frozenset({"running", "paused", "cancelled"}),
    # paused -> failed: a handler still running when the pause began may fail the job.
    "paused": frozenset({"running", "paused", "completed", "failed", "cancelled"}),
    # Seed-era code pauses completed jobs; nothing is pending then.
    "completed": frozenset({"paused"}),
    "failed": frozenset(),
    "cancelled": frozenset(),
}

#: The key of a pause point that marks a pause of a job that had completed.
AFTER_COMPLETION = "after_completion"


# The version (4) and variant (RFC 4122) bits of a random UUID, for _new_job_id.
_UUID4_KEEP = ~(0xF000 << 64) & ~(0xC000 << 48)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def _new_job_id() -> str:
    """A random (version 4) UUID as text, the same as ``str(uuid.uuid4())``,
    without building the ``UUID`` object (one is made per job)."""
    h = "%032x" % (int.from_bytes(os.urandom(16), "big") & _UUID4_KEEP | _UUID4_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@register_serializable
class ExecutionRecord:
    """One entry of a job's history: an emission, or a handler failure."""

    # ``saved_text``: the record's saved form as JSON text, set by the change capture
    # of a durable job when it writes the record's op (routilux.changes), so that a
    # snapshot does not encode the record again; None otherwise.
    __slots__ = ("routine_id", "event_name", "data", "timestamp", "saved_text")

    def __init__(
        self,
        routine_id: str = "",
        event_name: str = "",
        data: dict[str, Any] | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        self.routine_id = routine_id
        self.event_name = event_name
        self.data = data or {}
        self.timestamp = timestamp if timestamp is not None else datetime.now()
        self.saved_text: str | None = None

    def __repr__(self) -> str:
        return f"ExecutionRecord[{self.routine_id}.{self.event_name}@{self.timestamp}]"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExecutionRecord):
            return NotImplemented
        return (self.routine_id, self.event_name, self.data, self.timestamp) == (
            other.routine_id,
            other.event_name,
            other.data,
            other.timestamp,
        )

    __hash__ = None  # type: ignore[assignment]

    def serialize(self) -> dict[str, Any]:
        """A JSON-safe dict (the timestamp as an ISO string; layout: ``routilux.persistence``)."""
        return layout_of(type(self)).serialize(self)

    def deserialize(self, data: dict[str, Any]) -> ExecutionRecord:
        """Restore from :meth:`serialize` output; returns ``self``."""
        layout_of(type(self)).deserialize(self, data)
        return self


@register_serializable
class JobState:
    """The state of one execution (job) of a flow.

    ``history_limit`` keeps only the newest N history records;
    :attr:`history_dropped` counts the records it let go.  ``output_limit``
    does the same for :attr:`output_log` (default: the history limit), counting
    in :attr:`output_dropped`; the output handler still receives every output.
    """

    def __init__(
        self,
        flow_id: str = "",
        history_limit: int | None = None,
        output_limit: int | None = None,
    ) -> None:
        if history_limit is not None and history_limit < 1:
            raise ValueError(f"history_limit must be a positive integer, got {history_limit}")
        if output_limit is not None and not _positive_int(output_limit):
            raise InvalidArgumentError(
                f"JobState: output_limit must be a positive integer or None, got {output_limit!r}"
            )
        now = datetime.now()
        self.flow_id = flow_id
        self.job_id = _new_job_id()
        self.status = "pending"
        self.current_routine_id: str | None = None
        self.routine_states: dict[str, dict[str, Any]] = {}
        self.history_limit = history_limit
        self.execution_history: list[ExecutionRecord] = []
        self.history_dropped = 0
        self.pause_points: list[dict[str, Any]] = []
        self.pending_tasks: list[dict[str, Any]] = []
        self.deferred_events: list[dict[str, Any]] = []
        self.shared_data: dict[str, Any] = {}
        self.shared_log: list[dict[str, Any]] = []
        self.output_log: list[dict[str, Any]] = []
        #: Keep only the newest N entries of :attr:`output_log` (None: all of them).
        self.output_limit = output_limit if output_limit is not None else history_limit
        self.output_dropped = 0
        #: Per-job slot merge buffers: routine id -> slot name -> accumulated data.
        self.slot_buffers: dict[str, dict[str, Any]] = {}
        self.output_handler: Any = None
        #: The ExecutionTracker of the job's latest run (set by the engine; never saved).
        self.execution_tracker: Any = None
        self.created_at = now
        self.updated_at = now
        #: Open requests for human input, oldest first (``routilux.inputs``).
        self.waiting_for: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        # A latch: held while the job has work queued, running or scheduled.
        # (A bare lock is much cheaper to make than an Event, and jobs are many.)
        self._busy = threading.Lock()

    #: The lifecycle hooks of the job's latest run (a ``hooks.HookSet``), installed
    #: by the flow when it starts or resumes the job; None for a JobState no flow
    #: has run.  Status changes and outputs are reported to it.  Never saved.
    _hooks: InstalledHooks | None = None
    #: The next task number the engine gives out in this job (``Task.seq``); saved.
    task_seq: int = 0

    #: Ids of open requests whose input is queued but not yet delivered (a journaled
    #: job closes them when the delivery starts); never saved.
    _answering: frozenset[str] = frozenset()

    #: The ChangeLog recording this job's mutations (``routilux.changes``), or None:
    #: then each mutator pays one attribute check for it.  Never saved.
    _changes: ChangeRecorder | None = None

    def __repr__(self) -> str:
        return f"JobState[{self.job_id}:{self.status}]"

    @property
    def lock(self) -> threading.RLock:
        """The job's re-entrant lock: hold it to make a read-modify-write atomic."""
        return self._lock

    # -- persistence ---------------------------------------------------------

    def serialize(self) -> dict[str, Any]:
        """The whole job state as JSON-safe data (the output handler is never saved)."""
        return layout_of(type(self)).serialize(self)

    def deserialize(self, data: dict[str, Any]) -> JobState:
        """Restore from :meth:`serialize` output in place; returns ``self``."""
        layout_of(type(self)).deserialize(self, data)
        return self

    def save(self, filepath: str | os.PathLike[str]) -> None:
        """Write the job state to ``filepath`` as JSON (atomically)."""
        layout_of(type(self)).save(self, filepath)

    @classmethod
    def load(cls, filepath: str | os.PathLike[str]) -> JobState:
        """Read a job state written by :meth:`save`."""
        loaded: JobState = layout_of(cls).load(filepath, cls)
        return loaded

    # -- routine state ---------------------------------------------------

    def get_routine_state(self, routine_id: str) -> dict[str, Any] | None:
        """The stored state of ``routine_id``, or None."""
        return self.routine_states.get(routine_id)

    def update_routine_state(self, routine_id: str, state: dict[str, Any]) -> None:
        """Replace the state of ``routine_id`` with a shallow copy of ``state``."""
        if not isinstance(state, dict):
            raise TypeError(
                f"routine state for '{routine_id}' must be a dict, got {type(state).__name__}"
            )
        with self._lock:
            self.routine_states[routine_id] = dict(state)
            self.updated_at = datetime.now()

    def merge_routine_state(
        self, routine_id: str, updates: dict[str, Any], at: datetime | None = None
    ) -> None:
        """Merge ``updates`` into the state of ``routine_id``, keeping its other keys
        (``at``: the time of the change when the caller has just read the clock)."""
        with self._lock:
            changes = self._changes
            if changes is not None:
                changes.merge_state(routine_id, updates)  # merges without a "take"
            else:
                state = dict(self.routine_states.get(routine_id) or {})
                state.update(updates)
                self.routine_states[routine_id] = state
            self.updated_at = at if at is not None else datetime.now()

    # -- history -----------------------------------------------------------

    def record_execution(
        self,
        routine_id: str,
        event_name: str,
        data: dict[str, Any] | None,
        timestamp: datetime | None = None,
    ) -> ExecutionRecord:
        """Append one history record (an emission or an error) and return it."""
        record = ExecutionRecord(routine_id, event_name, data, timestamp)
        limit = self.history_limit
        changes = self._changes
        if limit is None and changes is None:
            # One list append is atomic; the lock is needed only to trim (or journal).
            self.execution_history.append(record)
            self.updated_at = record.timestamp
            return record
        with self._lock:
            if changes is not None:
                changes.history(record)
            history = self.execution_history
            history.append(record)
            if limit is not None and len(history) > limit:
                # Meant for bounding memory (limits of thousands): dropping from
                # the front of a list costs a memmove of the limit's size.
                excess = len(history) - limit
                del history[:excess]
                self.history_dropped += excess
            self.updated_at = record.timestamp
        return record

    def get_execution_history(self, routine_id: str | None = None) -> list[ExecutionRecord]:
        """A new list of records, oldest first, optionally only those of ``routine_id``."""
        with self._lock:
            records = list(self.execution_history)
        if routine_id is not None:
            records = [r for r in records if r.routine_id == routine_id]
        records.sort(key=_record_time)
        return records

    # -- shared data and log ---------------------------------------------

    def update_shared_data(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` in the job's shared data."""
        with self._lock:
            self.shared_data[key] = value
            self.updated_at = datetime.now()

    def get_shared_data(self, key: str, default: Any = None) -> Any:
        """The object stored under ``key`` (not a copy), or ``default``."""
        return self.shared_data.get(key, default)

    def append_to_shared_log(self, entry: dict[str, Any]) -> None:
        """Append a dict to the shared log, stamping an ISO ``timestamp`` if it has none."""
        if not isinstance(entry, dict):
            raise ValueError("Entry must be a dictionary")
        now = datetime.now()
        if "timestamp" not in entry:
            entry = dict(entry)
            entry["timestamp"] = now.isoformat()
        with self._lock:
            changes = self._changes
            if changes is not None:
                changes.log(entry)
            self.shared_log.append(entry)
            self.updated_at = now

    def get_shared_log(
        self, filter_func: Callable[[dict[str, Any]], Any] | None = None
    ) -> list[dict[str, Any]]:
        """A copy of the shared log, or the entries ``filter_func`` accepts."""
        with self._lock:
            log = list(self.shared_log)
        if filter_func is None:
            return log
        return [e for e in log if filter_func(e)]

    # -- deferred events and output ------------------------------------------

    def add_deferred_event(self, routine_id: str, event_name: str, data: dict[str, Any]) -> None:
        """Store an event to be emitted when the job is resumed."""
        now = datetime.now()
        event = {
            "routine_id": routine_id,
            "event_name": event_name,
            "data": data,
            "timestamp": now.isoformat(),
        }
        with self._lock:
            changes = self._changes
            if changes is not None:
                changes.deferred(event)
            self.deferred_events.append(event)
            self.updated_at = now

    def set_output_handler(self, handler: Any) -> None:
        """Install the output handler (``None`` disables); it is never serialized."""
        self.output_handler = handler

    def send_output(self, routine_id: str, output_type: str, data: dict[str, Any]) -> None:
        """Pass output to the output handler (if any) and append it to :attr:`output_log`.

        In a job run by a flow the output goes to the job's hooks (``on_output``),
        one of which hands it to the output handler."""
        ts = datetime.now()
        changes = self._changes
        # Journaled: encoded first, so data a save would refuse reaches no one.
        encoded = changes.encode_output(data) if changes is not None else None
        hooks = self._hooks
        if hooks is None:
            self._hand_to_output_handler(routine_id, output_type, data, ts, stacklevel=3)
        elif hooks.output is not None:
            hooks.output(self, routine_id, output_type, data, ts)
        entry = {
            "routine_id": routine_id,
            "output_type": output_type,
            "data": data,
            "timestamp": ts.isoformat(),
        }
        with self._lock:
            if changes is not None:
                changes.output(entry, encoded)
            log = self.output_log
            log.append(entry)
            limit = self.output_limit
            if limit is not None and len(log) > limit:
                # As for history: a memmove of the limit's size per trimmed append.
                excess = len(log) - limit
                del log[:excess]
                self.output_dropped += excess
            self.updated_at = ts

    def _hand_to_output_handler(
        self, routine_id: str, output_type: str, data: Any, ts: datetime, stacklevel: int
    ) -> None:
        """Call the output handler, if one is set; its failure becomes a warning
        (``stacklevel`` points it at the routine's ``send_output`` call)."""
        handler = self.output_handler
        if handler is None:
            return
        try:
            handler.handle(
                job_id=self.job_id,
                routine_id=routine_id,
                output_type=output_type,
                data=data,
                timestamp=ts,
            )
        except Exception as exc:  # noqa: BLE001 - a broken sink must not stop the job
            warnings.warn(f"Output handler failed: {exc}", RuntimeWarning, stacklevel=stacklevel)

    # -- status ------------------------------------------------------------
    #
    # The engine and the flow change the status only through these methods, each
    # atomic under the job's lock.  A refused change raises JobStateError and
    # leaves the JobState untouched.

    @property
    def _paused_after_completion(self) -> bool:
        """True for a completed job that was paused afterwards (it is still done)."""
        return (
            self.status == "paused"
            and bool(self.pause_points)
            and bool(self.pause_points[-1].get(AFTER_COMPLETION))
        )

    def _is_active(self) -> bool:
        """True while an engine run of this job has work (the latch is held)."""
        return self._busy.locked()

    def _refuse(self, action: str, why: str) -> JobStateError:
        return JobStateError(f"Cannot {action} job {self.job_id}: it is {self.status}; {why}")

    def _transition(self, new_status: str, action: str) -> str:
        """Move to ``new_status`` if the state machine allows it; returns the old status.

        Call with the lock held.  ``action`` names the operation for the error
        message (``"pause"``, ``"resume"``, ``"cancel"``...).
        """
        old = self.status
        if old in FINAL_STATUSES:
            raise self._refuse(action, f"{old} is a final status")
        allowed = TRANSITIONS.get(old)
        if allowed is None:
            raise self._refuse(action, f"'{old}' is not a status this library knows")
        if self._paused_after_completion and new_status in ("cancelled", "failed", "running"):
            raise self._refuse(
                action, "it had completed before it was paused, and a completed job stays completed"
            )
        if new_status not in allowed:
            if old == "completed":
                why = "a completed job stays completed"
            elif old == "pending":
                why = "it has not been started (use flow.execute())"
            else:
                why = f"a {old} job cannot become {new_status}"
            raise self._refuse(action, why)
        self.status = new_status
        self.updated_at = datetime.now()
        # Reported with the lock held, so hooks see statuses in their order.
        hooks = self._hooks
        if hooks is not None and hooks.status is not None:
            hooks.status(self, old, new_status)
        return old

    def _refuse_if_saved_while_running(self, action: str) -> None:
        """A ``running`` JobState with no run behind it was saved mid-run: its
        unfinished work is not in it, so pausing or resuming it would lose work."""
        if self.status == "running" and not self._is_active():
            raise JobStateError(
                f"Cannot {action} job {self.job_id}: it is running but no run of it is "
                "active here, so it was saved while it was running and carries no "
                "pending work; only paused (or journaled) jobs can be resumed. "
                "Pause the job before saving it."
            )

    def _set_paused(
        self,
        reason: str = "",
        checkpoint: dict[str, Any] | None = None,
        *,
        active: bool = True,
    ) -> dict[str, Any]:
        """Status ``paused`` and one new pause point, which is returned.

        ``active``: the caller found a run of the job that it will pause.
        Pausing a completed job (or re-pausing one paused after completion)
        flags the pause point with ``after_completion``, so a resume -- also
        after save/load -- returns it ``completed`` without running anything.
        """
        now = datetime.now()
        point: dict[str, Any] = {
            "timestamp": now.isoformat(),
            "reason": reason,
            "current_routine_id": self.current_routine_id,
            "checkpoint": checkpoint or {},
        }
        with self._lock:
            if not active:
                self._refuse_if_saved_while_running("pause")
            after_completion = self.status == "completed" or self._paused_after_completion
            self._transition("paused", "pause")
            if after_completion:
                point[AFTER_COMPLETION] = True
            self.pause_points.append(point)
        return point

    def _begin_resume(self, starting: Callable[[], None] | None = None) -> str | None:
        """The status part of ``flow.resume``, with the lock held.

        Returns ``"run"`` (paused -> running: the caller runs the pending work),
        ``"done"`` (a completed job, or one paused after completion, which is
        now ``completed`` again: nothing to run) or None (a run of the job is
        still active: wait for it to settle and ask again).  A status no resume
        can take (final, never started) raises at once, even while a run is active.
        ``starting`` is called just before paused -> running (``"run"``).
        """
        status = self.status
        if status == "pending":
            raise self._refuse("resume", "it has not been started (use flow.execute())")
        if status in FINAL_STATUSES or status not in TRANSITIONS:
            self._transition("running", "resume")  # raises, naming the status
        if self._is_active():
            return None
        if status == "completed":
            return "done"
        if status == "running":
            self._refuse_if_saved_while_running("resume")
        if self._paused_after_completion:
            self._transition("completed", "resume")
            return "done"
        if starting is not None:
            starting()
        self._transition("running", "resume")
        return "run"

    def _set_running(self) -> None:
        """paused (or waiting) -> running (see :meth:`_begin_resume`, which flow.resume uses)."""
        with self._lock:
            if self.status in ("paused", "waiting"):
                self._transition("running", "resume")

    def _set_cancelled(self, reason: str = "") -> None:
        """Status ``cancelled``; raises JobStateError for a finished job.  Its open
        requests for input are dropped: a cancelled job waits for nothing."""
        with self._lock:
            self._transition("cancelled", "cancel")
            self.waiting_for = []
            if reason:
                self.merge_routine_state("_cancellation", {"reason": reason})

    def _set_failed(self) -> bool:
        """Status ``failed`` unless the job already has a final status (or completed);
        True when it changed.  Never raises: a failure after a cancel stays cancelled."""
        with self._lock:
            if self.status not in ("running", "paused") or self._paused_after_completion:
                return False
            self._transition("failed", "fail")
            self.waiting_for = []  # a failed job waits for nothing
            return True

    def _set_failed_by_journal(self) -> None:
        """completed -> failed, outside the table: the job's journal could not make
        its completion durable (a StoreError, recorded in the history), so the store
        never saw it finish; the only exception to "a completed job stays completed"."""
        with self._lock:
            if self.status != "completed":
                return
            self.status = "failed"
            self.updated_at = datetime.now()
            hooks = self._hooks
            if hooks is not None and hooks.status is not None:
                hooks.status(self, "completed", "failed")

    def _set_started(self) -> None:
        """pending -> running, for a JobState ``execute()`` has just made."""
        # Once per job: the table's check is inlined (pending -> running is allowed).
        with self._lock:
            if self.status != "pending":
                raise self._refuse("execute", "only a new JobState can be started")
            self.status = "running"
            hooks = self._hooks
            if hooks is not None and hooks.status is not None:
                hooks.status(self, "pending", "running")

    def _set_completed(self) -> bool:
        """running -> completed when the job settles; True when it changed."""
        # Once per job: the table's check is inlined (running -> completed is allowed).
        with self._lock:
            if self.status != "running":
                return False
            self.status = "completed"
            hooks = self._hooks
            if hooks is not None and hooks.status is not None:
                hooks.status(self, "running", "completed")
            return True

    def _set_waiting(self) -> bool:
        """running -> waiting when the job settles with a request for input open;
        True when it changed."""
        if not self.waiting_for:
            # The list is replaced, never changed in place: one read decides
            # (the commonest case, once per job: no lock round).
            return False
        with self._lock:
            if self.status != "running" or not self.waiting_for:
                return False
            self._transition("waiting", "wait for input")
            return True

    # -- requests for human input (routilux.inputs) ----------------------------

    def _open_request(self, request: dict[str, Any]) -> None:
        """Add an open request (made by ``routilux.inputs.new_request``)."""
        with self._lock:
            self.waiting_for = [*self.waiting_for, request]
            self.updated_at = datetime.now()

    def _close_request(self, request_id: str) -> dict[str, Any] | None:
        """Remove the open request ``request_id``; returns it, or None."""
        with self._lock:
            for index, request in enumerate(self.waiting_for):
                if request.get("id") == request_id:
                    # A new list: a reader holding the old one sees it unchanged.
                    self.waiting_for = self.waiting_for[:index] + self.waiting_for[index + 1 :]
                    self.updated_at = datetime.now()
                    return request
            return None

    def wait_for_completion(self, timeout: float | None = None) -> bool:
        """Block until no work of this job is queued, running or scheduled.

        Returns True when the job has settled (completed, failed, cancelled,
        paused, or waiting for input), False when ``timeout`` seconds passed first.
        """
        if self._busy.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._busy.release()
            return True
        return False

    def _mark_busy(self) -> None:
        """The engine starts running this job (the latch closes)."""
        self._busy.acquire(blocking=False)

    def _mark_settled(self) -> None:
        """The engine has no work of this job left (the latch opens)."""
        if self._busy.locked():
            self._busy.release()

    def events(self, kinds: Any = None, *, maxsize: int = 1000, overflow: str = "block") -> Any:
        """A sync iterator over this job's events (``routilux.streaming.EventStream``).

        A run started (or resumed) with a stream (``flow.stream``, or
        ``execute(..., hooks=[stream.hooks])``) gives that stream when no option
        is passed.  Any other job gets a stream attached from now on: it begins
        with a ``job_started`` carrying the job's current status (earlier events
        are not replayed), then every event until its run ends (a job with no
        run going on: ``job_finished`` at once).  ``kinds``, ``maxsize`` and
        ``overflow`` are those of ``flow.stream``.  One consumer per call.
        """
        return self._events(False, kinds, maxsize, overflow)

    def aevents(self, kinds: Any = None, *, maxsize: int = 1000, overflow: str = "block") -> Any:
        """:meth:`events` for asyncio: ``async for ev in job.aevents(): ...``."""
        return self._events(True, kinds, maxsize, overflow)

    def _events(self, asynchronous: bool, kinds: Any, maxsize: int, overflow: str) -> Any:
        hook_set = self._hooks
        default = kinds is None and maxsize == 1000 and overflow == "block"
        for hook in hook_set.hooks if default and hook_set is not None else ():
            # Recognised by a marker: the stream lives in a layer above this one.
            if getattr(hook, "_routilux_stream", False):
                return hook.open(asynchronous)
        attach = hook_set.attach if hook_set is not None else None
        if attach is None:
            raise JobStateError(
                f"job {self.job_id} has never been run by a flow: there is nothing to "
                "stream (use flow.execute(..., wait=False), then job.events())"
            )
        return attach(self, asynchronous, kinds=kinds, maxsize=maxsize, overflow=overflow)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _record_time(record: ExecutionRecord) -> datetime:
    return record.timestamp

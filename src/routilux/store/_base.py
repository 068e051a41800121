"""What every job store shares: the journal's record types, the ``Store`` protocol,
the checks of records and tasks before they are written, and the lease rule.

The SQL back ends (:mod:`routilux.store.sqlite`, :mod:`routilux.store.postgres`) only
move rows; what a valid record is, which jobs count as finished and when an owner
counts as dead is decided here, once, so both stores answer the same way.
"""

from __future__ import annotations

import json
import math
import operator
import os
import socket
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Union, cast, runtime_checkable

from routilux.changes import apply_ops as changes_apply_ops
from routilux.exceptions import StoreError
from routilux.jsontext import atoms_text, quote

if TYPE_CHECKING:
    from routilux.job_state import JobState

#: The version of the tables this code writes. A store whose ``meta`` table says more
#: is refused (:class:`~routilux.exceptions.SchemaVersionError`). Version 2 added
#: ``routilux_batch`` (a commit's records in one row; the task table as of the
#: snapshot): code of version 1 would not see those rows. Version 3 writes a batch
#: row's records as arrays (:data:`RECORD_FIELDS`), which code of version 2 would read
#: as objects. So older code must refuse a newer store. A version-1 or version-2
#: store is upgraded when it is opened for writing (the table created if missing and
#: the version set, in one transaction; its rows keep their objects, which every
#: reader here still takes); opened read-only, it is read as it is.
SCHEMA_VERSION = 3

#: Statuses after which a job never runs again: never claimable, no input accepted.
FINISHED_STATUSES = frozenset({"completed", "failed", "cancelled"})

#: Statuses a job is left in on purpose; :meth:`Store.claimable_jobs` does not list
#: them (a paused or waiting job is taken over only by an explicit :meth:`Store.claim`).
PARKED_STATUSES = frozenset({"paused", "waiting"})

TASK_KINDS = frozenset({"ready", "timer", "at_end", "input"})

#: What :meth:`Store.request_control` may ask of the process that runs a job.
CONTROL_ACTIONS = frozenset({"pause", "cancel"})

#: A pending piece of work of a job, JSON-safe::
#:
#:     {"seq": int, "kind": "ready"|"timer"|"at_end"|"input", "routine": str,
#:      "slot": str, "data": <JSON>, "retries": int, "due_at": float | None,
#:      "extra": dict}
TaskRow = dict[str, Any]

#: One committed change of a job (one finished delivery, or a job-level change)::
#:
#:     {"seq": int, "consumed": int | None, "ops": list, "tasks_added": [TaskRow],
#:      "tasks_removed": [int], "status": str | None,
#:      "waiting_for": None | {"set": <JSON>} | {"clear": True}}
DeltaRecord = dict[str, Any]

#: ``apply_ops(job_state, ops)``: applies a delta's state ops to a JobState in order.
ApplyOps = Callable[["JobState", list[Any]], None]

# The default of ``set_status(waiting_for=...)``: leave waiting_for as it is.
UNCHANGED: Any = type("Unchanged", (), {"__repr__": lambda self: "UNCHANGED"})()


@dataclass(frozen=True)
class JobSummary:
    """One line of :meth:`Store.list_jobs`: a job's row without its state.

    Times are Unix timestamps (seconds). ``owner`` is the id of the runner that holds
    the job, or None when no runner does.
    """

    job_id: str
    flow_id: str
    status: str
    owner: Optional[str]
    epoch: int
    created_at: float
    updated_at: float
    waiting_for: Any = None


@dataclass(frozen=True)
class JournaledJob:
    """Everything a store holds about one job (:meth:`Store.load`).

    ``snapshot`` is the JobState's saved form covering commits up to ``snapshot_seq``;
    ``deltas`` are the commits after it, in seq order (their ops still to be applied to
    the snapshot); ``tasks`` is the job's *current* pending work (every commit already
    applied), the job's own tasks in seq order followed by inputs in arrival order.
    ``commit_seq`` is the seq of the last commit (0 before the first).
    """

    job_id: str
    flow_id: str
    status: str
    owner: Optional[str]
    epoch: int
    created_at: float
    updated_at: float
    waiting_for: Any
    snapshot: dict[str, Any]
    snapshot_seq: int
    commit_seq: int
    deltas: list[DeltaRecord] = field(default_factory=list)
    tasks: list[TaskRow] = field(default_factory=list)

    @property
    def summary(self) -> JobSummary:
        """The job's row as :meth:`Store.list_jobs` reports it."""
        return JobSummary(
            self.job_id,
            self.flow_id,
            self.status,
            self.owner,
            self.epoch,
            self.created_at,
            self.updated_at,
            self.waiting_for,
        )


@runtime_checkable
class Store(Protocol):
    """A durable home for journaled jobs. Every method is one transaction.

    Writes that advance a job name its ``epoch``: a different epoch than the job's
    raises :class:`~routilux.exceptions.StaleEpochError` and writes nothing, so a
    process whose job was claimed by another runner can never advance it again.
    Methods are safe to call from several threads; the store serialises them.
    """

    #: Where the store lives, for messages: a file path or a DSN without password.
    location: str

    def create_job(
        self,
        job_id: str,
        flow_id: str,
        status: str,
        snapshot: Mapping[str, Any],
        tasks: Sequence[TaskRow] = (),
        owner: Optional[str] = None,
    ) -> int:
        """Store a new job (row and tasks together) and return its epoch, 1.

        A job id already stored raises StoreError.
        """
        ...

    def commit(self, job_id: str, epoch: int, records: Sequence[DeltaRecord]) -> None:
        """Append ``records`` to the job's journal, all or nothing.

        Each record's seq must continue the job's commit seq by one; its consumed task
        and ``tasks_removed`` are deleted, ``tasks_added`` inserted, and ``status`` /
        ``waiting_for`` applied when present.
        """
        ...

    def commit_many(self, batches: Sequence[tuple[str, int, Sequence[DeltaRecord]]]) -> None:
        """:meth:`commit` for several ``(job_id, epoch, records)`` in ONE transaction:
        if any job's batch is refused, nothing of any of them is written."""
        ...

    def write_snapshot(
        self, job_id: str, epoch: int, snapshot: Mapping[str, Any], upto_seq: int
    ) -> None:
        """Replace the snapshot by one covering commits up to ``upto_seq`` and drop
        the deltas it covers."""
        ...

    def load(self, job_id: str) -> JournaledJob:
        """The job's row, snapshot, deltas after it and current tasks."""
        ...

    def load_job(self, job_id: str, apply_ops: Optional[ApplyOps] = None) -> JobState:
        """The job's JobState: the snapshot with every later delta applied."""
        ...

    def list_jobs(
        self,
        flow_id: Optional[str] = None,
        status: Union[str, Collection[str], None] = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[JobSummary]:
        """Summaries of the stored jobs, most recently created first."""
        ...

    def set_status(
        self, job_id: str, epoch: int, status: str, waiting_for: Any = UNCHANGED
    ) -> None:
        """Set the job's status (and ``waiting_for``: a value, or None to clear)."""
        ...

    def add_input(self, job_id: str, task: Mapping[str, Any]) -> int:
        """Append an ``"input"`` task from any process (no epoch); returns its seq."""
        ...

    def delete_job(self, job_id: str) -> None:
        """Remove the job, its tasks and its deltas."""
        ...

    def register_runner(
        self, runner_id: str, host: Optional[str] = None, pid: Optional[int] = None
    ) -> None:
        """Record (or renew) a runner: its host, its PID and a fresh heartbeat."""
        ...

    def heartbeat(self, runner_id: str) -> None:
        """Renew the runner's heartbeat."""
        ...

    def remove_runner(self, runner_id: str) -> None:
        """Forget a runner (a clean exit); its jobs become claimable."""
        ...

    def claim(self, job_id: str, runner_id: str, stale_after: float) -> Optional[int]:
        """Take over an unfinished job whose owner is dead: the new epoch, else None."""
        ...

    def claimable_jobs(self, flow_id: Optional[str], stale_after: float) -> list[str]:
        """Ids of the jobs that :meth:`claim` would take and recovery should resume."""
        ...

    def release(self, job_id: str, epoch: int) -> None:
        """Clear the job's owner (the epoch stays); anyone may claim it next."""
        ...

    def request_control(self, job_id: str, action: str, reason: str = "") -> None:
        """Ask the runner that owns the job, in whichever process, to ``pause`` or
        ``cancel`` it; the runner takes the request at its next heartbeat
        (:meth:`take_control_requests`). JobNotFoundError for an unknown job."""
        ...

    def take_control_requests(self, runner_id: str) -> list[tuple[str, str, str]]:
        """Remove and return the control requests for the jobs ``runner_id`` owns, as
        ``(job_id, action, reason)`` in the order they were made. Requests for
        finished jobs are dropped."""
        ...

    def jobs_changed_since(self, since: float, limit: int = 1000) -> list[tuple[JobSummary, int]]:
        """The jobs whose row changed at or after ``since`` (a Unix time), with
        their commit seq, oldest change first: what a watcher of the store polls."""
        ...

    def close(self) -> None:
        """Close the store's connections; later calls raise StoreError."""
        ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc: object) -> None: ...


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_encode() -> Callable[[Any], str]:
    """A compact, NaN-refusing JSON encoder built once.

    ``JSONEncoder.encode`` builds a new C encoder (and a cycle-marker dict and a
    closure) on every call, which costs about as much as encoding a small record.
    The C encoder built here without cycle markers holds no per-call state, so one
    instance serves every thread; a cycle ends in RecursionError instead of
    ValueError, and :func:`dumps` turns both into StoreError.
    """
    try:
        from json.encoder import (  # type: ignore[attr-defined]
            c_make_encoder,
            encode_basestring_ascii,
        )
    except ImportError:  # pragma: no cover - CPython always has the C accelerator
        c_make_encoder = None
    if c_make_encoder is None:  # pragma: no cover
        return json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    encoder = c_make_encoder(
        None, _not_json, encode_basestring_ascii, None, ":", ",", False, False, False
    )
    join = "".join

    def encode(value: Any) -> str:
        return join(encoder(value, 0))

    return encode


_ENCODE = _make_encode()


def value_text(value: Any) -> str:
    """The JSON text of ``value`` as :data:`_ENCODE` writes it (and raises), by
    :func:`atoms_text` when it is a dict of one or two atoms (beyond that the
    encoder's set-up no longer outweighs the f-strings)."""
    if type(value) is dict and len(value) <= 2:
        text = atoms_text(value)
        if text is not None:
            return text
    return _ENCODE(value)


class EncodedSnapshot(Mapping[str, Any]):
    """A snapshot already encoded as :func:`dumps` would write it (``text``): the
    engine's journal encodes a job's snapshot at once, under the job's lock, rather
    than copying the JobState for the writer thread to encode later.  A read-only
    Mapping like any snapshot (decoded on first use), so every store takes it;
    :func:`dumps` returns its text as it is.  Internal: not part of the store API."""

    __slots__ = ("_data", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._data: Optional[dict[str, Any]] = None

    def _decoded(self) -> dict[str, Any]:
        if self._data is None:
            self._data = json.loads(self.text)
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())


def dumps(value: Any, where: str) -> str:
    """``value`` as compact JSON; anything JSON cannot hold raises StoreError."""
    if type(value) is EncodedSnapshot:
        return value.text
    try:
        return _ENCODE(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StoreError(f"{where} is not JSON-safe: {exc}") from None


def check_json(value: Any, where: str) -> None:
    """Raise StoreError when ``value`` cannot be written as JSON."""
    dumps(value, where)


def check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise StoreError(f"{what} must be a non-empty string, got {value!r}")
    return value


def check_epoch(value: Any, job_id: str) -> int:
    if not _is_int(value) or value < 1:
        raise StoreError(f"job {job_id!r}: epoch must be a positive integer, got {value!r}")
    return int(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TASK_KEYS = frozenset({"seq", "kind", "routine", "slot", "data", "retries", "due_at", "extra"})
_TASK_FIELDS = operator.itemgetter(
    "seq", "kind", "routine", "slot", "data", "retries", "due_at", "extra"
)
_RECORD_KEYS = frozenset(
    {"seq", "consumed", "ops", "tasks_added", "tasks_removed", "status", "waiting_for"}
)


#: A plain, valid task's fields as :func:`task_fields` gives them: (seq, kind, routine,
#: slot, data, retries, due_at as a float or None, extra as given).
TaskFields = tuple[int, str, str, str, Any, int, Optional[float], dict[str, Any]]


def task_fields(task: Any) -> Optional[TaskFields]:
    """The fields of ``task`` when it is a plain, valid TaskRow; None to look closer
    (:func:`check_task_fully` names what is wrong).

    The common case costs a few dict reads and no message strings.
    """
    if type(task) is not dict:
        return None
    if task.keys() == _TASK_KEYS:  # every key given (the engine's rows): read in C
        seq, kind, routine, slot, data, retries, due_at, extra = _TASK_FIELDS(task)
        extra = extra or {}
    elif task.keys() <= _TASK_KEYS:
        seq = task.get("seq")
        kind = task.get("kind")
        routine = task.get("routine")
        slot = task.get("slot")
        data = task.get("data")
        retries = task.get("retries", 0)
        due_at = task.get("due_at")
        extra = task.get("extra") or {}
    else:
        return None
    if (
        type(seq) is int
        and seq >= 0
        and kind in TASK_KINDS
        and type(routine) is str
        and routine
        and type(slot) is str
        and slot
        and type(retries) is int
        and retries >= 0
        and (due_at is None or (type(due_at) in (int, float) and math.isfinite(due_at)))
        and type(extra) is dict
    ):
        due = None if due_at is None else float(due_at)
        return (seq, kind, routine, slot, data, retries, due, extra)
    return None


def _fast_task(task: Any) -> Optional[TaskRow]:
    """The normalised TaskRow when ``task`` is a plain, valid one; None to look closer."""
    fields = task_fields(task)
    if fields is None:
        return None
    seq, kind, routine, slot, data, retries, due_at, extra = fields
    return {
        "seq": seq,
        "kind": kind,
        "routine": routine,
        "slot": slot,
        "data": data,
        "retries": retries,
        "due_at": due_at,
        "extra": dict(extra),
    }


def check_task_fully(task: Any, where: str, *, input_task: bool = False) -> TaskRow:
    """A normalised copy of a TaskRow, checked field by field and naming the first one
    at fault (the slow path of :func:`check_tasks`); also checks
    input tasks (kind ``"input"``, seq allocated by the store)."""
    if not isinstance(task, Mapping):
        raise StoreError(f"{where} must be a dict (a TaskRow), got {type(task).__name__}")
    unknown = set(task) - _TASK_KEYS
    if unknown:
        raise StoreError(f"{where} has unknown keys {sorted(unknown)}")
    row: TaskRow = {}
    if input_task:
        kind = task.get("kind", "input")
        if kind != "input":
            raise StoreError(f"{where}: an input task has kind 'input', got {kind!r}")
        row["seq"] = None  # allocated by the store
    else:
        seq = task.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise StoreError(f"{where}.seq must be a non-negative integer, got {seq!r}")
        kind = task.get("kind")
        if kind not in TASK_KINDS:
            raise StoreError(f"{where}.kind must be one of {sorted(TASK_KINDS)}, got {kind!r}")
        row["seq"] = seq
    row["kind"] = kind
    row["routine"] = check_id(task.get("routine"), f"{where}.routine")
    row["slot"] = check_id(task.get("slot"), f"{where}.slot")
    # data and extra are checked for JSON when the store encodes them, naming the task.
    row["data"] = task.get("data")
    retries = task.get("retries", 0)
    if not _is_int(retries) or retries < 0:
        raise StoreError(f"{where}.retries must be a non-negative integer, got {retries!r}")
    row["retries"] = retries
    due_at = task.get("due_at")
    if due_at is not None and (
        isinstance(due_at, bool)
        or not isinstance(due_at, (int, float))
        or not math.isfinite(due_at)
    ):
        raise StoreError(f"{where}.due_at must be a Unix time in seconds or None, got {due_at!r}")
    row["due_at"] = None if due_at is None else float(due_at)
    extra = task.get("extra") or {}
    if not isinstance(extra, Mapping):
        raise StoreError(f"{where}.extra must be a dict, got {type(extra).__name__}")
    row["extra"] = dict(extra)
    return row


def check_tasks(tasks: Sequence[Any], where: str) -> list[TaskRow]:
    """A normalised copy of each of a job's own tasks; a seq twice is refused.

    ``where`` names the list in messages.
    """
    rows: list[TaskRow] = []
    for index, task in enumerate(tasks):
        row = _fast_task(task)
        rows.append(row if row is not None else check_task_fully(task, f"{where}[{index}]"))
    if len(rows) > 1:
        seen: set[int] = set()
        for row in rows:
            if row["seq"] in seen:
                raise StoreError(f"{where}: task seq {row['seq']} appears twice")
            seen.add(row["seq"])
    return rows


def check_waiting_change(change: Any, where: str) -> Any:
    """None (unchanged), or the dict ``{"set": value}`` / ``{"clear": True}``."""
    if change is None:
        return None
    if isinstance(change, Mapping):
        if set(change) == {"set"}:
            check_json(change["set"], f"{where}.waiting_for.set")
            return {"set": change["set"]}
        if dict(change) == {"clear": True}:
            return {"clear": True}
    raise StoreError(
        f"{where}.waiting_for must be None (unchanged), {{'set': value}} or "
        f"{{'clear': True}}, got {change!r}"
    )


#: A record as the engine's journal builds it (a :class:`BuiltRecords` element and a
#: version-3 batch row's element): a DeltaRecord's values in this order.
RECORD_FIELDS = ("seq", "consumed", "ops", "tasks_added", "tasks_removed", "status", "waiting_for")
#: A built record's ``tasks_added`` element: a TaskRow's values in this order.
TASK_FIELDS = ("seq", "kind", "routine", "slot", "data", "retries", "due_at", "extra")
# Indexes into a built record.
R_SEQ, R_CONSUMED, R_OPS, R_ADDED, R_REMOVED, R_STATUS, R_WAITING = range(7)

#: A built record: ``[seq, consumed, ops, tasks_added, tasks_removed, status,
#: waiting_for]``, each ``tasks_added`` element ``[seq, kind, routine, slot, data,
#: retries, due_at, extra]`` (:data:`RECORD_FIELDS`, :data:`TASK_FIELDS`).
BuiltRecord = list[Any]


def built_task(row: TaskRow) -> list[Any]:
    """A normalised TaskRow as a built record's task (its values in TASK_FIELDS order)."""
    return [
        row["seq"],
        row["kind"],
        row["routine"],
        row["slot"],
        row["data"],
        row["retries"],
        row["due_at"],
        row["extra"],
    ]


def built_record(delta: DeltaRecord) -> BuiltRecord:
    """A normalised DeltaRecord (every key present) as a built record."""
    return [
        delta["seq"],
        delta["consumed"],
        delta["ops"],
        [built_task(row) for row in delta["tasks_added"]],
        delta["tasks_removed"],
        delta["status"],
        delta["waiting_for"],
    ]


def task_of(built: Sequence[Any]) -> TaskRow:
    """The TaskRow of a built record's task."""
    return dict(zip(TASK_FIELDS, built))


#: A task's column values as the store writes them: (seq, kind, routine, slot, data,
#: retries, due_at, extra), its data and extra as JSON text.
TaskColumns = tuple[int, str, str, str, str, int, Optional[float], str]

#: A task an :data:`EncodedRecord` adds: ``(seq, text, columns)`` -- its JSON text as
#: a built task (a part of the record's text) and its :data:`TaskColumns`.
EncodedTask = tuple[int, str, TaskColumns]

#: A built record the journal encoded itself, as a tuple (so that the garbage
#: collector stops tracking it once it has looked at it): ``(seq, consumed, text,
#: added, removed, status, waiting_for)`` -- ``text`` the record's JSON text as a
#: batch row holds it, ``added`` an :data:`EncodedTask` for each task it adds,
#: ``removed`` the seqs of those it withdraws; ``seq``, ``consumed``, ``status`` and
#: ``waiting_for`` at a built record's indexes (R_SEQ, R_CONSUMED, R_STATUS,
#: R_WAITING).  Made by :func:`encoded_record`.
EncodedRecord = tuple[int, Optional[int], str, tuple[EncodedTask, ...], tuple[int, ...], None, Any]


def ready_task_text(routine: str, slot: str, extra: Any) -> tuple[str, str, str]:
    """The JSON text of a built ready task (retries 0, no due time) around its seq and
    data, and its extra's text: ``(head, tail, extra_text)``, where
    ``f"[{seq}{head}{data_text}{tail}"`` is the task's text (TASK_FIELDS order).  For
    :func:`encoded_record`'s tasks, made once per route."""
    extra_text = _ENCODE(extra)
    return f',"ready",{quote(routine)},{quote(slot)},', f",0,null,{extra_text}]", extra_text


def encoded_record(
    seq: int,
    consumed: Optional[int],
    ops_text: str,
    added: tuple[EncodedTask, ...],
    waiting_for: Any = None,
) -> EncodedRecord:
    """An :data:`EncodedRecord`: ``ops_text`` the JSON text of its ops, ``added`` the
    tasks it adds (see :func:`ready_task_text`); it withdraws none and changes no
    status."""
    waiting = "null" if waiting_for is None else _ENCODE(waiting_for)
    tasks = added[0][1] if len(added) == 1 else ",".join([task[1] for task in added])
    text = (
        f"[{seq},{'null' if consumed is None else consumed},{ops_text},[{tasks}],[],null,{waiting}]"
    )
    return (seq, consumed, text, added, (), None, waiting_for)


def as_built(record: Sequence[Any]) -> BuiltRecord:
    """A built record as a list: an :data:`EncodedRecord` decoded from its text."""
    if type(record) is tuple:
        decoded: BuiltRecord = json.loads(record[R_OPS])
        return decoded
    return cast(BuiltRecord, record)


def delta_of(built: Sequence[Any]) -> DeltaRecord:
    """The DeltaRecord of a built record (its tasks as TaskRows)."""
    built = as_built(built)
    delta = dict(zip(RECORD_FIELDS, built))
    delta["tasks_added"] = [dict(zip(TASK_FIELDS, row)) for row in built[R_ADDED]]
    return delta


class BuiltRecords(list[Any]):
    """Records the engine's journal built itself (``engine/journal.py``), handed to
    the store by the :class:`~routilux.store.JournalWriter`: built records
    (:data:`BuiltRecord`, plain nested lists the encoder writes in one call), whose
    tasks came from ``engine/rows.py``.  :func:`check_records` checks only their
    seqs (a gap or a repeat is still refused); every other caller's records are
    DeltaRecords and get the full checks.  The engine never changes a record once it
    has handed it over.  Internal: not part of the store API."""

    __slots__ = ()


def check_records(job_id: str, first_seq: int, records: Sequence[Any]) -> list[DeltaRecord]:
    """Normalised copies of ``records``; their seqs must run ``first_seq``, +1, ...

    A gap or a repeat raises StoreError naming the job and both seqs.
    :class:`BuiltRecords` are returned as they are once their seqs are right.
    """
    if type(records) is BuiltRecords:
        if not records or list(map(_SEQ, records)) == list(
            range(first_seq, first_seq + len(records))
        ):
            return records
        # A gap or a repeat: the full checks name the record at fault.
        records = [delta_of(record) for record in records]
    if isinstance(records, Mapping) or not isinstance(records, Sequence):
        raise StoreError(f"job {job_id!r}: records must be a list of DeltaRecords")
    checked: list[DeltaRecord] = []
    expected = first_seq
    for index, record in enumerate(records):
        fast = _fast_record(record, expected)
        if fast is not None:
            checked.append(fast)
            expected += 1
            continue
        if not isinstance(record, Mapping):
            raise StoreError(f"{_record_name(job_id, index)} must be a dict (a DeltaRecord)")
        if not record.keys() <= _RECORD_KEYS:
            unknown = sorted(set(record) - _RECORD_KEYS)
            raise StoreError(f"{_record_name(job_id, index)} has unknown keys {unknown}")
        seq = record.get("seq")
        if type(seq) is not int or seq != expected:
            raise StoreError(
                f"{_record_name(job_id, index)}: seq must be {expected} (the job's commit "
                f"seq + 1), got {seq!r}"
            )
        consumed = record.get("consumed")
        if consumed is not None and type(consumed) is not int:
            raise StoreError(
                f"{_record_name(job_id, index)}.consumed must be a task seq or None, "
                f"got {consumed!r}"
            )
        ops = record.get("ops") or []
        if type(ops) is not list:
            raise StoreError(
                f"{_record_name(job_id, index)}.ops must be a list, got {type(ops).__name__}"
            )
        # ops are checked for JSON when the record is encoded (one pass, not two).
        removed = record.get("tasks_removed") or []
        if removed:
            removed = list(removed)
            if not all(_is_int(item) for item in removed):
                raise StoreError(
                    f"{_record_name(job_id, index)}.tasks_removed must be task seqs, "
                    f"got {removed!r}"
                )
        status = record.get("status")
        if status is not None and not (type(status) is str and status):
            raise StoreError(
                f"{_record_name(job_id, index)}.status must be a status name or None, "
                f"got {status!r}"
            )
        added = record.get("tasks_added") or []
        if added:
            # One plain task (the usual case) needs no message and no duplicate check.
            single = _fast_task(added[0]) if type(added) is list and len(added) == 1 else None
            if not isinstance(added, (list, tuple)):
                raise StoreError(f"{_record_name(job_id, index)}.tasks_added must be a list")
            added = (
                [single]
                if single is not None
                else check_tasks(added, f"{_record_name(job_id, index)}.tasks_added")
            )
        waiting = record.get("waiting_for")
        checked.append(
            {
                "seq": seq,
                "consumed": consumed,
                "ops": ops,
                "tasks_added": added,
                "tasks_removed": removed,
                "status": status,
                "waiting_for": None
                if waiting is None
                else check_waiting_change(waiting, _record_name(job_id, index)),
            }
        )
        expected += 1
    return checked


_SEQ = operator.itemgetter(R_SEQ)


def _fast_record(record: Any, seq: int) -> Optional[DeltaRecord]:
    """The normalised DeltaRecord when ``record`` is a plain, valid one with seq
    ``seq`` and no ``waiting_for`` change; None to look closer (and name the fault).

    The records the journal writes are all of this kind: a few dict reads and type
    checks, no message strings, no copies beyond the normalised record itself.
    """
    if type(record) is not dict or not record.keys() <= _RECORD_KEYS:
        return None
    get = record.get
    if get("seq") != seq or type(get("seq")) is not int or get("waiting_for") is not None:
        return None
    consumed = get("consumed")
    if consumed is not None and type(consumed) is not int:
        return None
    ops = get("ops")
    if ops is None:
        ops = []
    elif type(ops) is not list:
        return None
    status = get("status")
    if status is not None and (type(status) is not str or not status):
        return None
    removed = get("tasks_removed")
    if removed:
        if type(removed) is not list:
            return None
        for item in removed:
            if type(item) is not int:
                return None
        removed = list(removed)
    else:
        removed = []
    added = get("tasks_added")
    rows: list[TaskRow] = []
    if added:
        if type(added) is not list:
            return None
        for task in added:
            row = _fast_task(task)
            if row is None:
                return None
            rows.append(row)
        if len(rows) > 1 and len({row["seq"] for row in rows}) != len(rows):
            return None  # the slow path names the seq that appears twice
    return {
        "seq": seq,
        "consumed": consumed,
        "ops": ops,
        "tasks_added": rows,
        "tasks_removed": removed,
        "status": status,
        "waiting_for": None,
    }


def _record_name(job_id: str, index: int) -> str:
    return f"job {job_id!r} record[{index}]"


def check_page(limit: Any, offset: Any) -> None:
    if not _is_int(limit) or not 1 <= limit <= 10_000:
        raise StoreError(f"list_jobs: limit must be an integer from 1 to 10000, got {limit!r}")
    if not _is_int(offset) or offset < 0:
        raise StoreError(f"list_jobs: offset must be a non-negative integer, got {offset!r}")


def check_control(job_id: Any, action: Any, reason: Any) -> None:
    check_id(job_id, "job_id")
    if action not in CONTROL_ACTIONS:
        raise StoreError(
            f"job {job_id!r}: a control request is one of {sorted(CONTROL_ACTIONS)}, got {action!r}"
        )
    if not isinstance(reason, str):
        raise StoreError(f"job {job_id!r}: a control request's reason must be a string")


def status_filter(status: Union[str, Collection[str], None]) -> Optional[list[str]]:
    """The statuses to keep (None: all of them)."""
    if status is None:
        return None
    if isinstance(status, str):
        return [status]
    statuses = list(status)
    if not statuses or not all(isinstance(item, str) for item in statuses):
        raise StoreError(
            f"list_jobs: status must be a status name or a non-empty collection of them, "
            f"got {status!r}"
        )
    return statuses


def check_stale_after(stale_after: Any) -> float:
    if (
        isinstance(stale_after, bool)
        or not isinstance(stale_after, (int, float))
        or not stale_after > 0
    ):
        raise StoreError(f"stale_after must be a positive number of seconds, got {stale_after!r}")
    return float(stale_after)


# ---------------------------------------------------------------------------
# Leases
# ---------------------------------------------------------------------------

HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just someone else's
    except OSError:
        return False
    return True


def owner_dead(
    owner: Optional[str],
    runner: Optional[tuple[str, int, float]],
    now: float,
    stale_after: float,
) -> bool:
    """Whether a job with this owner may be claimed.

    ``runner`` is the owner's ``(host, pid, heartbeat)`` row, or None when the store
    has none. The owner is dead when there is no owner or no runner row, when it ran
    on this host and its PID is gone, or when its heartbeat is older than
    ``stale_after`` seconds.
    """
    if owner is None or runner is None:
        return True
    host, pid, beat = runner
    if host == HOST and not pid_alive(pid):
        return True
    return now - beat > stale_after


def resolve_apply_ops(apply_ops: Optional[ApplyOps]) -> ApplyOps:
    """``apply_ops`` itself, or the library's :func:`routilux.changes.apply_ops`."""
    if apply_ops is not None:
        return apply_ops
    return changes_apply_ops


def build_job_state(
    job: JournaledJob, apply_ops: Optional[ApplyOps], *, owned: bool = False
) -> JobState:
    """The JobState of ``job``: its snapshot deserialized, every delta's ops applied in
    seq order, and its status set to the stored one.

    ``owned``: ``job`` was just loaded and nothing else will read it, so the JobState
    may keep the snapshot's dicts and lists rather than copies of them (the checks of
    the saved form are the same either way)."""
    from routilux.job_state import JobState
    from routilux.serialization import layout_of

    state = JobState(job.flow_id)
    layout = layout_of(JobState)
    deserialize = layout.deserialize
    if owned and layout.deserialize_owned is not None:
        deserialize = layout.deserialize_owned
    try:
        deserialize(state, job.snapshot)
    except Exception as exc:
        raise StoreError(f"job {job.job_id!r}: its snapshot cannot be read: {exc}") from exc
    if job.deltas:
        apply = resolve_apply_ops(apply_ops)
        for delta in job.deltas:
            try:
                apply(state, delta["ops"])
            except Exception as exc:
                raise StoreError(
                    f"job {job.job_id!r}: delta seq {delta['seq']} cannot be applied: {exc}"
                ) from exc
    state.job_id = job.job_id
    state.status = job.status
    state.task_seq = next_task_seq(job, state.task_seq)
    if job.waiting_for is not None:
        # The row's open requests for input are current (the snapshot's may be older).
        from routilux.inputs import check_request

        try:
            state.waiting_for = [
                check_request(entry, f"waiting_for[{index}]")
                for index, entry in enumerate(_as_list(job.waiting_for))
            ]
        except Exception as exc:
            raise StoreError(f"job {job.job_id!r}: its waiting_for cannot be read: {exc}") from exc
    return state


def _as_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"waiting_for must be a list, got {type(value).__name__}")
    return value


def next_task_seq(job: JournaledJob, saved: int) -> int:
    """The job's task counter: above ``saved`` (the snapshot's) and above every task
    seq its deltas added or consumed and every pending task's (the counter is not an
    op: it travels with the tasks)."""
    start = saved
    for delta in job.deltas:
        consumed = delta.get("consumed")
        if type(consumed) is int and consumed >= start:
            start = consumed + 1
        for row in delta.get("tasks_added") or ():
            if row["seq"] >= start:
                start = row["seq"] + 1
    for row in job.tasks:
        if row["seq"] >= start:
            start = row["seq"] + 1
    return start

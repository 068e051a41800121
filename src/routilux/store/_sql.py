"""The journal's SQL, written once for both back ends.

The job's snapshot lives in a table of its own (``routilux_snapshot``), not in its
job row: every commit updates the job row (its commit seq), and a database rewrites a
whole row on update -- a snapshot of megabytes in it would be written again on every
commit.

A commit transaction stores each job's records as ONE row of ``routilux_batch``: the
JSON array of the records, keyed by the job and the last seq in it. Since schema
version 3 each record in it is an array (``_base.RECORD_FIELDS``; the engine's
:class:`~routilux.store._base.BuiltRecords` are written by one call of the encoder);
rows written by version 2 hold objects (DeltaRecords), and every reader here takes
both, record by record. Stores written before version 2 keep their ``routilux_delta``
rows, one per record, which are read and dropped as before. What the task table
holds depends on who committed:

- the engine's records (:class:`~routilux.store._base.BuiltRecords`, from the
  journal writer) leave it alone: it holds the pending work as of the snapshot (plus
  inputs), and a snapshot write brings it up to the snapshot's seq by applying the
  covered records' net task effects (a row that spans the snapshot's seq is split).
  These records are checked for their seqs (they must continue the job's commit seq)
  and their epoch only: the engine never consumes a task that is not pending;
- plain records (any other caller) get every check: the task table is first brought
  up to the last commit, then each consumed task must be pending (or added earlier in
  the batch) and each added one must not be, refused naming the seqs, as the records
  change the table.

:meth:`SQLStore.load` returns the table's tasks with the later records applied in
seq order, so every caller sees the current pending work whichever way it was
written.

:class:`SQLStore` implements every :class:`~routilux.store.Store` method on top of a
few hooks a back end provides: a transaction that yields a DB-API cursor, how JSON
goes in and comes out, and the row-locking clauses. Statements are written with
``?`` placeholders; a back end whose driver wants ``%s`` converts them once
(:meth:`SQLStore._sql`).
"""

from __future__ import annotations

import copy
import json
import operator
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional, Union, cast

from routilux.exceptions import JobNotFoundError, StaleEpochError, StoreError

from ._base import (
    _ENCODE,
    _SEQ,
    FINISHED_STATUSES,
    HOST,
    PARKED_STATUSES,
    R_ADDED,
    R_CONSUMED,
    R_OPS,
    R_REMOVED,
    R_SEQ,
    R_STATUS,
    R_WAITING,
    UNCHANGED,
    ApplyOps,
    BuiltRecord,
    BuiltRecords,
    DeltaRecord,
    EncodedSnapshot,
    JobSummary,
    JournaledJob,
    TaskColumns,
    TaskRow,
    build_job_state,
    built_record,
    check_control,
    check_epoch,
    check_id,
    check_json,
    check_page,
    check_records,
    check_stale_after,
    check_task_fully,
    check_tasks,
    delta_of,
    dumps,
    owner_dead,
    quote,
    status_filter,
    task_fields,
)

if TYPE_CHECKING:
    from routilux.job_state import JobState

# The columns of routilux_job a summary is made of, in JobSummary's order.
_SUMMARY_COLUMNS = "job_id, flow_id, status, owner, epoch, created_at, updated_at, waiting_for"
_TASK_COLUMNS = "seq, kind, routine, slot, data, retries, due_at, extra"


def _task_order(task: TaskRow) -> tuple[bool, int]:
    """Own tasks (seq >= 0) by seq, then inputs (-1, -2, ...) in arrival order."""
    seq: int = task["seq"]
    return (seq < 0, abs(seq))


def _applied(tasks: list[TaskRow], records: Sequence[DeltaRecord]) -> list[TaskRow]:
    """The pending tasks once ``records`` (in seq order) are applied to ``tasks``:
    each consumed or removed seq leaves, each added task comes (a copy: the record
    keeps its own). Applying a record whose effects ``tasks`` already hold changes
    nothing, so the result is the same from any state the table had between the
    snapshot and the last of ``records``."""
    pending = {task["seq"]: task for task in tasks}
    for record in records:
        consumed = record["consumed"]
        if consumed is not None:
            pending.pop(consumed, None)
        for seq in record["tasks_removed"]:
            pending.pop(seq, None)
        for task in record["tasks_added"]:
            due = task["due_at"]
            pending[task["seq"]] = {
                "seq": int(task["seq"]),
                "kind": task["kind"],
                "routine": task["routine"],
                "slot": task["slot"],
                "data": copy.deepcopy(task["data"]),
                "retries": int(task["retries"]),
                "due_at": None if due is None else float(due),
                "extra": copy.deepcopy(task["extra"]),
            }
    return sorted(pending.values(), key=_task_order)


#: A task row's column values, its data and extra as JSON text: (seq, kind, routine,
#: slot, data, retries, due_at, extra).
_TaskParams = TaskColumns
#: What records do to the task table, net: (seqs that leave, rows that come).
_Net = tuple[list[int], list[_TaskParams]]

# The most characters of batch rows SQLStore._nets keeps (their texts, and per row the
# seqs of the tasks it takes away and brings, net): some 5 MB in all at this bound.
_NET_CHARS = 4 << 20

_STATUS = operator.itemgetter(R_STATUS)
_WAITING = operator.itemgetter(R_WAITING)
_TEXT = operator.itemgetter(R_OPS)  # an EncodedRecord's text


class _KnownRow:
    """A batch row of built records this store wrote, as :attr:`SQLStore._nets` keeps
    it for the snapshot that folds it: its text and what its records do to the task
    table, net (``gone``: seqs pending before the row, consumed or withdrawn in it;
    ``added``: seq -> the columns of a task queued in it and still pending after it,
    or None when it came in an array).  Ints and strings, not the records: a long job
    keeps no container per record alive, which the garbage collector would walk
    over and over."""

    __slots__ = ("first", "text", "gone", "added")

    def __init__(self, first: int, text: str, records: Sequence[Any]) -> None:
        self.first = first
        self.text = text
        added: dict[int, Optional[TaskColumns]] = {}
        gone: list[int] = []
        for record in records:
            consumed = record[R_CONSUMED]
            if consumed is not None:
                if consumed in added:
                    del added[consumed]
                else:
                    gone.append(consumed)
            for seq in record[R_REMOVED]:
                if seq in added:
                    del added[seq]
                else:
                    gone.append(seq)
            if type(record) is tuple:  # an EncodedRecord: its tasks' columns
                for seq, _, columns in record[R_ADDED]:
                    added[seq] = columns
            else:
                for task in record[R_ADDED]:
                    added[task[0]] = None
        self.gone = gone
        self.added = added

    def tasks(self) -> dict[int, Sequence[Any]]:
        """The row's added tasks by seq (the last one of a seq re-added), decoded."""
        found: dict[int, Sequence[Any]] = {}
        for record in _arrays(_loads_many([self.text])[0]):
            for task in record[R_ADDED]:
                found[task[0]] = task
        return found


def _net_of(covered: Sequence[Any], job_id: str) -> _Net:
    """The net task effect of ``covered`` -- built records (arrays or
    :data:`EncodedRecord` tuples) and :class:`_KnownRow` rows, in seq order: only the
    tasks that survive them have their data and extra encoded (a task both added and
    consumed among them never is; an encoded task comes with its columns), and a known
    row's array records are decoded only when one of their tasks survives."""
    added: dict[int, Any] = {}  # seq -> its built task, its columns, or its known row
    gone: dict[int, None] = {}
    for part in covered:
        kind = type(part)
        if kind is _KnownRow:
            for seq in part.gone:
                if added.pop(seq, None) is None:
                    gone[seq] = None
            for seq, columns in part.added.items():
                added[seq] = part if columns is None else columns
            continue
        consumed = part[R_CONSUMED]
        if consumed is not None:
            if consumed in added:
                del added[consumed]
            else:
                gone[consumed] = None
        for seq in part[R_REMOVED]:
            if added.pop(seq, None) is None:
                gone[seq] = None
        if kind is tuple:
            for seq, _, columns in part[R_ADDED]:
                added[seq] = columns
        else:
            for task in part[R_ADDED]:
                added[task[0]] = task
    if not added:  # (a finished job's fold: every task it queued was consumed)
        return list(gone), []
    decoded: dict[int, dict[int, Sequence[Any]]] = {}
    rows: list[_TaskParams] = []
    for seq, task in added.items():
        if type(task) is tuple:
            rows.append(task)
            continue
        if type(task) is _KnownRow:
            tasks = decoded.get(id(task))
            if tasks is None:
                tasks = decoded[id(task)] = task.tasks()
            task = tasks[seq]
        rows.append(_built_params(job_id, task))
    return list(gone), rows


def _built_params(job_id: str, task: Sequence[Any]) -> _TaskParams:
    """A built task's column values, its data and extra encoded."""
    seq, kind, routine, slot, data, retries, due, extra = task
    try:
        data_text = _ENCODE(data)
        extra_text = _ENCODE(extra)
    except (TypeError, ValueError, RecursionError):
        data_text = _json_at(data, "job {!r} task {} data", job_id, seq)
        extra_text = _json_at(extra, "job {!r} task {} extra", job_id, seq)
    return (seq, kind, routine, slot, data_text, retries, due, extra_text)


def _arrays(records: Sequence[Any]) -> list[BuiltRecord]:
    """A batch row's decoded records as built records: an array is a record of
    schema version 3, an object one written by version 2 (a DeltaRecord)."""
    return [record if type(record) is list else built_record(record) for record in records]


def _deltas_after(records: Sequence[Any], seq: int) -> list[DeltaRecord]:
    """A batch row's decoded records (either form) after ``seq``, as DeltaRecords."""
    return [
        delta_of(record) if type(record) is list else record
        for record in records
        if (record[R_SEQ] if type(record) is list else record["seq"]) > seq
    ]


def _changes(records: Sequence[BuiltRecord]) -> tuple[Optional[str], Any]:
    """The last status and the last ``waiting_for`` change among built records (None:
    unchanged), looked for in C (the encoder-facing arrays, no Python loop)."""
    statuses = list(filter(None, map(_STATUS, records)))
    waits = list(filter(None, map(_WAITING, records)))
    return (statuses[-1] if statuses else None, waits[-1] if waits else None)


def _batch_text(records: Sequence[Any]) -> str:
    """The JSON text of a batch row of built records: ONE call of the encoder, or,
    when the journal encoded some itself (:data:`EncodedRecord` tuples), their texts
    joined with the others'."""
    kinds = set(map(type, records))
    if tuple not in kinds:  # (the encoder writes a tuple as an array)
        return _ENCODE(records)
    if len(kinds) == 1:  # the serial lane's usual batch: its texts joined, in C
        return f"[{','.join(map(_TEXT, records))}]"
    return f"[{','.join([r[R_OPS] if type(r) is tuple else _ENCODE(r) for r in records])}]"


def _refuse_unencodable(job_id: str, records: Sequence[Any]) -> NoReturn:
    """Raise StoreError naming the first record JSON cannot hold (the encoder refused
    their array): looked for only then, one record at a time."""
    for record in records:
        try:
            if type(record) is not tuple:
                _ENCODE(record)
        except (TypeError, ValueError, RecursionError) as exc:
            raise StoreError(
                f"job {job_id!r} delta seq {record[R_SEQ]} is not JSON-safe: {exc}"
            ) from None
    raise StoreError(
        f"job {job_id!r} delta seqs {records[0][R_SEQ]}..{records[-1][R_SEQ]} are not "
        "JSON-safe together (nested too deeply)"
    )


def _loads_many(texts: Sequence[str]) -> list[Any]:
    """Several JSON texts decoded, by one parse of them joined into an array.

    The joined text must parse and give exactly one value per text; otherwise (a text
    that is not one whole JSON value) each is decoded on its own, which fails as
    decoding that text alone would."""
    if len(texts) == 1:
        return [json.loads(texts[0])]
    try:
        values = json.loads("[" + ",".join(texts) + "]")
    except ValueError:
        values = None
    if type(values) is not list or len(values) != len(texts):
        # Not each a whole JSON value: decoded one by one, failing as that one would.
        return [json.loads(text) for text in texts]
    return values


# The most rows one statement inserts, deletes or counts (at most 9 x 64 parameters).
_CHUNK = 64


def _json_at(value: Any, where: str, *args: Any) -> str:
    """``value`` as JSON text; a value JSON cannot hold raises StoreError naming
    ``where.format(*args)`` (the name is built only then)."""
    try:
        return _ENCODE(value)
    except (TypeError, ValueError, RecursionError):
        return dumps(value, where.format(*args))  # raises, naming the value


def _extra_json(extra: Any, job_id: str, seq: int) -> str:
    """A task's extra as JSON: the engine's usual ``{"source": [routine, event]}`` and
    ``{}`` written directly, anything else by the encoder."""
    if type(extra) is dict:
        if not extra:
            return "{}"
        if len(extra) == 1:
            if extra.get("entry") is True:  # a new job's entry task
                return '{"entry":true}'
            source = extra.get("source")
            if (
                type(source) is list
                and len(source) == 2
                and type(source[0]) is str
                and type(source[1]) is str
            ):
                return f'{{"source":[{quote(source[0])},{quote(source[1])}]}}'
    return _json_at(extra, "job {!r} task {} extra", job_id, seq)


def _task_texts(job_id: str, task: TaskRow) -> tuple[str, str]:
    """A TaskRow's data and extra as JSON text (for its task-table row)."""
    try:
        data = _ENCODE(task["data"])
    except (TypeError, ValueError, RecursionError):
        data = _json_at(task["data"], "job {!r} task {} data", job_id, task["seq"])
    return data, _extra_json(task["extra"], job_id, task["seq"])


# The statements of a new job (create_job): its row, its snapshot, a task.
_INSERT_JOB = (
    "INSERT INTO routilux_job (job_id, flow_id, status, owner, epoch,"
    " snapshot_seq, commit_seq, input_seq, created_at, updated_at, waiting_for)"
    " VALUES (?, ?, ?, ?, 1, 0, 0, 0, ?, ?, NULL)"
    " ON CONFLICT (job_id) DO NOTHING"
)
_INSERT_SNAPSHOT = "INSERT INTO routilux_snapshot (job_id, snapshot) VALUES (?, ?)"
_INSERT_TASK = (
    f"INSERT INTO routilux_task (job_id, {_TASK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (job_id, seq) DO NOTHING"
)

# The statements of the journal's commits and snapshots.
_UPDATE_SNAPSHOT = "UPDATE routilux_snapshot SET snapshot = ? WHERE job_id = ?"
_DELETE_DELTAS = "DELETE FROM routilux_delta WHERE job_id = ? AND seq <= ?"
_INSERT_BATCH = (
    "INSERT INTO routilux_batch (job_id, seq, first_seq, applied, records) VALUES (?, ?, ?, ?, ?)"
)
_SELECT_UNAPPLIED = (
    "SELECT records FROM routilux_batch WHERE job_id = ? AND applied = 0 ORDER BY seq"
)
_MARK_APPLIED = "UPDATE routilux_batch SET applied = 1 WHERE job_id = ? AND applied = 0"
# Read, then deleted (not DELETE ... RETURNING: SQLite has it only from 3.35).
_SELECT_BATCHES = (
    "SELECT seq, first_seq, applied, records FROM routilux_batch"
    " WHERE job_id = ? AND first_seq <= ? ORDER BY seq"
)
_DELETE_BATCHES = "DELETE FROM routilux_batch WHERE job_id = ? AND first_seq <= ?"
_TASK_UPSERT = (
    " ON CONFLICT (job_id, seq) DO UPDATE SET kind = excluded.kind, routine = excluded.routine,"
    " slot = excluded.slot, data = excluded.data, retries = excluded.retries,"
    " due_at = excluded.due_at, extra = excluded.extra"
)


class _Refused(StoreError):
    """Records that consume a task not pending or add one already pending, found by
    the row counts of the writes (the transaction is rolled back);
    :meth:`SQLStore.commit_many` then looks the seqs up for its message."""


class _Writing:
    """:meth:`SQLStore._writing`: a plain context manager rather than a generator
    one (whose frame, wrapper and exits cost a few microseconds on every commit).
    Holds the store's lock around the back end's transaction; once it has
    committed, the batch rows it wrote join the store's known rows, and a
    transaction that fails (or is rolled back) leaves them out."""

    __slots__ = ("_store", "_inner")
    _inner: AbstractContextManager[Any]  # set by __enter__

    def __init__(self, store: SQLStore) -> None:
        self._store = store

    def __enter__(self) -> Any:
        store = self._store
        store._lock.acquire()
        try:
            inner = store._transaction(write=True)
            cur = inner.__enter__()
        except BaseException:
            store._lock.release()
            raise
        self._inner = inner
        return cur

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        store = self._store
        try:
            try:
                self._inner.__exit__(kind, exc, tb)
            except BaseException:
                store._new_nets.clear()
                raise
            if kind is not None:
                store._new_nets.clear()  # rolled back: the body's exception goes on
            elif store._new_nets:
                store._keep_nets()
        finally:
            store._lock.release()


class SQLStore:
    """The shared implementation of the SQL stores; see :class:`routilux.store.Store`."""

    #: Where the store lives, for messages (a file, or a DSN without its password).
    location: str = ""
    #: Appended to a SELECT of a job row that the transaction will change.
    _FOR_UPDATE = ""
    #: Appended to a SELECT of a job row that the transaction only reads.
    _FOR_SHARE = ""
    #: Appended to the SELECT of ``claim``: a row another claimer holds is skipped.
    _FOR_CLAIM = ""
    #: A job-row column that grows with each insert: orders jobs created in one tick.
    _INSERT_ORDER = "rowid"
    #: What a JSON column's parameter is made of from JSON text (None: the text).
    _json_param: Optional[Callable[[str], Any]] = None
    #: False for a store file opened read-only from before routilux_batch existed.
    _has_batch = True
    #: Whether routilux_delta may hold rows: the records of a store written before
    #: schema version 2 (nothing writes them any more, so once none are left there
    #: never are). A back end that finds none when it opens (:meth:`_look_for_deltas`)
    #: sets it False: its snapshots then make no DELETE of them.
    _old_deltas = True

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._closed = False
        # (what, rows) -> statement text, for the statements over many rows.
        self._chunked: dict[tuple[Any, ...], str] = {}
        # (job id, seq) of a batch row of the engine's records this store wrote -> the
        # row as written (_KnownRow: its text and its net task effect as seqs): a
        # snapshot that folds the row takes its effect from here while the row's text
        # is still this one, instead of decoding it (which costs far more than writing
        # it). Filled as transactions commit; bounded by the rows' text (_NET_CHARS).
        self._nets: dict[tuple[str, int], _KnownRow] = {}
        self._new_nets: dict[tuple[str, int], _KnownRow] = {}
        self._net_chars = 0

    # -- hooks ---------------------------------------------------------------

    def _transaction(self, write: bool) -> AbstractContextManager[Any]:  # pragma: no cover
        """One transaction (abstract); ``with`` it gives a cursor. Driver errors
        become StoreError."""
        raise NotImplementedError

    def _jin(self, value: Any, where: str) -> Any:  # pragma: no cover - abstract
        """``value`` as the driver stores a JSON column."""
        raise NotImplementedError

    def _jout(self, raw: Any) -> Any:  # pragma: no cover - abstract
        """A JSON column as read back."""
        raise NotImplementedError

    def _jout_many(self, raws: Sequence[Any]) -> list[Any]:
        """Several JSON columns as read back, in order."""
        return [self._jout(raw) for raw in raws]

    def _sql(self, statement: str) -> str:
        return statement

    def _look_for_deltas(self) -> None:
        """Set :attr:`_old_deltas` from whether routilux_delta holds any row now."""
        with self._transaction(write=False) as cur:
            cur.execute("SELECT 1 FROM routilux_delta LIMIT 1")
            self._old_deltas = cur.fetchone() is not None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.location} is closed")

    # -- jobs ------------------------------------------------------------------

    def create_job(
        self,
        job_id: str,
        flow_id: str,
        status: str,
        snapshot: Mapping[str, Any],
        tasks: Sequence[TaskRow] = (),
        owner: Optional[str] = None,
    ) -> int:
        """Store a new job with epoch 1 (row and tasks in one transaction); returns 1."""
        if not (
            type(job_id) is str
            and job_id
            and type(flow_id) is str
            and flow_id
            and type(status) is str
            and status
            and (owner is None or (type(owner) is str and owner))
        ):
            # The messages are built only for a value that is refused.
            check_id(job_id, "job_id")
            for what, value in (("flow_id", flow_id), ("status", status), ("owner", owner)):
                if value is not None or what != "owner":
                    check_id(value, f"job {job_id!r}: {what}")
        # The journal's snapshot text as it is (_snapshot_text's first case, inline).
        if type(snapshot) is EncodedSnapshot and self._json_param is None:
            snap: Any = snapshot.text
        else:
            snap = self._snapshot_text(job_id, snapshot)
        # The usual new job has one task (its entry): its row's values are made here,
        # before the transaction, straight from a plain valid task's fields, and
        # inserted by one plain statement.  Anything else is checked (and named) by
        # check_tasks.
        one = self._one_task(job_id, tasks)
        rows: list[TaskRow] = []
        if one is None:
            rows = check_tasks(list(tasks), f"job {job_id!r} tasks")
            if len(rows) == 1:
                one = self._task_values(job_id, rows[0])
        now = time.time()
        with self._transaction(write=True) as cur:
            # One statement: a job id already taken inserts nothing (rowcount 0).
            cur.execute(self._sql(_INSERT_JOB), (job_id, flow_id, status, owner, now, now))
            if cur.rowcount == 0:
                raise StoreError(f"store {self.location}: job {job_id!r} already exists")
            cur.execute(self._sql(_INSERT_SNAPSHOT), (job_id, snap))
            if one is not None:
                cur.execute(self._sql(_INSERT_TASK), one)
                if cur.rowcount != 1:
                    raise StoreError(f"job {job_id!r}: a task seq of [{one[1]}] is stored already")
            else:
                self._insert_tasks(cur, job_id, rows)
        return 1

    def _one_task(self, job_id: str, tasks: Sequence[TaskRow]) -> Optional[tuple[Any, ...]]:
        """The routilux_task values of ``tasks``' one task when there is one and it is
        a plain, valid TaskRow whose data and extra JSON can hold; else None (the
        caller checks them one by one, naming the fault)."""
        if type(tasks) is not list or len(tasks) != 1:
            return None
        fields = task_fields(tasks[0])
        if fields is None:
            return None
        seq, kind, routine, slot, data, retries, due_at, extra = fields
        try:
            data_text = _ENCODE(data)
        except (TypeError, ValueError, RecursionError):
            return None
        extra_text = _extra_json(extra, job_id, seq)
        wrap = self._json_param
        if wrap is not None:
            return (
                job_id,
                seq,
                kind,
                routine,
                slot,
                wrap(data_text),
                retries,
                due_at,
                wrap(extra_text),
            )
        return (job_id, seq, kind, routine, slot, data_text, retries, due_at, extra_text)

    def _task_values(self, job_id: str, row: TaskRow) -> tuple[Any, ...]:
        """A TaskRow's values for its routilux_task row (:data:`_INSERT_TASK`)."""
        data, extra = _task_texts(job_id, row)
        wrap = self._json_param
        if wrap is not None:
            data, extra = wrap(data), wrap(extra)
        return (
            job_id,
            row["seq"],
            row["kind"],
            row["routine"],
            row["slot"],
            data,
            row["retries"],
            row["due_at"],
            extra,
        )

    # -- statements over many rows ---------------------------------------------
    #
    # One statement per chunk of rows rather than ``executemany`` (a step per row):
    # the sqlite3 driver lets go of the GIL around every step, and in a busy process
    # each handover costs more than the row itself. Chunks of at most _CHUNK rows keep
    # the statement texts (and the drivers' statement caches) to a few sizes.

    def _writing(self) -> AbstractContextManager[Any]:
        """A write transaction of the journal: the records of the batch rows it
        writes join :attr:`_nets` once it has committed (never those of one rolled
        back). ``with`` it gives a cursor. Here a :class:`_Writing` around the back
        end's transaction; a back end whose write transaction does that itself
        (SQLite's) returns that instead."""
        return _Writing(self)

    def _keep_nets(self) -> None:
        """(Lock held, a transaction just committed.) The batch rows it wrote join
        :attr:`_nets`."""
        nets = self._nets
        for key, entry in self._new_nets.items():
            old = nets.pop(key, None)
            self._net_chars += len(entry.text) - (0 if old is None else len(old.text))
            nets[key] = entry
        self._new_nets.clear()
        if self._net_chars > _NET_CHARS:
            # Jobs that are never snapshotted here (their owner moved on):
            # forget them all; their rows are then decoded when folded.
            nets.clear()
            self._net_chars = 0

    def _statement(self, key: tuple[Any, ...], build: Callable[[], str]) -> str:
        statement = self._chunked.get(key)
        if statement is None:
            statement = self._chunked[key] = self._sql(build())
        return statement

    def _in_list(self, text: str, n: int) -> str:
        """``text`` with its ``(?*)`` made a list of ``n`` placeholders."""
        return self._statement(
            (text, n), lambda: text.replace("(?*)", "(" + ", ".join("?" * n) + ")")
        )

    def _insert_many(
        self, cur: Any, head: str, width: int, params: list[Any], tail: str = ""
    ) -> int:
        """``head VALUES (...), (...), ... tail`` for rows given as one flat list of
        ``width`` values each; how many rows it inserted."""
        step = width * _CHUNK
        inserted = 0
        for start in range(0, len(params), step):
            chunk = params if len(params) <= step else params[start : start + step]
            size = len(chunk) // width
            statement = self._chunked.get((head, size, tail))
            if statement is None:
                group = "(" + ", ".join("?" * width) + ")"
                text = f"{head} VALUES {', '.join([group] * size)}{tail}"
                statement = self._chunked[(head, size, tail)] = self._sql(text)
            cur.execute(statement, chunk)
            inserted += cur.rowcount
        return inserted

    def _in_tasks(self, verb: str, n: int) -> str:
        """``verb`` over the job's task rows whose seq is one of ``n`` values."""
        statement = self._chunked.get((verb, n))
        if statement is None:
            marks = ", ".join("?" * n)
            statement = self._chunked[(verb, n)] = self._sql(
                f"{verb} routilux_task WHERE job_id = ? AND seq IN ({marks})"
            )
        return statement

    def _delete_tasks(self, cur: Any, job_id: str, seqs: Sequence[int]) -> int:
        """Delete the job's task rows of ``seqs``; how many there were."""
        count = len(seqs)
        if 0 < count <= _CHUNK:  # the usual few: one statement (its text looked up inline)
            statement = self._chunked.get(("DELETE FROM", count))
            if statement is None:
                statement = self._in_tasks("DELETE FROM", count)
            cur.execute(statement, (job_id, *seqs))
            return int(cur.rowcount)
        deleted = 0
        for start in range(0, len(seqs), _CHUNK):
            chunk = seqs[start : start + _CHUNK]
            cur.execute(self._in_tasks("DELETE FROM", len(chunk)), (job_id, *chunk))
            deleted += cur.rowcount
        return deleted

    def _pending(self, cur: Any, job_id: str, seqs: Sequence[int]) -> list[int]:
        """Which of ``seqs`` are pending tasks of the job (for messages: one row each)."""
        found: list[int] = []
        for start in range(0, len(seqs), _CHUNK):
            chunk = seqs[start : start + _CHUNK]
            cur.execute(self._in_tasks("SELECT seq FROM", len(chunk)), (job_id, *chunk))
            found.extend(int(row[0]) for row in cur.fetchall())
        return found

    def _insert_tasks(self, cur: Any, job_id: str, rows: Sequence[TaskRow]) -> None:
        if rows and self._insert_task_rows(cur, job_id, rows) != len(rows):
            raise StoreError(
                f"job {job_id!r}: a task seq of {[row['seq'] for row in rows]} is stored already"
            )

    def _insert_task_rows(self, cur: Any, job_id: str, rows: Iterable[TaskRow]) -> int:
        """Insert ``rows``, but none whose seq the job has already; how many were
        inserted."""
        params: list[Any] = []
        for row in rows:
            params += self._task_values(job_id, row)
        # A seq already stored is skipped, not an error: the caller compares the count.
        return self._insert_many(
            cur,
            f"INSERT INTO routilux_task (job_id, {_TASK_COLUMNS})",
            9,
            params,
            " ON CONFLICT (job_id, seq) DO NOTHING",
        )

    def _job_for_write(self, cur: Any, job_id: str, epoch: int) -> tuple[int, int, str]:
        """Lock the job row; its (commit_seq, snapshot_seq, status). Checks the epoch."""
        check_epoch(epoch, job_id)
        cur.execute(
            self._sql(
                "SELECT epoch, commit_seq, snapshot_seq, status FROM routilux_job"
                " WHERE job_id = ?" + self._FOR_UPDATE
            ),
            (job_id,),
        )
        row = cur.fetchone()
        if row is None:
            raise JobNotFoundError(f"store {self.location} has no job {job_id!r}")
        if row[0] != epoch:
            raise StaleEpochError(
                f"job {job_id!r}: write under epoch {epoch} refused, the job's epoch is "
                f"{row[0]} (another runner claimed it)"
            )
        return int(row[1]), int(row[2]), str(row[3])

    def commit(self, job_id: str, epoch: int, records: Sequence[DeltaRecord]) -> None:
        """Append ``records`` (seqs continuing the job's commit seq) in one transaction.

        Each record's consumed task must be pending (or added earlier in the batch);
        ``tasks_removed`` seqs that are not pending are ignored. The epoch must be the
        job's (else :class:`StaleEpochError` and nothing is written).
        """
        self.commit_many([(job_id, epoch, records)])

    def commit_many(self, batches: Sequence[tuple[str, int, Sequence[DeltaRecord]]]) -> None:
        """:meth:`commit` for several jobs in one transaction (all or nothing)."""
        if type(batches) is list and len(batches) == 1:
            job_id, epoch, records = batches[0]
            if type(records) is BuiltRecords and records and type(job_id) is str and job_id:
                # The journal's usual commit (one job's records): tried the
                # fewest-statement way once, else the general path in the same
                # transaction.
                try:
                    with self._writing() as cur:
                        if not self._commit_built(cur, job_id, epoch, records, None):
                            self._commit_checked(cur, job_id, epoch, records, None, False)
                except _Refused:
                    self._commit_batches(batches, verify=True)  # names the tasks at fault
                return
        batches = list(batches)
        if not batches:
            return
        try:
            self._commit_batches(batches, verify=False)
        except _Refused:
            # Nothing was written: again, naming the tasks at fault (see _commit_one).
            self._commit_batches(batches, verify=True)

    def _commit_batches(
        self, batches: list[tuple[str, int, Sequence[DeltaRecord]]], verify: bool
    ) -> None:
        with self._writing() as cur:
            for job_id, epoch, records in batches:
                check_id(job_id, "job_id")
                self._commit_one(cur, job_id, epoch, records, verify=verify)

    def _commit_one(
        self,
        cur: Any,
        job_id: str,
        epoch: int,
        records: Sequence[DeltaRecord],
        snapshot: Optional[tuple[Any, int]] = None,
        *,
        verify: bool = False,
    ) -> None:
        """Append ``records`` to the job (epoch checked) as one routilux_batch row.

        ``verify``: look the consumed and added tasks of plain records up before
        writing, so that a refusal names them (else a refusal is :class:`_Refused`,
        without the seqs).

        ``snapshot``: (the encoded snapshot, its ``upto_seq``) to write in the same
        step (:meth:`commit_then_snapshot`): records it covers are not stored only to
        be deleted again, and the job row is updated once.
        """
        if (
            type(records) is BuiltRecords
            and records
            and not verify
            and self._commit_built(cur, job_id, epoch, records, snapshot)
        ):
            return
        self._commit_checked(cur, job_id, epoch, records, snapshot, verify)

    def _commit_checked(
        self,
        cur: Any,
        job_id: str,
        epoch: int,
        records: Sequence[DeltaRecord],
        snapshot: Optional[tuple[Any, int]],
        verify: bool,
    ) -> None:
        """:meth:`_commit_one`'s general path: the job row read and locked, its epoch
        and the records' seqs checked, plain records checked against the pending
        tasks; every fault named."""
        commit_seq, snapshot_seq, _ = self._job_for_write(cur, job_id, epoch)
        checked = check_records(job_id, commit_seq + 1, records)
        if not checked:
            if snapshot is not None:
                self._write_snapshot(
                    cur, job_id, snapshot[0], snapshot[1], snapshot_seq, commit_seq
                )
            return
        trusted = type(checked) is BuiltRecords
        # The stored form: built records (plain ones converted once, here).
        arrays: Sequence[BuiltRecord] = (
            cast(BuiltRecords, checked) if trusted else [built_record(record) for record in checked]
        )
        last_seq = arrays[-1][R_SEQ]
        if snapshot is not None:
            self._check_upto(job_id, snapshot[1], snapshot_seq, last_seq)
        # Batch rows exist only after the snapshot: none when the job has no deltas.
        stored = commit_seq > snapshot_seq
        if not trusted:
            # Plain records are checked against the pending tasks: the task table is
            # brought up to date first, then changed by these records as they go in.
            if stored:
                self._apply_stored(cur, job_id)
            self._write_tasks(cur, job_id, checked, verify)
        kept = arrays
        assignments = ["commit_seq = ?", "updated_at = ?"]
        params: list[Any] = [last_seq, time.time()]
        if snapshot is not None:
            upto_seq = snapshot[1]
            covered = self._fold_rows(cur, job_id, upto_seq) if stored else []
            split = upto_seq - arrays[0][R_SEQ] + 1
            if split > 0:
                # The snapshot holds what the records it covers did: only later ones
                # are stored (the task table takes the covered ones' effects).
                if trusted:
                    covered += arrays[:split]
                kept = arrays[split:]
            self._apply_records(cur, job_id, covered)
            assignments.append("snapshot_seq = ?")
            params.append(upto_seq)
            cur.execute(self._sql(_UPDATE_SNAPSHOT), (snapshot[0], job_id))
            if stored and self._old_deltas:
                # Deltas of a store written before routilux_batch existed.
                cur.execute(self._sql(_DELETE_DELTAS), (job_id, upto_seq))
        if kept:
            self._insert_batch(cur, job_id, kept, built=trusted)
        status, waiting = _changes(arrays)
        if status is not None:
            assignments.append("status = ?")
            params.append(status)
        if waiting is not None:
            assignments.append("waiting_for = ?")
            params.append(self._waiting_param(job_id, waiting))
        cur.execute(
            self._sql(f"UPDATE routilux_job SET {', '.join(assignments)} WHERE job_id = ?"),
            (*params, job_id),
        )

    def _waiting_param(self, job_id: str, waiting: Mapping[str, Any]) -> Any:
        """A record's ``waiting_for`` change as the job row's column value."""
        if "clear" in waiting:
            return None
        return self._jin(waiting["set"], f"job {job_id!r} delta waiting_for")

    def _commit_built(
        self,
        cur: Any,
        job_id: str,
        epoch: int,
        records: Sequence[BuiltRecord],
        snapshot: Optional[tuple[Any, int]],
    ) -> bool:
        """The engine's records (:class:`BuiltRecords`) in the fewest statements: the
        job row's UPDATE checks the epoch and the commit seq in its WHERE clause (no
        SELECT), then one batch row. With a snapshot, the WHERE clause also checks
        the job's snapshot seq: when the job has no deltas stored before these
        records, that it is the commit seq (a short job's last transaction: no batch
        rows to fold); when this store wrote the job's last batch row (the rows it
        keeps say so; a sync job's end), that the snapshot does not go back, and
        the stored rows are folded. False, with nothing written, when the row did
        not match or the records are not plainly in seq order: the caller's general
        path then checks everything and names the fault."""
        record = records[0]
        first = record[R_SEQ]
        if type(first) is not int or type(epoch) is not int:
            return False
        count = len(records)
        last = first + count - 1
        if count == 1:  # (a sync commit) its own status and waiting_for, as _changes
            status = record[R_STATUS] or None
            waiting = record[R_WAITING] or None
        else:
            # The seqs and the status / waiting_for changes, read in C.
            if list(map(_SEQ, records)) != list(range(first, last + 1)):
                return False
            status, waiting = _changes(records)
        params: list[Any] = [last, time.time()]
        stored = False
        if snapshot is not None:
            upto_seq = snapshot[1]
            if type(upto_seq) is not int or not first - 1 <= upto_seq <= last:
                return False
            params.append(upto_seq)
            # Batch rows stored before these records, as far as this store knows:
            # its last one for the job ends just before them (the UPDATE checks
            # what it needs either way; _fold_rows reads what is really there).
            stored = (job_id, first - 1) in self._nets
        if status is not None:
            params.append(status)
        if waiting is not None:
            params.append(self._waiting_param(job_id, waiting))
        params += (job_id, epoch, first - 1)
        if snapshot is not None:
            params.append(upto_seq if stored else first - 1)
        key = ("built", snapshot is not None, stored, status is not None, waiting is not None)
        statement = self._chunked.get(key)
        if statement is None:
            assignments = ["commit_seq = ?", "updated_at = ?"]
            where = "job_id = ? AND epoch = ? AND commit_seq = ?"
            if snapshot is not None:
                assignments.append("snapshot_seq = ?")
                # (_check_upto's rule: from the current snapshot's seq on)
                where += " AND snapshot_seq <= ?" if stored else " AND snapshot_seq = ?"
            if status is not None:
                assignments.append("status = ?")
            if waiting is not None:
                assignments.append("waiting_for = ?")
            statement = self._chunked[key] = self._sql(
                f"UPDATE routilux_job SET {', '.join(assignments)} WHERE {where}"
            )
        cur.execute(statement, params)
        if cur.rowcount != 1:
            return False
        if snapshot is None:
            self._insert_batch(cur, job_id, records, built=True)
            return True
        cur.execute(self._sql(_UPDATE_SNAPSHOT), (snapshot[0], job_id))
        split = upto_seq - first + 1
        if stored:
            covered = self._fold_rows(cur, job_id, upto_seq)
            if self._old_deltas:
                cur.execute(self._sql(_DELETE_DELTAS), (job_id, upto_seq))
            covered += records[:split]
            self._apply_records(cur, job_id, covered)
            if split < count:
                self._insert_batch(cur, job_id, records[split:], built=True)
        elif split >= count:  # the usual final snapshot: it covers every record
            self._apply_records(cur, job_id, records)
        else:
            if split > 0:
                self._apply_records(cur, job_id, records[:split])
            self._insert_batch(cur, job_id, records[split:], built=True)
        return True

    def _write_tasks(
        self, cur: Any, job_id: str, checked: Sequence[DeltaRecord], verify: bool
    ) -> None:
        """Apply plain (checked) records to the task table, refusing a record that
        consumes a task not pending or adds one that is."""
        # The batch's net effect on the task table: tasks added and consumed inside
        # the batch never touch it.
        added: dict[int, TaskRow] = {}
        consumed_rows: list[int] = []
        removed_rows: list[int] = []
        for record in checked:
            consumed = record["consumed"]
            if consumed is not None:
                if consumed in added:
                    del added[consumed]
                else:
                    consumed_rows.append(consumed)
            for seq in record["tasks_removed"]:
                if seq in added:
                    del added[seq]
                else:
                    removed_rows.append(seq)
            for task in record["tasks_added"]:
                if task["seq"] in added:
                    raise StoreError(
                        f"job {job_id!r} record seq {record['seq']}: task seq "
                        f"{task['seq']} is added twice"
                    )
                added[task["seq"]] = task
        if len(set(consumed_rows)) != len(consumed_rows):
            raise StoreError(f"job {job_id!r}: a task is consumed twice in one batch")
        # The checks come from the writes themselves (no statement of their own): the
        # DELETE of the consumed rows must delete one row each, and the INSERT of the
        # added rows (after the DELETEs, so a retry may re-add the seq it consumed)
        # skips a seq already pending, so it must insert every row. When either
        # falls short, _Refused ends the transaction and commit_many runs it again
        # with ``verify``: the seqs at fault are looked up before anything is written,
        # for the message.
        if verify:
            missing = set(consumed_rows) - set(self._pending(cur, job_id, consumed_rows))
            if missing:
                raise StoreError(
                    f"job {job_id!r}: records consume tasks {sorted(missing)} that are not "
                    "pending (consumed before, or never added)"
                )
            fresh = sorted(set(added) - set(consumed_rows) - set(removed_rows))
            clash = sorted(self._pending(cur, job_id, fresh))
            if clash:
                raise StoreError(
                    f"job {job_id!r}: records add tasks {clash} that are already pending"
                )
        if consumed_rows and self._delete_tasks(cur, job_id, consumed_rows) != len(consumed_rows):
            raise _Refused(
                f"job {job_id!r}: records consume tasks that are not pending (consumed "
                "before, or never added)"
            )
        if removed_rows:
            self._delete_tasks(cur, job_id, removed_rows)  # a seq not pending is ignored
        if added and self._insert_task_rows(cur, job_id, added.values()) != len(added):
            raise _Refused(f"job {job_id!r}: records add tasks that are already pending")

    # -- batch rows ------------------------------------------------------------
    #
    # A commit stores its records as ONE row of routilux_batch: the JSON array of
    # the records, keyed by the job and the last seq in it (``first_seq`` the first).
    # ``applied`` says whether the task table already holds the row's effects: plain
    # records (outside callers) change the task table as they are committed, which
    # is how their tasks are checked; the engine's records do not -- the task table
    # then holds the pending work as of the snapshot, and a snapshot write brings it
    # up to the snapshot's seq. The rows that are not applied always come after the
    # ones that are: committing plain records applies every row before them.

    def _insert_batch(
        self, cur: Any, job_id: str, records: Sequence[BuiltRecord], *, built: bool
    ) -> None:
        """One batch row of built records, its text ONE call of the encoder (or the
        texts of the :data:`EncodedRecord` among them, joined: see :func:`_batch_text`).

        ``built``: the engine's records, not applied to the task table; they are kept
        for the snapshot that folds the row (:attr:`_nets`). Otherwise plain records
        (converted), already applied. A value JSON cannot hold raises StoreError
        naming the job and the record's seq."""
        try:
            text = _batch_text(records)
        except (TypeError, ValueError, RecursionError):
            _refuse_unencodable(job_id, records)
        first, seq = records[0][R_SEQ], records[-1][R_SEQ]
        self._insert_batch_text(cur, job_id, first, seq, not built, text)
        if built:
            self._new_nets[(job_id, seq)] = _KnownRow(first, text, records)

    def _insert_batch_text(
        self, cur: Any, job_id: str, first_seq: int, seq: int, applied: bool, text: str
    ) -> None:
        cur.execute(self._sql(_INSERT_BATCH), (job_id, seq, first_seq, 1 if applied else 0, text))

    def _apply_stored(self, cur: Any, job_id: str) -> None:
        """Bring the task table up to the job's last commit: apply the rows that are
        not applied yet, and mark them."""
        cur.execute(self._sql(_SELECT_UNAPPLIED), (job_id,))
        raws = [row[0] for row in cur.fetchall()]
        if not raws:
            return
        decoded = _loads_many(raws)
        self._apply_records(cur, job_id, [rec for recs in decoded for rec in _arrays(recs)])
        cur.execute(self._sql(_MARK_APPLIED), (job_id,))

    def _fold_rows(self, cur: Any, job_id: str, upto_seq: int) -> list[Any]:
        """Drop the job's batch rows a snapshot up to ``upto_seq`` covers; a row that
        spans ``upto_seq`` is split (its later records stay, as a row of their own,
        of built records). Returns what the task table does not hold yet, in seq
        order, for :meth:`_apply_records`: built records, and a row this store wrote
        as :attr:`_nets` keeps it (a :class:`_KnownRow`)."""
        cur.execute(self._sql(_SELECT_BATCHES), (job_id, upto_seq))
        found = cur.fetchall()
        if found:
            cur.execute(self._sql(_DELETE_BATCHES), (job_id, upto_seq))
        covered: list[Any] = []
        for seq, first, applied, text in found:
            seq = int(seq)
            known = self._nets.pop((job_id, seq), None)
            if known is not None:
                self._net_chars -= len(known.text)
            if seq <= upto_seq and not applied:
                if known is not None and known.first == int(first) and known.text == text:
                    covered.append(known)  # the row as this store wrote it
                else:
                    covered += _arrays(_loads_many([text])[0])
            elif seq > upto_seq:
                records = _arrays(_loads_many([text])[0])
                before = [record for record in records if record[R_SEQ] <= upto_seq]
                if not applied:
                    covered += before
                later = _ENCODE(records[len(before) :])
                self._insert_batch_text(cur, job_id, upto_seq + 1, seq, bool(applied), later)
        return covered

    def _apply_records(self, cur: Any, job_id: str, records: Sequence[Any]) -> None:
        """Apply the net effect of ``records`` (built records and :class:`_KnownRow`
        rows, see :func:`_net_of`) to the task table (which holds the state just
        before the first of them): the consumed and removed seqs leave, the added
        tasks come -- except tasks both added and consumed among them."""
        if not records:
            return
        gone, added = _net_of(records, job_id)
        if gone:
            self._delete_tasks(cur, job_id, gone)
        if added:
            self._upsert_tasks(cur, job_id, added)

    def _upsert_tasks(self, cur: Any, job_id: str, rows: Sequence[_TaskParams]) -> None:
        """Insert the job's task rows, replacing any of the same seq."""
        wrap = self._json_param
        params: list[Any] = []
        for seq, kind, routine, slot, data, retries, due, extra in rows:
            if wrap is not None:
                data, extra = wrap(data), wrap(extra)
            params += (job_id, seq, kind, routine, slot, data, retries, due, extra)
        self._insert_many(
            cur, f"INSERT INTO routilux_task (job_id, {_TASK_COLUMNS})", 9, params, _TASK_UPSERT
        )

    def write_snapshot(
        self, job_id: str, epoch: int, snapshot: Mapping[str, Any], upto_seq: int
    ) -> None:
        """Replace the snapshot by one covering commits ``<= upto_seq``; drop those deltas.

        ``upto_seq`` must lie between the current snapshot's seq and the job's commit
        seq. The task table is brought up to ``upto_seq`` (the snapshot's pending work).
        """
        self.commit_then_snapshot([], job_id, epoch, snapshot, upto_seq)

    def commit_then_snapshot(
        self,
        batches: Sequence[tuple[str, int, Sequence[DeltaRecord]]],
        job_id: str,
        epoch: int,
        snapshot: Mapping[str, Any],
        upto_seq: int,
    ) -> None:
        """:meth:`commit_many` of ``batches``, then :meth:`write_snapshot` of
        ``job_id``, in ONE transaction (all or nothing): what the journal writer does
        when a job's snapshot follows its last records (a finished job)."""
        # The journal's snapshot text as it is (_snapshot_text's first case, inline:
        # twice per job).
        if type(snapshot) is EncodedSnapshot and self._json_param is None:
            snap: Any = snapshot.text
        else:
            snap = self._snapshot_text(job_id, snapshot)
        if type(batches) is list and len(batches) == 1:
            batch_job, batch_epoch, records = batches[0]
            if (
                batch_job == job_id
                and batch_epoch == epoch
                and type(records) is BuiltRecords
                and records
                and type(job_id) is str
                and job_id
            ):
                # The journal's usual fold (a finished job): one job's records, then
                # its snapshot, tried the fewest-statement way once; on a miss the
                # general path checks everything in the same transaction.
                with self._writing() as cur:
                    if not self._commit_built(cur, job_id, epoch, records, (snap, upto_seq)):
                        self._commit_checked(cur, job_id, epoch, records, (snap, upto_seq), False)
                return
        batches = list(batches)
        with self._writing() as cur:
            folded = False
            for batch_job, batch_epoch, records in batches:
                check_id(batch_job, "job_id")
                if batch_job == job_id and batch_epoch == epoch and not folded:
                    # The snapshot's job: its records and the snapshot in one step.
                    self._commit_one(cur, batch_job, batch_epoch, records, (snap, upto_seq))
                    folded = True
                else:
                    self._commit_one(cur, batch_job, batch_epoch, records)
            if not folded:
                check_id(job_id, "job_id")
                commit_seq, snapshot_seq, _ = self._job_for_write(cur, job_id, epoch)
                self._write_snapshot(cur, job_id, snap, upto_seq, snapshot_seq, commit_seq)

    def _snapshot_text(self, job_id: str, snapshot: Mapping[str, Any]) -> Any:
        """The stored form of a job's snapshot (a saved JobState: a dict, or the
        journal's :class:`EncodedSnapshot`, whose text is written as it is)."""
        if type(snapshot) is EncodedSnapshot:
            # The journal's (twice per job): its text as it is, as _jin would give it.
            wrap = self._json_param
            return snapshot.text if wrap is None else wrap(snapshot.text)
        if type(snapshot) is not dict:
            if not isinstance(snapshot, Mapping):
                raise StoreError(f"job {job_id!r}: snapshot must be a dict (a saved JobState)")
            snapshot = dict(snapshot)
        return self._jin(snapshot, f"job {job_id!r} snapshot")

    @property
    def folds_snapshots(self) -> bool:
        """True when :meth:`commit_then_snapshot` does what ``commit_many`` then
        ``write_snapshot`` would: neither (nor ``commit``) is overridden by a subclass
        (one that wraps them, e.g. to count or fail commits, keeps its own steps)."""
        cls = type(self)
        return (
            cls.commit_many is SQLStore.commit_many
            and cls.commit is SQLStore.commit
            and cls.write_snapshot is SQLStore.write_snapshot
        )

    def _check_upto(self, job_id: str, upto_seq: Any, snapshot_seq: int, commit_seq: int) -> None:
        if (
            not isinstance(upto_seq, int)
            or isinstance(upto_seq, bool)
            or not snapshot_seq <= upto_seq <= commit_seq
        ):
            raise StoreError(
                f"job {job_id!r}: a snapshot must cover a seq from {snapshot_seq} (the "
                f"current snapshot) to {commit_seq} (the last commit), got {upto_seq!r}"
            )

    def _write_snapshot(
        self, cur: Any, job_id: str, snap: Any, upto_seq: int, snapshot_seq: int, commit_seq: int
    ) -> None:
        """Replace the snapshot (the job row locked, its epoch checked); the task
        table is brought up to ``upto_seq`` and the covered deltas are dropped."""
        self._check_upto(job_id, upto_seq, snapshot_seq, commit_seq)
        cur.execute(
            self._sql("UPDATE routilux_job SET snapshot_seq = ?, updated_at = ? WHERE job_id = ?"),
            (upto_seq, time.time(), job_id),
        )
        cur.execute(self._sql(_UPDATE_SNAPSHOT), (snap, job_id))
        if commit_seq > snapshot_seq:
            self._apply_records(cur, job_id, self._fold_rows(cur, job_id, upto_seq))
            if self._old_deltas:
                cur.execute(self._sql(_DELETE_DELTAS), (job_id, upto_seq))

    def load(self, job_id: str) -> JournaledJob:
        """The job's row, snapshot, deltas after the snapshot and current tasks."""
        return self.load_many([job_id])[0]

    def load_many(self, job_ids: Sequence[str]) -> list[JournaledJob]:
        """:meth:`load` of several jobs in one read transaction, in the order given
        (a statement per table and chunk of jobs, not per job); an id that is not
        stored raises :class:`JobNotFoundError` naming it."""
        ids = [check_id(job_id, "job_id") for job_id in job_ids]
        order = list(dict.fromkeys(ids))
        rows: dict[str, Sequence[Any]] = {}
        snapshots: dict[str, Any] = {}
        deltas: list[Sequence[Any]] = []
        batches: list[Sequence[Any]] = []
        task_rows: list[Sequence[Any]] = []
        with self._transaction(write=False) as cur:
            for start in range(0, len(order), _CHUNK):
                chunk = order[start : start + _CHUNK]
                n = len(chunk)
                cur.execute(
                    self._in_list(
                        f"SELECT {_SUMMARY_COLUMNS}, snapshot_seq, commit_seq"
                        " FROM routilux_job WHERE job_id IN (?*)" + self._FOR_SHARE,
                        n,
                    ),
                    chunk,
                )
                for row in cur.fetchall():
                    rows[row[0]] = row
                for job_id in chunk:
                    if job_id not in rows:
                        raise JobNotFoundError(f"store {self.location} has no job {job_id!r}")
                cur.execute(
                    self._in_list(
                        "SELECT job_id, snapshot FROM routilux_snapshot WHERE job_id IN (?*)", n
                    ),
                    chunk,
                )
                snapshots.update(cur.fetchall())
                cur.execute(
                    self._in_list(
                        "SELECT job_id, seq, record FROM routilux_delta"
                        " WHERE job_id IN (?*) ORDER BY job_id, seq",
                        n,
                    ),
                    chunk,
                )
                deltas += cur.fetchall()
                if self._has_batch:
                    cur.execute(
                        self._in_list(
                            "SELECT job_id, applied, records FROM routilux_batch"
                            " WHERE job_id IN (?*) ORDER BY job_id, seq",
                            n,
                        ),
                        chunk,
                    )
                    batches += cur.fetchall()
                # In the order of the primary key: one job's rows together, by seq.
                cur.execute(
                    self._in_list(
                        f"SELECT job_id, {_TASK_COLUMNS} FROM routilux_task"
                        " WHERE job_id IN (?*) ORDER BY job_id, seq",
                        n,
                    ),
                    chunk,
                )
                task_rows += cur.fetchall()
        for job_id in order:
            if job_id not in snapshots:
                raise StoreError(f"store {self.location}: job {job_id!r} has no snapshot row")
        # Every JSON column of the read decoded together (SQLite: one parse).
        raws: list[Any] = [snapshots[job_id] for job_id in order]
        raws += [item[2] for item in deltas]
        raws += [item[5] for item in task_rows]
        raws += [item[8] for item in task_rows]
        values = self._jout_many(raws)
        at = len(order)
        records = values[at : at + len(deltas)]
        at += len(deltas)
        batch_records = _loads_many([item[2] for item in batches]) if batches else []
        datas = values[at : at + len(task_rows)]
        extras = values[at + len(task_rows) :]
        job_deltas: dict[str, list[DeltaRecord]] = {}
        for item, record in zip(deltas, records):
            # Deltas the snapshot covers are deleted with it; one left over is not read.
            if item[1] > rows[item[0]][8]:
                job_deltas.setdefault(item[0], []).append(record)
        # The records of batch rows whose effects the task table does not hold yet.
        unapplied: dict[str, list[DeltaRecord]] = {}
        for item, batch in zip(batches, batch_records):
            later = _deltas_after(batch, rows[item[0]][8])
            job_deltas.setdefault(item[0], []).extend(later)
            if not item[1]:
                unapplied.setdefault(item[0], []).extend(later)
        job_tasks: dict[str, list[TaskRow]] = {}
        current: list[TaskRow] = []
        current_id: Any = None
        for item, data, extra in zip(task_rows, datas, extras):
            if item[0] != current_id:
                current_id = item[0]
                current = job_tasks[current_id] = []
            due = item[7]
            current.append(
                {
                    "seq": int(item[1]),
                    "kind": item[2],
                    "routine": item[3],
                    "slot": item[4],
                    "data": data,
                    "retries": int(item[6]),
                    "due_at": None if due is None else float(due),
                    "extra": extra,
                }
            )
        for job_id, later in unapplied.items():
            job_tasks[job_id] = _applied(job_tasks.get(job_id, []), later)
        loaded: dict[str, JournaledJob] = {}
        for job_id, snapshot in zip(order, values):
            row = rows[job_id]
            tasks = job_tasks.get(job_id, [])
            if tasks and tasks[0]["seq"] < 0:
                # The job's own tasks in seq order, then inputs (-1, -2, ...) as they
                # arrived.
                tasks.sort(key=_task_order)
            summary = self._summary(row)
            loaded[job_id] = JournaledJob(
                job_id=summary.job_id,
                flow_id=summary.flow_id,
                status=summary.status,
                owner=summary.owner,
                epoch=summary.epoch,
                created_at=summary.created_at,
                updated_at=summary.updated_at,
                waiting_for=summary.waiting_for,
                snapshot=snapshot,
                snapshot_seq=int(row[8]),
                commit_seq=int(row[9]),
                deltas=job_deltas.get(job_id, []),
                tasks=tasks,
            )
        return [loaded[job_id] for job_id in ids]

    def load_job(self, job_id: str, apply_ops: Optional[ApplyOps] = None) -> JobState:
        """The job's JobState: its snapshot with every later delta's ops applied.

        ``apply_ops(job_state, ops)`` replays one delta (default:
        ``routilux.changes.apply_ops``). The state's ``status`` is the stored one; its
        pending work is ``load(job_id).tasks``, not ``pending_tasks``.
        """
        return build_job_state(self.load(job_id), apply_ops, owned=True)

    def _task(self, row: Sequence[Any]) -> TaskRow:
        return {
            "seq": int(row[0]),
            "kind": row[1],
            "routine": row[2],
            "slot": row[3],
            "data": self._jout(row[4]),
            "retries": int(row[5]),
            "due_at": None if row[6] is None else float(row[6]),
            "extra": self._jout(row[7]),
        }

    def _summary(self, row: Sequence[Any]) -> JobSummary:
        return JobSummary(
            job_id=row[0],
            flow_id=row[1],
            status=row[2],
            owner=row[3],
            epoch=int(row[4]),
            created_at=float(row[5]),
            updated_at=float(row[6]),
            waiting_for=None if row[7] is None else self._jout(row[7]),
        )

    def list_jobs(
        self,
        flow_id: Optional[str] = None,
        status: Union[str, Collection[str], None] = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[JobSummary]:
        """Summaries, most recently created first; filters by flow and status(es).

        ``limit`` is 1..10000, ``offset`` >= 0.
        """
        check_page(limit, offset)
        statuses = status_filter(status)
        clauses: list[str] = []
        params: list[Any] = []
        if flow_id is not None:
            clauses.append("flow_id = ?")
            params.append(flow_id)
        if statuses is not None:
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._transaction(write=False) as cur:
            cur.execute(
                self._sql(
                    f"SELECT {_SUMMARY_COLUMNS} FROM routilux_job{where}"
                    f" ORDER BY created_at DESC, {self._INSERT_ORDER} DESC LIMIT ? OFFSET ?"
                ),
                (*params, limit, offset),
            )
            return [self._summary(row) for row in cur.fetchall()]

    def set_status(
        self, job_id: str, epoch: int, status: str, waiting_for: Any = UNCHANGED
    ) -> None:
        """Set the job's status; ``waiting_for`` a JSON value, None to clear, or unchanged."""
        check_id(status, f"job {job_id!r}: status")
        assignments = ["status = ?", "updated_at = ?"]
        params: list[Any] = [status, time.time()]
        if waiting_for is not UNCHANGED:
            check_json(waiting_for, f"job {job_id!r} waiting_for")
            assignments.append("waiting_for = ?")
            params.append(
                None
                if waiting_for is None
                else self._jin(waiting_for, f"job {job_id!r} waiting_for")
            )
        with self._transaction(write=True) as cur:
            self._job_for_write(cur, job_id, epoch)
            cur.execute(
                self._sql(f"UPDATE routilux_job SET {', '.join(assignments)} WHERE job_id = ?"),
                (*params, job_id),
            )

    def add_input(self, job_id: str, task: Mapping[str, Any]) -> int:
        """Append an input task (``routine``, ``slot``, ``data``, optional ``extra``).

        Any process may call it: there is no epoch. Inputs get negative seqs -1, -2,
        ... in arrival order, so they never collide with the seqs the job's owner
        gives its own tasks. A finished job accepts no input (StoreError).
        """
        check_id(job_id, "job_id")
        row = check_task_fully(task, f"job {job_id!r} input", input_task=True)
        with self._transaction(write=True) as cur:
            cur.execute(
                self._sql(
                    "SELECT status, input_seq FROM routilux_job WHERE job_id = ?" + self._FOR_UPDATE
                ),
                (job_id,),
            )
            found = cur.fetchone()
            if found is None:
                raise JobNotFoundError(f"store {self.location} has no job {job_id!r}")
            if found[0] in FINISHED_STATUSES:
                raise StoreError(f"job {job_id!r} is {found[0]}: it takes no more input")
            number = int(found[1]) + 1
            row["seq"] = -number
            self._insert_tasks(cur, job_id, [row])
            cur.execute(
                self._sql("UPDATE routilux_job SET input_seq = ?, updated_at = ? WHERE job_id = ?"),
                (number, time.time(), job_id),
            )
        return -number

    def delete_job(self, job_id: str) -> None:
        """Remove the job, its tasks and its deltas (JobNotFoundError if unknown)."""
        check_id(job_id, "job_id")
        with self._transaction(write=True) as cur:
            cur.execute(self._sql("DELETE FROM routilux_job WHERE job_id = ?"), (job_id,))
            if cur.rowcount == 0:
                raise JobNotFoundError(f"store {self.location} has no job {job_id!r}")
            cur.execute(self._sql("DELETE FROM routilux_task WHERE job_id = ?"), (job_id,))
            cur.execute(self._sql("DELETE FROM routilux_delta WHERE job_id = ?"), (job_id,))
            cur.execute(self._sql("DELETE FROM routilux_batch WHERE job_id = ?"), (job_id,))
            cur.execute(self._sql("DELETE FROM routilux_snapshot WHERE job_id = ?"), (job_id,))

    # -- runners and leases ----------------------------------------------------

    def register_runner(
        self, runner_id: str, host: Optional[str] = None, pid: Optional[int] = None
    ) -> None:
        """Record (or renew) a runner; host and PID default to this process's."""
        import os

        check_id(runner_id, "runner_id")
        host = HOST if host is None else check_id(host, f"runner {runner_id!r}: host")
        pid = os.getpid() if pid is None else pid
        if not isinstance(pid, int) or isinstance(pid, bool) or pid < 1:
            raise StoreError(f"runner {runner_id!r}: pid must be a positive integer, got {pid!r}")
        now = time.time()
        with self._transaction(write=True) as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO routilux_runner (runner_id, host, pid, heartbeat, started_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (runner_id) DO UPDATE SET"
                    " host = excluded.host, pid = excluded.pid, heartbeat = excluded.heartbeat"
                ),
                (runner_id, host, pid, now, now),
            )

    def heartbeat(self, runner_id: str) -> None:
        """Renew the runner's heartbeat (JobNotFoundError for an unregistered runner)."""
        check_id(runner_id, "runner_id")
        with self._transaction(write=True) as cur:
            cur.execute(
                self._sql("UPDATE routilux_runner SET heartbeat = ? WHERE runner_id = ?"),
                (time.time(), runner_id),
            )
            if cur.rowcount == 0:
                raise JobNotFoundError(f"store {self.location} has no runner {runner_id!r}")

    def remove_runner(self, runner_id: str) -> None:
        """Forget the runner; the jobs it owned become claimable."""
        check_id(runner_id, "runner_id")
        with self._transaction(write=True) as cur:
            cur.execute(self._sql("DELETE FROM routilux_runner WHERE runner_id = ?"), (runner_id,))

    def _owner_row(self, cur: Any, owner: Optional[str]) -> Optional[tuple[str, int, float]]:
        if owner is None:
            return None
        cur.execute(
            self._sql("SELECT host, pid, heartbeat FROM routilux_runner WHERE runner_id = ?"),
            (owner,),
        )
        row = cur.fetchone()
        return None if row is None else (row[0], int(row[1]), float(row[2]))

    def claim(self, job_id: str, runner_id: str, stale_after: float) -> Optional[int]:
        """Take over the job if it is unfinished and its owner is dead.

        Dead: no owner, no runner row for it, its PID gone on this host, or its
        heartbeat older than ``stale_after`` seconds. Then the owner becomes
        ``runner_id`` and the epoch grows by one; the new epoch is returned. Otherwise
        (finished, or owned by a live runner, or being claimed by another process this
        very moment) None. Paused and waiting jobs are claimable this way.
        """
        check_id(job_id, "job_id")
        check_id(runner_id, "runner_id")
        stale = check_stale_after(stale_after)
        with self._transaction(write=True) as cur:
            cur.execute(
                self._sql(
                    "SELECT owner, status, epoch FROM routilux_job WHERE job_id = ?"
                    + self._FOR_CLAIM
                ),
                (job_id,),
            )
            row = cur.fetchone()
            if row is None:
                cur.execute(self._sql("SELECT 1 FROM routilux_job WHERE job_id = ?"), (job_id,))
                if cur.fetchone() is None:
                    raise JobNotFoundError(f"store {self.location} has no job {job_id!r}")
                return None  # another process holds the row: it is claiming it now
            owner, status, epoch = row[0], row[1], int(row[2])
            if status in FINISHED_STATUSES:
                return None
            if not owner_dead(owner, self._owner_row(cur, owner), time.time(), stale):
                return None
            cur.execute(
                self._sql(
                    "UPDATE routilux_job SET owner = ?, epoch = ?, updated_at = ? WHERE job_id = ?"
                ),
                (runner_id, epoch + 1, time.time(), job_id),
            )
            return epoch + 1

    def claim_many(
        self, job_ids: Sequence[str], runner_id: str, stale_after: float
    ) -> dict[str, int]:
        """:meth:`claim` of several jobs in one transaction: the new epoch of each job
        taken, by id. A job that is finished, held by a live runner, being claimed by
        another process this very moment (PostgreSQL skips its locked row) or not
        stored is left out, so of several processes claiming at once each job goes to
        exactly one."""
        ids = list(dict.fromkeys(check_id(job_id, "job_id") for job_id in job_ids))
        check_id(runner_id, "runner_id")
        stale = check_stale_after(stale_after)
        claimed: dict[str, int] = {}
        with self._transaction(write=True) as cur:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                cur.execute(
                    self._in_list(
                        "SELECT job_id, owner, status, epoch FROM routilux_job"
                        " WHERE job_id IN (?*)" + self._FOR_CLAIM,
                        len(chunk),
                    ),
                    chunk,
                )
                rows = [row for row in cur.fetchall() if row[2] not in FINISHED_STATUSES]
                owners = sorted({row[1] for row in rows if row[1] is not None})
                runners: dict[str, tuple[str, int, float]] = {}
                for first in range(0, len(owners), _CHUNK):
                    part = owners[first : first + _CHUNK]
                    cur.execute(
                        self._in_list(
                            "SELECT runner_id, host, pid, heartbeat FROM routilux_runner"
                            " WHERE runner_id IN (?*)",
                            len(part),
                        ),
                        part,
                    )
                    for runner, host, pid, beat in cur.fetchall():
                        runners[runner] = (host, int(pid), float(beat))
                now = time.time()
                taken = [
                    (row[0], int(row[3]) + 1)
                    for row in rows
                    if owner_dead(row[1], runners.get(row[1]), now, stale)
                ]
                if not taken:
                    continue
                # The rows are locked (or the database is, in SQLite) since the read:
                # each epoch read is still the job's, and grows by one.
                cur.execute(
                    self._in_list(
                        "UPDATE routilux_job SET owner = ?, epoch = epoch + 1, updated_at = ?"
                        " WHERE job_id IN (?*)",
                        len(taken),
                    ),
                    [runner_id, time.time(), *(job_id for job_id, _ in taken)],
                )
                claimed.update(taken)
        return claimed

    def claimable_jobs(self, flow_id: Optional[str], stale_after: float) -> list[str]:
        """Jobs to recover: unfinished, not paused or waiting, owner dead (as in
        :meth:`claim`), oldest first. ``flow_id=None`` lists every flow's."""
        stale = check_stale_after(stale_after)
        skipped = sorted(FINISHED_STATUSES | PARKED_STATUSES)
        params: list[Any] = list(skipped)
        clause = ""
        if flow_id is not None:
            clause = " AND j.flow_id = ?"
            params.append(flow_id)
        with self._transaction(write=False) as cur:
            cur.execute(
                self._sql(
                    "SELECT j.job_id, j.owner, r.runner_id, r.host, r.pid, r.heartbeat"
                    " FROM routilux_job j LEFT JOIN routilux_runner r ON r.runner_id = j.owner"
                    f" WHERE j.status NOT IN ({', '.join('?' * len(skipped))}){clause}"
                    f" ORDER BY j.created_at, j.{self._INSERT_ORDER}"
                ),
                params,
            )
            rows = cur.fetchall()
        now = time.time()
        return [
            row[0]
            for row in rows
            if owner_dead(
                row[1],
                None if row[2] is None else (row[3], int(row[4]), float(row[5])),
                now,
                stale,
            )
        ]

    def release(self, job_id: str, epoch: int) -> None:
        """Clear the job's owner (its epoch stays); the next claim takes it at once."""
        with self._transaction(write=True) as cur:
            self._job_for_write(cur, job_id, epoch)
            cur.execute(
                self._sql("UPDATE routilux_job SET owner = NULL, updated_at = ? WHERE job_id = ?"),
                (time.time(), job_id),
            )

    # -- control requests and watching ---------------------------------------------
    #
    # A process that does not own a running job (the web UI, ``routilux jobs``) asks
    # its owner to pause or cancel it through a row of routilux_control; the owner's
    # heartbeat takes its requests (routilux.engine.runner). The table was added
    # after schema version 1 without a version bump: each back end creates it (and
    # the index on updated_at) when it opens an older file.

    def request_control(self, job_id: str, action: str, reason: str = "") -> None:
        """Queue ``action`` ("pause" or "cancel") for the owner of ``job_id``."""
        check_control(job_id, action, reason)
        with self._transaction(write=True) as cur:
            cur.execute(self._sql("SELECT 1 FROM routilux_job WHERE job_id = ?"), (job_id,))
            if cur.fetchone() is None:
                raise JobNotFoundError(f"store {self.location} has no job {job_id!r}")
            cur.execute(
                self._sql(
                    "INSERT INTO routilux_control (job_id, action, reason, requested_at)"
                    " VALUES (?, ?, ?, ?)"
                ),
                (job_id, action, reason, time.time()),
            )

    def take_control_requests(self, runner_id: str) -> list[tuple[str, str, str]]:
        """Remove and return the requests for the running jobs ``runner_id`` owns.

        Requests for jobs that are finished, paused or waiting are dropped: they were
        meant for a run that is over (a paused job is resumed or cancelled directly).
        """
        check_id(runner_id, "runner_id")
        idle = sorted(FINISHED_STATUSES | PARKED_STATUSES)
        marks = ", ".join("?" * len(idle))
        with self._transaction(write=True) as cur:
            cur.execute(
                self._sql(
                    "SELECT c.request_id, c.job_id, c.action, c.reason FROM routilux_control c"
                    " JOIN routilux_job j ON j.job_id = c.job_id"
                    f" WHERE j.owner = ? AND j.status NOT IN ({marks}) ORDER BY c.request_id"
                ),
                (runner_id, *idle),
            )
            rows = cur.fetchall()
            for start in range(0, len(rows), _CHUNK):
                chunk = [row[0] for row in rows[start : start + _CHUNK]]
                cur.execute(
                    self._sql(
                        "DELETE FROM routilux_control WHERE request_id IN"
                        f" ({', '.join('?' * len(chunk))})"
                    ),
                    chunk,
                )
            cur.execute(
                self._sql(
                    "DELETE FROM routilux_control WHERE job_id NOT IN (SELECT job_id FROM"
                    f" routilux_job WHERE status NOT IN ({marks}))"
                ),
                idle,
            )
        return [(str(row[1]), str(row[2]), str(row[3])) for row in rows]

    def jobs_changed_since(self, since: float, limit: int = 1000) -> list[tuple[JobSummary, int]]:
        """Jobs whose row changed at or after ``since``, oldest change first, with
        their commit seq (``limit`` 1..10000)."""
        if isinstance(since, bool) or not isinstance(since, (int, float)):
            raise StoreError(f"jobs_changed_since: since must be a Unix time, got {since!r}")
        check_page(limit, 0)
        with self._transaction(write=False) as cur:
            cur.execute(
                self._sql(
                    f"SELECT {_SUMMARY_COLUMNS}, commit_seq FROM routilux_job"
                    f" WHERE updated_at >= ? ORDER BY updated_at, {self._INSERT_ORDER} LIMIT ?"
                ),
                (float(since), limit),
            )
            return [(self._summary(row), int(row[8])) for row in cur.fetchall()]

    # -- lifetime --------------------------------------------------------------

    def __enter__(self) -> SQLStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        self._closed = True

"""The automatic journal of a durable job: :class:`JobJournal`.

A flow built with a store journals every job it runs.  The journal is the run's task
observer (``observer.py``): it turns each finished delivery into one
:data:`~routilux.store.DeltaRecord` -- the state ops the delivery made (captured by a
:class:`~routilux.changes.ChangeLog` attached to the JobState), the task it consumed,
the tasks it queued and the timers it withdrew -- and hands the records to the
store's group-commit :class:`~routilux.store.JournalWriter`.  ``runner.py`` keeps the
process's runner, lease and writers per store (:class:`Durable`); ``rows.py`` turns
tasks into rows and back.

Rules it keeps (docs/durability.md, "How the journal works"):

* Records go to the writer in the order ``ChangeLog.take_ready`` releases them, and a
  transaction ends only after a record whose ``cut`` is True (``put_many`` per group).
* A task's row is written by the record of the delivery that queued it; a delivery
  whose task's row is not released yet (its parent is still running) is committed in
  the same transaction as that row, so a crash can never keep the child's effects
  without its parent's.  Which attempt of a task a row belongs to is tracked
  (``retries``), so a retry that ends before the failed attempt's record is released
  neither consumes a row twice nor leaves a stale one.
* A fired timer keeps its row (written when it was scheduled) until its delivery's
  record consumes it; a retry's row replaces the consumed one in the same record.
* Status changes are job-level records; a pause rewrites the task rows to the
  JobState's ``pending_tasks``; a finished job drops its rows and gets a final
  snapshot.  Snapshots are also taken as the deltas grow (``SNAPSHOT_RATIO``), when
  nothing is in flight.
* A store failure (disk full, a lost lease: ``StaleEpochError``) fails the job with the
  StoreError in its history; from then on this process writes nothing for the job.

Locks: ``task_queued`` and ``timer_cancelled`` come with the run's lock held, so they
only touch the journal's own leaf lock ``_rows``.  Releasing records takes the job's
lock (the ChangeLog's), then ``_rows``; the writer's lock is a leaf.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from ..changes import ChangeLog, Record, encode_value
from ..error_handler import error_record
from ..exceptions import JobStateError, SerializationError, StoreError
from ..serialization import layout_of
from ..store._base import (
    BuiltRecord,
    BuiltRecords,
    EncodedRecord,
    EncodedSnapshot,
    EncodedTask,
    built_task,
    encoded_record,
    ready_task_text,
    task_of,
)
from ..store.writer import OpenRecords
from . import aio
from .observer import AT_JOB_END, READY, TIMER
from .rows import _ATOMS, entry_of_row, missing_target, row_of_entry, task_row, wall_time
from .runner import HEARTBEAT_INTERVAL, Durable
from .texts import atoms_text, ops_text

__all__ = [
    "DURABILITIES",
    "HEARTBEAT_INTERVAL",
    "SNAPSHOT_EVERY",
    "SNAPSHOT_RATIO",
    "STALE_AFTER",
    "Durable",
    "JobJournal",
    "entry_of_row",
    "missing_target",
    "row_of_entry",
    "task_row",
    "wall_time",
]

if TYPE_CHECKING:
    from ..job_state import JobState
    from ..store import TaskRow
    from .run import JobRun
    from .tasks import Task

logger = logging.getLogger("routilux.engine.journal")

#: Fewest commits between two periodic snapshots of a running job.
SNAPSHOT_EVERY = 1000

#: A periodic snapshot is due once the deltas since the last one hold this many times
#: as many writes (the change capture's ops and delivery ends) as that snapshot held
#: entries (history and log records, keys of the tracked mappings, pending rows), and
#: at least SNAPSHOT_EVERY commits: so a recovery replays at most about this many times
#: a snapshot's worth of writes, and all the periodic snapshots but the last write at
#: most 1/SNAPSHOT_RATIO of the entries the deltas wrote (O(n) in total, whatever
#: the job's shape: a snapshot of an unchanging size no longer waits for the gap to
#: double).
SNAPSHOT_RATIO = 8

#: Most records of one open group handed to the writer (see :meth:`JobJournal._append`).
GROUP_RECORDS = 64

#: Default seconds without a heartbeat after which a runner counts as dead.
STALE_AFTER = 30.0


DURABILITIES = ("batch", "sync")

_KINDS = {TIMER: "timer", AT_JOB_END: "at_end"}

#: Statuses a run settles in without finishing the job: its rows stay (they are the
#: JobState's pending tasks), its lease is given back, its journal goes on.
PARKED = ("paused", "waiting")

#: The key of one delivery: (task seq, attempt).  A retry keeps the seq.
Key = tuple[int, int]


class _NoRowWaiters:
    """The ``_durable_cond`` of a batch-mode journal: nobody waits for a row there
    (only ``durability="sync"`` deliveries do), so waking is nothing."""

    __slots__ = ()

    def notify_all(self) -> None:
        pass

    def wait_for(self, predicate: Any, timeout: float | None = None) -> bool:
        raise RuntimeError("a batch-mode journal has no deliveries waiting for rows")


_NO_ROW_WAITERS = cast(threading.Condition, _NoRowWaiters())


class _Latch:
    """A one-shot :class:`threading.Event` (``set``/``is_set``/``wait``) on one lock:
    made once per job, and far cheaper to make than an Event (a Condition)."""

    __slots__ = ("_lock", "_guard", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # held until set: a waiter blocks on it
        self._guard = threading.Lock()
        self._set = False

    def set(self) -> None:
        with self._guard:
            if not self._set:
                self._set = True
                self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self) -> None:
        if not self._set:
            with self._lock:  # free once set; each waiter passes it on
                pass


def _give(owner: Record | None, field: str, item: Any, orphans: list[Any]) -> None:
    """Add ``item`` to the open delivery record ``owner``'s ``field`` (``added``: a
    row it queued; ``removed``: a timer it withdrew), made for its first item; to
    ``orphans`` (the job's own) when no open delivery owns it."""
    if owner is None:
        orphans.append(item)
        return
    items = getattr(owner, field)
    if items is None:
        setattr(owner, field, [item])
    else:
        items.append(item)


def _row_seq(row: TaskRow) -> int:
    return int(row["seq"])


def _entry_data(params: dict[str, Any], entry_id: str) -> Any:
    """The entry task's data: ``encode_value`` of ``params``, whose usual form -- a
    dict of strings, ints, bools and Nones under string keys -- is a copy."""
    if type(params) is dict:
        for key, value in params.items():
            if type(key) is not str or type(value) not in _ATOMS:
                break
        else:
            return dict(params)
    return encode_value(params, f"entry_params of '{entry_id}'")


# ---------------------------------------------------------------------------
# The journal of one job
# ---------------------------------------------------------------------------


class JobJournal:
    """Journals one job of this process across its runs (see the module docstring).

    Make it with :meth:`create` (a new job: stores it) or :meth:`adopt` (a job
    claimed from the store); :meth:`attach` it to each run before the run starts.
    """

    # Slots: the journal's fields are read on every delivery, and Python 3.11
    # specializes neither a read of a class-level default through an instance nor a
    # method lookup on an instance whose dict outgrew its shared keys (over 30
    # fields, as this one has); slot reads and method lookups on a slotted class are.
    __slots__ = (
        "_cancelled",
        "_commit_seq",
        "_durable_cond",
        "_failure_applied",
        "_fault",
        "_group",
        "_held",
        "_held_needs",
        "_in_flight",
        "_lane",
        "_lane_rows",
        "_lane_scope",
        "_max_seq",
        "_next_snapshot",
        "_orphan_removed",
        "_orphans",
        "_ran",
        "_released",
        "_retrying",
        "_row_waiters",
        "_rows",
        "_settled",
        "_snapshot_entries",
        "_snapshot_seq",
        "_status",
        "_stored",
        "_unreleased",
        "_waiting_sent",
        "_writes_at_snapshot",
        "durability",
        "durable",
        "epoch",
        "failed",
        "finished",
        "job_id",
        "job_state",
        "log",
        "run",
        "store",
        "writer",
    )

    def __init__(
        self,
        durable: Durable,
        job_state: JobState,
        epoch: int,
        commit_seq: int,
        rows: dict[int, int],
        durability: str,
        next_seq: int,
    ) -> None:
        self.run: JobRun | None = None  # the run being journaled (attach)
        # The periodic snapshots' rule (_snapshot_due): the ChangeLog's write count at
        # the last snapshot this journal took, and the entries that snapshot held (0:
        # none taken yet, the first is due after SNAPSHOT_EVERY commits).
        self._writes_at_snapshot = 0
        self._snapshot_entries = 0
        # A sequential run's delivery in the serial lane (see delivery_started): its
        # task, its record and the rows it queued the short way (built task lists;
        # None: no delivery in the lane).  Written under the run's lock (task_queued's).
        self._lane: Task | None = None
        self._lane_scope: Record | None = None
        self._lane_rows: list[EncodedTask] | None = None
        # The group of records handed to the writer and still open (see _append).
        self._group: OpenRecords | None = None
        # An unencodable task (fail the job); paused, ownership given back to the
        # store; the StoreError with which the store refused this job's records; set
        # once the failure is in the JobState (history record, status), so a flush
        # before execute() returns never shows the job as it was before it (made,
        # under the job's lock, just before ``failed`` is set: whoever sees
        # ``failed`` finds it); the journal ended; the run settled and everything it
        # put was durable (or failed), so the flush execute() makes before it returns
        # has nothing left to wait for.
        self._fault: BaseException | None = None
        self._released = False
        self.failed: StoreError | None = None
        self._failure_applied: _Latch | None = None
        self.finished = False
        self._settled = False
        self.durable = durable
        self.store = durable.store
        self.job_state = job_state
        self.job_id = job_state.job_id
        self.epoch = epoch
        self.durability = durability
        self.writer = durable.writer(durability)
        self.log = ChangeLog(job_state)  # after any deserializing (plain dicts)
        self._commit_seq = commit_seq
        self._snapshot_seq = commit_seq
        self._next_snapshot = commit_seq + SNAPSHOT_EVERY
        # Everything below under _rows (a leaf lock).
        self._rows = threading.Lock()
        # seq -> attempt (retries) of the row the store holds once every record put
        # so far is committed (``rows``, the caller's own dict: create's and adopt's).
        self._stored: dict[int, int] = rows
        # seq -> the highest attempt whose record has been put (those attempts ran).
        self._ran: dict[int, int] = {}
        # Rows queued by deliveries whose records are not put yet: seq -> attempt.
        self._unreleased: dict[int, int] = {}
        # Unwritten rows of timers cancelled since (their record drops them).
        self._cancelled: set[int] = set()
        # durability="sync": rows put and not yet committed, and who waits for rows.
        self._in_flight: set[int] = set()
        # Only sync deliveries wait for rows; a batch journal makes no Condition.
        self._durable_cond: threading.Condition = (
            threading.Condition(self._rows) if durability == "sync" else _NO_ROW_WAITERS
        )
        self._row_waiters: list[tuple[int, concurrent.futures.Future[None]]] = []
        # Rows / removals made outside any delivery (e.g. a resume's deferred events).
        self._orphans: list[TaskRow] = []
        self._orphan_removed: list[int] = []
        # Seqs whose next queueing is a retry of the delivery now failing.
        self._retrying: set[int] = set()
        self._max_seq = max(next_seq - 1, max(rows)) if rows else next_seq - 1
        # Groups put aside until the row their deliveries consumed is released.
        self._held = BuiltRecords()
        self._held_needs: set[int] = set()
        self._status: str | None = job_state.status
        # The open requests for input as the store has them (docs/human-input.md).
        self._waiting_sent: list[dict[str, Any]] = list(job_state.waiting_for)
        with durable._lock:
            durable.jobs[self.job_id] = self

    # -- making one ---------------------------------------------------------------

    @classmethod
    def create(
        cls,
        durable: Durable,
        job_state: JobState,
        entry_id: str,
        params: dict[str, Any],
        durability: str,
    ) -> JobJournal:
        """Store a new job -- status running, its entry delivery (the task the run
        numbers first) as its one row, so recovery re-runs an entry that did not
        finish -- and journal it from now on."""
        runner = durable.start()
        seq = job_state.task_seq
        row: TaskRow = {
            "seq": seq,
            "kind": "ready",
            "routine": entry_id,
            "slot": "trigger",
            "data": _entry_data(params, entry_id),
            "retries": 0,
            "due_at": None,
            "extra": {"entry": True},
        }
        layout = layout_of(type(job_state))
        # Encoded at once, as the journal's later snapshots are (no dict of the saved
        # form for the store to encode); a layout without ``encode`` gives the dict.
        snapshot: Mapping[str, Any]
        if layout.encode is None:
            snapshot = layout.serialize(job_state)
        else:
            try:
                snapshot = EncodedSnapshot(layout.encode(job_state, 0))
            except SerializationError as exc:
                # As the store refuses a snapshot it cannot encode.
                raise StoreError(
                    f"job {job_state.job_id!r} snapshot is not JSON-safe: {exc}"
                ) from None
        epoch = durable.store.create_job(
            job_state.job_id, job_state.flow_id, "running", snapshot, [row], owner=runner
        )
        return cls(durable, job_state, epoch, 0, {seq: 0}, durability, seq + 1)

    @classmethod
    def adopt(
        cls,
        durable: Durable,
        job_state: JobState,
        epoch: int,
        commit_seq: int,
        rows: list[TaskRow],
        durability: str,
        next_seq: int,
    ) -> JobJournal:
        """Journal a job claimed from the store (``epoch``: the claim's), whose
        JobState was rebuilt from it and whose pending rows are ``rows``."""
        held = {row["seq"]: int(row.get("retries") or 0) for row in rows}
        return cls(durable, job_state, epoch, commit_seq, held, durability, next_seq)

    @property
    def next_seq(self) -> int:
        """The first task number above every task this job has ever had."""
        return self._max_seq + 1

    # -- runs ---------------------------------------------------------------------

    def attach(self, run: JobRun) -> None:
        """Journal ``run`` (a run of this job, before it starts).  A job released when
        it paused is claimed again first (JobStateError if another process has it)."""
        if self._released and self.failed is None:
            self._reclaim()
        self.run = run
        run.set_observer(self)
        run._journal = self
        if self._status != self.job_state.status and self.failed is None:
            # Running again after a pause: what the resume took out of the JobState
            # (its pending tasks and deferred events) is not an op; the snapshot has it.
            with self.job_state.lock:
                self._put_job_record(status=self.job_state.status)
                self._put_snapshot()
                self._status = self.job_state.status

    def reclaim(self) -> None:
        """Own the job again if it was released when it paused (before a resume)."""
        if self._released and self.failed is None:
            self._reclaim()

    def outdated(self) -> bool:
        """Whether the store's copy of this parked job moved on since this journal
        released it: another runner claimed it (a new epoch: it may have run it, or
        queued it again), or a row this journal did not write was added (input sent
        through the store, ``Store.add_input``).  Then this process's JobState is stale
        and only the store's copy has the job's work."""
        if not self._released or self.failed is not None:
            return False  # still ours: nobody else could have changed it
        self._wait_durable()  # our own release and rows are in the store
        job = self.store.load(self.job_id)
        if job.epoch != self.epoch:
            return True
        with self._rows:
            return any(row["seq"] not in self._stored for row in job.tasks)

    def forget(self) -> None:
        """Stop journaling this parked job here (:meth:`outdated`: the store's copy
        is the job now; whoever resumes it rebuilds it from there)."""
        self._close()

    def _reclaim(self) -> None:
        self._wait_durable()  # the release is committed
        epoch = self.store.claim(self.job_id, self.durable.start(), STALE_AFTER)
        if epoch is None:
            raise JobStateError(
                f"job {self.job_id} was taken over by another process while it was paused "
                f"(store {self.store.location}); resume it there"
            )
        self.epoch = epoch
        self._released = False

    # -- the task observer ----------------------------------------------------------

    def task_queued(self, run: JobRun, task: Task, kind: str, due: float | None) -> None:
        seq = task.seq
        rows = self._lane_rows
        if rows is not None and seq > self._max_seq and kind == READY and not task.retries:
            # A delivery in the serial lane queued an emitted task (task_row's usual
            # case): its row, built, goes with the delivery's record.
            route = task.route
            data = task.data
            if (
                route is not None
                and type(data) is dict
                and not task.premerged
                and not task.entry
                and task.timer is None
                and task.answers is None
            ):
                log = self.log
                emitted = log.emitted
                if emitted is not None and emitted[0] is data and run._on_emit is None:
                    # The emission's own data, which nothing could change since its
                    # history op wrote it as text (no emit hook): the same text.
                    data_text: str | None = emitted[1]
                    log.emitted = None
                else:
                    data_text = atoms_text(data)
                if data_text is not None:
                    around = route.row_text
                    if around is None:
                        around = route.row_text = ready_task_text(
                            task.rid,
                            task.target.name,
                            {"source": [route.source_rid, route.event_name]},
                        )
                    self._max_seq = seq
                    # (store._base.EncodedTask)
                    rows.append(
                        (
                            seq,
                            f"[{seq}{around[0]}{data_text}{around[1]}",
                            (
                                seq,
                                "ready",
                                task.rid,
                                task.target.name,
                                data_text,
                                0,
                                None,
                                around[2],
                            ),
                        )
                    )
                    return
        log = self.log
        with self._rows:
            if seq > self._max_seq:
                # A task never seen (every row, retry and restored task has a seq up
                # to _max_seq): the current delivery queued it.  run.current_task(),
                # without its call for a sequential run.
                current = run.current_task() if run._live or run._aio_live else run._delivering
                owner = None if current is None else log._open.get((current.seq, current.retries))
            elif seq in self._retrying:
                self._retrying.discard(seq)
                owner = log._open.get((seq, task.retries - 1))
            elif seq in self._stored or seq in self._unreleased:
                return  # a fired timer, or a restored task: its row exists
            else:
                current = run.current_task() if run._live or run._aio_live else run._delivering
                owner = None if current is None else log._open.get((current.seq, current.retries))
            try:
                row = task_row(
                    task, _KINDS.get(kind, "ready"), None if due is None else wall_time(due)
                )
            except SerializationError as exc:
                self._fault = self._fault or exc
                return
            if seq > self._max_seq:
                self._max_seq = seq
            # Unreleased until a record carries the row: a timer firing before then
            # must not be taken for a new task.
            self._unreleased[seq] = task.retries
            # The row goes with the record of the open delivery that queued it (made
            # for its first row); queued outside any open delivery -- also after the
            # delivery ended, as its writes then are the job's -- with the job's.
            _give(owner, "added", row, self._orphans)

    def timer_cancelled(self, run: JobRun, task: Task) -> None:
        seq = task.seq
        with self._rows:
            if self._unreleased.pop(seq, None) is not None:
                # Never written yet: the record that carries the row drops it.
                self._cancelled.add(seq)
                return
            current = run.current_task()
            owner = None if current is None else self.log._open.get((current.seq, current.retries))
            _give(owner, "removed", seq, self._orphan_removed)

    def retry_scheduled(self, run: JobRun, task: Task, retry: Task, delay: float) -> None:
        with self._rows:
            self._retrying.add(task.seq)

    def delivery_started(self, run: JobRun, task: Task) -> None:
        if (
            not run._pooled
            and self.durability == "batch"
            and self._lane is None
            and task.target.timeout is None
            and run._handler_timeout is None
        ):
            # The serial lane: a sequential run delivers one task at a time, so its
            # delivery's record is opened unbound (every write meanwhile is its) and
            # the rows it queues are built the short way (task_queued).
            self._lane_scope = self.log.open_serial((task.seq, task.retries))
            self._lane = task
            self._lane_rows = []
            return
        if self.durability == "sync" and not aio.on_engine_loop():
            if self._is_orphan(task.seq):
                # Queued outside any delivery (input sent to the job, a resume's first
                # step): no delivery's end writes its row, so write it before waiting.
                with self.job_state.lock:
                    self._release()
            with self._rows:
                # The record that queued this task must be durable before it runs
                # (on the loop, JobRun._run_async has awaited row_durable instead).
                self._durable_cond.wait_for(lambda: self._row_durable_locked(task.seq))
        # The delivery's record carries what it queues and withdraws (see task_queued).
        self.log.open_bound((task.seq, task.retries))

    def _lane_to_general(self, scope: Record, lane: list[EncodedTask]) -> None:
        """Make the lane's delivery record ``scope`` one the general path takes (its
        :meth:`_delta`, the ChangeLog's groups): its ops as lists, and the rows the
        lane built as TaskRows (in seq order with any it queued the general way)."""
        self.log.ops_as_lists(scope)
        if not lane:
            return
        rows: list[TaskRow] = [task_of(json.loads(task[1])) for task in lane]
        if scope.added:
            rows = sorted(rows + scope.added, key=_row_seq)
        scope.added = rows

    def _append(self, record: BuiltRecord | EncodedRecord) -> None:
        """Hand ``record`` to the writer (job lock held): appended to the job's open
        group while the writer has not taken it (and it holds fewer than
        GROUP_RECORDS), else in a new group -- one queue entry per group, not per
        record.  Anything else put for the job closes the group first (:meth:`_seal`),
        so the writer still gets the job's records and snapshots in order."""
        group = self._group
        if group is not None:
            with group.lock:
                if group.open and len(group) < GROUP_RECORDS:
                    group.append(record)
                    return
        group = self._group = OpenRecords((record,))
        try:
            self.writer.put_open(self.job_id, self.epoch, group)
        except StoreError as exc:
            self.store_failed(exc)

    def _extend_open(self, records: BuiltRecords) -> bool:
        """Append ``records`` (a group that must share a transaction) to the job's
        open group while the writer has not taken it and it has room: True when
        done.  Nothing was put for the job after an open group (:meth:`_seal`), so
        this is a put of its own with one queue entry fewer; the two groups then
        share one transaction, which the order allows."""
        group = self._group
        if group is not None:
            with group.lock:
                if group.open and len(group) + len(records) <= GROUP_RECORDS:
                    group.extend(records)
                    return True
        return False

    def _seal(self) -> None:
        """Close the open group (before anything else is put for the job)."""
        group = self._group
        if group is not None:
            self._group = None
            with group.lock:
                group.open = False

    def _is_orphan(self, seq: int) -> bool:
        """True while task ``seq``'s row waits among the rows queued outside deliveries."""
        with self._rows:
            return seq in self._unreleased and any(row["seq"] == seq for row in self._orphans)

    def delivery_ended(self, run: JobRun, task: Task, error: BaseException | None) -> None:
        if self._lane is task and self._end_lane(run, task):
            return
        fault: BaseException | None = None
        log = self.log
        with log._lock:  # the job's lock
            try:
                record = log.close_bound((task.seq, task.retries))
            except SerializationError as exc:
                fault = exc
                record = None
            if record is None:
                self._release()
            elif self.failed is None:
                # The only delivery of the job (sequential): released at once, its
                # record is the group; what _release does for it, without the loop.
                if self._orphans or self._orphan_removed:
                    self._release()  # the rows queued outside deliveries go first
                delta = self._delta(record)
                if self._held or self._held_needs or self.durability == "sync":
                    self._held.append(delta)
                    if not self._held_needs:
                        self._put_held()
                else:
                    # _put_held's common case: this one record, nothing held.
                    self._seal()
                    try:
                        self.writer.put_many(self.job_id, self.epoch, BuiltRecords((delta,)))
                    except StoreError as exc:
                        self.store_failed(exc)
                if self._commit_seq >= self._next_snapshot:
                    self._release()  # (puts nothing more: checks for a snapshot)
        self._after_delivery(fault, task)

    def _after_delivery(self, fault: BaseException | None, task: Task) -> None:
        """A delivery's end, once its record is out: fail the job for a fault of its
        record, or for a commit the store refused meanwhile."""
        if self.writer.behind:
            self._catch_up()
        if fault is None and self._fault is not None:
            fault = self._take_fault()
        if fault is not None:
            self._fail_job(fault, task.rid)
        else:
            # A commit refused meanwhile (a stale epoch, a full disk) stops the job
            # here, before the delivery's children start, not whenever the writer's
            # report (on a thread of its own) gets there.
            refused = self.failed or self.writer.error_of(self.job_id)
            if refused is not None:
                self.store_failed(refused)  # once, whoever comes first
                if not aio.on_engine_loop():
                    self._failure_applied_wait()

    def _end_lane(self, run: JobRun, task: Task) -> bool:
        """End the serial lane's delivery of ``task``: True when done here (its record
        built and handed to the writer, or released the general way after a fault);
        False when the general path must end it (its record stays open, holding the
        rows the lane built as TaskRows)."""
        self._lane = None
        scope = self._lane_scope
        assert scope is not None
        with run._lock:  # task_queued's lock: no row comes in meanwhile
            rows, self._lane_rows = self._lane_rows, None
        assert rows is not None
        seq = task.seq
        log = self.log
        with log._lock:  # the job's lock
            stored = self._stored
            if not (
                # It queued only rows built the short way and withdrew nothing, it
                # consumes its own stored row, nothing of the journal waits.
                scope.added is None
                and scope.removed is None
                and self.failed is None
                and not self._held
                and not self._held_needs
                and not self._orphans
                and not self._orphan_removed
                and stored.get(seq) == task.retries
            ):
                self._lane_to_general(scope, rows)
                return False
            fault: BaseException | None = None
            try:
                record = log.close_serial(scope)
            except SerializationError as exc:
                fault = exc
                record = None
            if record is None:
                # Not released at once (or it could not be): the general way.
                self._lane_to_general(scope, rows)
                self._release()
            else:
                # Its record: it consumes its task's row and adds the rows it built.
                with self._rows:
                    del stored[seq]
                    for row in rows:
                        stored[row[0]] = 0
                self._commit_seq = commit_seq = self._commit_seq + 1
                waiting = self.job_state.waiting_for
                change = None if waiting == self._waiting_sent else self._waiting_change()
                ops = record.ops
                # (ops_text's most common case: one history op, written as text already)
                text = f"[{ops[0]}]" if len(ops) == 1 and type(ops[0]) is str else ops_text(ops)
                if text is not None:
                    # Encoded here, as a tuple the garbage collector soon stops
                    # tracking (see engine/texts.py).
                    self._append(encoded_record(commit_seq, seq, text, tuple(rows), change))
                else:
                    # Some op JSON cannot hold: a built record (RECORD_FIELDS order),
                    # which the store refuses, naming it.
                    tasks = [json.loads(row[1]) for row in rows]
                    self._append([commit_seq, seq, record.ops, tasks, [], None, change])
                if commit_seq >= self._next_snapshot:
                    self._release()  # (puts nothing more: checks for a snapshot)
        if fault is None and self._fault is None and self.failed is None:
            writer = self.writer
            if writer.behind:
                self._catch_up()
            if writer.error_of(self.job_id) is None:
                return True
        self._after_delivery(fault, task)
        return True

    def _catch_up(self) -> None:
        """The writer thread has fallen behind (``writer.behind``): write the backlog
        on this thread before the job goes on, so that a job never runs far ahead of
        what is durable (what a crash can take back, and the queue's memory, stay
        bounded).  A refusal found on the way is the caller's to report (error_of).
        Not on the engine's loop: waiting there would stall every ``async def``
        delivery (the writer thread catches up by itself)."""
        if aio.on_engine_loop():
            return
        try:
            self.writer.flush()
        except StoreError:
            pass  # another job's error, reported to it; this job's is in error_of

    # -- durability="sync" ---------------------------------------------------------

    def _row_durable_locked(self, seq: int) -> bool:
        return self.failed is not None or (
            seq not in self._unreleased and seq not in self._in_flight
        )

    def row_durable(self, seq: int) -> concurrent.futures.Future[None] | None:
        """None when the row of task ``seq`` is durable (or the journal failed), else
        a Future resolved once it is: for ``async def`` deliveries, which must not
        block the loop while they wait (``durability="sync"``)."""
        with self._rows:
            if self._row_durable_locked(seq):
                return None
            future: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._row_waiters.append((seq, future))
            return future

    def _rows_durable_locked(self) -> None:
        """Wake whoever waits for a row that is durable now (``_rows`` held)."""
        self._durable_cond.notify_all()
        if self._row_waiters:
            waiting = self._row_waiters
            self._row_waiters = [(q, f) for q, f in waiting if not self._row_durable_locked(q)]
            for q, future in waiting:
                if self._row_durable_locked(q):
                    future.set_result(None)

    # -- settling -----------------------------------------------------------------

    def run_settling(self, run: JobRun) -> None:
        """The run has no work left and its final status is set (called by
        ``JobRun._finish`` before anyone is woken): write everything, the status, the
        rows the job keeps, and for a finished job the final snapshot; a finished
        job's journal then ends (off the engine loop it first waits until all of it
        is durable, so a store failure can still fail the job)."""
        js = self.job_state
        with self.log._lock:  # the job's lock
            if self._fault is not None:  # (rare: looked at without _rows first)
                fault = self._take_fault()
                if fault is not None:
                    self._fail_job(fault, js.current_routine_id or "")
            if self.failed is None:
                self._settle_rows(js.status, self._release_settling(js.status))
        if js.status in PARKED:
            return
        if self.failed is None and not aio.on_engine_loop():
            self._wait_durable()
            # A failure found meanwhile may still be being applied (on the thread
            # the writer started): then flush() waits for it as before.
            self._settled = self.failed is None
        self._close()

    def _release_settling(self, status: str) -> list[list[Any]]:
        """:meth:`_release` with ``flush`` for a run settling in ``status`` (job lock
        held): the job-level writes left to release when they are all (nothing
        open, ended, held or queued outside deliveries: a sequential job's end) and
        the job finishes, for its status record to carry -- one record instead of
        two.  Else everything is released as usual, and there are none.  (A parked
        job's status record may still fail to be made: its pending tasks are
        converted first, so the writes go ahead on their own.)"""
        if not (
            status in PARKED
            or self._held
            or self._held_needs
            or self._orphans
            or self._orphan_removed
        ):
            # (None when a delivery is open or ended unreleased.  Job-level ops are
            # lists: only a serial delivery's are written as text.)
            ops: list[list[Any]] | None = self.log.take_job_writes()  # type: ignore[assignment]
            if ops is not None:
                return ops
        self._release(flush=True)
        return []

    def _settle_rows(self, status: str, ops: list[list[Any]] | None = None) -> None:
        """The status record of a settling run (job lock held), carrying ``ops``
        (job-level writes released with it)."""
        js = self.job_state
        with self._rows:
            orphans, self._orphans = self._orphans, []
            self._orphan_removed.clear()
            stored = sorted(self._stored)
            self._stored.clear()
            self._unreleased.clear()
            self._retrying.clear()  # a retry the pause saved is a pending task now
            self._in_flight.clear()
            self._rows_durable_locked()
        added: list[TaskRow] = []
        if status in PARKED:
            # The store's rows become the JobState's pending tasks exactly.
            try:
                added = [row_of_entry(entry) for entry in js.pending_tasks]
            except SerializationError as exc:
                self._fail_job(exc, js.current_routine_id or "")
                return
            with self._rows:
                for row in added:
                    self._stored[row["seq"]] = row["retries"]
                    self._max_seq = max(self._max_seq, row["seq"])
        del orphans  # superseded by the rows above (or dropped with the job)
        # The status record is not waited for even with durability="sync": the
        # snapshot put right after it waits for both, which the writer then commits
        # in one transaction (nothing runs meanwhile that needs the record first).
        held, self._held = self._held, BuiltRecords()
        held.append(self._job_record(status=status, added=added, removed=stored, ops=ops))
        self._held_needs.clear()
        # Pause points (and a finished job's last touches) are not ops: the snapshot
        # carries them.  It is taken before the status record is queued: one that
        # cannot be encoded fails the job, and the store must never see the status
        # (a completion) without it.
        snapshot = self._take_snapshot()
        if snapshot is None:
            return
        if not self._extend_open(held):
            self._seal()
            try:
                self.writer.put_many(self.job_id, self.epoch, held, wait=False)
            except StoreError as exc:
                self.store_failed(exc)
                return
        self._status = status
        parked = status in PARKED
        self._put_snapshot(snapshot, last=not parked)
        if parked and self.failed is None:
            # A paused job is nobody's: any process may resume it (this one claims it
            # again when it resumes it itself).
            self._seal()
            try:
                self.writer.put_release(self.job_id, self.epoch)
            except StoreError as exc:
                self.store_failed(exc)
                return
            self._released = True

    def _wait_durable(self) -> None:
        writer = self.writer
        try:
            writer.flush()
        except StoreError:
            pass
        error = writer.error_of(self.job_id)
        if error is not None:
            self.store_failed(error)

    def flush(self) -> None:
        """Block until everything journaled so far is durable (execute/resume/pause
        call it before they return).  A store failure fails the job.  On the engine's
        loop (an ``async def`` handler pausing its job) it does not wait: waiting there
        would stall every ``async def`` delivery."""
        if self._settled or aio.on_engine_loop():
            return
        if self.failed is not None:
            self._failure_applied_wait()
            return
        self._wait_durable()

    async def flush_async(self) -> None:
        """:meth:`flush` without blocking the caller's loop."""
        if self.failed is None:
            await self.writer.flush_async()
            error = self.writer.error_of(self.job_id)
            if error is not None:
                self.store_failed(error)

    def note_status(self) -> None:
        """Record the JobState's status now if it changed (e.g. ``flow.pause`` made
        the job paused while handlers still finish)."""
        js = self.job_state
        with js.lock:
            if self.failed is None and js.status != self._status:
                self._release(flush=True)
                self._put_job_record(status=js.status)
                self._status = js.status

    def finish_idle(self) -> None:
        """A job with no run here got a final status (``flow.cancel`` of a paused
        job): record it, drop its rows, write the final snapshot, end the journal."""
        js = self.job_state
        with js.lock:
            if self.failed is None:
                self._release(flush=True)
                self._settle_rows(js.status)
        if self.failed is None:
            self._wait_durable()
        self._close()

    def _close(self) -> None:
        self.finished = True
        with self.durable._lock:
            if self.durable.jobs.get(self.job_id) is self:
                del self.durable.jobs[self.job_id]
        self.log.detach()

    # -- releasing records (job lock held) --------------------------------------

    def _release(self, flush: bool = False) -> None:
        """Turn every record the ChangeLog releases into DeltaRecords and put them,
        a group (and whatever must share its transaction) at a time."""
        if self.failed is not None:
            return
        if self._orphans or self._orphan_removed:  # rare: looked at without the lock first
            with self._rows:
                orphans, self._orphans = self._orphans, []
                removed, self._orphan_removed = self._orphan_removed, []
                if self._cancelled:  # timers withdrawn before their rows were written
                    cancelled = self._cancelled
                    kept = [row for row in orphans if row["seq"] not in cancelled]
                    cancelled.difference_update(row["seq"] for row in orphans)
                    orphans = kept
                for row in orphans:
                    if self._unreleased.pop(row["seq"], None) is not None:
                        self._held_needs.discard(row["seq"])
                        if self.durability == "sync":
                            self._in_flight.add(row["seq"])
            if orphans or removed:
                self._hold(self._job_record(added=orphans, removed=removed))
                if not self._held_needs:
                    self._put_held()
        group: list[BuiltRecord] = []
        held = self._held
        for record in self.log.take_ready(flush=flush):
            group.append(self._delta(record))
            if record.cut:
                held.extend(group)
                group = []
                if not self._held_needs:
                    self._put_held()
                    held = self._held
        if flush and self._held:
            # Nothing is running: whatever was waiting for its parent's row gets it now.
            self._put_held()
        if (
            self._commit_seq >= self._next_snapshot
            and not self._held
            and self.log.open_deliveries == 0
            and self.log.pending == 0
            and self._snapshot_due()
        ):
            self._put_snapshot()

    def _snapshot_due(self) -> bool:
        """Whether the deltas since the last snapshot hold SNAPSHOT_RATIO times its
        entries in writes (job lock held); if not, when to look again."""
        writes = self.log._seq - self._writes_at_snapshot
        wanted = SNAPSHOT_RATIO * self._snapshot_entries
        if writes >= wanted:
            return True
        # After about as many commits as the writes still wanted take at the rate of
        # the commits since the snapshot.
        done = self._commit_seq - self._snapshot_seq
        more = (wanted - writes) * done // max(writes, 1)
        self._next_snapshot = self._commit_seq + max(more, SNAPSHOT_EVERY // 10, 1)
        return False

    def _entries(self) -> int:
        """The entries of a snapshot of the JobState now (see SNAPSHOT_RATIO)."""
        js = self.job_state
        return (
            len(js.execution_history)
            + len(js.shared_log)
            + len(js.output_log)
            + len(js.deferred_events)
            + len(js.shared_data)
            + len(js.routine_states)
            + len(js.slot_buffers)
            + len(self._stored)
        )

    def _delta(self, record: Record) -> BuiltRecord:
        """The built record of a released ChangeLog record (a commit seq is assigned)."""
        key = record.key
        consumed: int | None = None
        added: list[TaskRow] = []
        removed: list[int] = []
        stored = self._stored
        with self._rows:
            if key is not None:
                owner: Key = key  # type: ignore[assignment]  # (a delivery's key)
                seq, attempt = owner
                if stored.get(seq) == attempt:
                    consumed = seq
                    del stored[seq]
                else:
                    # Released before the record that writes its row (its parent, or
                    # the failed attempt it retries): that record must neither write
                    # the row again nor leave it pending, and must share our commit.
                    if seq in self._unreleased:
                        self._held_needs.add(seq)
                    if self._ran.get(seq, -1) < attempt:
                        self._ran[seq] = attempt
                rows = record.added
                if rows is not None:
                    unreleased, ran, needs = self._unreleased, self._ran, self._held_needs
                    cancelled = self._cancelled
                    sync = self.durability == "sync"
                    for row in rows:
                        q, rr = row["seq"], row["retries"]
                        if cancelled and q in cancelled:
                            cancelled.discard(q)  # a timer withdrawn before it was written
                            continue
                        if unreleased.pop(q, None) is not None and sync:
                            self._in_flight.add(q)
                        if needs:
                            needs.discard(q)
                        if ran and ran.get(q, -1) >= rr:
                            continue  # that attempt has run already (released before us)
                        if q in stored:
                            removed.append(q)
                        added.append(row)
                        stored[q] = rr
                withdrawn = record.removed
                if withdrawn is not None:
                    for q in withdrawn:
                        if q in stored and q not in (row["seq"] for row in added):
                            del stored[q]
                            removed.append(q)
        self._commit_seq = commit_seq = self._commit_seq + 1
        # A built record (store._base.RECORD_FIELDS order).
        return [
            commit_seq,
            consumed,
            record.ops,
            [built_task(row) for row in added],
            removed,
            None,
            None if self.job_state.waiting_for == self._waiting_sent else self._waiting_change(),
        ]

    def _job_record(
        self,
        status: str | None = None,
        added: list[TaskRow] | None = None,
        removed: list[int] | None = None,
        ops: list[list[Any]] | None = None,
    ) -> BuiltRecord:
        with self._rows:
            kept: list[int] = []
            for q in removed or ():
                if q in self._stored:
                    del self._stored[q]
                    kept.append(q)
            for row in added or ():
                self._stored[row["seq"]] = row["retries"]
        self._commit_seq += 1
        # A built record (store._base.RECORD_FIELDS order).
        return [
            self._commit_seq,
            None,
            ops or [],
            [built_task(row) for row in added] if added else [],
            kept if removed is not None else [],
            status,
            self._waiting_change(),
        ]

    def _waiting_change(self) -> dict[str, Any] | None:
        """The record's ``waiting_for`` (job lock held): the open requests when they
        changed since the last record, else None."""
        current = self.job_state.waiting_for
        if current == self._waiting_sent:
            return None
        self._waiting_sent = list(current)
        if not current:
            return {"clear": True}
        return {"set": [dict(request) for request in current]}

    def _put_job_record(
        self,
        status: str | None = None,
        added: list[TaskRow] | None = None,
        removed: list[int] | None = None,
    ) -> None:
        self._hold(self._job_record(status, added, removed))
        self._put_held()

    def _hold(self, delta: BuiltRecord) -> None:
        self._held.append(delta)

    def _put_held(self) -> None:
        held, self._held = self._held, BuiltRecords()
        self._held_needs.clear()
        if not held or self.failed is not None or self._extend_open(held):
            return
        self._seal()
        try:
            # durability="sync": returns once the records are committed.
            self.writer.put_many(self.job_id, self.epoch, held)
        except StoreError as exc:
            self.store_failed(exc)
        if self.durability == "sync":
            with self._rows:
                self._in_flight.difference_update(row[0] for delta in held for row in delta[3])
                self._rows_durable_locked()

    def _put_snapshot(self, snapshot: Mapping[str, Any] | None = None, last: bool = False) -> None:
        """Queue a snapshot covering every commit so far (nothing in flight):
        ``snapshot``, or one taken now (:meth:`_take_snapshot`).  ``last``: a finished
        job's, after which its journal ends (no periodic snapshot follows)."""
        if snapshot is None:
            snapshot = self._take_snapshot()
            if snapshot is None:
                return
        self._seal()
        try:
            self.writer.put_snapshot(self.job_id, self.epoch, snapshot, self._commit_seq)
        except StoreError as exc:
            self.store_failed(exc)
            return
        if last:
            return
        self._snapshot_seq = self._commit_seq
        self._next_snapshot = self._commit_seq + SNAPSHOT_EVERY
        self._writes_at_snapshot = self.log._seq
        self._snapshot_entries = self._entries()

    def _take_snapshot(self) -> Mapping[str, Any] | None:
        """The JobState's snapshot now (job lock held); None when it cannot be
        encoded, and then the job has failed (as when the store refuses one)."""
        js = self.job_state
        layout = layout_of(type(js))
        # The snapshot's text, encoded here under the job's lock: the JobState is not
        # copied for the writer thread to encode later (a layout without ``encode``
        # still is).
        with self.log.reading():
            if layout.encode is None:
                saved = layout.serialize(js)
                saved["task_seq"] = max(int(saved.get("task_seq") or 0), self._max_seq + 1)
                return saved
            try:
                return EncodedSnapshot(layout.encode(js, self._max_seq + 1))
            except SerializationError as exc:
                refused = exc
        # Nothing more is written for the job.
        self.store_failed(StoreError(f"job {self.job_id!r} snapshot is not JSON-safe: {refused}"))
        return None

    # -- failures -------------------------------------------------------------------

    def _take_fault(self) -> BaseException | None:
        if self._fault is None:  # the common case, without the lock (set under it)
            return None
        with self._rows:
            fault, self._fault = self._fault, None
        return fault

    def store_failed(self, error: StoreError) -> None:
        """The store refused this job's records: this process stops writing for the
        job and the job fails with ``error`` in its history (once)."""
        with self.job_state.lock:
            if self.failed is not None:
                return
            self._failure_applied = applied = _Latch()
            self.failed = error
        try:
            with self._rows:
                self._rows_durable_locked()  # nobody waits for a row that never comes
            logger.error("journal of job %s failed: %s", self.job_id, error)
            self._fail_job(error, self.job_state.current_routine_id or "")
        finally:
            applied.set()

    def _failure_applied_wait(self) -> None:
        """Wait until the failure is in the JobState (``failed`` is set)."""
        applied = self._failure_applied
        if applied is not None:
            applied.wait()

    def _fail_job(self, error: BaseException, rid: str) -> None:
        """Record ``error`` in the job's history and stop the job as failed."""
        js = self.job_state
        record = error_record(None, error, journal=True)
        js.record_execution(rid, "error", record)
        run = self.run
        if js.status == "completed":
            # The completion itself could not be made durable: the job did not finish
            # as far as the store knows, and the JobState must not say otherwise.
            js._set_failed_by_journal()
        elif run is not None and not run.finished:
            run.stop("failed")
        else:
            js._set_failed()

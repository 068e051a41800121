"""A flow's durable side: its store, journaling its jobs, and taking jobs over from
the store (``flow.recover()``, ``flow.resume(job_id)``).

The journal itself is the engine's (``engine/journal.py``); this module connects it
to a :class:`~routilux.flow.flow.Flow`: which store a flow uses (``Flow(store=...)``),
the journal of a new job, and the way back from the store to a running job -- claim
(a new epoch: the previous owner can write nothing more), check that the flow still
has every routine and slot the job's pending tasks need, rebuild the JobState
(snapshot + deltas), and run the pending rows again (ready tasks queued, timers
scheduled for what is left of their wall-clock delay, at-end tasks kept for the end).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..engine.journal import (
    DURABILITIES,
    STALE_AFTER,
    Durable,
    JobJournal,
    entry_of_row,
    missing_target,
)
from ..engine.tasks import MAX_SEQ, Task, first_seq_of_epoch, task_from_dict
from ..error_handler import MAX_RETRIES
from ..exceptions import InvalidArgumentError, JobStateError, RoutiluxWarning, StoreError
from ..serialization import short_repr
from ..store import JournaledJob, Store, TaskRow, open_store
from ..store._base import build_job_state

if TYPE_CHECKING:
    from ..engine.executors import Executor, Startable
    from ..engine.plan import Plan
    from ..engine.run import JobRun
    from ..job_state import JobState
    from .flow import Flow

logger = logging.getLogger("routilux.flow.recovery")


class RecoveryError(StoreError):
    """A journaled job :meth:`Flow.recover` (or ``resume(job_id)``) could not take
    over, e.g. its flow definition lost a routine it needs; the job stays in the store,
    unclaimed.  ``job_id`` names it."""

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class Recovered(list["JobState"]):
    """What :meth:`Flow.recover` returns: the JobStates it resumed (a list), and in
    ``errors`` a :class:`RecoveryError` for each job it had to skip."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[RecoveryError] = []


def flow_store(flow_id: str, store: Any) -> Store | None:
    """The store a flow was given: None, a Store, or a URL/path for ``open_store``."""
    if store is None:
        return None
    if isinstance(store, (str, os.PathLike)):
        return open_store(store)
    if isinstance(store, Store):
        return store
    raise InvalidArgumentError(
        f"Flow '{flow_id}': store must be a store URL, a path or a Store "
        f"(SQLiteStore, PostgresStore), got {type(store).__name__}"
    )


def check_durability(flow_id: str, durability: Any) -> str:
    if durability not in DURABILITIES:
        raise InvalidArgumentError(
            f"Flow '{flow_id}': durability must be one of {list(DURABILITIES)}, got {durability!r}"
        )
    return str(durability)


def journal_new_job(flow: Flow, run: JobRun, params: dict[str, Any]) -> None:
    """Store the new job of ``run`` and journal the run (before its entry runs)."""
    store = flow.store
    assert store is not None and run.entry_id is not None
    journal = JobJournal.create(
        Durable.of(store), run.job_state, run.entry_id, params, flow.durability
    )
    journal.attach(run)


def journal_of(flow: Flow, job_state: JobState) -> JobJournal | None:
    """The journal this process keeps for ``job_state`` (a paused job), or None."""
    if flow.store is None:
        return None
    journal = Durable.of(flow.store).jobs.get(job_state.job_id)
    return journal if journal is not None and journal.job_state is job_state else None


def drop_if_moved_on(flow: Flow, journal: JobJournal) -> bool:
    """True when the job ``journal`` keeps parked here moved on in the store since
    (:meth:`JobJournal.outdated`: input added there, e.g. by a Celery submitter, or
    another runner claimed it): the JobState kept here lacks that, so it and its
    journal are dropped, and whoever acts on the job next takes it from the store
    like any other process."""
    if not journal.outdated():
        return False
    journal.forget()
    with flow._runs_lock:
        if flow._waiting_jobs.get(journal.job_id) is journal.job_state:
            del flow._waiting_jobs[journal.job_id]
    return True


# ---------------------------------------------------------------------------
# Taking jobs over from the store
# ---------------------------------------------------------------------------


def adopt(
    flow: Flow, job_id: str, epoch: int, job: JournaledJob | None = None
) -> tuple[JobState, JobJournal, PendingRows]:
    """Rebuild a job this process has just claimed (under ``epoch``) and journal it;
    ``job`` is its :meth:`~routilux.store.Store.load` when already read (recovery
    reads many jobs at once).  Returns the JobState, its journal and its pending
    rows (with their engine tasks already built).

    A pending task for a routine or slot the flow no longer has raises
    :class:`RecoveryError` naming the job and what is missing; the claim is
    released and the job left as it is.
    """
    store = flow.store
    assert store is not None
    try:
        if job is None:
            job = store.load(job_id)
        if job.flow_id != flow.flow_id:
            raise RecoveryError(
                f"job {job_id!r} belongs to flow '{job.flow_id}', not to flow '{flow.flow_id}'",
                job_id,
            )
        plan = flow.plan
        slots = plan.slots
        for row in job.tasks:
            if (row["routine"], row["slot"]) in slots:
                continue
            problem = missing_target(plan, row)
            if problem is not None:
                raise RecoveryError(
                    f"job {job_id!r} of flow '{flow.flow_id}' (store {store.location}) "
                    "cannot be recovered: it needs "
                    f"{problem}, which the flow does not "
                    "have (was the flow definition changed?); the job is left in the store",
                    job_id,
                )
        # The job as just loaded (one read of the store, not a second load_job); the
        # load is this call's own, so the JobState keeps its values uncopied.
        job_state = build_job_state(job, None, owned=True)
        rows = PendingRows(job.tasks)
        rows.tasks = restored_tasks(plan, job.tasks, job_id)
    except BaseException:
        try:
            store.release(job_id, epoch)
        except StoreError as exc:
            logger.warning("could not release job %s: %s", job_id, exc)
        raise
    job_state.flow_id = flow.flow_id
    # The rows are the job's pending work; a snapshot taken at a pause also lists it.
    job_state.pending_tasks = []
    # Above every task the job has had (load_job), and in this epoch's own range.
    next_seq = max(job_state.task_seq, first_seq_of_epoch(epoch))
    job_state.task_seq = next_seq  # where the new run numbers its tasks from
    journal = JobJournal.adopt(
        Durable.of(store),
        job_state,
        epoch,
        job.commit_seq,
        job.tasks,
        flow.durability,
        next_seq,
    )
    # After the journal is made: it records the closing with the job's next record.
    close_answered(job_state, job.tasks)
    return job_state, journal, rows


def close_answered(job_state: JobState, rows: list[TaskRow]) -> None:
    """Close the requests for input that pending ``rows`` answer (``extra.request``:
    an input stored by another process, or an answer queued here and journaled):
    the answer is durable and will be delivered, so the job does not wait for it
    again -- also when a crash interrupted its delivery and it is delivered anew."""
    answered = [
        request
        for row in rows
        if type(row.get("extra")) is dict and type(request := row["extra"].get("request")) is str
    ]
    if answered and job_state.waiting_for:
        with job_state.lock:
            for request_id in answered:
                job_state._close_request(request_id)


#: A pending row rebuilt as an engine task: (kind, task, due_at, timer name).
Restored = tuple[str, Task, Optional[float], Optional[str]]

_FLAG = (True, False)


class PendingRows(list[TaskRow]):
    """A taken-over job's pending rows; ``tasks`` holds them as engine tasks, built
    when the job was rebuilt (:func:`restored_tasks`), or None; ``held``, the
    :class:`HeldPulls` its pool pulls wait in (recovery), or None."""

    tasks: list[Restored] | None = None
    held: HeldPulls | None = None


class HeldPulls:
    """The pool pulls of jobs recovery starts, held back until every job is started.

    Started one by one, the first jobs' deliveries would run on the pool while the
    later ones are started, and the recovering thread would get a fraction of the
    interpreter; so each job's executor is wrapped (:meth:`hold`) and the pulls it
    asks for are kept until :meth:`release` hands them all to the pool.  Pulls
    asked for after the release (a timer firing late) go straight through.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pulls: list[tuple[Executor, Callable[[], None]]] | None = []

    def hold(self, run: JobRun) -> None:
        """Keep ``run``'s pulls (a pooled run) until :meth:`release`."""
        if run.executor.pooled:
            run.executor = _Holding(self, run.executor)

    def submit(self, executor: Executor, pull: Callable[[], None]) -> None:
        with self._lock:
            if self._pulls is not None:
                self._pulls.append((executor, pull))
                return
        executor.submit(pull)

    def release(self) -> None:
        """Hand every held pull to its executor, in the order they were asked for:
        those for one pool in one call (``WorkerPool.submit_many``)."""
        with self._lock:
            pulls, self._pulls = self._pulls or [], None
        start = 0
        while start < len(pulls):
            pool = pulls[start][0].pool
            end = start + 1
            while end < len(pulls) and pulls[end][0].pool is pool:
                end += 1
            try:
                if pool is None:
                    raise RuntimeError("no pool")
                pool.submit_many([pull for _, pull in pulls[start:end]])
            except RuntimeError:
                # A pool that refuses work: each executor deals with it as it does
                # for one pull.
                for executor, pull in pulls[start:end]:
                    executor.submit(pull)
            start = end


class _Holding:
    """A run's executor whose pulls wait in a :class:`HeldPulls` (see there)."""

    pooled = True

    def __init__(self, held: HeldPulls, executor: Executor) -> None:
        self._held = held
        self._executor = executor
        self.width = executor.width
        self.pool = executor.pool

    def launch(
        self,
        run: Startable,
        first_steps: Callable[[], bool | None],
        wait: bool,
        timeout: float | None,
        off_caller: bool,
    ) -> None:
        self._executor.launch(run, first_steps, wait, timeout, off_caller)

    def submit(self, pull: Callable[[], None]) -> None:
        self._held.submit(self._executor, pull)

    def abandon(self, thread: threading.Thread) -> None:
        self._executor.abandon(thread)

    def close(self) -> None:
        self._executor.close()


def restored_tasks(plan: Plan, rows: list[TaskRow], job_id: str) -> list[Restored]:
    """The engine tasks of a job's pending ``rows`` (built before the job starts,
    so that starting many recovered jobs is only queueing).

    A row of the usual shape is checked and built here directly; anything else goes
    through ``task_from_dict``, which checks every field of a saved task and names
    the one at fault.  Every row's slot is in ``plan`` (checked before).
    """
    slots = plan.slots
    routes = plan.routes
    restored: list[Restored] = []
    append = restored.append
    for row in rows:
        seq = row["seq"]
        data = row["data"]
        retries = row["retries"]
        extra = row["extra"]
        task: Task | None = None
        if (
            type(data) is dict
            and type(extra) is dict
            and type(retries) is int
            and 0 <= retries <= MAX_RETRIES
            and type(seq) is int
            and -MAX_SEQ <= seq <= MAX_SEQ
        ):
            rid, name = row["routine"], row["slot"]
            target = slots.get((rid, name))
            source = extra.get("source")
            premerged = extra.get("premerged", False)
            entry = extra.get("entry", False)
            if (
                target is not None
                and premerged in _FLAG
                and entry in _FLAG
                and (
                    source is None
                    or (
                        type(source) is list
                        and len(source) == 2
                        and type(source[0]) is str
                        and type(source[1]) is str
                    )
                )
            ):
                route = None if not source else routes.get((source[0], source[1], rid, name))
                task = Task(target, data, seq, route, retries, premerged is True, entry is True)
        if task is None:
            task = task_from_dict(plan, entry_of_row(row), seq)
            if task is None:
                continue  # checked before (missing_target): cannot happen
            task.seq = seq
        name = extra.get("timer") if type(extra) is dict else None
        if name is not None and not (type(name) is str and name):
            raise RecoveryError(
                f"job {job_id!r}: pending task seq {seq} ({row['routine']}.{row['slot']}): "
                f"its timer name must be a non-empty string, got {short_repr(name)}",
                job_id,
            )
        append((row["kind"], task, row["due_at"], name))
    return restored


def restore_rows(
    run: JobRun, rows: list[TaskRow], deferred: list[dict[str, Any]] | None = None
) -> Callable[[], bool]:
    """The first step of a taken-over run: its deferred events (a paused job's) are
    emitted, then its pending rows go back into the engine: the ready ones (and
    inputs, delivered like them) in one step."""
    built = rows.tasks if isinstance(rows, PendingRows) else None
    tasks = built if built is not None else restored_tasks(run.plan, rows, run.job_state.job_id)
    held = rows.held if isinstance(rows, PendingRows) else None

    def first_steps() -> bool:
        if held is not None:
            held.hold(run)
        for event in deferred or ():
            run.flow._emit_deferred(event)
        now = time.time()
        ready: list[Task] = []
        for kind, task, due, name in tasks:
            if kind == "timer":
                run.schedule(0.0 if due is None else max(0.0, due - now), task, name=name)
            elif kind == "at_end":
                run.at_job_end(task)
            else:  # "ready", and "input" (delivered like a ready task)
                ready.append(task)
        if ready:
            run._enqueue_new(ready)  # one lock round and one pool request for all
        return True

    return first_steps


def claim(flow: Flow, job_id: str, stale_after: float | None) -> int | None:
    """Claim ``job_id`` for this process's runner: the new epoch, or None."""
    store = flow.store
    assert store is not None
    durable = Durable.of(store)
    runner = durable.start()
    return store.claim(job_id, runner, STALE_AFTER if stale_after is None else stale_after)


def claim_all(flow: Flow, job_ids: list[str], stale_after: float) -> dict[str, int]:
    """Claim ``job_ids`` for this process's runner: the new epoch of each job taken.

    The library's stores claim them in one transaction (``claim_many``) and read
    them back together (``load_many``); another :class:`~routilux.store.Store` one
    job at a time."""
    store = flow.store
    assert store is not None
    runner = Durable.of(store).start()
    many = getattr(store, "claim_many", None)
    if many is not None:
        claimed: dict[str, int] = many(job_ids, runner, stale_after)
        return claimed
    epochs: dict[str, int] = {}
    for job_id in job_ids:
        epoch = store.claim(job_id, runner, stale_after)
        if epoch is not None:
            epochs[job_id] = epoch
    return epochs


# How many claimed jobs recovery reads in one transaction.
_LOAD_CHUNK = 256


def load_all(store: Store, job_ids: list[str]) -> Iterator[JournaledJob]:
    """The stored jobs ``job_ids``, read a few hundred per transaction."""
    many = getattr(store, "load_many", None)
    if many is None:
        for job_id in job_ids:
            yield store.load(job_id)
        return
    for start in range(0, len(job_ids), _LOAD_CHUNK):
        yield from many(job_ids[start : start + _LOAD_CHUNK])


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while recovery rebuilds and starts
    its jobs.

    The rebuild allocates a few container objects per history record and pending
    task -- hundreds of thousands for a large recovery -- and keeps every one of
    them; the collector would walk the growing heap again and again (about 40 % of
    the time spent) and free nothing.  Reference counting still frees everything
    else; the collector runs again afterwards as before.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def recover(
    flow: Flow,
    *,
    wait: bool = True,
    timeout: float | None = None,
    stale_after: float | None = None,
) -> Recovered:
    """See :meth:`Flow.recover`."""
    store = flow.store
    if store is None:
        raise JobStateError(f"Flow '{flow.flow_id}' has no store: nothing to recover")
    stale = STALE_AFTER if stale_after is None else stale_after
    result = Recovered()
    adopted: list[tuple[JobState, JobJournal, PendingRows]] = []
    # Every job is claimed and rebuilt before any starts, so the reads of the store are
    # not slowed by the jobs already running (their commits share the store's lock).
    with _collector_paused():
        epochs = claim_all(flow, store.claimable_jobs(flow.flow_id, stale), stale)
        for job in load_all(store, list(epochs)):
            try:
                adopted.append(adopt(flow, job.job_id, epochs[job.job_id], job))
            except RecoveryError as exc:
                result.errors.append(exc)
                logger.warning("%s", exc)
                warnings.warn(str(exc), RoutiluxWarning, stacklevel=3)
        held = HeldPulls()
        try:
            for job_state, journal, rows in adopted:
                rows.held = held
                flow._start_adopted(job_state, journal, rows, wait=False, timeout=None)
                result.append(job_state)
        finally:
            held.release()
    if wait:
        deadline = None if timeout is None else time.monotonic() + timeout
        for job_state in result:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            job_state.wait_for_completion(left)
        for job_state in result:
            journal_flush(flow, job_state)
    return result


def journal_flush(flow: Flow, job_state: JobState) -> None:
    """Make everything journaled for ``job_state`` so far durable (if journaled)."""
    if flow.store is None:
        return
    journal = Durable.of(flow.store).jobs.get(job_state.job_id)
    if journal is not None and journal.job_state is job_state:
        journal.flush()
    else:
        Durable.of(flow.store).flush()


def take_over(flow: Flow, job_id: str, stale_after: float | None) -> tuple[Any, ...]:
    """``flow.resume(job_id)``: the job's JobState if this process has it (a run,
    or a paused job it keeps), else claim and rebuild it from the store."""
    store = flow.store
    if store is None:
        raise JobStateError(
            f"Flow '{flow.flow_id}' has no store: resume(job_id) needs Flow(store=...); "
            "pass the JobState instead"
        )
    with flow._runs_lock:
        run = flow._runs.get(job_id)
    if run is not None:
        return ("own", run.job_state)
    journal = Durable.of(store).jobs.get(job_id)
    if journal is not None and not journal.finished and not drop_if_moved_on(flow, journal):
        return ("own", journal.job_state)
    summary = store.load(job_id).summary  # JobNotFoundError names the store and job
    if summary.status in ("completed", "failed", "cancelled"):
        return ("done", store.load_job(job_id))
    epoch = claim(flow, job_id, stale_after)
    if epoch is None:
        raise JobStateError(
            f"job {job_id!r} (store {store.location}) is held by runner "
            f"{summary.owner!r}, which is alive: it cannot be resumed here"
        )
    return ("adopted", *adopt(flow, job_id, epoch))


def cancel_stored(
    store: Store, job_id: str, *, reason: str = "", stale_after: float = STALE_AFTER
) -> None:
    """Cancel a journaled job in ``store`` that no live process holds (``routilux
    jobs cancel``): it is claimed, its pending rows dropped, and its status (and the
    reason, in the JobState as ``flow.cancel`` keeps it) committed.  A finished job,
    or one a live runner holds, raises :class:`~routilux.JobStateError`."""
    from ..changes import ChangeLog

    summary = store.load(job_id).summary
    if summary.status in ("completed", "failed", "cancelled"):
        raise JobStateError(f"Cannot cancel job {job_id}: it is {summary.status}")
    runner = f"cancel-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    store.register_runner(runner)
    try:
        epoch = store.claim(job_id, runner, stale_after)
        if epoch is None:
            raise JobStateError(
                f"Cannot cancel job {job_id} here: runner {summary.owner!r} holds it and is "
                "alive (cancel it in that process)"
            )
        job = store.load(job_id)
        state = store.load_job(job_id)
        log = ChangeLog(state)
        state._set_cancelled(reason)
        ops = [op for record in log.take_ready(flush=True) for op in record.ops]
        log.detach()
        store.commit(
            job_id,
            epoch,
            [
                {
                    "seq": job.commit_seq + 1,
                    "consumed": None,
                    "ops": ops,
                    "tasks_added": [],
                    "tasks_removed": [row["seq"] for row in job.tasks],
                    "status": "cancelled",
                    "waiting_for": None if job.waiting_for is None else {"clear": True},
                }
            ],
        )
        store.release(job_id, epoch)
    finally:
        store.remove_runner(runner)

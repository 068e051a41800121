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

import logging
import os
import time
import uuid
import warnings
from typing import TYPE_CHECKING, Any, Callable

from ..engine.journal import (
    DURABILITIES,
    STALE_AFTER,
    Durable,
    JobJournal,
    entry_of_row,
    missing_target,
)
from ..engine.tasks import first_seq_of_epoch, task_from_dict
from ..exceptions import InvalidArgumentError, JobStateError, RoutiluxWarning, StoreError
from ..store import Store, TaskRow, open_store
from ..store._base import build_job_state

if TYPE_CHECKING:
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


# ---------------------------------------------------------------------------
# Taking jobs over from the store
# ---------------------------------------------------------------------------


def adopt(flow: Flow, job_id: str, epoch: int) -> tuple[JobState, JobJournal, list[TaskRow]]:
    """Rebuild a job this process has just claimed (under ``epoch``) and journal it.

    A pending task for a routine or slot the flow no longer has raises
    :class:`RecoveryError` naming the job and what is missing; the claim is
    released and the job left as it is.
    """
    store = flow.store
    assert store is not None
    try:
        job = store.load(job_id)
        if job.flow_id != flow.flow_id:
            raise RecoveryError(
                f"job {job_id!r} belongs to flow '{job.flow_id}', not to flow '{flow.flow_id}'",
                job_id,
            )
        plan = flow.plan
        for row in job.tasks:
            problem = missing_target(plan, row)
            if problem is not None:
                raise RecoveryError(
                    f"job {job_id!r} of flow '{flow.flow_id}' (store {store.location}) "
                    f"cannot be recovered: it needs {problem}, which the flow does not "
                    "have (was the flow definition changed?); the job is left in the store",
                    job_id,
                )
        # The job as just loaded (one read of the store, not a second load_job).
        job_state = build_job_state(job, None)
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
    return job_state, journal, list(job.tasks)


def restore_rows(
    run: JobRun, rows: list[TaskRow], deferred: list[dict[str, Any]] | None = None
) -> Callable[[], bool]:
    """The first step of a taken-over run: its deferred events (a paused job's) are
    emitted, then its pending rows go back into the engine."""

    def first_steps() -> bool:
        for event in deferred or ():
            run.flow._emit_deferred(event)
        now = time.time()
        plan = run.plan
        for row in rows:
            task = task_from_dict(plan, entry_of_row(row), row["seq"])
            if task is None:
                continue  # checked before (missing_target): cannot happen
            task.seq = row["seq"]
            kind = row["kind"]
            if kind == "timer":
                due = row.get("due_at")
                run.schedule(0.0 if due is None else max(0.0, due - now), task)
            elif kind == "at_end":
                run.at_job_end(task)
            else:  # "ready", and "input" (delivered like a ready task)
                run.enqueue(task)
        return True

    return first_steps


def claim(flow: Flow, job_id: str, stale_after: float | None) -> int | None:
    """Claim ``job_id`` for this process's runner: the new epoch, or None."""
    store = flow.store
    assert store is not None
    durable = Durable.of(store)
    runner = durable.start()
    return store.claim(job_id, runner, STALE_AFTER if stale_after is None else stale_after)


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
    adopted: list[tuple[JobState, JobJournal, list[TaskRow]]] = []
    # Every job is claimed and rebuilt before any starts, so the reads of the store are
    # not slowed by the jobs already running (their commits share the store's lock).
    for job_id in store.claimable_jobs(flow.flow_id, stale):
        epoch = claim(flow, job_id, stale)
        if epoch is None:
            continue  # another process has it (or is claiming it now)
        try:
            adopted.append(adopt(flow, job_id, epoch))
        except RecoveryError as exc:
            result.errors.append(exc)
            logger.warning("%s", exc)
            warnings.warn(str(exc), RoutiluxWarning, stacklevel=3)
    for job_state, journal, rows in adopted:
        flow._start_adopted(job_state, journal, rows, wait=False, timeout=None)
        result.append(job_state)
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
    if journal is not None and not journal.finished:
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

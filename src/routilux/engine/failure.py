"""What the engine does when a delivery fails: the failure policy in action.

The error handler that applies to a routine is the plan's (``SlotPlan.error_handler``);
it only *decides* (``ErrorHandler.decide``).  This module acts on the decision for one
job: it records the error in the job's history and routine state, schedules a retry on
the job (the retry count lives in the task and in the routine's state, never in the
handler object), or stops the job.  A failure of the engine itself fails the job too.

Every error record of a job is built by :func:`routilux.error_handler.error_record`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ..error_handler import Decision, error_record

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11; never run

    from ..job_state import JobState
    from .observer import TaskObserver
    from .tasks import Task

logger = logging.getLogger("routilux.engine")

_STOP = Decision("stop")


class FailingRun(Protocol):
    """What acting on a failure asks of the job's run (``run.JobRun``, which imports
    this module): its state, its observer, and to note, retry or stop."""

    @property
    def job_state(self) -> JobState: ...
    @property
    def _watch(self) -> bool: ...
    @property
    def _observer(self) -> TaskObserver[Self] | None: ...
    def _note_error(self, task: Task, exc: BaseException) -> None: ...
    def schedule(self, delay: float, task: Task, name: str | None = None) -> object: ...
    def enqueue(self, task: Task, counted: bool = False) -> None: ...
    def stop(self, status: str, reason: str = "", *, status_set: bool = False) -> None: ...


def handle_failure(run: FailingRun, task: Task, merged: Any, exc: Exception) -> None:
    """Apply the routine's error strategy to a failed delivery (DESIGN README 6)."""
    if run._watch:
        run._note_error(task, exc)
    rid = task.rid
    js = run.job_state
    handler = task.target.error_handler
    decision = handler.decide(exc, task.retries) if handler is not None else _STOP
    action = decision.action
    info = error_record(task.target.name, exc, attempt=task.retries + 1, action=action)
    if action == "retry":
        info["retry_delay"] = decision.delay
        js.record_execution(rid, "error", info)
        js.merge_routine_state(rid, {"retry_count": task.retries + 1})
        logger.warning(
            "routine %s failed (%s); retry %d in %.3fs",
            rid,
            exc,
            task.retries + 1,
            decision.delay,
            exc_info=exc,
        )
        if merged is None:
            next_task = task.retry(task.data, premerged=False)
        else:
            next_task = task.retry(merged, premerged=True)
        observer = run._observer
        if observer is not None:
            observer.retry_scheduled(run, task, next_task, decision.delay)
        if decision.delay > 0:
            run.schedule(decision.delay, next_task)
        else:
            run.enqueue(next_task)
    elif action == "continue":
        logger.warning("routine %s failed, continuing: %s", rid, exc, exc_info=exc)
        js.record_execution(rid, "error_continued", info)
        js.merge_routine_state(rid, {"status": "error_continued", "error": str(exc)})
    elif action == "skip":
        logger.warning("routine %s failed, skipped: %s", rid, exc, exc_info=exc)
        js.record_execution(rid, "error", info)
        js.merge_routine_state(rid, {"status": "skipped", "error": str(exc)})
    else:
        fail(run, task, exc, info)


def fail(
    run: FailingRun, task: Task, exc: BaseException, info: dict[str, Any] | None = None
) -> None:
    """STOP: record the failure and end the job as ``failed``.  ``info``: the record
    built by :func:`handle_failure` (default: an attempt of this task, action stop)."""
    if run._watch:
        run._note_error(task, exc)
    rid = task.rid
    js = run.job_state
    logger.error("routine %s failed; job %s stops", rid, js.job_id, exc_info=exc)
    if info is None:
        info = error_record(task.target.name, exc, attempt=task.retries + 1, action="stop")
    js.record_execution(rid, "error", info)
    js.merge_routine_state(
        rid,
        {"status": "failed", "error": str(exc), "error_time": datetime.now().isoformat()},
    )
    run.stop("failed")


def engine_failure(run: FailingRun, exc: Exception) -> None:
    """A bug in the engine itself: record it and fail the job rather than hang it."""
    js = run.job_state
    logger.error("engine failure in job %s", js.job_id, exc_info=exc)
    message = f"internal engine error: {type(exc).__name__}: {exc}"
    record = error_record(None, exc, engine=True)
    record["error"] = message
    js.record_execution(js.current_routine_id or "", "error", record)
    run.stop("failed")

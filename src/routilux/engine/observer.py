"""The task observer: an internal, optional witness of every task of one job.

Lifecycle hooks (``routilux.hooks``) tell users what a job *did*.  A
:class:`TaskObserver` tells the machinery that must *reproduce* a job -- a durable
journal, a distributed runner -- what happened to each :class:`~.tasks.Task`: when it
was queued (ready, on a timer with its due time, or for the job's end), when its
delivery started and ended (after its effects: the history records, the state
changes and the tasks it queued), when a timer was withdrawn and when a retry was
scheduled.  Tasks carry their job-wide number ``seq``, which names them across all
of these calls (and across a save and resume).

A run has at most one observer (``JobRun.set_observer``, before the run starts);
without one the engine pays one ``is not None`` check at each point.  Calls are
synchronous, on the thread that changed the task; :meth:`TaskObserver.task_queued`
and :meth:`TaskObserver.timer_cancelled` are called with the job's lock held, so they
arrive in the order the queue changed: they must be quick and must not call back
into the job.  An observer that raises breaks the job (it is part of the engine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from .tasks import Task

#: The run an observer is told of (``run.JobRun``, which imports this module).
RunT = TypeVar("RunT", contravariant=True)

#: How a task was queued (the ``kind`` of :meth:`TaskObserver.task_queued`).
READY, TIMER, AT_JOB_END = "ready", "timer", "at_job_end"


class TaskObserver(Protocol[RunT]):
    """What a run (of type ``RunT``) tells its observer, task by task."""

    def task_queued(self, run: RunT, task: Task, kind: str, due: float | None) -> None:
        """``task`` was queued: ``kind`` is ``"ready"``, ``"timer"`` (``due``: the
        timer clock's reading when it fires) or ``"at_job_end"``.  A timer's task
        is reported again, ``"ready"``, when the timer fires; a retry is a new task
        with the same ``seq``."""

    def delivery_started(self, run: RunT, task: Task) -> None:
        """The delivery of ``task`` starts (on the thread or asyncio task running it)."""

    def delivery_ended(self, run: RunT, task: Task, error: BaseException | None) -> None:
        """The delivery of ``task`` is over, its effects done (``error``: why it failed,
        after the error strategy acted).  Once per :meth:`delivery_started`."""

    def timer_cancelled(self, run: RunT, task: Task) -> None:
        """The timer of ``task`` was withdrawn before it fired: it will not be delivered
        (a cancel, a replaced named timer, a stop; a pause saves it as pending)."""

    def retry_scheduled(self, run: RunT, task: Task, retry: Task, delay: float) -> None:
        """``task`` failed and ``retry`` (the same ``seq``) will be delivered after
        ``delay`` seconds (it is then queued like any other task)."""

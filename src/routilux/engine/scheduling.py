"""A job's scheduled deliveries: :class:`JobTimers` (mixed into ``JobRun``) and
the :class:`Scheduled` handle ``Routine.schedule`` returns.

Retries with a delay, ``Routine.schedule``/``set_timer`` and at-job-end deliveries
wait here, never in a worker (DESIGN invariant 5): a pending timer is a
:class:`~.timers.TimerHandle` on the process's one timer thread plus one unit of the
job's outstanding count.  When it fires, the task goes to the job's queue like any
other; a pause saves pending timers as pending tasks, a stop cancels them.

Invariant (under the job's lock): a task is in ``_timers`` exactly while its timer
is pending or has fired and not yet been queued; ``_named`` holds the pending
handle of each named timer, and each pending timer counts once in
``_outstanding``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .observer import AT_JOB_END, TIMER
from .tasks import Task, task_to_dict
from .timers import TimerHandle, timer_service

if TYPE_CHECKING:
    from ..job_state import JobState
    from .observer import TaskObserver
    from .run import JobRun

#: The states of a run (``JobRun._state``), compared by identity.
RUNNING, PAUSED, STOPPED = "running", "paused", "stopped"


class JobTimers:
    """The scheduling part of a running job (see the module docstring)."""

    _timers: dict[TimerHandle, Task]
    # Named timers (Routine.set_timer): (routine id, name) -> the pending handle.
    _named: dict[tuple[str, str], TimerHandle]
    # At-job-end deliveries: (routine id, slot name) -> the task.
    _end_hooks: dict[tuple[str, str], Task]

    if TYPE_CHECKING:
        # Provided by JobRun.
        job_state: JobState
        _lock: threading.Lock
        _state: str
        _outstanding: int
        _abandoned: Any
        _observer: TaskObserver[JobRun] | None

        @property
        def _as_run(self) -> JobRun: ...  # self, as the observer sees it

        def _is_abandoned(self) -> bool: ...
        def enqueue(self, task: Task, counted: bool = False) -> None: ...
        def _settle_if_idle_locked(self) -> bool: ...
        def _finish(self) -> None: ...

    def schedule(self, delay: float, task: Task, name: str | None = None) -> Scheduled | None:
        """Deliver ``task`` after ``delay`` seconds; the job stays alive until then.

        With a ``name``, a pending timer of the same routine and name is replaced.
        A paused job saves the task in ``pending_tasks`` at once (it is delivered on
        resume) and a stopped job drops it; both return None.
        """
        with self._lock:
            if self._abandoned and self._is_abandoned():
                return None
            if self._state is not RUNNING:
                if self._state is PAUSED:
                    self.job_state.pending_tasks.append(task_to_dict(task))
                return None
            if name is not None:
                self._cancel_named_locked((task.rid, name))
                task.timer = name  # its row keeps the name (a recovered timer is named)
            self._outstanding += 1
            handle = timer_service.schedule(delay, self._timer_fired)
            self._timers[handle] = task
            if name is not None:
                self._named[(task.rid, name)] = handle
            if self._observer is not None:
                self._observer.task_queued(self._as_run, task, TIMER, handle.due)
        hooks = self.job_state._hooks
        if hooks is not None and hooks.timer is not None:
            hooks.timer(self.job_state, task.rid, task.target.name, delay)
        return Scheduled(self, handle)

    def _timer_fired(self, handle: TimerHandle) -> None:
        with self._lock:
            task = self._timers.pop(handle, None)
            if task is not None and self._named:
                for key, named in list(self._named.items()):
                    if named is handle:
                        del self._named[key]
        if task is not None:
            self.enqueue(task, counted=True)

    def _cancel_named_locked(self, key: tuple[str, str]) -> bool:
        handle = self._named.pop(key, None)
        if handle is None or not handle.cancel():
            return False
        task = self._timers.pop(handle, None)
        self._outstanding -= 1
        if self._observer is not None and task is not None:
            self._observer.timer_cancelled(self._as_run, task)
        return True

    def cancel_named_timer(self, routine_id: str, name: str) -> bool:
        """Cancel the named timer of a routine; True when it had not fired."""
        with self._lock:
            cancelled = self._cancel_named_locked((routine_id, name))
            finish = cancelled and self._settle_if_idle_locked()
        if finish:
            self._finish()
        return cancelled

    def cancel_timer(self, handle: TimerHandle) -> bool:
        """Cancel a timer made by :meth:`schedule`; True when it had not fired."""
        with self._lock:
            if not handle.cancel():
                return False
            task = self._timers.pop(handle, None)
            self._outstanding -= 1
            if self._observer is not None and task is not None:
                self._observer.timer_cancelled(self._as_run, task)
            finish = self._settle_if_idle_locked()
        if finish:
            self._finish()
        return True

    def at_job_end(self, task: Task) -> None:
        """Deliver ``task`` once, when the job would otherwise finish."""
        with self._lock:
            self._end_hooks[(task.rid, task.target.name)] = task
            if self._observer is not None:
                self._observer.task_queued(self._as_run, task, AT_JOB_END, None)

    def _cancel_timers_locked(self, collect: bool = False) -> Any:
        """Cancel every pending timer; returns their tasks (``collect``) or their count.

        A timer that has already fired stays in ``_timers``: its delivery is on the
        way to :meth:`_timer_fired`, which will find the job stopped or paused and
        account for it there.
        """
        cancelled = []
        self._named.clear()
        for handle, task in list(self._timers.items()):
            if handle.cancel():
                del self._timers[handle]
                cancelled.append(task)
        return cancelled if collect else len(cancelled)


class Scheduled:
    """A delivery scheduled on a job; :meth:`cancel` withdraws it and releases the job."""

    __slots__ = ("_run", "_handle")

    def __init__(self, run: JobTimers, handle: TimerHandle) -> None:
        self._run = run
        self._handle = handle

    @property
    def pending(self) -> bool:
        """True until the delivery is queued or withdrawn."""
        return self._handle.pending

    @property
    def due(self) -> float:
        """The timer clock's reading at which the delivery is due."""
        return self._handle.due

    def cancel(self) -> bool:
        """Withdraw the delivery; True when it had not fired yet."""
        return self._run.cancel_timer(self._handle)

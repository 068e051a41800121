"""A running job: :class:`JobRun`.

Invariants (DESIGN.md 2-5):

* Everything that changes belongs to the job: the queue, the outstanding count,
  timers and slot buffers (the latter in the JobState).
* ``_outstanding`` counts the job's live work: tasks queued or submitted,
  tasks running (an ``async`` handler counts until its coroutine ends),
  scheduled timers and the entry step.  The job settles exactly when it drops
  to zero; waiters are woken through a condition, never by polling.
* Ready tasks wait in the job's own FIFO queues.  Sequential: the thread that
  started the job runs the entry handler and then drains the queue itself, one
  task at a time.  Concurrent: "pulls" go to the flow's bounded thread pool
  (at most one per pool thread for a job); a pull runs the job's next ready
  tasks, a batch at a time (``async def`` deliveries: one wake-up of the
  engine's loop takes all that are ready).  As tasks are taken only when they
  start, a pause or a stop can withdraw every task that has not started.
* Once the job is paused, tasks that have not started go to
  ``job_state.pending_tasks``; once it failed or was cancelled they are dropped.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from ..error_handler import Decision
from ..exceptions import FlowError
from ..execution_tracker import ExecutionTracker
from . import aio
from .context import bind, current_run, unbind
from .tasks import Task, task_from_dict, task_to_dict
from .timers import TimerHandle, timer_service

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from ..event import Event
    from ..flow.flow import Flow
    from ..job_state import JobState
    from ..routine import Routine

logger = logging.getLogger("routilux.engine")

RUNNING, PAUSED, STOPPED = "running", "paused", "stopped"

#: Tasks one pool pull runs before giving its thread back to the pool, so the
#: jobs sharing a pool take turns.
PULL_BATCH = 16


class JobRun:
    """The engine side of one job: runs its tasks until nothing is left."""

    def __init__(
        self,
        flow: Flow,
        job_state: JobState,
        executor: Executor | None,
        entry_id: str | None,
    ) -> None:
        self.flow = flow
        self.job_state = job_state
        self.routine_ids = flow._routine_ids
        self.executor = executor
        self.entry_id = entry_id
        self.tracker = ExecutionTracker(flow.flow_id, max_events=job_state.history_limit)
        self.tracker._target_of = flow._first_target
        job_state.execution_tracker = self.tracker
        self.started_at = datetime.now()
        self._queue: deque[Task] = deque()
        # Concurrent strategy only: ready deliveries of ``async def`` handlers.
        self._async_queue: deque[Task] = deque()
        self._async_pull_pending = False  # a _pull_async call is on its way to the loop
        # Concurrent strategy: pool pulls of this job submitted and not finished,
        # and at most how many are useful (the pool's size).
        self._pullers = 0
        self._max_pullers = 1
        # Hot paths take the plain lock; waiters use the condition built on it.
        self._lock = threading.Lock()
        # Conditions on that lock, made when first needed (most jobs never wait):
        # ``_cond`` wakes waiters for the job's end (and a pause waiting for
        # running handlers); ``_work_ready`` wakes the sequential drainer.
        self._cond_obj: threading.Condition | None = None
        self._work_ready_obj: threading.Condition | None = None
        self._state = RUNNING
        # The first step (the entry handler, or a resume's re-emissions) counts
        # from the moment the run exists, not from start(): a pause or cancel
        # that finds the registered run before it starts must not settle it.
        self._outstanding = 1
        self._running = 1
        self._pausing = 0  # running handlers that are inside pause()
        self._drainer_waiting = False
        self._settling = False
        self._finished = False
        self._timers: dict[TimerHandle, Task] = {}
        # Named timers (Routine.set_timer): (routine id, name) -> the pending handle.
        self._named: dict[tuple[str, str], TimerHandle] = {}
        self._end_hooks: dict[tuple[str, str], Task] = {}

    def __repr__(self) -> str:
        return f"JobRun[{self.job_state.job_id}:{self._state}]"

    # -- starting ----------------------------------------------------------

    def start(self, first_steps: Callable[[], bool | None]) -> None:
        """Run ``first_steps`` (the entry handler, or a resume's re-emissions) as the
        job's first unit of work, on the calling thread, then drain if sequential.

        ``first_steps`` returns False when it handed an ``async def`` handler to the
        loop: that coroutine then ends the unit of work itself.  A run cancelled
        before it started skips them (a paused one runs them: what they queue is
        saved in ``pending_tasks``)."""
        token = bind(self)
        try:
            done = True
            try:
                if self._state is not STOPPED:
                    done = first_steps() is not False
            except Exception as exc:  # noqa: BLE001 - engine failure, see _engine_failure
                self._engine_failure(exc)
            except BaseException:
                self._task_done()  # the job is already failed (see _execute); let it settle
                raise
            if done:
                self._task_done()
            if self.executor is None:
                self._drain()
        finally:
            unbind(token)

    def run_entry(self, routine: Routine, params: dict[str, Any]) -> bool:
        """Invoke the entry routine's trigger handler with ``params``; False while an
        ``async def`` trigger handler still runs (see :meth:`_execute`)."""
        assert self.entry_id is not None
        slot = routine.get_slot("trigger")
        if slot is None:
            error = FlowError(
                f"Entry routine '{self.entry_id}' must have a 'trigger' slot. "
                "Define it using: routine.define_slot('trigger', handler=your_handler)"
            )
            missing: Any = _MissingSlot(error)
            return self._execute(Task(self.entry_id, missing, params, entry=True))
        return self._execute(Task(self.entry_id, slot, params, entry=True))

    def restore_pending(self, entries: list[dict[str, Any]]) -> None:
        """Queue tasks saved in ``job_state.pending_tasks`` (at resume)."""
        for entry in entries:
            task = task_from_dict(self.flow, entry)
            if task is None:
                continue
            if entry.get("at_job_end"):
                self._end_hooks[(task.rid, task.slot.name)] = task
            else:
                self.enqueue(task)

    # -- emitting and queueing -----------------------------------------------

    def emit(self, routine: Routine, event: Event, data: dict[str, Any]) -> None:
        """Record an emission of ``routine`` and queue one task per connected slot."""
        rid = self.routine_ids.get(id(routine))
        if rid is None:
            # Not a routine of this job's flow: deliver the way a standalone event does.
            event.emit(flow=None, **data)
            return
        slots = event.connected_slots
        tasks = []
        if slots:
            index = self.flow._connection_index
            ids = self.routine_ids
            event_key = id(event)
            for slot in slots:
                target_rid = ids.get(id(slot.routine))
                if target_rid is None:
                    raise FlowError(
                        f"Event '{event.name}' of routine '{rid}' is connected to {slot!r}, "
                        f"whose routine is not in flow '{self.flow.flow_id}'"
                    )
                tasks.append(Task(target_rid, slot, data, index.get((event_key, id(slot)))))
        self.tracker.record_emission(self.job_state.record_execution(rid, event.name, data))
        if tasks:
            self._enqueue_new(tasks)

    def _enqueue_new(self, tasks: list[Task]) -> None:
        """Queue freshly emitted tasks (one lock round for all of them)."""
        with self._lock:
            if self._state is not RUNNING:
                if self._state is PAUSED:
                    self.job_state.pending_tasks.extend(task_to_dict(t) for t in tasks)
                return
            self._outstanding += len(tasks)
            if self.executor is None:
                self._queue.extend(tasks)
                if self._drainer_waiting:
                    self._work_ready.notify()
                return
            blocking, coroutines = self._push_locked(tasks)
        self._request_pulls(blocking, coroutines)

    def enqueue(self, task: Task, counted: bool = False) -> None:
        """Queue ``task``; ``counted`` when the outstanding count already holds it."""
        blocking = coroutines = 0
        finish = False
        with self._lock:
            if self._state is RUNNING:
                if not counted:
                    self._outstanding += 1
                blocking, coroutines = self._push_locked([task])
            else:
                if self._state is PAUSED:
                    self.job_state.pending_tasks.append(task_to_dict(task))
                if counted:
                    self._outstanding -= 1
                    finish = self._settle_if_idle_locked()
        if blocking or coroutines:
            self._request_pulls(blocking, coroutines)
        elif finish:
            self._finish()

    def use_pool(self, executor: Executor, workers: int) -> None:
        """Run this job's tasks on ``executor``, a pool of ``workers`` threads."""
        self.executor = executor
        self._max_pullers = max(1, workers)

    def _push_locked(self, tasks: list[Task]) -> tuple[int, int]:
        """Append counted ready tasks (lock held); returns how many pool pulls to
        start (no more than the pool has threads) and whether the loop must pull."""
        if self.executor is None:
            self._queue.extend(tasks)
            if self._drainer_waiting:
                self._work_ready.notify()
            return 0, 0
        coroutines = 0
        for task in tasks:
            if task.slot._is_async:
                self._async_queue.append(task)
                coroutines += 1
            else:
                self._queue.append(task)
        pulls = min(len(self._queue), self._max_pullers - self._pullers)
        if pulls <= 0:
            return 0, coroutines
        self._pullers += pulls
        return pulls, coroutines

    def _request_pulls(self, blocking: int, coroutines: int) -> None:
        """Ask the pool (and the loop) to take that many of this job's ready tasks."""
        if coroutines and not self._async_pull_pending:
            # One wake-up of the loop serves every delivery queued before it runs.
            self._async_pull_pending = True
            aio.engine_loop().call_soon_threadsafe(self._pull_async)
        if not blocking:
            return
        for _ in range(blocking):
            self._submit_pull()

    def _submit_pull(self) -> None:
        executor = self.executor
        assert executor is not None
        try:
            executor.submit(self._pull)
        except RuntimeError:
            # The pool refuses work (it was shut down by hand, or the interpreter
            # is exiting): run the pull on a thread of its own rather than strand
            # the job's tasks and hang it.
            logger.warning("worker pool of flow %s refused a task", self.flow.flow_id)
            threading.Thread(target=self._pull, daemon=True).start()

    def schedule(self, delay: float, task: Task, name: str | None = None) -> Scheduled | None:
        """Deliver ``task`` after ``delay`` seconds; the job stays alive until then.

        With a ``name``, a pending timer of the same routine and name is replaced.
        A paused job saves the task in ``pending_tasks`` at once (it is delivered on
        resume) and a stopped job drops it; both return None.
        """
        with self._lock:
            if self._state is not RUNNING:
                if self._state is PAUSED:
                    self.job_state.pending_tasks.append(task_to_dict(task))
                return None
            if name is not None:
                self._cancel_named_locked((task.rid, name))
            self._outstanding += 1
            handle = timer_service.schedule(delay, self._timer_fired)
            self._timers[handle] = task
            if name is not None:
                self._named[(task.rid, name)] = handle
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
        self._timers.pop(handle, None)
        self._outstanding -= 1
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
            self._timers.pop(handle, None)
            self._outstanding -= 1
            finish = self._settle_if_idle_locked()
        if finish:
            self._finish()
        return True

    def at_job_end(self, task: Task) -> None:
        """Deliver ``task`` once, when the job would otherwise finish."""
        with self._lock:
            self._end_hooks[(task.rid, task.slot.name)] = task

    # -- running tasks -------------------------------------------------------

    def _drain(self) -> None:
        """Sequential strategy: run queued tasks on this thread until the job settles.

        Finishing one task and taking the next share one lock round.
        """
        queue = self._queue
        lock = self._lock
        done = False
        task: Task | None = None
        while True:
            finish = False
            with lock:
                if done:
                    self._running -= 1
                    self._outstanding -= 1
                    if self._state is not RUNNING:
                        self._wake_waiters()  # a pause may wait for running tasks
                    finish = self._outstanding == 0 and self._settle_if_idle_locked()
                if not finish:
                    while not queue:
                        if self._finished:
                            return
                        self._drainer_waiting = True
                        self._work_ready.wait()
                        self._drainer_waiting = False
                    task = queue.popleft()
                    self._running += 1
            if finish:
                self._finish()
                done = False
                continue
            assert task is not None
            # _execute_guarded, inlined: this loop is the sequential hot path.
            try:
                done = self._execute(task)
            except Exception as exc:  # noqa: BLE001 - a bug in the engine must not hang the job
                self._engine_failure(exc)
                done = True
            except BaseException:
                self._task_done()  # the job is already failed (see _execute); let it settle
                raise

    def _pull(self) -> None:
        """Concurrent strategy, on a pool thread: run this job's ready tasks, up to
        :data:`PULL_BATCH` of them, then give the thread back (and pull again)."""
        token = bind(self)
        try:
            for _ in range(PULL_BATCH):
                with self._lock:
                    if not self._queue:  # drained, or withdrawn by a pause or a stop
                        self._pullers -= 1
                        return
                    task = self._queue.popleft()
                    self._running += 1
                self._run_task(task)
            with self._lock:
                if not self._queue:
                    self._pullers -= 1
                    return
        except BaseException:
            with self._lock:
                self._pullers -= 1
            raise
        finally:
            unbind(token)
        self._submit_pull()  # more is ready: queue up behind the pool's other work

    def _pull_async(self) -> None:
        """On the engine loop: start every ready ``async def`` delivery."""
        # Cleared before draining: a delivery queued after the drain below
        # schedules a new pull; one queued before it is taken here.
        self._async_pull_pending = False
        with self._lock:
            tasks = list(self._async_queue)
            self._async_queue.clear()
            self._running += len(tasks)
        for task in tasks:
            aio.spawn(self._run_async(task))

    async def _run_async(self, task: Task) -> None:
        """Run an ``async def`` handler's delivery on the engine loop."""
        token = bind(self)
        merged: Any = None
        try:
            merged = self._merged(task)
            result = task.slot._dispatch(merged)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # noqa: BLE001 - handler errors go to the error policy
            self._handle_failure(task, merged, exc)
        except BaseException as exc:  # noqa: BLE001 - e.g. CancelledError: the job fails
            self._fail(task, exc, {"action": "stop"})
        finally:
            unbind(token)
            self._task_done()

    def _run_task(self, task: Task) -> None:
        if self._execute_guarded(task):
            self._task_done()

    def _execute_guarded(self, task: Task) -> bool:
        """:meth:`_execute`, where an error of the engine itself fails the job."""
        try:
            return self._execute(task)
        except Exception as exc:  # noqa: BLE001 - a bug in the engine must not hang the job
            self._engine_failure(exc)
            return True
        except BaseException:
            self._task_done()  # the job is already failed (see _execute); let it settle
            raise

    def _execute(self, task: Task) -> bool:
        """Deliver one task; False when an async handler still runs (it finishes the task)."""
        slot = task.slot
        merged: Any = None
        try:
            if task.premerged:
                merged = task.data
            else:
                data = task.data
                connection = task.connection
                if connection is not None and connection.param_mapping:
                    data = connection._apply_mapping(data)
                # Inlined from _merged: this is the hottest path of the engine.
                merged = (
                    slot._merge_for_job(self.job_state, task.rid, data)
                    if slot._keeps_buffer
                    else dict(data)
                )
            if slot._handler is None:
                return True
            result = slot._dispatch(merged)
            if result is not None and inspect.isawaitable(result):
                return self._await_handler(task, merged, result)
        except Exception as exc:  # noqa: BLE001 - handler errors go to the error policy
            self._handle_failure(task, merged, exc)
        except BaseException as exc:
            # KeyboardInterrupt, SystemExit and the like: no strategy applies; the
            # job fails (and settles) and the exception goes on to the caller.
            self._fail(task, exc, {"action": "stop"})
            raise
        return True

    def _merged(self, task: Task) -> Any:
        """The data the handler gets: mapped by the connection, merged into the buffer."""
        if task.premerged:
            return task.data
        data = task.data
        connection = task.connection
        if connection is not None and connection.param_mapping:
            data = connection._apply_mapping(data)
        return task.slot._merge_for_job(self.job_state, task.rid, data)

    def _await_handler(self, task: Task, merged: Any, awaitable: Any) -> bool:
        async def guarded() -> None:
            token = bind(self)
            try:
                await awaitable
            except Exception as exc:  # noqa: BLE001 - handler errors go to the error policy
                self._handle_failure(task, merged, exc)
            except BaseException as exc:  # noqa: BLE001 - e.g. CancelledError: the job fails
                self._fail(task, exc, {"action": "stop"})
            finally:
                unbind(token)

        future = aio.submit(guarded())
        if self.executor is None:
            # Sequential: one task at a time, so wait for the coroutine here.
            future.result()
            return True
        future.add_done_callback(lambda _f: self._task_done())
        return False

    def _task_done(self) -> None:
        with self._lock:
            self._running -= 1
            self._outstanding -= 1
            if self._state is not RUNNING:
                self._wake_waiters()  # a pause may wait for running tasks
            finish = self._settle_if_idle_locked()
        if finish:
            self._finish()

    # -- failures -------------------------------------------------------------

    def _handle_failure(self, task: Task, merged: Any, exc: Exception) -> None:
        """Apply the routine's error strategy to a failed delivery (DESIGN README 6)."""
        rid = task.rid
        js = self.job_state
        routine = self.flow.routines.get(rid)
        handler = None
        if routine is not None:
            handler = routine._error_handler or self.flow.error_handler
        decision = handler.decide(exc, task.retries) if handler is not None else Decision("stop")
        info: dict[str, Any] = {
            "slot": task.slot.name,
            "error": str(exc),
            "error_type": type(exc).__name__,
            "attempt": task.retries + 1,
            "action": decision.action,
        }
        action = decision.action
        if action == "retry":
            assert handler is not None
            info["retry_delay"] = decision.delay
            js.record_execution(rid, "error", info)
            js.merge_routine_state(rid, {"retry_count": task.retries + 1})
            handler.retry_count = task.retries + 1
            logger.warning(
                "routine %s failed (%s); retry %d in %.3fs",
                rid,
                exc,
                task.retries + 1,
                decision.delay,
            )
            if merged is None:
                next_task = task.retry(task.data, premerged=False)
            else:
                next_task = task.retry(merged, premerged=True)
            if decision.delay > 0:
                self.schedule(decision.delay, next_task)
            else:
                self.enqueue(next_task)
        elif action == "continue":
            logger.warning("routine %s failed, continuing: %s", rid, exc)
            js.record_execution(rid, "error_continued", info)
            js.merge_routine_state(rid, {"status": "error_continued", "error": str(exc)})
        elif action == "skip":
            logger.warning("routine %s failed, skipped: %s", rid, exc)
            js.record_execution(rid, "error", info)
            js.merge_routine_state(rid, {"status": "skipped", "error": str(exc)})
        else:
            self._fail(task, exc, info)

    def _fail(self, task: Task, exc: BaseException, info: dict[str, Any]) -> None:
        """STOP: record the failure and end the job as ``failed``."""
        rid = task.rid
        js = self.job_state
        logger.error("routine %s failed; job %s stops", rid, js.job_id, exc_info=exc)
        record = {
            "slot": task.slot.name,
            "error": str(exc),
            "error_type": type(exc).__name__,
            "attempt": task.retries + 1,
        }
        record.update(info)
        js.record_execution(rid, "error", record)
        js.merge_routine_state(
            rid,
            {"status": "failed", "error": str(exc), "error_time": datetime.now().isoformat()},
        )
        self.tracker.record_routine_end(rid, "failed", error=str(exc))
        self.stop("failed")

    def _engine_failure(self, exc: Exception) -> None:
        logger.error("engine failure in job %s", self.job_state.job_id, exc_info=exc)
        message = f"internal engine error: {type(exc).__name__}: {exc}"
        self.job_state.record_execution(
            self.job_state.current_routine_id or "",
            "error",
            {"error": message, "error_type": type(exc).__name__, "engine": True},
        )
        self.stop("failed")

    # -- pause, cancel, stop ---------------------------------------------------

    def stop(self, status: str, reason: str = "", *, status_set: bool = False) -> None:
        """End the job as ``failed`` or ``cancelled``: drop everything not yet started.

        The status goes through the JobState's state machine: cancelling a
        finished job raises ``JobStateError`` (and drops nothing); a failure of a
        job already cancelled or failed keeps that final status.  ``status_set``:
        the caller (``flow.cancel``) has already made the status change.
        """
        js = self.job_state
        # The JobState is written outside the run's lock: handlers may hold the
        # job's lock while they emit (lock order is always job lock -> run lock).
        if not status_set:
            if status == "cancelled":
                js._set_cancelled(reason)
            else:
                js._set_failed()
        with self._lock:
            self._state = STOPPED
            dropped = len(self._queue) + len(self._async_queue)
            self._queue.clear()
            self._async_queue.clear()
            dropped += self._cancel_timers_locked()
            self._end_hooks.clear()
            self._outstanding -= dropped
            js.pending_tasks.clear()
            if status == "cancelled":
                js.deferred_events.clear()
            finish = self._settle_if_idle_locked()
        if finish:
            self._finish()

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

    def pause(
        self,
        reason: str,
        checkpoint: dict[str, Any] | None,
        wait: float,
        point: dict[str, Any] | None = None,
    ) -> None:
        """Stop starting tasks, save the rest in ``pending_tasks`` and wait for running ones.

        A failed or cancelled job raises ``JobStateError`` (the state machine).
        ``point``: the pause point of a status change the caller (``flow.pause``)
        has already made.
        """
        js = self.job_state
        own = 1 if current_run() is self else 0
        if point is None:
            point = js._set_paused(reason, checkpoint, active=True)
        with self._lock:
            if self._state is RUNNING:
                self._state = PAUSED
                moved = [task_to_dict(t) for t in (*self._queue, *self._async_queue)]
                self._outstanding -= len(moved)
                self._queue.clear()
                self._async_queue.clear()
                for task in self._cancel_timers_locked(collect=True):
                    moved.append(task_to_dict(task))
                    self._outstanding -= 1
                moved.extend(task_to_dict(t, at_job_end=True) for t in self._end_hooks.values())
                self._end_hooks.clear()
                js.pending_tasks.extend(moved)
            # Wait for the job's other running handlers, but not for those that
            # are themselves pausing (they would wait for us in turn).
            self._pausing += own
            self._wake_waiters()
            self._cond.wait_for(lambda: self._running <= self._pausing, timeout=wait)
            self._pausing -= own
            point["pending_tasks_count"] = len(js.pending_tasks)
            finish = self._settle_if_idle_locked()
        if finish:
            self._finish()

    # -- settling ---------------------------------------------------------------

    def _settle_if_idle_locked(self) -> bool:
        """With the lock held, after the outstanding count dropped: True when the
        caller must call :meth:`_finish` (after releasing the lock)."""
        if self._outstanding > 0 or self._settling:
            return False
        if self._end_hooks and self._state is RUNNING:
            hooks = list(self._end_hooks.values())
            self._end_hooks.clear()
            self._outstanding += len(hooks)
            blocking, coroutines = self._push_locked(hooks)
            if blocking or coroutines:
                self._request_pulls(blocking, coroutines)  # submitting never waits
            return False
        self._settling = True
        return True

    def _finish(self) -> None:
        """The job has no live work left: write its final status and wake waiters."""
        js = self.job_state
        entry_id = self.entry_id
        completed = js._set_completed()
        if completed and entry_id is not None:
            end = datetime.now()
            state = js.get_routine_state(entry_id) or {}
            final = state.get("status") if state.get("status") in _ABSORBED else "completed"
            js.merge_routine_state(
                entry_id,
                {
                    "status": final,
                    "execution_time": (end - self.started_at).total_seconds(),
                    "start_time": self.started_at.isoformat(),
                    "end_time": end.isoformat(),
                },
            )
            self.tracker.record_routine_end(entry_id, str(final))
        # The flow forgets the job before anyone is woken, so a woken caller
        # already sees ``flow.wait_for_completion(0)`` agree.
        self.flow._run_settled(self)
        with self._lock:
            self._finished = True
            self._wake_waiters()
            if self._drainer_waiting:
                self._work_ready.notify()
        js._mark_settled()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job settles; False on timeout."""
        if self._finished:
            return True
        with self._lock:
            return self._cond.wait_for(lambda: self._finished, timeout=timeout)

    @property
    def _cond(self) -> threading.Condition:
        """The condition for waiting on the job (use with the lock held)."""
        if self._cond_obj is None:
            self._cond_obj = threading.Condition(self._lock)
        return self._cond_obj

    @property
    def _work_ready(self) -> threading.Condition:
        """The condition the sequential drainer waits on (use with the lock held)."""
        if self._work_ready_obj is None:
            self._work_ready_obj = threading.Condition(self._lock)
        return self._work_ready_obj

    def _wake_waiters(self) -> None:
        """With the lock held: wake whoever waits on the job, if anyone does."""
        if self._cond_obj is not None:
            self._cond_obj.notify_all()

    @property
    def finished(self) -> bool:
        """True once the job has settled."""
        return self._finished


_ABSORBED = ("error_continued", "skipped")


class Scheduled:
    """A delivery scheduled on a job; :meth:`cancel` withdraws it and releases the job."""

    __slots__ = ("_run", "_handle")

    def __init__(self, run: JobRun, handle: TimerHandle) -> None:
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


class _MissingSlot:
    """Stands in for the entry's missing ``trigger`` slot: delivering to it fails."""

    name = "trigger"
    _handler = None
    _is_async = False
    _keeps_buffer = True  # so delivery calls _merge_for_job, which raises

    def __init__(self, error: Exception) -> None:
        self.error = error

    def _merge_for_job(self, *args: Any) -> Any:
        raise self.error

    def __repr__(self) -> str:
        return "Slot[trigger (missing)]"

"""A running job: :class:`JobRun`.

It keeps the job's queue, its outstanding count and its settling, and delivers
tasks by the job's compiled plan (``plan.py``).  Where its steps run is its
executor's business (``executors.py``); what a failure does is ``failure.py``'s;
its timers are ``scheduling.py``'s and its handler timeouts ``timeouts.py``'s
(both mixed in); an optional task observer
(``observer.py``) is told about every task.

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
* A delivery can be *abandoned* (its handler timed out, or Ctrl-C interrupted
  the job): the job releases its count at once and forgets it; the thread or
  asyncio task that runs it goes into ``_abandoned`` until it returns, and
  whatever it does with the job afterwards (emit, schedule, its result or
  exception) is discarded.  Who owns a running delivery is decided under the
  lock: an entry in ``_live`` (pool threads) or ``_aio_live`` (coroutines), or
  a ``Timed`` record's state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
import logging
import threading
import time
from collections import deque
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..exceptions import FlowError
from ..execution_tracker import TRACKER_HOOKS
from ..hooks import Delivery, HookSet
from ..job_state import ExecutionRecord
from . import aio
from .context import bind, current_run, unbind
from .executors import AIO, INLINE
from .failure import engine_failure, fail, handle_failure
from .observer import READY
from .plan import apply_mapping, merge, missing_slot
from .scheduling import PAUSED, RUNNING, STOPPED, JobTimers
from .tasks import Task, delivery_id, task_from_dict, task_to_dict
from .timeouts import MAIN_THREAD_SLICE, DeliveryTimeouts, Timed, main_thread_slice

if TYPE_CHECKING:
    from ..flow.flow import Flow
    from ..job_state import JobState
    from .executors import Executor
    from .observer import TaskObserver
    from .plan import Route, SlotPlan

logger = logging.getLogger("routilux.engine")

_new = object.__new__
_perf_counter = time.perf_counter


#: Tasks one pool pull runs before giving its thread back to the pool, so the
#: jobs sharing a pool take turns.
PULL_BATCH = 16

_NO_ROUTES: tuple[Route, ...] = ()

#: The shared empty stand-in for a job's sets until it needs one of its own.
_NOTHING: frozenset[Any] = frozenset()


class RunJournal(Protocol):
    """What a durable run and its flow ask of the run's journal (``journal.JobJournal``,
    which imports this module)."""

    #: ``"sync"``: a delivery starts only once the record that queued it is stored.
    durability: str

    def row_durable(self, seq: int) -> concurrent.futures.Future[None] | None: ...
    def run_settling(self, run: JobRun) -> None: ...
    def note_status(self) -> None: ...
    def flush(self) -> None: ...
    async def flush_async(self) -> None: ...


class EmittedEvent(Protocol):
    """What :meth:`JobRun.emit` reads of an event (``routilux.event.Event``, a layer
    above): its name, and its own emit for an event outside the job's flow."""

    name: str

    def emit(self, flow: Any = None, **kwargs: Any) -> None: ...


class JobRun(JobTimers, DeliveryTimeouts):
    """The engine side of one job: runs its tasks until nothing is left."""

    def __init__(
        self,
        flow: Flow,
        job_state: JobState,
        entry_id: str | None,
        hooks: HookSet | None = None,
        started: tuple[datetime, str] | None = None,
    ) -> None:
        self.flow = flow
        self.job_state = job_state
        # The routing this job runs with, compiled once by the flow (read-only).
        plan = self.plan = flow.plan
        self.routine_ids = plan.routine_ids
        self._events = plan.events
        # Where the job's steps run (executors.py): inline until use_pool.
        self.executor: Executor = INLINE
        self._pooled = False
        self.entry_id = entry_id
        # Task numbers (Task.seq, the delivery ids): job-wide, never reused.
        self._next_seq = itertools.count(job_state.task_seq).__next__
        # The job's lifecycle hooks (hooks.py), resolved once: the engine reads
        # one caller per event, None when nobody listens (then it costs nothing).
        # (The rarely used ones are read from job_state._hooks when needed.)
        if hooks is not None:
            self._take_emit_hooks(hooks)
            if hooks.deliveries:
                self._delivery_hooks = hooks
                self._watch_deliveries()
        # When the run started, and as ISO text (the flow measured it already
        # when it opened the entry's tracker record: one clock read per job).
        if started is None:
            started = (datetime.now(), "")
        self.started_at, self._started_text = started
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
        self._timers = {}
        self._named = {}
        self._end_hooks: dict[tuple[str, str], Task] = {}
        # Liveness (docs/execution-model.md, "Timeouts", "Limits", "Ctrl-C").
        # Read on every delivery, so instance attributes (the fastest lookup);
        # the rest is made only when used (keeps W1 cheap).
        self._handler_timeout: float | None = flow.handler_timeout
        self._max_deliveries: int | None = flow.max_deliveries
        self._abandoned: Any = _NOTHING  # threads / asyncio tasks given up on
        if self._max_deliveries is not None:
            self._delivery_numbers = itertools.count(1)

    # Liveness state, read-only empty defaults until a job needs its own
    # containers (see _own_set / _own_dict); writes happen under the lock.
    _delivery_numbers: Any = None  # itertools.count once max_deliveries is set
    _live: Any = MappingProxyType({})  # concurrent: pool thread -> its delivery
    _aio_live: Any = MappingProxyType({})  # asyncio task -> its delivery
    _coroutines: Any = frozenset()  # other coroutines of the job (cancel() cancels)
    _timed: Any = frozenset()  # running deliveries under a timeout
    _on_settle: list[Callable[[], None]] | None = None  # callbacks for _finish
    # Hook callers (see __init__); None: nobody listens.
    _on_emit: Callable[[JobState, Any], None] | None = None
    # True when the job's tracker is the only one listening to emissions (the
    # default): emit() appends to it without the hook's call.
    _track_emits = False
    # Set when hooks or the observer listen to deliveries: then every delivery
    # is reported, and ``_reports`` maps each open one's Task to
    # [Delivery or None, start, error].
    _watch = False
    _delivery_hooks: HookSet | None = None
    _reports: dict[Task, list[Any]] = MappingProxyType({})  # type: ignore[assignment]
    # The task observer (observer.py), None by default: then one check per point.
    _observer: TaskObserver[JobRun] | None = None
    # The task the sequential drainer (or the entry step) is delivering.
    _delivering: Task | None = None
    # The journal of a durable job (journal.py; it is also the observer), or None.
    _journal: RunJournal | None = None

    @property
    def _as_run(self) -> JobRun:
        return self

    def _watch_deliveries(self) -> None:
        """Report every delivery from now on (hooks or the observer listen)."""
        if not self._watch:
            self._watch = True
            self._reports = {}
            # Every delivery goes through the reporting wrapper; when nobody
            # listens _execute is the plain method (no check at all).
            self._execute = self._execute_watched  # type: ignore[method-assign]

    def _take_emit_hooks(self, hooks: HookSet) -> None:
        """How emit() reports an emission to ``hooks``: the tracker's part inline
        when it is the first to listen (alone, or before a stream), the others
        through one caller.  (A hook attached later comes after the tracker:
        ``_track_emits`` never changes during a run, emit() reads it unlocked.)"""
        if hooks.emit_first is TRACKER_HOOKS:
            self._track_emits = True  # see emit()
            self._on_emit = hooks.emit_rest
        else:
            self._on_emit = hooks.emit

    def add_hook(self, hook: Any, on_settle: Callable[[], None]) -> bool:
        """Install ``hook`` on this running job, from now on (``job.events()`` on
        a job started without a stream), and call ``on_settle()`` once it has
        settled (in case the job's end was being reported meanwhile: ``hook`` may
        or may not see that ``on_job_end``).  False when the run has settled."""
        js = self.job_state
        with self._lock:
            if self._finished:
                return False
            old = js._hooks
            if old is None:
                new = HookSet((hook,))
            else:  # these hooks, then ``hook``
                new = HookSet((*old.hooks, hook), old.attach)
            js._hooks = new  # statuses, outputs and the job's end read it from here
            self._take_emit_hooks(new)
            if new.deliveries:
                self._delivery_hooks = new
                self._watch_deliveries()
            if self._on_settle is None:
                self._on_settle = []
            self._on_settle.append(on_settle)
        return True

    def set_observer(self, observer: TaskObserver[JobRun]) -> None:
        """Tell ``observer`` about every task of this job (before :meth:`start`)."""
        self._observer = observer
        # Read on every delivery from now on (_execute_watched): made an instance
        # attribute, as Python 3.11 does not specialize reading a class-level
        # default through an instance.
        self._delivery_hooks = self._delivery_hooks
        self._watch_deliveries()

    def _own_set(self, name: str) -> set[Any]:
        """This job's own set ``name`` (lock held), made on first write."""
        value = self.__dict__.get(name)
        if value is None or value is _NOTHING:
            value = self.__dict__[name] = set()
        return value

    def _own_dict(self, name: str) -> dict[Any, Any]:
        """This job's own dict ``name`` (lock held), made on first write."""
        value = self.__dict__.get(name)
        if value is None:
            value = self.__dict__[name] = {}
        return value

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
            except Exception as exc:  # noqa: BLE001 - engine failure, see failure.py
                engine_failure(self, exc)
            except BaseException:
                self._task_done()  # the job is already failed (see _execute); let it settle
                raise
            if done:
                self._task_done()
            if not self._pooled:
                self._drain()
        finally:
            unbind(token)

    def run_entry(self, params: dict[str, Any]) -> bool:
        """Invoke the entry routine's trigger handler with ``params``; False while an
        ``async def`` trigger handler still runs (see :meth:`_execute`)."""
        rid = self.entry_id
        assert rid is not None
        target = self.plan.slots.get((rid, "trigger"))
        if target is None:
            error = FlowError(
                f"Entry routine '{rid}' must have a 'trigger' slot. "
                "Define it using: routine.define_slot('trigger', handler=your_handler)"
            )
            target = missing_slot(rid, "trigger", error, self.plan.error_handlers.get(rid))
        task = Task(target, params, self._next_seq(), entry=True)
        if self._observer is not None:
            with self._lock:
                self._observer.task_queued(self, task, READY, None)
        self._delivering = task
        return self._execute(task)

    def new_task(self, rid: str, slot_name: str, data: dict[str, Any]) -> Task:
        """A task delivering ``data`` to slot ``slot_name`` of routine ``rid``."""
        target = self.plan.slots.get((rid, slot_name))
        if target is None:
            raise FlowError(
                f"routine '{rid}' of flow '{self.flow.flow_id}' had no slot '{slot_name}' "
                "when this job started"
            )
        return Task(target, data, self._next_seq())

    def delivery_id(self) -> str | None:
        """The id of the delivery the calling thread or asyncio task runs for this
        job (``"<job_id>:<seq>"``), or None."""
        task = self.current_task()
        return None if task is None else delivery_id(self.job_state.job_id, task.seq)

    def current_task(self) -> Task | None:
        """The task whose delivery the calling thread or asyncio task runs for this
        job (the sequential strategy: the one being delivered), or None."""
        task = self._live.get(threading.current_thread()) if self._live else None
        if task is None and self._aio_live and aio.on_engine_loop():
            try:
                task = self._aio_live.get(asyncio.current_task())
            except RuntimeError:
                task = None
        if task is None:
            task = self._delivering
        return task

    def restore_pending(self, entries: list[dict[str, Any]]) -> None:
        """Queue tasks saved in ``job_state.pending_tasks`` (at resume); a task saved
        without a number (an older file) gets a new one."""
        for entry in entries:
            task = task_from_dict(self.plan, entry, -1)
            if task is None:
                continue
            if task.seq < 0:
                task.seq = self._next_seq()
            if entry.get("at_job_end"):
                self.at_job_end(task)
            else:
                self.enqueue(task)

    # -- emitting and queueing -----------------------------------------------

    def emit(self, routine: object, event: EmittedEvent, data: dict[str, Any]) -> None:
        """Record an emission of ``routine`` and queue one task per route of the event."""
        if self._abandoned and self._is_abandoned():
            return  # a late emission of a delivery the job gave up on
        compiled = self._events.get(id(event))
        if compiled is None:
            rid = self.routine_ids.get(id(routine))
            if rid is None:
                # Not a routine of this job's flow: deliver the way a standalone event does.
                event.emit(flow=None, **data)
                return
            name, routes = event.name, _NO_ROUTES  # an event defined after the job started
        else:
            if compiled.broken is not None:
                raise FlowError(compiled.broken)
            rid, name, routes = compiled.rid, compiled.name, compiled.routes
        js = self.job_state
        if js.history_limit is None:
            # JobState.record_execution's cases without a limit, inlined: this runs
            # once per emission.
            record = ExecutionRecord(rid, name, data, datetime.now())
            changes = js._changes
            if changes is None:  # one append is atomic
                js.execution_history.append(record)
                js.updated_at = record.timestamp
            else:
                with js._lock:
                    changes.history(record)
                    js.execution_history.append(record)
                    js.updated_at = record.timestamp
        else:
            record = js.record_execution(rid, name, data)
        if self._track_emits:
            # TrackerHooks.on_emit, inlined: this runs once per emission.
            tracker = js.execution_tracker
            if tracker is not None:
                tracker._pending.append(record)
                if tracker.max_events is not None:
                    tracker._bound_pending(tracker.max_events)
        on_emit = self._on_emit
        if on_emit is not None:
            on_emit(js, record)
            # A hook may have changed the record: a snapshot encodes it as it is now.
            record.saved_text = None
        if routes:
            if len(routes) == 1:  # the common case, without a comprehension's frame
                route = routes[0]
                task = Task(route.target, data, self._next_seq(), route)
                if not self._pooled:
                    # _enqueue_new's inline case, inlined: one emission, one task.
                    with self._lock:
                        if self._state is RUNNING and not self._abandoned:
                            self._outstanding += 1
                            observer = self._observer
                            if observer is not None:
                                observer.task_queued(self, task, READY, None)
                            self._queue.append(task)
                            if self._drainer_waiting:
                                self._work_ready.notify()
                            return
                self._enqueue_new([task])
            else:
                seq = self._next_seq
                self._enqueue_new([Task(route.target, data, seq(), route) for route in routes])

    def route(self, event: object, data: dict[str, Any]) -> bool:
        """``event.emit()`` inside this job: queue one task per route (no history
        record); False when the event is not one of this job's flow."""
        compiled = self._events.get(id(event))
        if compiled is None:
            return False
        if compiled.routes and not (self._abandoned and self._is_abandoned()):
            seq = self._next_seq
            self._enqueue_new([Task(route.target, data, seq(), route) for route in compiled.routes])
        return True

    def _enqueue_new(self, tasks: list[Task]) -> None:
        """Queue freshly emitted tasks (one lock round for all of them)."""
        with self._lock:
            if self._abandoned and self._is_abandoned():
                return  # abandoned while emitting: decided under the lock
            if self._state is not RUNNING:
                if self._state is PAUSED:
                    self.job_state.pending_tasks.extend(task_to_dict(t) for t in tasks)
                return
            self._outstanding += len(tasks)
            if self._observer is not None:
                for task in tasks:
                    self._observer.task_queued(self, task, READY, None)
            if not self._pooled:
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
                if self._observer is not None:
                    self._observer.task_queued(self, task, READY, None)
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

    def use(self, executor: Executor) -> None:
        """Run this job's steps on ``executor`` (chosen once, before :meth:`start`)."""
        self.executor = executor
        self._pooled = executor.pooled
        self._max_pullers = max(1, executor.width)
        if executor.pooled:
            self._live = {}

    def launch(
        self,
        first_steps: Callable[[], bool | None],
        wait: bool,
        timeout: float | None,
        off_caller: bool = False,
    ) -> None:
        """Start the job on its executor (see :meth:`start`)."""
        self.executor.launch(self, first_steps, wait, timeout, off_caller)

    def _push_locked(self, tasks: list[Task]) -> tuple[int, int]:
        """Append counted ready tasks (lock held); returns how many pool pulls to
        start (no more than the pool has threads) and whether the loop must pull."""
        if not self._pooled:
            self._queue.extend(tasks)
            if self._drainer_waiting:
                self._work_ready.notify()
            return 0, 0
        coroutines = 0
        for task in tasks:
            if task.target.is_async:
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
            AIO.wake(self._pull_async)
        if not blocking:
            return
        for _ in range(blocking):
            self._submit_pull()

    def _submit_pull(self) -> None:
        self.executor.submit(self._pull)

    # -- running tasks -------------------------------------------------------

    def _drain(self) -> None:
        """Sequential strategy: run queued tasks on this thread until the job settles.

        Finishing one task and taking the next share one lock round.  Ctrl-C
        (KeyboardInterrupt) goes on to the caller, whose ``_launch`` pauses the job.
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
                        self._work_ready.wait(main_thread_slice())
                        self._drainer_waiting = False
                    task = queue.popleft()
                    self._running += 1
            if finish:
                self._finish()
                done = False
                continue
            assert task is not None
            self._delivering = task
            # _execute_guarded, inlined: this loop is the sequential hot path.
            try:
                done = self._execute(task)
            except Exception as exc:  # noqa: BLE001 - a bug in the engine must not hang the job
                engine_failure(self, exc)
                done = True
            except BaseException:
                self._task_done()  # the job is already failed (see _execute); let it settle
                raise

    def _pull(self) -> None:
        """Concurrent strategy, on a pool thread: run this job's ready tasks, up to
        :data:`PULL_BATCH` of them, then give the thread back (and pull again).

        While a task runs, ``_live`` maps this thread to it: the job may abandon
        the delivery (timeout, Ctrl-C) by removing that entry, and then this pull
        ends without touching the job again."""
        token = bind(self)
        me = threading.current_thread()
        live = self._live
        try:
            for _ in range(PULL_BATCH):
                with self._lock:
                    if not self._queue:  # drained, or withdrawn by a pause or a stop
                        self._pullers -= 1
                        return
                    task = self._queue.popleft()
                    self._running += 1
                    live[me] = task
                if not self._run_pooled(task, me):
                    return  # abandoned: the job and the pool have let this thread go
            with self._lock:
                if not self._queue:
                    self._pullers -= 1
                    return
        except BaseException:
            with self._lock:
                if live.pop(me, None) is not None:
                    self._pullers -= 1
            raise
        finally:
            unbind(token)
        self._submit_pull()  # more is ready: queue up behind the pool's other work

    def _run_pooled(self, task: Task, me: threading.Thread) -> bool:
        """Run ``task`` on pool thread ``me``; False when the job abandoned it meanwhile."""
        done = self._execute_guarded(task)
        with self._lock:
            if self._live.pop(me, None) is None:
                self._abandoned.discard(me)
                return False
            if not done:
                return True  # an awaitable result: the coroutine ends the task
            finish = self._task_done_locked()
        if finish:
            self._finish()
        return True

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
            AIO.spawn(self._run_async(task))

    async def _run_async(self, task: Task) -> None:
        """Run an ``async def`` handler's delivery on the engine loop."""
        token = bind(self)
        merged: Any = None
        me = asyncio.current_task()
        with self._lock:
            self._own_dict("_aio_live")[me] = task
        try:
            journal = self._journal
            if journal is not None and journal.durability == "sync":
                # The record that queued this task must be durable first: wait for it
                # without blocking the loop.
                gate = journal.row_durable(task.seq)
                if gate is not None:
                    await asyncio.wrap_future(gate)
            if self._watch:
                self._open_delivery(task)
            merged = self._merged(task)
            if task.target.keeps_buffer:
                self._note_merged(me, task, merged)
            call = task.target.call
            result = call(merged) if call is not None else None
            if inspect.isawaitable(result):
                await self._await_bounded(task, merged, result)
        except Exception as exc:  # noqa: BLE001 - handler errors go to the error policy
            if me not in self._abandoned:
                handle_failure(self, task, merged, exc)
        except BaseException as exc:  # noqa: BLE001 - e.g. CancelledError: the job fails
            # Unless the engine cancelled it (cancel(), Ctrl-C).
            if self._watch:
                self._note_error(task, exc)
            if self._state is RUNNING and me not in self._abandoned:
                fail(self, task, exc)
        finally:
            unbind(token)
            with self._lock:
                owned = self._aio_live.pop(me, None) is not None
                if self._abandoned:
                    self._abandoned.discard(me)
            if owned:
                if self._watch:
                    self._close_delivery(task)
                self._task_done()

    def _run_task(self, task: Task) -> None:
        if self._execute_guarded(task):
            self._task_done()

    def _execute_guarded(self, task: Task) -> bool:
        """:meth:`_execute`, where an error of the engine itself fails the job."""
        try:
            return self._execute(task)
        except Exception as exc:  # noqa: BLE001 - a bug in the engine must not hang the job
            engine_failure(self, exc)
            return True
        except BaseException:
            self._task_done()  # the job is already failed (see _execute); let it settle
            raise

    def _execute(self, task: Task) -> bool:
        """Deliver one task; False when an async handler still runs (it finishes the task)."""
        if self._max_deliveries is not None and self._over_budget(task):
            return True
        target = task.target
        merged: Any = None
        try:
            if task.premerged:
                merged = task.data
            else:
                data = task.data
                route = task.route
                if route is not None and route.mapping is not None:
                    data = apply_mapping(route.mapping, data)
                # Inlined from _merged: this is the hottest path of the engine.
                if target.keeps_buffer:
                    merged = self._merge_into_buffer(target, data)
                    if self._live:
                        self._note_merged(threading.current_thread(), task, merged)
                else:
                    single = target.single
                    if (
                        single is not None
                        and type(data) is dict
                        and single[0] in data
                        and target.timeout is None
                        and self._handler_timeout is None
                    ):
                        # The handler takes one value: it never sees the dict, so
                        # the dict is not copied (until a failure keeps it) and
                        # the caller's frame is skipped.
                        merged = data
                        result = single[1](data[single[0]])
                        if result is not None and inspect.isawaitable(result):
                            merged = dict(data)
                            return self._await_handler(task, merged, result)
                        return True
                    merged = dict(data)
            call = target.call
            if call is None:
                return True
            if target.timeout is None and self._handler_timeout is None:
                result = call(merged)
            else:
                result = self._dispatch_timed(task, merged)
            if result is not None and inspect.isawaitable(result):
                return self._await_handler(task, merged, result)
        except Exception as exc:  # noqa: BLE001 - handler errors go to the error policy
            if self._abandoned and self._is_abandoned():
                return True  # a late failure of a delivery the job gave up on
            if merged is not None and merged is task.data and not task.premerged:
                merged = dict(merged)  # the uncopied data of a single-value call
            handle_failure(self, task, merged, exc)
        except BaseException as exc:
            if merged is not None and merged is task.data and not task.premerged:
                merged = dict(merged)
            if isinstance(exc, KeyboardInterrupt):
                # Ctrl-C: this delivery did not finish, so it goes back to pending
                # (already merged, so a resume does not merge it twice).
                again = task if merged is None else task.retry(merged, True, count=False)
                self.interrupt([again])
            else:
                # SystemExit and the like: no strategy applies; the job fails (and
                # settles) and the exception goes on to the caller.
                fail(self, task, exc)
            raise
        return True

    def _merge_into_buffer(self, target: SlotPlan, data: dict[str, Any]) -> Any:
        """Merge into the job's buffer for ``target``; returns what the handler gets."""
        js = self.job_state
        with js.lock:
            buffers = js.slot_buffers.setdefault(target.rid, {})
            stored, passed = merge(target.strategy, buffers.get(target.name, {}), data)
            buffers[target.name] = stored
        return passed

    # -- reporting deliveries to hooks (only when some hook listens) -----------

    def _execute_watched(self, task: Task) -> bool:
        """:meth:`_execute`, reported to the hooks as one delivery."""
        observer = self._observer
        if self._delivery_hooks is None and observer is not None:
            # Only the observer listens (a durable job's journal): _open_delivery and
            # _close_delivery's cases for it, inline (once per delivery).
            observer.delivery_started(self, task)
            report: list[Any] = [None, 0.0, None]
            self._reports[task] = report
            try:
                done = JobRun._execute(self, task)
            except BaseException as exc:
                self._close_delivery(task, exc)
                raise
            if (
                done
                and not (self._abandoned and self._is_abandoned())
                and self._reports.pop(task, None) is not None
            ):
                observer.delivery_ended(self, task, report[2])
            return done
        self._open_delivery(task)
        try:
            done = JobRun._execute(self, task)
        except BaseException as exc:
            self._close_delivery(task, exc)
            raise
        # Not done: a coroutine finishes it.  Abandoned: whoever gave up on it
        # (the timeout, Ctrl-C) has reported its end.
        if done and not (self._abandoned and self._is_abandoned()):
            self._close_delivery(task)
        return done

    def _open_delivery(self, task: Task) -> None:
        observer = self._observer
        if observer is not None:
            observer.delivery_started(self, task)
        hooks = self._delivery_hooks
        if hooks is None:
            self._reports[task] = [None, 0.0, None]
            return
        assert hooks.delivery_start is not None
        # Delivery(...) filled in directly: a frozen dataclass's __init__ sets
        # each field through object.__setattr__, a third of the reporting's cost.
        delivery = _new(Delivery)
        fields = delivery.__dict__
        fields["routine_id"] = task.rid
        fields["slot_name"] = task.target.name
        fields["attempt"] = task.retries + 1
        fields["entry"] = task.entry
        fields["data"] = task.data
        fields["delivery_id"] = delivery_id(self.job_state.job_id, task.seq)
        self._reports[task] = [delivery, _perf_counter(), None]
        hooks.delivery_start(self.job_state, delivery)

    def _note_error(self, task: Task, exc: BaseException) -> None:
        """Remember why an open delivery failed (its end reports it)."""
        report = self._reports.get(task)
        if report is not None and report[2] is None:
            report[2] = exc

    def _close_delivery(self, task: Task, error: BaseException | None = None) -> None:
        """Report the end of ``task``'s delivery, once (whoever comes first)."""
        report = self._reports.pop(task, None)  # atomic: only one caller gets it
        if report is None:
            return
        delivery, started, noted = report
        hooks = self._delivery_hooks
        if hooks is not None and delivery is not None:  # (None: opened before a hook attached)
            assert hooks.delivery_end is not None
            duration = _perf_counter() - started
            hooks.delivery_end(self.job_state, delivery, duration, noted or error)
        observer = self._observer
        if observer is not None:
            observer.delivery_ended(self, task, noted or error)

    def _close_all_deliveries(self, error: BaseException) -> None:
        """The job gave up on every running delivery (Ctrl-C): report their ends."""
        for task in list(self._reports):
            self._note_error(task, error)
            self._close_delivery(task)

    def _merged(self, task: Task) -> Any:
        """The data the handler gets: mapped by the connection, merged into the buffer."""
        if task.premerged:
            return task.data
        data = task.data
        route = task.route
        if route is not None and route.mapping is not None:
            data = apply_mapping(route.mapping, data)
        if not task.target.keeps_buffer:
            return dict(data)
        return self._merge_into_buffer(task.target, data)

    def _await_handler(self, task: Task, merged: Any, awaitable: Any) -> bool:
        """Run a handler's awaitable on the engine loop (entry handlers, the
        sequential strategy, sync handlers returning an awaitable).

        Concurrent: the coroutine ends the task itself and returns False at once.
        Sequential: this thread waits for it; Ctrl-C while waiting cancels it."""
        pooled = self._pooled
        requeue = self._requeueable(task, merged)
        interrupted: list[bool] = []

        async def guarded() -> None:
            token = bind(self)
            me = asyncio.current_task()
            with self._lock:
                if pooled:
                    self._own_dict("_aio_live")[me] = requeue
                else:
                    self._own_set("_coroutines").add(me)
            try:
                await self._await_bounded(task, merged, awaitable)
            except Exception as exc:  # noqa: BLE001 - handler errors go to the error policy
                if me not in self._abandoned:
                    handle_failure(self, task, merged, exc)
            except BaseException as exc:  # noqa: BLE001 - e.g. CancelledError: the job fails
                # Unless the engine cancelled it (cancel(), Ctrl-C): then the job
                # has already stopped or paused.
                if self._watch:
                    self._note_error(task, exc)
                if not interrupted and self._state is RUNNING and me not in self._abandoned:
                    fail(self, task, exc)
            finally:
                unbind(token)
                with self._lock:
                    owned = pooled and self._aio_live.pop(me, None) is not None
                    if not pooled:
                        self._coroutines.discard(me)
                    if self._abandoned:
                        self._abandoned.discard(me)
                if owned:
                    if self._watch:
                        self._close_delivery(task)
                    self._task_done()

        future = AIO.submit(guarded())
        if pooled:
            return False
        # Sequential: one task at a time, so wait for the coroutine here.
        try:
            if threading.current_thread() is threading.main_thread():
                while not future.done():  # in slices: see MAIN_THREAD_SLICE
                    concurrent.futures.wait([future], MAIN_THREAD_SLICE)
            future.result()
        except BaseException:
            interrupted.append(True)  # before the cancellation reaches the loop
            future.cancel()
            raise
        return True

    # -- budgets, abandoned deliveries ------------------------------------------

    def _more_pulls_locked(self) -> int:
        """How many pool pulls to start for the ready tasks now (lock held)."""
        if self._state is not RUNNING or not self._pooled:
            return 0
        pulls = min(len(self._queue), self._max_pullers - self._pullers)
        if pulls <= 0:
            return 0
        self._pullers += pulls
        return pulls

    def _over_budget(self, task: Task) -> bool:
        """max_deliveries: True when this delivery is one too many (the job fails)."""
        number = next(self._delivery_numbers)  # atomic: itertools.count is C code
        limit = self._max_deliveries
        assert limit is not None
        if number <= limit:
            return False
        if number == limit + 1:
            error = FlowError(
                f"job {self.job_state.job_id} of flow '{self.flow.flow_id}' exceeded "
                f"max_deliveries={limit}: delivery to '{task.rid}'.'{task.target.name}' refused "
                "(does the flow have a cycle? see flow.validate())"
            )
            fail(self, task, error)
        return True

    def _requeueable(self, task: Task, merged: Any) -> Task:
        """``task`` as it must be saved if it is interrupted after its merge."""
        if merged is None or task.premerged or not task.target.keeps_buffer:
            return task
        return task.retry(merged, True, count=False)

    def _note_merged(self, key: Any, task: Task, merged: Any) -> None:
        """A running delivery merged into its buffer: save it premerged if interrupted."""
        with self._lock:
            for live in (self._live, self._aio_live):
                if key in live:
                    live[key] = self._requeueable(task, merged)

    def _is_abandoned(self) -> bool:
        """True in a thread or asyncio task running a delivery the job gave up on."""
        if threading.current_thread() in self._abandoned:
            return True
        if aio.on_engine_loop():
            try:
                return asyncio.current_task() in self._abandoned
            except RuntimeError:
                return False
        return False

    def interrupt(self, interrupted: list[Task] | None = None) -> None:
        """Ctrl-C: pause the job now, without waiting for its running handlers.

        The deliveries that were running did not finish: ``interrupted`` (the
        one this thread was running) and those on pool threads or the loop go
        back to the front of ``job_state.pending_tasks``; the job abandons them
        (their threads are replaced, their coroutines cancelled) and settles
        ``paused``, so it can be saved and resumed."""
        with self._lock:
            if self._state is not RUNNING or self._settling:
                return  # already paused, stopped, or finished: nothing to keep
        self.pause("interrupted (KeyboardInterrupt)", None, 0.0)
        js = self.job_state
        requeue = list(interrupted or ())
        with self._lock:
            threads = list(self._live)
            coroutines = list(self._aio_live)
            requeue.extend(self._live.values())
            requeue.extend(self._aio_live.values())
            if threads or coroutines:
                self._own_set("_abandoned").update(threads, coroutines)
            self._pullers -= len(threads)
            released = len(threads) + len(coroutines)
            if self._live:
                self._live.clear()
            if self._aio_live:
                self._aio_live.clear()
            self._running -= released
            self._outstanding -= released
            if requeue:
                js.pending_tasks[0:0] = [task_to_dict(t) for t in requeue]
                if js.pause_points:
                    js.pause_points[-1]["pending_tasks_count"] = len(js.pending_tasks)
            self._wake_waiters()
            finish = self._settle_if_idle_locked()
        for thread in threads:
            self.executor.abandon(thread)
        self._cancel_coroutines(coroutines)
        if self._watch:
            self._close_all_deliveries(KeyboardInterrupt())
        logger.warning(
            "job %s interrupted: paused with %d pending tasks", js.job_id, len(js.pending_tasks)
        )
        if finish:
            self._finish()

    def _cancel_coroutines(self, coroutines: list[Any]) -> None:
        AIO.cancel(coroutines)

    def on_settle(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the job has settled (at once if it has): from
        :meth:`_finish`, on whichever thread settles the job.  Must be quick."""
        with self._lock:
            if not self._finished:
                if self._on_settle is None:
                    self._on_settle = []
                self._on_settle.append(callback)
                return
        callback()

    def _task_done(self) -> None:
        with self._lock:
            finish = self._task_done_locked()
        if finish:
            self._finish()

    def _task_done_locked(self) -> bool:
        """A running task ended (lock held): True when the caller must :meth:`_finish`."""
        self._running -= 1
        self._outstanding -= 1
        if self._state is not RUNNING:
            self._wake_waiters()  # a pause may wait for running tasks
        return self._settle_if_idle_locked()

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
            running = self._running_work_locked()
            finish = self._settle_if_idle_locked()
        self._release_running(running)
        if finish:
            self._finish()

    def _running_work_locked(self) -> tuple[list[Any], list[Timed]]:
        """The job's running coroutines and helper-thread deliveries (lock held)."""
        return [*self._aio_live, *self._coroutines], list(self._timed)

    def _release_running(self, running: tuple[list[Any], list[Timed]]) -> None:
        """A stopped job does not wait for what runs under a timeout or on the
        loop: give up its timed deliveries and cancel its coroutines (``Task.cancel``)."""
        coroutines, timed_deliveries = running
        for timed in timed_deliveries:
            timed.abandon()
        self._cancel_coroutines(coroutines)

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
                js.task_seq = self._next_seq()
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

    # -- human input (docs/human-input.md) ---------------------------------------

    def deliver_input(self, rid: str, slot_name: str, data: dict[str, Any]) -> bool:
        """Queue a delivery of ``data`` (input sent by ``flow.send_input``) to slot
        ``slot_name`` of routine ``rid`` in this running job.

        False when the job no longer takes new work here (paused, stopped, or
        settling): the caller waits for it to settle and acts on its status.
        Decided under the lock that settling takes, so input is either queued
        before the job settles or refused with the request still open.
        """
        with self._lock:
            if self._state is not RUNNING or self._settling or self._finished:
                return False
            task = self.new_task(rid, slot_name, data)
            self._outstanding += 1
            if self._observer is not None:
                self._observer.task_queued(self, task, READY, None)
            blocking, coroutines = self._push_locked([task])
        if blocking or coroutines:
            self._request_pulls(blocking, coroutines)
        return True

    def _park_end_hooks_locked(self) -> None:
        """The job is about to wait for input (lock held): its at-job-end
        deliveries wait too, in ``pending_tasks``, for the run that ends the job."""
        js = self.job_state
        js.pending_tasks.extend(task_to_dict(t, at_job_end=True) for t in self._end_hooks.values())
        self._end_hooks.clear()

    # -- settling ---------------------------------------------------------------

    def _settle_if_idle_locked(self) -> bool:
        """With the lock held, after the outstanding count dropped: True when the
        caller must call :meth:`_finish` (after releasing the lock)."""
        if self._outstanding > 0 or self._settling:
            return False
        if self._end_hooks and self._state is RUNNING and self.job_state.waiting_for:
            self._park_end_hooks_locked()
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
        js.task_seq = self._next_seq()  # a later run numbers its tasks from here
        # An open request for input: the job waits instead of completing.
        completed = not js._set_waiting() and js._set_completed()
        if completed and entry_id is not None:
            end = datetime.now()
            state = js.routine_states.get(entry_id) or {}  # get_routine_state, inlined
            final = state.get("status") if state.get("status") in _ABSORBED else "completed"
            js.merge_routine_state(
                entry_id,
                {
                    "status": final,
                    "execution_time": (end - self.started_at).total_seconds(),
                    "start_time": self._started_text or self.started_at.isoformat(),
                    "end_time": end.isoformat(),
                },
                end,
            )
        hooks = js._hooks  # this run's: a new run installs its own only after we settle
        if hooks is not None and hooks.job_end is not None:
            hooks.job_end(js)
        if self._journal is not None:
            # Durable: the settled state reaches the store before anyone is woken.
            self._journal.run_settling(self)
        # The flow forgets the job before anyone is woken, so a woken caller
        # already sees ``flow.wait_for_completion(0)`` agree.
        self.flow._run_settled(self)
        with self._lock:
            self._finished = True
            self._wake_waiters()
            if self._drainer_waiting:
                self._work_ready.notify()
            callbacks, self._on_settle = self._on_settle, None
        js._mark_settled()
        for callback in callbacks or ():
            try:
                callback()
            except Exception:  # noqa: BLE001 - a settle callback must not break the engine
                logger.exception("settle callback of job %s failed", js.job_id)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job settles; False on timeout."""
        if self._finished:
            return True
        with self._lock:
            if threading.current_thread() is not threading.main_thread():
                return self._cond.wait_for(lambda: self._finished, timeout=timeout)
            # The main thread waits in slices, so a lost Ctrl-C wake-up still
            # surfaces (see MAIN_THREAD_SLICE); the job's end wakes it at once.
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._finished:
                left = MAIN_THREAD_SLICE
                if deadline is not None:
                    left = min(left, deadline - time.monotonic())
                    if left <= 0:
                        return False
                self._cond.wait(left)
            return True

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

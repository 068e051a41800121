"""The :class:`Flow`: routines, the connections between them, and running jobs.

A flow is a definition (DESIGN invariant 1): build it first, then run any
number of jobs on it, from any number of threads.  Running never changes it;
everything a job changes lives in that job's JobState and JobRun.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from ..connection import Connection
from ..engine import aio
from ..engine import plan as engine_plan
from ..engine.context import current_run
from ..engine.executors import PoolExecutor
from ..engine.plan import Plan, definition_changed
from ..engine.pool import WorkerPool
from ..engine.run import JobRun
from ..engine.tasks import Task, next_free_seq, task_to_dict
from ..error_handler import ErrorHandler
from ..exceptions import (
    ExecutionContextError,
    FlowError,
    InvalidArgumentError,
    InvalidInputError,
    JobInterrupted,
    JobStateError,
    RoutiluxWarning,
)
from ..execution_tracker import TRACKER_HOOKS, ExecutionTracker
from ..hooks import Delivery, HookSet, JobHooks, check_hooks
from ..inputs import check_input, describe_open, find_request, input_row
from ..job_state import JobState
from ..output_handler import OUTPUT_HANDLER_HOOKS
from ..routine import Routine
from ..serialization import flow_file_codec, layout_of, register_serializable
from ..slot import check_timeout
from . import diagram, recovery
from .dependency import build_dependency_graph, get_ready_routines
from .plan import compile_plan

if TYPE_CHECKING:
    from ..engine.journal import JobJournal
    from ..event import Event
    from ..slot import Slot
    from ..store import Store, TaskRow
    from ..streaming import AsyncEventStream, EventStream

logger = logging.getLogger("routilux.flow")

STRATEGIES = ("sequential", "concurrent")
#: Workers used when one job asks for the concurrent strategy on a sequential flow.
DEFAULT_WORKERS = 5

MAX_WORKERS = 256
"""Upper bound of ``max_workers``, in code and in saved flows: a file asking for a
million threads would otherwise exhaust the machine."""


@dataclass(frozen=True)
class ValidationReport:
    """What :meth:`Flow.validate` found: ``errors`` make jobs fail, ``warnings``
    are definitions that work but are probably not what was meant."""

    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings may remain)."""
        return not self.errors


class _CurrentJobView:
    """``flow._current_execution_job_state.value``: the job the caller is serving."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow

    @property
    def value(self) -> JobState | None:
        run = current_run()
        return run.job_state if run is not None and run.flow is self._flow else None


@register_serializable
class Flow:
    """A workflow: routines keyed by id, and connections from events to slots.

    ``execution_strategy`` is ``"sequential"`` (the calling thread runs every
    task, in FIFO order) or ``"concurrent"`` (tasks run on a pool of
    ``max_workers`` threads shared by all jobs of the flow).  ``history_limit``
    keeps only the newest N history records of each job, ``output_limit`` the
    newest N entries of its output log (default: the history limit).
    ``strict=True`` makes :meth:`connect` refuse, with a ``FlowError``, a handler
    whose signature cannot take the event's declared parameters (by default it
    warns with a ``RoutiluxWarning``).  ``handler_timeout`` (seconds) bounds
    every delivery whose slot has no ``timeout`` of its own; ``max_deliveries``
    fails a job that makes more deliveries than that (a cycle); see
    docs/execution-model.md, "Timeouts" and "Limits".  ``hooks``: lifecycle
    hooks (:class:`~routilux.JobHooks`) for every job of the flow (docs/hooks.md).
    ``store``: a job store (a URL such as ``"sqlite:///jobs.db"``, a path, or a
    :class:`~routilux.store.Store`): then every job is journaled and survives a crash
    (:meth:`recover`); ``durability`` is ``"batch"`` (group commits) or ``"sync"``
    (each delivery durable before the tasks it queued start); docs/durability.md.
    """

    #: How ``Event.emit``/``Routine.emit`` recognise a flow without importing this module.
    _routilux_flow: ClassVar[bool] = True

    def __init__(
        self,
        flow_id: str | None = None,
        execution_strategy: str = "sequential",
        max_workers: int = 5,
        *,
        history_limit: int | None = None,
        output_limit: int | None = None,
        strict: bool = False,
        handler_timeout: float | None = None,
        max_deliveries: int | None = None,
        hooks: Iterable[JobHooks] | None = None,
        store: Store | str | os.PathLike[str] | None = None,
        durability: str = "batch",
    ) -> None:
        self.flow_id = flow_id or str(uuid.uuid4())
        _check_workers(self.flow_id, max_workers)
        self.handler_timeout = check_timeout(handler_timeout, f"Flow '{self.flow_id}' handler")
        limits = (
            ("history_limit", history_limit),
            ("output_limit", output_limit),
            ("max_deliveries", max_deliveries),
        )
        for name, limit in limits:
            if limit is not None and not _positive_int(limit):
                raise InvalidArgumentError(
                    f"Flow '{self.flow_id}': {name} must be a positive integer or None, "
                    f"got {limit!r}"
                )
        self.max_deliveries: int | None = max_deliveries
        self.routines: dict[str, Routine] = {}
        self.connections: list[Connection] = []
        if execution_strategy not in STRATEGIES:
            logger.warning(
                "unknown execution strategy %r for flow %s; running sequentially",
                execution_strategy,
                self.flow_id,
            )
        self.execution_strategy = execution_strategy
        self.max_workers = max_workers if execution_strategy == "concurrent" else 1
        self._error_handler: ErrorHandler | None = None
        self.execution_tracker: ExecutionTracker | None = None
        self.history_limit = history_limit
        self.output_limit = output_limit
        self.strict = bool(strict)
        self._hooks: tuple[JobHooks, ...] = ()
        self.add_hooks(*check_hooks(hooks, f"Flow '{self.flow_id}'"))
        self._routine_ids: dict[int, str] = {}
        self._plan: Plan | None = None
        self._connection_index: dict[tuple[int, int], Connection] = {}
        self._executor: WorkerPool | None = None
        self._pool_size = 1
        self._executor_lock = threading.Lock()
        self._runs: dict[str, JobRun] = {}
        # The runs registry: a plain lock on the hot paths (registering and
        # forgetting a job), the condition on it only for waiters, who count
        # themselves so a settling job notifies only when someone waits.
        self._runs_lock = threading.Lock()
        self._runs_cond = threading.Condition(self._runs_lock)
        self._runs_waiting = 0
        # Pools replaced while jobs still used them; shut down as those jobs end.
        self._retired: list[WorkerPool] = []
        # Jobs that settled waiting for input, by id, so send_input finds them
        # by id (under the runs lock; an entry leaves when its job runs again).
        self._waiting_jobs: dict[str, JobState] = {}
        self._current_execution_job_state = _CurrentJobView(self)
        self._init_durable(store, durability)

    def __repr__(self) -> str:
        return f"Flow[{self.flow_id}]"

    def serialize(self) -> dict[str, Any]:
        """The flow's definition as JSON-safe data (never any job's state)."""
        return layout_of(type(self)).serialize(self)

    def deserialize(self, data: dict[str, Any]) -> Flow:
        """Restore a definition written by :meth:`serialize` in place; returns ``self``."""
        layout_of(type(self)).deserialize(self, data)
        return self

    # -- building ------------------------------------------------------------

    def add_routine(self, routine: Routine, routine_id: str | None = None) -> str:
        """Add ``routine`` under ``routine_id`` (default: its ``_id``); returns the id."""
        if not isinstance(routine, Routine):
            raise InvalidArgumentError(
                f"Flow '{self.flow_id}': add_routine({routine_id!r}) needs a Routine, "
                f"got {type(routine).__name__}"
            )
        rid = routine_id or routine._id
        if not isinstance(rid, str):
            raise InvalidArgumentError(
                f"Flow '{self.flow_id}': routine id must be a string, got {rid!r}"
            )
        if rid in self.routines:
            raise FlowError(f"Routine ID '{rid}' already exists in flow")
        self.routines[rid] = routine
        # Identity lookups find the first id a routine object was added under.
        self._routine_ids.setdefault(id(routine), rid)
        if routine._added_as is None:
            routine._added_as = rid  # messages name the routine by it (see Routine._label)
        definition_changed()
        return rid

    def connect(
        self,
        source_routine_id: str,
        source_event: str,
        target_routine_id: str,
        target_slot: str,
        param_mapping: dict[str, str] | None = None,
    ) -> Connection:
        """Connect ``source_event`` of one routine to ``target_slot`` of another."""
        source = self.routines.get(source_routine_id)
        if source is None:
            raise FlowError(f"Source routine '{source_routine_id}' not found in flow")
        event = source.get_event(source_event)
        if event is None:
            raise FlowError(f"Event '{source_event}' not found in routine '{source_routine_id}'")
        target = self.routines.get(target_routine_id)
        if target is None:
            raise FlowError(f"Target routine '{target_routine_id}' not found in flow")
        slot = target.get_slot(target_slot)
        if slot is None:
            raise FlowError(f"Slot '{target_slot}' not found in routine '{target_routine_id}'")
        if param_mapping is not None and not (
            isinstance(param_mapping, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in param_mapping.items())
        ):
            raise InvalidArgumentError(
                f"param_mapping of {source_routine_id}.{source_event} -> "
                f"{target_routine_id}.{target_slot} must map event keys to slot keys "
                f"(str -> str), got {param_mapping!r}"
            )
        connection = Connection(event, slot, param_mapping)
        problem = _signature_problem(event, slot, connection)
        if problem is not None:
            message = (
                f"Flow '{self.flow_id}': connect({source_routine_id!r}, {source_event!r}, "
                f"{target_routine_id!r}, {target_slot!r}): {problem}. Name the handler's "
                "parameters after the keys, add a param_mapping, or take 'data' or **kwargs"
            )
            if self.strict:
                raise FlowError(message)
            warnings.warn(message, RoutiluxWarning, stacklevel=2)
        connection._source_routine_id = source_routine_id
        connection._target_routine_id = target_routine_id
        self.connections.append(connection)
        self._connection_index[(id(event), id(slot))] = connection
        definition_changed()
        return connection

    @property
    def plan(self) -> Plan:
        """The compiled, read-only routing the engine runs jobs of this flow with
        (``routilux.engine.plan``): compiled on first use and again after any change
        to the definition; a running job keeps the plan it started with."""
        plan = self._plan
        if plan is None or plan.revision != engine_plan.revision:
            plan = self._plan = compile_plan(self)
        return plan

    @property
    def error_handler(self) -> ErrorHandler | None:
        """The error handler of every routine that has none of its own."""
        return self._error_handler

    @error_handler.setter
    def error_handler(self, handler: ErrorHandler | None) -> None:
        self._error_handler = handler
        definition_changed()

    def _first_target(self, routine_id: str, event_name: str) -> str | None:
        """The id of the routine whose slot is first connected to that event, if any."""
        routine = self.routines.get(routine_id)
        event = routine.get_event(event_name) if routine is not None else None
        if event is None or not event.connected_slots:
            return None
        return self._routine_ids.get(id(event.connected_slots[0].routine))

    def _find_connection(self, event: Event, slot: Slot) -> Connection | None:
        return self._connection_index.get((id(event), id(slot)))

    def _get_routine_id(self, routine: Routine) -> str | None:
        return self._routine_ids.get(id(routine))

    def _build_dependency_graph(self) -> dict[str, set[str]]:
        return build_dependency_graph(self.routines, self.connections)

    def _get_ready_routines(
        self, completed: set[str], graph: dict[str, set[str]], running: set[str]
    ) -> list[str]:
        return get_ready_routines(completed, graph, running)

    def validate(self, *, warn: bool = False) -> ValidationReport:
        """Check the definition without running it.

        Errors: an event of one of the flow's routines connected to a slot
        whose routine is not in the flow (emitting it fails the job).
        Warnings: cycles (naming the routines on each; a job on a cycle runs
        until ``max_deliveries``, for ever when that is unset); routines no
        connection reaches that have no ``trigger`` slot (nothing can ever
        run them); routines connected to nothing in a flow of several.
        With ``warn=True`` every finding is also issued as a
        :class:`~routilux.RoutiluxWarning`.
        """
        errors: list[str] = []
        found: list[str] = []
        ids = self._routine_ids
        graph: dict[str, list[str]] = {rid: [] for rid in self.routines}
        reached: set[str] = set()
        linked: set[str] = set()
        for rid, routine in self.routines.items():
            if ids.get(id(routine)) != rid:
                continue  # a second id of the same object: its links are the first's
            for event in routine._events.values():
                for slot in event.connected_slots:
                    target = ids.get(id(slot.routine))
                    if target is None:
                        errors.append(
                            f"event '{rid}'.'{event.name}' is connected to slot "
                            f"'{slot.name}' of a routine that is not in flow '{self.flow_id}'"
                        )
                        continue
                    if target not in graph[rid]:
                        graph[rid].append(target)
                    reached.add(target)
                    linked.update((rid, target))
        for cycle in _cycles(graph):
            path = " -> ".join(f"'{rid}'" for rid in (*cycle, cycle[0]))
            found.append(
                f"cycle {path}: a job that enters it runs until max_deliveries "
                f"(now {self.max_deliveries}) stops it"
            )
        for rid, routine in self.routines.items():
            if rid not in reached and routine.get_slot("trigger") is None:
                found.append(
                    f"routine '{rid}' has no 'trigger' slot and no connection reaches it: "
                    "it can never run"
                )
            elif len(self.routines) > 1 and rid not in linked:
                found.append(f"routine '{rid}' is not connected to any other routine")
        report = ValidationReport(tuple(errors), tuple(found))
        if warn:
            for message in (*report.errors, *report.warnings):
                warnings.warn(f"flow '{self.flow_id}': {message}", RoutiluxWarning, stacklevel=2)
        return report

    # -- configuration ---------------------------------------------------------

    def set_execution_strategy(self, strategy: str, max_workers: int | None = None) -> None:
        """Choose ``"sequential"`` or ``"concurrent"`` (with ``max_workers`` threads)."""
        if strategy not in STRATEGIES:
            raise FlowError(
                f"Invalid execution strategy: {strategy}. Must be 'sequential' or 'concurrent'"
            )
        if max_workers is not None:
            _check_workers(self.flow_id, max_workers)
        self.execution_strategy = strategy
        self.max_workers = (max_workers or DEFAULT_WORKERS) if strategy == "concurrent" else 1
        with self._executor_lock:
            old, self._executor = self._executor, None
        if old is not None:
            self._retire(old)

    def _retire(self, executor: WorkerPool) -> None:
        """Shut a replaced pool down once no running job uses it any more."""
        with self._runs_lock:
            if any(run.executor.pool is executor for run in self._runs.values()):
                self._retired.append(executor)
                return
        executor.shutdown(wait=False)

    @property
    def hooks(self) -> tuple[JobHooks, ...]:
        """The lifecycle hooks of every job of this flow (see :meth:`add_hooks`)."""
        return self._hooks

    def add_hooks(self, *hooks: JobHooks) -> None:
        """Add lifecycle hooks for the jobs started (or resumed) from now on;
        they run after the flow's earlier hooks and before a call's own."""
        self._hooks = (*self._hooks, *check_hooks(hooks, f"Flow '{self.flow_id}'"))
        # The hooks of a job without hooks of its own: the same for every job.
        self._job_hooks = HookSet(
            (TRACKER_HOOKS, OUTPUT_HANDLER_HOOKS, *self._hooks), self._attach_stream
        )

    def _hook_set(self, call_hooks: tuple[JobHooks, ...]) -> HookSet:
        """The hooks of a new run: the tracker's, the output handler's, the
        flow's, the call's (in that order)."""
        if call_hooks:
            return HookSet((*self._job_hooks.hooks, *call_hooks), self._attach_stream)
        return self._job_hooks

    def _install(
        self,
        job_state: JobState,
        hooks: HookSet,
        entry_id: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> tuple[datetime, str] | None:
        """Start a run's hooks: a new tracker for the job (the flow's latest too),
        opened with the entry routine's start; ``hooks`` become the job's.  Returns
        that start (the time and its ISO text: the run's own start), if any."""
        tracker = ExecutionTracker(self.flow_id, max_events=job_state.history_limit)
        tracker._target_of = self._first_target
        start = None
        if entry_id is not None:
            now = datetime.now()
            record = tracker.record_routine_start(entry_id, params, at=now)
            start = (now, record["start_time"])
        job_state.execution_tracker = self.execution_tracker = tracker
        job_state._hooks = hooks
        if hooks.job_start is not None:
            hooks.job_start(job_state)
        return start

    def _install_resumed(self, job_state: JobState, hooks: HookSet) -> None:
        """:meth:`_install` for a resumed run (it has no entry record)."""
        self._install(job_state, hooks)

    def set_error_handler(self, handler: ErrorHandler | None) -> None:
        """The error handler of every routine that has none of its own."""
        self.error_handler = handler

    def _get_executor(self) -> WorkerPool:
        """The flow's pool, made on first use: daemon threads, so a stuck handler
        never keeps the process from exiting (see ``engine/pool.py``)."""
        with self._executor_lock:
            if self._executor is None:
                workers = (
                    self.max_workers if self.execution_strategy == "concurrent" else DEFAULT_WORKERS
                )
                self._pool_size = max(1, workers)
                self._executor = WorkerPool(self._pool_size, name=f"routilux-{self.flow_id}")
            return self._executor

    def _check_strategy(self, strategy: str | None) -> None:
        if strategy is not None and strategy not in STRATEGIES:
            raise FlowError(
                f"Invalid execution strategy: {strategy}. Must be 'sequential' or 'concurrent'"
            )

    # -- running ---------------------------------------------------------------

    def execute(
        self,
        entry_routine_id: str,
        entry_params: dict[str, Any] | None = None,
        execution_strategy: str | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
        output_handler: Any = None,
        hooks: Iterable[JobHooks] | None = None,
    ) -> JobState:
        """Run a new job from the entry routine's ``trigger`` slot; returns its JobState.

        With ``wait=True`` (the default) the call returns once the job has no
        work left (completed, failed, cancelled, or paused with nothing
        running), or after ``timeout`` seconds.  With ``wait=False`` it returns
        at once; ``job_state.wait_for_completion()`` waits later.
        ``output_handler`` receives the job's ``send_output`` calls from the start.
        ``hooks``: lifecycle hooks for this job only, after the flow's.
        Ctrl-C (KeyboardInterrupt) while it waits pauses the job and propagates.
        """
        _refuse_to_block_the_engine_loop(wait)
        run, first_steps = self._new_job(
            entry_routine_id, entry_params, execution_strategy, output_handler, hooks
        )
        self._launch(run, first_steps, wait, timeout)
        if run._journal is not None:
            run._journal.flush()
        return run.job_state

    def _new_job(
        self,
        entry_routine_id: str,
        entry_params: dict[str, Any] | None,
        execution_strategy: str | None,
        output_handler: Any,
        call_hooks: Iterable[JobHooks] | None,
    ) -> tuple[JobRun, Callable[[], bool | None]]:
        """Check the arguments and register a new job; returns it and its entry step."""
        routine = self.routines.get(entry_routine_id)
        if routine is None:
            raise FlowError(f"Entry routine '{entry_routine_id}' not found in flow")
        if entry_params is not None and not isinstance(entry_params, dict):
            raise InvalidArgumentError(
                f"entry_params for entry routine '{entry_routine_id}' must be a dict, "
                f"got {type(entry_params).__name__}"
            )
        self._check_strategy(execution_strategy)
        extra = check_hooks(call_hooks, "execute()") if call_hooks is not None else ()
        job_state = JobState(
            self.flow_id, history_limit=self.history_limit, output_limit=self.output_limit
        )
        job_state.current_routine_id = entry_routine_id
        if output_handler is not None:
            job_state.set_output_handler(output_handler)
        params = entry_params if entry_params is not None else {}
        hooks = self._hook_set(extra) if extra else self._job_hooks
        start = self._install(job_state, hooks, entry_routine_id, params)
        job_state._set_started()
        run = JobRun(self, job_state, entry_routine_id, hooks, start)
        if self._store is not None:
            recovery.journal_new_job(self, run, params)
        self._register(run, execution_strategy)
        return run, lambda: run.run_entry(params)

    async def execute_async(
        self,
        entry_routine_id: str,
        entry_params: dict[str, Any] | None = None,
        execution_strategy: str | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
        output_handler: Any = None,
        hooks: Iterable[JobHooks] | None = None,
    ) -> JobState:
        """Awaitable :meth:`execute`: the job runs off the caller's event loop.

        No thread waits for the job: it starts as with ``wait=False`` (the
        entry step on the job's own thread or on the flow's pool, never on the
        caller's loop) and the engine resolves an asyncio future when the job
        settles.  ``timeout`` bounds the wait as in :meth:`execute`.
        """
        loop = asyncio.get_running_loop()
        settled: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not settled.done():
                settled.set_result(None)

        def on_settle() -> None:  # on whichever thread the job settles
            try:
                loop.call_soon_threadsafe(resolve)
            except RuntimeError:  # the caller's loop is closed: nobody waits any more
                pass

        def new_job() -> tuple[JobRun, Callable[[], bool | None]]:
            return self._new_job(
                entry_routine_id, entry_params, execution_strategy, output_handler, hooks
            )

        if self._store is None:
            run, first_steps = new_job()
        else:
            # Storing the new job is a transaction of the store: done on a worker
            # thread, so the journal never blocks the caller's loop; awaited, so the
            # job is in the store once this call returns.
            created = loop.run_in_executor(None, new_job)
            try:
                run, first_steps = await asyncio.shield(created)
            except asyncio.CancelledError:
                # The job exists (it is stored and registered): start it all the same.
                created.add_done_callback(self._launch_created)
                raise
        if wait:
            run.on_settle(on_settle)
        self._launch(run, first_steps, False, None, off_caller=True)
        if wait:
            await asyncio.wait([settled], timeout=timeout)
        if run._journal is not None:
            await run._journal.flush_async()
        return run.job_state

    def _launch_created(
        self, created: asyncio.Future[tuple[JobRun, Callable[[], bool | None]]]
    ) -> None:
        """Start a job ``execute_async`` created for a caller that stopped waiting."""
        if not created.cancelled() and created.exception() is None:
            run, first_steps = created.result()
            self._launch(run, first_steps, False, None, off_caller=True)

    def resume(
        self,
        job_state: JobState | str,
        *,
        wait: bool = True,
        timeout: float | None = None,
        execution_strategy: str | None = None,
        hooks: Iterable[JobHooks] | None = None,
    ) -> JobState:
        """Continue a paused job (in this process or after loading it from a file).

        Deferred events are emitted first, then the saved pending tasks run.
        Like :meth:`execute`, waits until the job has no work left unless
        ``wait=False``.  Returns the same JobState.

        A run of the job still active here (a pause still finishing its handlers,
        another resume) is waited for first.  A completed job, or one paused
        after it completed, is returned ``completed`` without running anything.
        A ``failed``, ``cancelled`` or never started job, and a JobState saved
        while it was running (it holds no pending work), raise
        :class:`~routilux.JobStateError`.

        ``hooks``: lifecycle hooks for this run only, after the flow's.  A resume
        with nothing to run starts no run: its status change goes to the hooks
        of the job's previous run.

        With a store, ``job_state`` may be a job id: a job this process runs or
        keeps paused is that JobState; one paused by another process, or whose
        owner died, is claimed and continued here (docs/durability.md).  A job
        this process parked is taken from the store too once the store's copy
        moved on (input added through the store, or another runner claimed it):
        the JobState kept here would not have that input.
        """
        _refuse_to_block_the_engine_loop(wait)
        if isinstance(job_state, str):
            job_state, done = self._resume_id(job_state, wait, timeout, execution_strategy, hooks)
            if done:
                return job_state
        self._check_owner(job_state)
        extra = check_hooks(hooks, "resume()")
        current = job_state.current_routine_id
        if current is not None and current not in self.routines:
            raise JobStateError(f"Current routine '{current}' not found in flow")
        self._check_strategy(execution_strategy)
        own = current_run()
        if own is not None and own.job_state is job_state:
            # It would wait for its own run to settle, forever.
            raise JobStateError(
                f"job {job_state.job_id} cannot be resumed from one of its own handlers"
            )
        journal = recovery.journal_of(self, job_state)
        if journal is not None and job_state.status in ("paused", "waiting"):
            journal.reclaim()  # a paused (waiting) journaled job is released: own it again
        while True:
            # The status change, taking the pending work and registering the new
            # run are one step under the job's lock: a pause or cancel racing this
            # resume sees either the paused job or the new run, never neither.
            new_hooks = self._hook_set(extra)
            with job_state.lock:
                step = job_state._begin_resume(partial(self._install_resumed, job_state, new_hooks))
                if step == "done":
                    return job_state
                if step == "run":
                    pending, job_state.pending_tasks = job_state.pending_tasks, []
                    deferred, job_state.deferred_events = job_state.deferred_events, []
                    job_state.task_seq = next_free_seq(job_state.task_seq, pending)
                    run = JobRun(self, job_state, current, new_hooks)
                    journal = recovery.journal_of(self, job_state)
                    if journal is not None:
                        journal.attach(run)
                    self._register(run, execution_strategy)
                    break
            # A run of the job is still active (a pause finishing its handlers, or
            # another resume's run): wait until it settles (the latch opens last,
            # so the new run will own it), then look at the status it left.
            job_state.wait_for_completion()

        def first_steps() -> bool:
            for event in deferred:
                self._emit_deferred(event)
            run.restore_pending(pending)
            return True

        self._launch(run, first_steps, wait, timeout)
        if run._journal is not None:
            run._journal.flush()
        return job_state

    def _emit_deferred(self, event: dict[str, Any]) -> None:
        routine = self.routines.get(event.get("routine_id", ""))
        name = event.get("event_name", "")
        if routine is None or routine.get_event(name) is None:
            warnings.warn(
                f"deferred event {event.get('routine_id')}.{name} does not match flow "
                f"{self.flow_id}; dropped",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        try:
            routine.emit(name, flow=self, **(event.get("data") or {}))
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the resume
            warnings.warn(f"deferred event {name} failed: {exc}", RuntimeWarning, stacklevel=3)

    def _register(self, run: JobRun, strategy: str | None) -> None:
        run.job_state._mark_busy()
        # Choosing the pool and registering the job is one step under the runs
        # lock, so a concurrent shutdown() sees the job and keeps its pool alive.
        with self._runs_lock:
            if (strategy or self.execution_strategy) == "concurrent":
                pool = self._get_executor()
                run.use(PoolExecutor(pool, self._pool_size, self.flow_id))
            self._runs[run.job_state.job_id] = run

    def _launch(
        self,
        run: JobRun,
        first_steps: Callable[[], bool | None],
        wait: bool,
        timeout: float | None,
        off_caller: bool = False,
    ) -> None:
        """Start the job; with ``wait``, block until it settles (or ``timeout``).

        ``off_caller``: never run the entry step on the calling thread (an
        asyncio program's loop): a concurrent job's goes to the pool."""
        try:
            run.launch(first_steps, wait, timeout, off_caller)
            if wait:
                run.wait(timeout)
        except KeyboardInterrupt as exc:
            # Ctrl-C in a handler, the drain loop or the wait: the job is paused
            # (its work kept in pending_tasks); the interrupt goes on, carrying it.
            run.interrupt()
            raise JobInterrupted(run.job_state) from exc

    def _run_settled(self, run: JobRun) -> None:
        idle_pools = []
        with self._runs_lock:
            if self._runs.get(run.job_state.job_id) is run:
                del self._runs[run.job_state.job_id]
            self._note_waiting(run.job_state)
            if self._retired:
                in_use = {id(r.executor.pool) for r in self._runs.values()}
                idle_pools = [p for p in self._retired if id(p) not in in_use]
                self._retired = [p for p in self._retired if id(p) in in_use]
            if not self._runs and self._runs_waiting:
                self._runs_cond.notify_all()
        for pool in idle_pools:
            pool.shutdown(wait=False)

    def wait_for_completion(self, timeout: float | None = None) -> bool:
        """Block until no job of this flow has work left; False on timeout."""
        with self._runs_lock:
            self._runs_waiting += 1
            try:
                return self._runs_cond.wait_for(lambda: not self._runs, timeout=timeout)
            finally:
                self._runs_waiting -= 1

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> None:
        """Release the worker pool; with ``wait``, first wait (up to ``timeout``
        seconds) for the flow's running jobs.

        Jobs still running keep their pool until they end; the flow stays
        usable: the next job creates a new pool.
        """
        idle = self.wait_for_completion(timeout) if wait else False
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        if idle:
            executor.shutdown(wait=True)
        else:
            self._retire(executor)

    # -- controlling jobs --------------------------------------------------------

    def _check_owner(self, job_state: JobState) -> None:
        if job_state.flow_id != self.flow_id:
            raise JobStateError(
                f"JobState flow_id '{job_state.flow_id}' does not match "
                f"Flow flow_id '{self.flow_id}'"
            )

    def _active_run(self, job_state: JobState) -> JobRun | None:
        """The run of this very JobState object, if the flow runs it.

        A copy of the job (loaded from a file, with the same ``job_id``) is not
        the object the run writes to: controlling the run through it would change
        the run but not the copy's status.
        """
        with self._runs_lock:
            run = self._runs.get(job_state.job_id)
        return run if run is not None and run.job_state is job_state else None

    def pause(
        self,
        job_state: JobState,
        reason: str = "",
        checkpoint: dict[str, Any] | None = None,
        *,
        wait_timeout: float = 5.0,
    ) -> None:
        """Pause a job: nothing more starts; what has not started is saved in
        ``job_state.pending_tasks``.  Waits up to ``wait_timeout`` seconds for
        the job's running handlers (never for the caller's own).

        On the engine's event loop (in an ``async def`` handler) it does not
        wait at all: waiting there would stall the very handlers it waits for.

        A ``failed`` or ``cancelled`` job, one never started, and a JobState saved
        while it was running raise :class:`~routilux.JobStateError`.  Pausing a
        completed job (kept for seed-era code) makes it ``paused`` with nothing
        pending; resuming it returns it ``completed`` without running anything.
        """
        self._check_owner(job_state)
        if aio.on_engine_loop():
            wait_timeout = 0.0
        # Finding the run and changing the status are one step under the job's
        # lock, so a resume racing this pause cannot slip a new run in between.
        with job_state.lock:
            run = self._active_run(job_state)
            active = run is not None and not run.finished
            point = job_state._set_paused(reason, checkpoint, active=active)
            if run is None or not active:
                point["pending_tasks_count"] = len(job_state.pending_tasks)
        if run is None or not active:
            self._journal_idle_status(job_state)
            return
        run.pause(reason, checkpoint, wait_timeout, point=point)
        if run._journal is not None:
            run._journal.note_status()
            run._journal.flush()

    def cancel(self, job_state: JobState, reason: str = "") -> None:
        """Cancel a job: queued, pending and scheduled work is dropped; running
        handlers finish but what they emit is discarded.

        Only a pending, running or paused job can be cancelled: a ``completed``,
        ``failed`` or ``cancelled`` one raises :class:`~routilux.JobStateError`
        (a cancel racing the job's natural completion either wins, and the job
        ends ``cancelled``, or raises, and the job stays ``completed``).
        """
        self._check_owner(job_state)
        with job_state.lock:
            run = self._active_run(job_state)
            job_state._set_cancelled(reason)
            with self._runs_lock:
                self._note_waiting(job_state)
            if run is None or run.finished:
                job_state.pending_tasks.clear()
                job_state.deferred_events.clear()
                journal = recovery.journal_of(self, job_state)
                if journal is not None:
                    journal.finish_idle()
                return
        run.stop("cancelled", reason, status_set=True)

    # -- human input (docs/human-input.md) --------------------------------------

    def send_input(
        self,
        job: JobState | str,
        routine_id: str,
        slot_name: str,
        data: dict[str, Any],
        *,
        wait: bool = True,
        timeout: float | None = None,
    ) -> JobState:
        """Answer the oldest open request (``Routine.request_input``) of routine
        ``routine_id`` for slot ``slot_name``: ``data`` is checked against the
        request's schema, the request is closed and ``data`` is delivered to the slot.

        ``job`` is the JobState (also one loaded from a file) or the id of a job
        this flow runs, or ran here and that now waits.  A ``waiting`` job is
        resumed (like :meth:`resume`: with ``wait``, the call returns once it has
        no work left, or after ``timeout`` seconds); a job still running gets the
        delivery queued; a paused one keeps it in ``pending_tasks`` for its
        resume.  Input that does not fit the schema, and a routine and slot with
        no open request, raise :class:`~routilux.InvalidInputError` naming the
        field (or the request); the job keeps waiting, its request still open.
        """
        _refuse_to_block_the_engine_loop(wait)
        if self._store is not None and self._journaled_elsewhere(job):
            job_id = job.job_id if isinstance(job, JobState) else job
            return self._send_input_stored(job_id, routine_id, slot_name, data, wait, timeout)
        job_state = self._job_for_input(job)
        self._check_owner(job_state)
        routine = self.routines.get(routine_id)
        if routine is None or routine.get_slot(slot_name) is None:
            raise FlowError(
                f"send_input to job {job_state.job_id}: flow '{self.flow_id}' has no "
                f"routine '{routine_id}' with a slot '{slot_name}'"
            )
        where = f"job {job_state.job_id}: input for '{routine_id}'.'{slot_name}'"
        own = current_run()
        delivered: JobRun | None
        closer: list[JobHooks] = []
        while True:
            with job_state.lock:
                # Requests whose answer is on its way (journaled, below) count as closed.
                still_open = [
                    r for r in job_state.waiting_for if r["id"] not in job_state._answering
                ]
                request = find_request(still_open, routine_id, slot_name)
                if request is None:
                    raise InvalidInputError(
                        f"{where}: no request for it is open (the job is {job_state.status}; "
                        f"{describe_open(still_open)})"
                    )
                payload = check_input(request, data, where)
                run = self._active_run(job_state)
                if run is not None and not run.finished:
                    # Queued before the run can settle, or refused with the request open.
                    if run.deliver_input(routine_id, slot_name, payload):
                        job_state._close_request(request["id"])
                        delivered = run
                        break
                    if own is run:
                        raise JobStateError(
                            f"{where}: the job is {job_state.status} and takes no new work"
                        )
                else:
                    status = job_state.status
                    if status not in ("waiting", "paused"):
                        # running with no run here: saved mid-run, its work is not in it.
                        raise JobStateError(
                            f"{where}: the job is {status} but no run of it is active here; "
                            "only a waiting or paused job takes input"
                        )
                    seq = self._queue_input(
                        job_state, routine_id, slot_name, payload, request["id"]
                    )
                    if status == "waiting" and recovery.journal_of(self, job_state) is not None:
                        # Journaled: the request closes when its delivery starts, so the
                        # store sees it closed only together with the input's task row
                        # and its consumption (a crash before that leaves it waiting).
                        job_state._answering = job_state._answering | {request["id"]}
                        closer.append(_CloseAtDelivery(request["id"], seq))
                    else:
                        job_state._close_request(request["id"])
                    if status == "paused":
                        return job_state  # delivered when the job is resumed
                    delivered = None
                    break
            # A run is settling or pausing: once it has, act on the status it left.
            job_state.wait_for_completion()
        if delivered is None:
            return self.resume(job_state, wait=wait, timeout=timeout, hooks=closer)
        if wait and own is not delivered:  # (a handler of the job never waits for it)
            delivered.wait(timeout)
        return job_state

    def _journal_idle_status(self, job_state: JobState) -> None:
        """A job with no run here changed status (a waiting job paused): journal it."""
        journal = recovery.journal_of(self, job_state)
        if journal is not None and not journal.finished:
            journal.note_status()
            journal.flush()

    def _journaled_elsewhere(self, job: JobState | str) -> bool:
        """With a store: True unless this process runs the job or keeps it (its
        journal is here, and the store's copy has not moved on), so ``send_input``
        goes through the store."""
        job_id = job.job_id if isinstance(job, JobState) else job
        with self._runs_lock:
            run = self._runs.get(job_id)
            kept = self._waiting_jobs.get(job_id)
        if run is not None and (not isinstance(job, JobState) or run.job_state is job):
            return False
        local = job if isinstance(job, JobState) else kept
        if local is None:
            return True
        journal = recovery.journal_of(self, local)
        # Kept here, but changed through the store since: the store's copy is the job.
        return journal is None or recovery.drop_if_moved_on(self, journal)

    def _send_input_stored(
        self,
        job_id: str,
        routine_id: str,
        slot_name: str,
        data: dict[str, Any],
        wait: bool,
        timeout: float | None,
    ) -> JobState:
        """``send_input`` to a journaled job no run of this process holds: checked
        against the store's ``waiting_for``, stored as an input task, then the job
        is claimed and continued here (a paused job keeps the input for its resume)."""
        store = self._store
        assert store is not None
        stored = store.load(job_id)  # JobNotFoundError names the store and the job
        where = f"job {job_id}: input for '{routine_id}'.'{slot_name}'"
        if stored.flow_id != self.flow_id:
            raise JobStateError(f"{where}: the job belongs to flow '{stored.flow_id}'")
        if self.routines.get(routine_id) is None or (
            self.routines[routine_id].get_slot(slot_name) is None
        ):
            raise FlowError(
                f"send_input to job {job_id}: flow '{self.flow_id}' has no "
                f"routine '{routine_id}' with a slot '{slot_name}'"
            )
        row: TaskRow = input_row(stored, routine_id, slot_name, data)
        if stored.status == "paused":
            store.add_input(job_id, row)  # delivered when the job is resumed
            return store.load_job(job_id)
        epoch = recovery.claim(self, job_id, None)
        if epoch is None:
            raise JobStateError(
                f"{where}: the job is {stored.status} and held by runner {stored.owner!r}, "
                "which is alive; send the input in that process"
            )
        try:
            store.add_input(job_id, row)  # durable before the request is closed
        except BaseException:
            store.release(job_id, epoch)
            raise
        job_state, journal, rows = recovery.adopt(self, job_id, epoch)
        _close_answered(job_state, rows)
        with job_state.lock:
            job_state._hooks = None
            job_state._set_running()
            deferred, job_state.deferred_events = job_state.deferred_events, []
        self._start_adopted(job_state, journal, rows, wait=wait, timeout=timeout, deferred=deferred)
        journal.flush()
        return job_state

    def _job_for_input(self, job: JobState | str) -> JobState:
        """The JobState ``send_input`` was given, or the one its id names."""
        if isinstance(job, JobState):
            return job
        if not isinstance(job, str):
            raise InvalidArgumentError(
                f"send_input needs a JobState or a job id, got {type(job).__name__}"
            )
        with self._runs_lock:
            run = self._runs.get(job)
            found = run.job_state if run is not None else self._waiting_jobs.get(job)
        if found is None:
            raise JobStateError(
                f"flow '{self.flow_id}' runs no job {job!r} and has none waiting for "
                "input in this process (pass the JobState, e.g. one loaded from a file)"
            )
        return found

    def _queue_input(
        self,
        job_state: JobState,
        routine_id: str,
        slot_name: str,
        data: dict[str, Any],
        request_id: str,
    ) -> int:
        """Save a delivery of ``data`` answering request ``request_id`` in
        ``pending_tasks`` (job lock held), numbered after every task the job has
        used; returns its number.  The task (and its row in a store) names the
        request, so a recovery that delivers it again closes the request too."""
        seq = next_free_seq(job_state.task_seq, job_state.pending_tasks)
        task = Task(self.plan.slots[(routine_id, slot_name)], data, seq)
        task.answers = request_id
        job_state.pending_tasks.append(task_to_dict(task))
        job_state.task_seq = seq + 1
        return seq

    def _note_waiting(self, job_state: JobState) -> None:
        """Keep a job that waits for input findable by id (runs lock held)."""
        if job_state.status == "waiting":
            self._waiting_jobs[job_state.job_id] = job_state
        else:
            self._waiting_jobs.pop(job_state.job_id, None)

    # -- durable jobs (the work is in flow/recovery.py and engine/journal.py) --------

    def _init_durable(self, store: Any, durability: str) -> None:
        self._store: Store | None = recovery.flow_store(self.flow_id, store)
        self.durability = recovery.check_durability(self.flow_id, durability)

    @property
    def store(self) -> Store | None:
        """The job store every job of this flow is journaled in (None: no journal)."""
        return self._store

    def use_store(
        self, store: Store | str | os.PathLike[str] | None, durability: str | None = None
    ) -> None:
        """Journal the jobs started from now on in ``store`` (as ``Flow(store=...)``;
        None: no journal), e.g. for a flow read from a flow file.  Refused while jobs
        of the flow run."""
        with self._runs_lock:
            if self._runs:
                raise FlowError(
                    f"Flow '{self.flow_id}': cannot change its store while {len(self._runs)} "
                    "job(s) run"
                )
            self._init_durable(store, durability or self.durability)

    def recover(
        self,
        *,
        wait: bool = True,
        timeout: float | None = None,
        stale_after: float | None = None,
    ) -> recovery.Recovered:
        """Resume every unfinished journaled job of this flow whose owner is dead.

        Each job (status running in the store, its runner's PID gone on this host or
        its heartbeat older than ``stale_after`` seconds, default 30) is claimed --
        exactly one process gets it --, rebuilt from its snapshot and deltas, and run
        from its pending tasks; paused and waiting jobs are left alone (resume them
        with ``resume(job_id)``).  Returns the JobStates (a list); with ``wait`` (the
        default) once they have settled, like :meth:`resume`.  A job the flow cannot
        run any more (a routine or slot its tasks need is gone) is skipped and left in
        the store: a :class:`~routilux.flow.recovery.RecoveryError` for it is in the
        result's ``errors``, logged and warned (``RoutiluxWarning``).
        """
        _refuse_to_block_the_engine_loop(wait)
        return recovery.recover(self, wait=wait, timeout=timeout, stale_after=stale_after)

    def _resume_id(
        self,
        job_id: str,
        wait: bool,
        timeout: float | None,
        strategy: str | None,
        hooks: Iterable[JobHooks] | None,
    ) -> tuple[JobState, bool]:
        """``resume(job_id)``: the job's JobState, and True when that is all (taken
        over and running, or finished), False when the caller resumes it (a paused
        JobState of this process)."""
        found = recovery.take_over(self, job_id, None)
        kind = found[0]
        if kind == "own":
            job_state = found[1]
            if job_state.status in ("paused", "waiting"):
                return job_state, False
            if wait:
                job_state.wait_for_completion(timeout)
            return job_state, True
        if kind == "done":
            return found[1], True
        _, job_state, journal, rows = found
        _close_answered(job_state, rows)
        deferred: list[dict[str, Any]] = []
        if job_state.status in ("paused", "waiting"):
            with job_state.lock:
                job_state._hooks = None
                job_state._set_running()
                deferred, job_state.deferred_events = job_state.deferred_events, []
        self._check_strategy(strategy)
        self._start_adopted(
            job_state,
            journal,
            rows,
            wait=wait,
            timeout=timeout,
            strategy=strategy,
            hooks=hooks,
            deferred=deferred,
        )
        journal.flush()
        return job_state, True

    def _start_adopted(
        self,
        job_state: JobState,
        journal: JobJournal,
        rows: list[TaskRow],
        *,
        wait: bool,
        timeout: float | None,
        strategy: str | None = None,
        hooks: Iterable[JobHooks] | None = None,
        deferred: list[dict[str, Any]] | None = None,
    ) -> None:
        """Run a job taken over from the store from its pending ``rows`` (and, for a
        paused one, its ``deferred`` events first, as :meth:`resume` does)."""
        extra = check_hooks(hooks, "resume()")
        new_hooks = self._hook_set(extra)
        current = job_state.current_routine_id
        if current is not None and current not in self.routines:
            current = None
        self._install_resumed(job_state, new_hooks)
        run = JobRun(self, job_state, current, new_hooks)
        journal.attach(run)
        self._register(run, strategy)
        self._launch(run, recovery.restore_rows(run, rows, deferred), wait, timeout)

    # -- files and diagrams (the work is in routilux.flowfile and flow/diagram.py) --

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, allow_imports: Iterable[str] = ()) -> Flow:
        """A new flow read from a flow file (YAML, or JSON for ``.json``; see
        docs/flow-files.md).  ``module:Class`` names may import only the modules
        of ``allow_imports`` and of ``[tool.routilux] imports`` in the project's
        pyproject.toml; errors name the file, line, column and key."""
        flow: Flow = flow_file_codec().load(path, cls, tuple(allow_imports))
        return flow

    def to_file(self, path: str | os.PathLike[str]) -> None:
        """Write this flow's definition as a flow file (``.yaml``/``.yml`` or ``.json``)."""
        flow_file_codec().save(self, path)

    def to_mermaid(self, job_state: JobState | None = None) -> str:
        """The flow as a Mermaid flowchart; with ``job_state``, coloured by what each
        routine did in that job (see ``routilux.flow.diagram``)."""
        return diagram.to_mermaid(self, job_state)

    def to_dot(self, job_state: JobState | None = None) -> str:
        """The flow as a Graphviz DOT digraph (same content as :meth:`to_mermaid`)."""
        return diagram.to_dot(self, job_state)

    # -- streaming (routilux.streaming) ----------------------------------------

    def _attach_stream(self, job_state: JobState, asynchronous: bool, **options: Any) -> Any:
        """``job_state.events()`` for a job started without a stream: a stream
        attached to its run from now on (see ``routilux.streaming.attach_stream``)."""
        from ..streaming import attach_stream

        with self._runs_lock:
            run = self._runs.get(job_state.job_id)
        if run is not None and run.job_state is not job_state:
            run = None
        return attach_stream(job_state, run, asynchronous, **options)

    def stream(
        self,
        entry_routine_id: str,
        entry_params: dict[str, Any] | None = None,
        execution_strategy: str | None = None,
        *,
        kinds: Iterable[str] | None = None,
        maxsize: int = 1000,
        overflow: str = "block",
        cancel_on_close: bool = False,
        hooks: Iterable[JobHooks] | None = None,
    ) -> EventStream:
        """Start a job (as ``execute(..., wait=False)``) and iterate its events;
        see :class:`~routilux.streaming.EventStream` and docs/observability.md."""
        from ..streaming import stream_job

        return stream_job(
            self,
            entry_routine_id,
            entry_params,
            execution_strategy,
            kinds=kinds,
            maxsize=maxsize,
            overflow=overflow,
            cancel_on_close=cancel_on_close,
            hooks=hooks,
        )

    def astream(
        self,
        entry_routine_id: str,
        entry_params: dict[str, Any] | None = None,
        execution_strategy: str | None = None,
        *,
        kinds: Iterable[str] | None = None,
        maxsize: int = 1000,
        overflow: str = "block",
        cancel_on_close: bool = False,
        hooks: Iterable[JobHooks] | None = None,
    ) -> AsyncEventStream:
        """:meth:`stream` for asyncio: ``async for ev in flow.astream(...)``; the
        job starts (off the caller's loop) at the first iteration."""
        from ..streaming import astream_job

        return astream_job(
            self,
            entry_routine_id,
            entry_params,
            execution_strategy,
            kinds=kinds,
            maxsize=maxsize,
            overflow=overflow,
            cancel_on_close=cancel_on_close,
            hooks=hooks,
        )


class _CloseAtDelivery(JobHooks):
    """Closes an answered request when the delivery of its input (task ``seq``)
    starts: then the journal records the close with that delivery."""

    def __init__(self, request_id: str, seq: int) -> None:
        self.request_id = request_id
        self.seq = seq

    def on_delivery_start(self, job_state: JobState, delivery: Delivery) -> None:
        run = current_run()
        task = run.current_task() if run is not None else None
        if task is not None and task.seq == self.seq:
            with job_state.lock:
                job_state._close_request(self.request_id)
                job_state._answering = job_state._answering - {self.request_id}


def _close_answered(job_state: JobState, rows: list[TaskRow]) -> None:
    """Close the requests that stored input tasks among ``rows`` answer (a job taken
    over from the store: the input is durable, so its request may close now)."""
    with job_state.lock:
        for row in rows:
            if row.get("kind") == "input":
                request_id = (row.get("extra") or {}).get("request")
                if isinstance(request_id, str):
                    job_state._close_request(request_id)


def _signature_problem(event: Event, slot: Slot, connection: Connection) -> str | None:
    """Why the slot's handler cannot take what the event declares, or None.

    Follows the dispatch rule (spec 10 §3.3, ``slot._dispatch_plan``) with the
    event's declared ``output_params`` renamed by the connection's mapping.  Only
    sure mismatches count: no declared parameters, a custom merge function (its
    result's keys are unknown), ``**kwargs``, a lone ``data`` or ``*args``, and
    unmatched parameters that have defaults are all fine.
    """
    handler = slot.handler
    if handler is None or not event.output_params or callable(slot.merge_strategy):
        return None
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):  # no signature: it gets the dict
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    keys = list(connection._apply_mapping(dict.fromkeys(event.output_params)))
    named = [p for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    shown = ", ".join(repr(k) for k in keys)
    if not named:
        if len(params) > len(named):
            return None  # only *args: the dict arrives as args[0]
        return f"its handler takes no parameter, but the event sends {shown}"
    if any(p.name in keys for p in named):
        missing = [
            p.name
            for p in named
            if p.name not in keys
            and p.default is inspect.Parameter.empty
            and p.kind is not inspect.Parameter.VAR_POSITIONAL
        ]
        if len(named) > 1 and missing:
            return (
                f"its handler's parameter(s) {', '.join(repr(m) for m in missing)} have no "
                f"default and are not among the keys the event sends ({shown})"
            )
        return None
    # No parameter matches: the handler is called with the whole dict, positionally.
    names = ", ".join(repr(p.name) for p in named)
    try:
        bound = inspect.signature(handler).bind(None).arguments
    except TypeError:
        return (
            f"none of its handler's parameters ({names}) is a key the event sends ({shown}), "
            "and the handler cannot be called with the whole dict either"
        )
    (taker,) = bound  # the one parameter that would receive the dict
    if taker == "data" or taker not in {p.name for p in named}:
        return None  # a 'data' parameter, or *args, takes the dict on purpose
    return (
        f"none of its handler's parameters ({names}) is a key the event sends ({shown}), "
        f"so its parameter {taker!r} would receive the whole dict"
    )


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """One cycle (as a path of routine ids) for every strongly connected part of
    ``graph`` that has one, in definition order.  Iterative (Tarjan), so a long
    chain never hits the recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    parts: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = graph[node]
            if i < len(targets):
                work.append((node, i + 1))
                nxt = targets[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:  # back in the parent: pass the low link up
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                part = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    part.append(member)
                    if member == node:
                        break
                if len(part) > 1 or node in graph[node]:
                    parts.append(part)
    order = {rid: n for n, rid in enumerate(graph)}
    return [_cycle_in(graph, set(part), min(part, key=order.__getitem__)) for part in parts]


def _cycle_in(graph: dict[str, list[str]], part: set[str], start: str) -> list[str]:
    """A simple cycle through ``start`` inside the strongly connected ``part``."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth-first: the shortest way back to start
        following = []
        for node in frontier:
            for nxt in graph[node]:
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return path[::-1]
                if nxt in part and nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    return [start]


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_workers(flow_id: str, max_workers: object) -> None:
    if not (_positive_int(max_workers) and isinstance(max_workers, int)) or (
        max_workers > MAX_WORKERS
    ):
        raise InvalidArgumentError(
            f"Flow '{flow_id}': max_workers must be an integer from 1 to {MAX_WORKERS}, "
            f"got {max_workers!r}"
        )


def _refuse_to_block_the_engine_loop(wait: bool) -> None:
    if wait and aio.on_engine_loop():
        # Blocking there would stall the loop that runs every async def handler.
        raise ExecutionContextError(
            "an async def handler cannot wait for a job: use "
            "'await flow.execute_async(...)' or execute(..., wait=False)"
        )

"""Routilux jobs on Celery workers (``routilux[celery]``): the job is the unit of work.

:class:`RoutiluxCelery` binds a Celery app, a durable job store and the flows of an
application. ``submit()`` writes the job's row to the store and then sends a message
that carries only ``(flow_id, job_id, entry routine, params)``; a worker claims the job
in the store (epoch fencing: a duplicated or late message for a job another live runner
owns is a no-op), runs it to a settled state, and writes the JobState back. Everything
a job is lives in the store, never in a message, so a killed submitter or worker loses
nothing.

Invariants:

* **The snapshot is the truth.** A job's stored snapshot is always a state the job can
  continue from: a paused JobState whose pending work is its entry delivery (when
  submitted), one paused or waiting with its pending work (after a pause or a request
  for input), or a finished one. A worker writes it only when its run has settled, so a
  worker that dies mid-job leaves the last such state, and the job runs again from it:
  every delivery's effect on the JobState is applied exactly once; effects outside the
  JobState at least once (``ctx.delivery_id`` is the idempotency key). The row's status
  follows the snapshot; a worker that finds them apart (it died between the two writes)
  repairs the row from the snapshot.
* **Ownership is a lease.** Every worker process is a store runner with a heartbeat; a
  job is run only under the epoch ``Store.claim`` returned, and every write names it.
* **Nothing waits by polling.** ``wait()`` and the control calls block on Redis pub/sub
  notifications of the job's status; workers hear pause and cancel on a control
  channel. The sweeper and the heartbeat are clocks (periodic work), not waits.
* **No worker is held by a parked job.** A paused or waiting job is written back and
  released; ``resume()`` and ``send_input()`` send a new message.

See ``docs/scale-out.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Callable, Optional, Protocol, Union

from routilux.engine.journal import STALE_AFTER as JOURNAL_STALE_AFTER
from routilux.exceptions import (
    ConfigError,
    FlowError,
    InvalidArgumentError,
    InvalidInputError,
    JobStateError,
    StaleEpochError,
    StoreError,
)
from routilux.flow import Flow
from routilux.hooks import JobHooks
from routilux.inputs import input_row
from routilux.job_state import JobState
from routilux.store import FINISHED_STATUSES, Heartbeat, JournaledJob, Store, open_store

try:
    import celery as _celery_library
    import redis as _redis_library
    from celery import signals as _celery_signals
except ImportError as _missing:  # pragma: no cover - the extra is part of dev
    raise ImportError(
        f"routilux.celery needs Celery and the Redis client: pip install 'routilux[celery]' "
        f"({_missing})"
    ) from _missing

__all__ = ["RoutiluxCelery", "TracePropagator"]

logger = logging.getLogger("routilux.celery")

#: Statuses ``wait()`` returns at: the job has nothing to run until someone acts.
SETTLED_STATUSES = FINISHED_STATUSES | {"paused", "waiting"}


def _settled(job: JournaledJob) -> bool:
    """A job :meth:`RoutiluxCelery.wait` returns for: finished, or paused or waiting
    and released by its worker (which commits the status, then releases the job,
    then announces it: a waiter must not see the status before the release) -- but
    not waiting with its input stored already: that job is queued again at once (by
    its worker, or by the ``send_input`` that stored it), and is not what it waits
    for."""
    if job.status in FINISHED_STATUSES:
        return True
    if job.status not in SETTLED_STATUSES or job.owner is not None:
        return False
    return job.status != "waiting" or not any(task["kind"] == "input" for task in job.tasks)


#: The message header that carries the submitter's trace context.
TRACE_HEADER = "routilux_trace"


class TracePropagator(Protocol):
    """Carries trace context from ``submit()`` to the worker that runs the job.

    ``inject(carrier)`` adds the current context to a dict of strings at submit time
    (it rides in the message headers); ``attach(carrier)`` returns a context manager
    that makes it current in the worker while the job runs. An OpenTelemetry
    propagator fits in a few lines (see ``docs/scale-out.md``).
    """

    def inject(self, carrier: dict[str, str]) -> None: ...

    def attach(self, carrier: Mapping[str, str]) -> AbstractContextManager[Any]: ...


def _job_channel(prefix: str, job_id: str) -> str:
    return f"{prefix}:job:{job_id}"


def _control_channel(prefix: str) -> str:
    return f"{prefix}:control"


class _StatusHook(JobHooks):
    """Publishes every status change of a running job on the job's channel, so a
    controller waiting for ``paused`` or ``cancelled`` hears it the moment the worker's
    JobState changes (before the settled state is written)."""

    def __init__(self, publish: Callable[[str, str], None]) -> None:
        self._publish = publish

    def on_status(self, job_state: JobState, old: str, new: str) -> None:
        self._publish(job_state.job_id, new)


def _flow_store(flow: Flow) -> Optional[Store]:
    """The store a flow journals its jobs to itself (``Flow(store=...)``), or None."""
    store = getattr(flow, "store", None)
    return store if isinstance(store, Store) else None


class _JournaledRun(_StatusHook):
    """The hooks of a journaled job's run on a worker: status changes announced, and
    the run's JobState made reachable for pause and cancel as soon as it starts."""

    def __init__(self, rc: RoutiluxCelery, process: _Process, flow: Flow) -> None:
        super().__init__(rc._publish)
        self._process = process
        self._flow = flow

    def on_job_start(self, job_state: JobState) -> None:
        with self._process.lock:
            self._process.running[job_state.job_id] = _Running(self._flow, job_state, None)


class _Running:
    """A job this process runs now: its JobState, flow and epoch (for control; None
    for a journaled job, whose epoch its journal holds)."""

    def __init__(self, flow: Flow, job_state: JobState, epoch: Optional[int]) -> None:
        self.flow = flow
        self.job_state = job_state
        self.epoch = epoch
        self.pausing = False


class _Process:
    """What one process needs, opened lazily and never shared across a fork: the
    store, the Redis client, and (in workers) the runner lease, the control listener
    and the sweeper."""

    def __init__(self, owner: RoutiluxCelery) -> None:
        self.owner = owner
        self.pid = os.getpid()
        store = owner.store_spec
        self.store: Store = open_store(store) if isinstance(store, (str, os.PathLike)) else store
        self.redis = _redis_library.Redis.from_url(owner.redis_url)
        self.lock = threading.Lock()
        self.running: dict[str, _Running] = {}
        self.heartbeat: Optional[Heartbeat] = None
        self.stopped = threading.Event()
        self.threads: list[threading.Thread] = []

    # -- worker services -------------------------------------------------------

    def start_worker(self) -> str:
        """Start the lease, the control listener and the sweeper once; the runner id."""
        with self.lock:
            if self.heartbeat is None:
                runner_id = f"celery-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                self.heartbeat = Heartbeat(
                    self.store, runner_id,
                    interval=self.owner.heartbeat_interval,
                    on_beat=lambda: self._take_control_requests(runner_id),
                )  # fmt: skip
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                # Subscribed before any job is claimed here, so no control message
                # for a job of this process can be published unheard.
                pubsub.subscribe(_control_channel(self.owner.prefix))
                for target, name in ((self._listen, "control"), (self._sweep, "sweeper")):
                    args = (pubsub,) if target == self._listen else ()
                    thread = threading.Thread(
                        target=target, args=args, name=f"routilux-celery-{name}", daemon=True
                    )
                    thread.start()
                    self.threads.append(thread)
            return self.heartbeat.runner_id

    def _listen(self, pubsub: Any) -> None:
        for message in pubsub.listen():
            if self.stopped.is_set():
                return
            try:
                request = json.loads(message["data"])
                job_id = request["job_id"]
                action = request["action"]
            except (ValueError, KeyError, TypeError):
                logger.warning("ignored a malformed control message: %r", message)
                continue
            with self.lock:
                running = self.running.get(job_id)
            if running is not None:
                self.owner._control_running(self, running, action, request.get("reason", ""))

    def _take_control_requests(self, runner_id: str) -> None:
        """On the heartbeat thread: the store's control requests for this worker's
        jobs (``Store.request_control``, e.g. from the web UI), applied as the ones
        of the control channel are."""
        for job_id, action, reason in self.store.take_control_requests(runner_id):
            with self.lock:
                running = self.running.get(job_id)
            if running is not None:
                self.owner._control_running(self, running, action, reason)

    def _sweep(self) -> None:
        # Event.wait is the sweeper's clock; stop() sets it.
        while not self.stopped.wait(self.owner.sweep_interval):
            try:
                self.owner._sweep_once(self)
            except StoreError as exc:
                logger.warning("sweep failed: %s", exc)
            except _redis_library.RedisError as exc:
                logger.warning("sweep could not reach the broker: %s", exc)

    def stop(self) -> None:
        self.stopped.set()
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.redis.close()


class RoutiluxCelery:
    """Run the jobs of registered flows on the workers of a Celery ``app``.

    ``store``: a store URL (``sqlite:///jobs.db`` for several workers on one host,
    ``postgresql://...`` for several hosts) or an open :class:`~routilux.store.Store`
    (only for one process: a URL is opened once per process). ``redis_url``: the Redis
    server for notifications; by default the app's broker URL when it is Redis.

    Leases: every worker process heartbeats every ``heartbeat_interval`` seconds; its
    jobs are taken over once it has been silent ``stale_after`` seconds (at once when
    it ran on the same host and its PID is gone). Every ``sweep_interval`` seconds a
    worker re-sends the jobs whose owner died, and the unowned jobs nobody picked up
    for ``orphan_after`` seconds (their message was lost: a submitter killed between
    writing the row and sending). ``propagator``: carries trace context into the
    workers (:class:`TracePropagator`). ``prefix`` names the Redis channels.

    Configures the app for one-job-at-a-time workers: ``task_acks_late``,
    ``task_reject_on_worker_lost`` and ``worker_prefetch_multiplier=1``.
    """

    def __init__(
        self,
        app: Any,
        store: Union[str, os.PathLike[str], Store],
        *,
        redis_url: Optional[str] = None,
        task_name: str = "routilux.run_job",
        stale_after: float = 10.0,
        heartbeat_interval: float = 2.0,
        sweep_interval: float = 2.0,
        orphan_after: float = 60.0,
        propagator: Optional[TracePropagator] = None,
        prefix: str = "routilux",
    ) -> None:
        if not isinstance(app, _celery_library.Celery):
            raise InvalidArgumentError(
                f"RoutiluxCelery: app must be a celery.Celery, got {type(app).__name__}"
            )
        for name, value in (
            ("stale_after", stale_after),
            ("heartbeat_interval", heartbeat_interval),
            ("sweep_interval", sweep_interval),
            ("orphan_after", orphan_after),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InvalidArgumentError(
                    f"RoutiluxCelery: {name} must be a positive number of seconds, got {value!r}"
                )
        if heartbeat_interval >= stale_after:
            raise InvalidArgumentError(
                f"RoutiluxCelery: heartbeat_interval ({heartbeat_interval}) must be shorter "
                f"than stale_after ({stale_after}), or live workers lose their jobs"
            )
        if redis_url is None:
            broker = str(app.conf.broker_url or "")
            if not broker.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigError(
                    f"RoutiluxCelery: the app's broker {broker!r} is not Redis; pass "
                    "redis_url=... for the job notifications"
                )
            redis_url = broker
        if not isinstance(store, (str, os.PathLike)) and not isinstance(store, Store):
            raise InvalidArgumentError(
                f"RoutiluxCelery: store must be a store URL or a Store, got {store!r}"
            )
        self.app = app
        self.store_spec = store
        self.redis_url = redis_url
        self.task_name = task_name
        self.stale_after = float(stale_after)
        self.heartbeat_interval = float(heartbeat_interval)
        self.sweep_interval = float(sweep_interval)
        self.orphan_after = float(orphan_after)
        self.propagator = propagator
        self.prefix = prefix
        self.flows: dict[str, Flow] = {}
        self._process: Optional[_Process] = None
        self._process_lock = threading.Lock()
        # A worker runs one job at a time and gives it back to the broker if it dies.
        app.conf.update(
            task_acks_late=True,
            task_reject_on_worker_lost=True,
            worker_prefetch_multiplier=1,
        )
        self.task = app.task(
            name=task_name,
            bind=True,
            acks_late=True,
            reject_on_worker_lost=True,
            ignore_result=True,
        )(_task_body(self))
        # Worker services start with the worker (before its first job), so an idle
        # worker sweeps too: it is the one that finishes a dead worker's jobs.
        _celery_signals.worker_process_init.connect(self._on_worker_start, weak=False)
        _celery_signals.worker_ready.connect(self._on_worker_start, weak=False)
        _celery_signals.worker_shutdown.connect(self._on_worker_stop, weak=False)

    def __repr__(self) -> str:
        return f"RoutiluxCelery({self.app.main!r}, flows={sorted(self.flows)})"

    # -- set-up ----------------------------------------------------------------

    def register(self, flow: Flow) -> Flow:
        """Make ``flow`` runnable by its ``flow_id`` (do it in every process)."""
        if not isinstance(flow, Flow):
            raise InvalidArgumentError(f"register: expected a Flow, got {type(flow).__name__}")
        known = self.flows.get(flow.flow_id)
        if known is not None and known is not flow:
            raise FlowError(f"register: a flow with flow_id {flow.flow_id!r} is registered")
        own = _flow_store(flow)
        if own is not None and own.location != self.store.location:
            raise ConfigError(
                f"register: flow {flow.flow_id!r} journals to {own.location}, but this "
                f"RoutiluxCelery keeps its jobs in {self.store.location}: use one store"
            )
        self.flows[flow.flow_id] = flow
        return flow

    def _stale_after(self, flow_id: str) -> float:
        """How long a silent owner of the flow's jobs keeps them: a journaled job's
        owner is the journal's runner, which beats at the journal's own pace."""
        flow = self.flows.get(flow_id)
        if flow is not None and _flow_store(flow) is not None:
            return max(self.stale_after, JOURNAL_STALE_AFTER)
        return self.stale_after

    def _flow(self, flow_id: str, job_id: Optional[str] = None) -> Flow:
        flow = self.flows.get(flow_id)
        if flow is None:
            job = f" (job {job_id})" if job_id else ""
            raise FlowError(
                f"flow {flow_id!r}{job} is not registered with this RoutiluxCelery "
                f"(registered: {sorted(self.flows) or 'none'})"
            )
        return flow

    def _proc(self) -> _Process:
        """This process's store and Redis client (new ones after a fork)."""
        with self._process_lock:
            process = self._process
            if process is None or process.pid != os.getpid():
                process = self._process = _Process(self)
            return process

    @property
    def store(self) -> Store:
        """The store, as opened in this process."""
        return self._proc().store

    def _on_worker_start(self, *args: Any, **kwargs: Any) -> None:
        sender = kwargs.get("sender")
        app = getattr(sender, "app", None)
        if app is not None and app is not self.app:
            return
        self._proc().start_worker()

    def _on_worker_stop(self, *args: Any, **kwargs: Any) -> None:
        process = self._process
        if process is not None and process.pid == os.getpid():
            process.stop()

    def close(self) -> None:
        """Close this process's connections (the store, when opened from a URL)."""
        with self._process_lock:
            process, self._process = self._process, None
        if process is not None:
            process.stop()
            if isinstance(self.store_spec, (str, os.PathLike)):
                process.store.close()

    # -- submitting and waiting --------------------------------------------------

    def submit(
        self,
        flow_id: str,
        entry_routine_id: str,
        entry_params: Optional[dict[str, Any]] = None,
        *,
        job_id: Optional[str] = None,
    ) -> str:
        """Store a new job of ``flow_id`` and queue it; returns its id at once.

        The row is written first (its snapshot holds the entry delivery), then the
        message is sent: if this process dies in between, a worker's sweeper sends it
        after ``orphan_after`` seconds. ``job_id``: choose the id (default: a new one).
        """
        flow = self._flow(flow_id)
        routine = flow.routines.get(entry_routine_id)
        if routine is None or routine.get_slot("trigger") is None:
            raise FlowError(
                f"submit: flow {flow_id!r} has no entry routine {entry_routine_id!r} with a "
                "'trigger' slot"
            )
        if entry_params is not None and not isinstance(entry_params, dict):
            raise InvalidArgumentError(
                f"submit: entry_params for flow {flow_id!r} must be a dict, "
                f"got {type(entry_params).__name__}"
            )
        params = dict(entry_params or {})
        state = JobState(flow_id, history_limit=flow.history_limit, output_limit=flow.output_limit)
        if job_id is not None:
            state.job_id = job_id
        # A job that has not run yet is a paused one whose pending work is its entry
        # delivery: resuming it runs the trigger, and it keeps the id chosen here.
        state.status = "paused"
        state.current_routine_id = entry_routine_id
        state.pending_tasks = [
            {
                "slot_routine_id": entry_routine_id,
                "slot_name": "trigger",
                "data": params,
                "seq": 0,
                "entry": True,
            }
        ]
        state.task_seq = 1
        try:
            snapshot = state.serialize()
            json.dumps(snapshot)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"submit: entry_params of flow {flow_id!r} are not JSON-safe: {exc}"
            ) from None
        if _flow_store(flow) is None:
            self.store.create_job(state.job_id, flow_id, "pending", snapshot)
        else:
            # A journaled job as the engine's journal stores one: its entry delivery
            # is its one pending row, which the worker's resume(job_id) runs.
            state.pending_tasks = []
            state.status = "running"
            entry_row = {
                "seq": 0,
                "kind": "ready",
                "routine": entry_routine_id,
                "slot": "trigger",
                "data": params,
                "retries": 0,
                "due_at": None,
                "extra": {"entry": True},
            }
            self.store.create_job(state.job_id, flow_id, "running", state.serialize(), [entry_row])
        self._send(flow_id, state.job_id, entry_routine_id, params)
        return state.job_id

    def _send(
        self, flow_id: str, job_id: str, entry: Optional[str], params: Optional[dict[str, Any]]
    ) -> None:
        headers: dict[str, Any] = {}
        if self.propagator is not None:
            carrier: dict[str, str] = {}
            self.propagator.inject(carrier)
            headers[TRACE_HEADER] = carrier
        self.task.apply_async(args=(flow_id, job_id, entry, params), headers=headers)

    def wait(self, job_id: str, timeout: Optional[float] = None) -> JobState:
        """The job's JobState from the store, once it is finished, paused or waiting
        (or after ``timeout`` seconds: then as it is stored, still running).  A job
        waiting with its input stored already is not returned: it is being queued
        again to take that input.

        Woken by the workers' notifications (Redis pub/sub), never by polling."""
        self._wait_for(job_id, _settled, timeout)
        return self.store.load_job(job_id)

    def status(self, job_id: str) -> str:
        """The job's stored status."""
        return self.store.load(job_id).status

    @contextlib.contextmanager
    def _subscribed(self, job_id: str) -> Iterator[Any]:
        pubsub = self._proc().redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(_job_channel(self.prefix, job_id))
        try:
            yield pubsub
        finally:
            pubsub.close()

    def _wait_for(
        self, job_id: str, done: Callable[[JournaledJob], bool], timeout: Optional[float]
    ) -> str:
        """Block until the stored job satisfies ``done`` (or ``timeout``); its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._subscribed(job_id) as pubsub:
            # Subscribed first, then read: a change between the two is still heard.
            while True:
                job = self.store.load(job_id)
                status = job.status
                if done(job):
                    return status
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return status
                _next_message(pubsub, left if left is not None else 3600.0)

    def _publish(self, job_id: str, status: str) -> None:
        try:
            self._proc().redis.publish(
                _job_channel(self.prefix, job_id), json.dumps({"status": status})
            )
        except _redis_library.RedisError as exc:
            # The store holds the status; a waiter is only woken later (at its timeout).
            logger.warning("job %s: status %s not announced: %s", job_id, status, exc)

    # -- control -----------------------------------------------------------------

    def pause(self, job_id: str, reason: str = "", *, timeout: float = 30.0) -> JobState:
        """Pause the job wherever it runs; returns it once paused and written back.

        A queued job is paused before it starts; a running one stops starting
        deliveries, its running handlers finish, and its pending work is stored. A
        finished job raises :class:`~routilux.JobStateError`."""
        self._control(job_id, "pause", reason, timeout)
        return self.store.load_job(job_id)

    def cancel(self, job_id: str, reason: str = "", *, timeout: float = 30.0) -> JobState:
        """Cancel the job wherever it runs (a running worker hears it within a
        second); returns its JobState, ``cancelled``. A finished job raises
        :class:`~routilux.JobStateError`."""
        self._control(job_id, "cancel", reason, timeout)
        return self.store.load_job(job_id)

    def resume(self, job_id: str) -> None:
        """Queue a paused job again; returns at once (``wait()`` waits for it)."""
        job = self.store.load(job_id)
        if job.status != "paused":
            raise JobStateError(
                f"resume: job {job_id} of flow {job.flow_id!r} is {job.status}, not paused"
            )
        self._set_parked(job_id, "paused", "running")
        self._send(job.flow_id, job_id, None, None)

    def send_input(
        self, job_id: str, routine_id: str, slot_name: str, data: dict[str, Any]
    ) -> None:
        """Answer the job's open request for ``routine_id``'s ``slot_name`` from any
        process; a waiting job is queued again. Returns at once.

        ``data`` is checked against the request's schema here:
        :class:`~routilux.InvalidInputError` names the field, and the job keeps waiting.
        """
        job = self.store.load(job_id)
        where = f"job {job_id}: input for '{routine_id}'.'{slot_name}'"
        if job.status in FINISHED_STATUSES:
            raise JobStateError(f"{where}: the job is {job.status}")
        # Checked against the stored request; one an input already answers is closed.
        self.store.add_input(job_id, input_row(job, routine_id, slot_name, data))
        try:
            # Queued from here on: wait() must not return the waiting job it was.
            self._set_parked(job_id, "waiting", "running")
        except JobStateError:
            # Not waiting (any more), or held by the worker settling it: that worker
            # queues it again when it settles with this input unread (see
            # _queue_unread_input).
            return
        self._send(job.flow_id, job_id, None, None)

    def _claim_for_control(self, job_id: str) -> Optional[int]:
        # The control side never heartbeats: to others it is dead at once, so a
        # worker is never kept from a job the controller touched.
        stale_after = self._stale_after(self.store.load(job_id).flow_id)
        return self.store.claim(job_id, f"control-{uuid.uuid4().hex[:12]}", stale_after)

    def _set_parked(self, job_id: str, expected: str, status: str) -> None:
        """Move a job nobody runs from ``expected`` to ``status`` (and release it)."""
        while True:
            epoch = self._claim_for_control(job_id)
            job = self.store.load(job_id)
            if job.status != expected:
                if epoch is not None:
                    self.store.release(job_id, epoch)
                raise JobStateError(
                    f"job {job_id} of flow {job.flow_id!r} is {job.status}, not {expected}"
                )
            if epoch is None:
                if job.owner is not None:
                    # A live runner holds it (a worker taking it up right now).
                    raise JobStateError(
                        f"job {job_id} of flow {job.flow_id!r} is held by runner {job.owner!r}"
                    )
                continue  # its row was held by another process for an instant
            try:
                self.store.set_status(job_id, epoch, status)
                self.store.release(job_id, epoch)
            except StaleEpochError:
                continue
            self._publish(job_id, status)
            return

    def _control(self, job_id: str, action: str, reason: str, timeout: float) -> None:
        """Pause or cancel: directly in the store when no live worker owns the job,
        else through the control channel to the worker that runs it."""
        target = "paused" if action == "pause" else "cancelled"
        deadline = time.monotonic() + timeout
        message = json.dumps({"job_id": job_id, "action": action, "reason": reason})
        next_request = 0.0
        with self._subscribed(job_id) as pubsub:
            first = True
            while True:
                job = self.store.load(job_id)
                if not first and job.status == target:
                    return  # done by a worker that heard the request
                if action == "pause" and job.status in ("paused", "waiting"):
                    return  # parked already: holds no worker, nothing to pause
                first = False
                if job.status in FINISHED_STATUSES:
                    raise JobStateError(
                        f"{action}: job {job_id} of flow {job.flow_id!r} is {job.status}"
                    )
                epoch = self._claim_for_control(job_id)
                if epoch is not None:
                    try:
                        if action == "cancel":
                            self.store.set_status(job_id, epoch, "cancelled", waiting_for=None)
                        else:
                            self.store.set_status(job_id, epoch, "paused")
                            self.store.release(job_id, epoch)
                    except StaleEpochError:
                        continue  # a worker claimed it meanwhile: ask that worker
                    self._publish(job_id, target)
                    return
                # A live worker owns it: tell it. The worker that claimed it a moment
                # ago may not have registered it yet, so ask again every second until
                # the store says so (a worker ignores a request it is acting on).
                now = time.monotonic()
                if now >= next_request:
                    self._proc().redis.publish(_control_channel(self.prefix), message)
                    next_request = now + 1.0
                left = deadline - now
                if left <= 0:
                    raise TimeoutError(
                        f"{action}: job {job_id} did not become {target} in {timeout} s"
                    )
                _next_message(pubsub, min(next_request - now, left))

    def _control_running(
        self, process: _Process, running: _Running, action: str, reason: str
    ) -> None:
        """On a worker: apply a control request to a job this process runs now."""
        state = running.job_state
        try:
            if action == "cancel":
                running.flow.cancel(state, reason)
                # A final status never changes: store it now, not when the handlers
                # that still run return (which may be much later). A journaled job's
                # epoch is its journal's: the one stored, as this process owns it.
                epoch = running.epoch or process.store.load(state.job_id).epoch
                process.store.set_status(state.job_id, epoch, "cancelled", waiting_for=None)
                self._publish(state.job_id, "cancelled")
            elif action == "pause":
                if running.pausing:
                    return  # a repeated request for a pause under way
                running.pausing = True
                # Not on the listener thread: pause() waits for the running handlers.
                # The job's own thread settles the run and writes the paused state back
                # (see _run_claimed).
                threading.Thread(
                    target=running.flow.pause, args=(state, reason), daemon=True
                ).start()
            else:
                logger.warning("job %s: unknown control action %r", state.job_id, action)
        except JobStateError as exc:
            logger.info("job %s: %s ignored: %s", state.job_id, action, exc)
        except StoreError as exc:
            logger.warning("job %s: %s not stored: %s", state.job_id, action, exc)

    # -- the worker ----------------------------------------------------------------

    def run_job(self, flow_id: str, job_id: str) -> Optional[str]:
        """What a worker does with one message: claim the job, run it until it
        settles, write it back. Returns the status stored, or None when the message
        was a no-op (the job is finished, parked, or another live runner owns it)."""
        process = self._proc()
        runner_id = process.start_worker()
        flow = self._flow(flow_id, job_id)
        if _flow_store(flow) is not None:
            return self._run_journaled(process, flow, job_id)
        epoch = self._claim_for_run(process, flow, job_id, runner_id)
        if epoch is None:
            logger.debug("job %s: finished or owned by a live runner; message ignored", job_id)
            return None
        try:
            return self._run_claimed(process, flow, job_id, epoch)
        except StaleEpochError:
            logger.warning(
                "job %s: taken over by another runner; this run's result dropped", job_id
            )
            return None

    def _run_claimed(self, process: _Process, flow: Flow, job_id: str, epoch: int) -> Optional[str]:
        store = process.store
        job = store.load(job_id)
        inputs = [task for task in job.tasks if task["kind"] == "input"]
        if job.status == "paused" or (job.status == "waiting" and not inputs):
            # Parked on purpose (a late or duplicated message): leave it to resume().
            store.release(job_id, epoch)
            return None
        if job.flow_id != flow.flow_id:
            store.release(job_id, epoch)
            raise FlowError(f"job {job_id} belongs to flow {job.flow_id!r}, not {flow.flow_id!r}")
        state = JobState(job.flow_id).deserialize(job.snapshot)
        state.job_id = job_id
        saved = state.status
        if saved in FINISHED_STATUSES:
            # The worker before died between writing the snapshot and the status.
            self._store_settled(process, state, epoch, job.commit_seq, [])
            return saved
        if job.status != "running":
            store.set_status(job_id, epoch, "running")
            self._publish(job_id, "running")
        hooks = [_StatusHook(self._publish)]
        running = _Running(flow, state, epoch)
        with process.lock:
            process.running[job_id] = running
        consumed: list[int] = []
        try:
            with self._trace_context():
                if saved == "waiting":
                    for task in inputs:
                        consumed.append(int(task["seq"]))
                        try:
                            flow.send_input(
                                state, task["routine"], task["slot"], task["data"], wait=False
                            )
                        except InvalidInputError as exc:
                            # Already applied by a run that died before consuming it
                            # (its request is closed), or no longer asked for.
                            logger.info(
                                "job %s: input %s not delivered: %s", job_id, task["seq"], exc
                            )
                    if state.status == "running":
                        state.wait_for_completion()
                elif saved == "paused":
                    flow.resume(state, hooks=hooks)
                else:
                    raise JobStateError(
                        f"job {job_id} of flow {flow.flow_id!r}: its stored snapshot is "
                        f"{saved!r}, which no worker can continue"
                    )
        finally:
            with process.lock:
                process.running.pop(job_id, None)
        return self._store_settled(process, state, epoch, job.commit_seq, consumed)

    def _claim_for_run(
        self, process: _Process, flow: Flow, job_id: str, runner_id: str
    ) -> Optional[int]:
        """The epoch of this worker's claim, or None when the job is not to be run
        here (finished, or owned by a live runner).

        A claim also comes back empty while another process holds the job's row for
        an instant (PostgreSQL's ``SKIP LOCKED``: a reader, a committing owner): a
        job that is still claimable then is claimed again, and if the row stays held,
        :class:`_RowBusy` asks Celery to deliver the message again a moment later."""
        store = process.store
        for _ in range(3):
            epoch = store.claim(job_id, runner_id, self.stale_after)
            if epoch is not None:
                return epoch
            job = store.load(job_id)
            if job.status in FINISHED_STATUSES:
                return None
            if job.owner is not None and job_id not in store.claimable_jobs(
                flow.flow_id, self.stale_after
            ):
                return None  # a parked job with a live owner, or a running one
            if job.owner is None and job.status in ("paused", "waiting"):
                return None  # parked and released: left to resume() / send_input()
        raise _RowBusy(job_id)

    def _run_journaled(self, process: _Process, flow: Flow, job_id: str) -> Optional[str]:
        """A job of a flow with a store of its own: the engine's journal commits every
        delivery, and ``flow.resume(job_id)`` takes the job over from its last commit
        (claim, epoch fencing and write-back are the journal's)."""
        job = process.store.load(job_id)
        if job.status in FINISHED_STATUSES or job.status in ("paused", "waiting"):
            return None  # a late or duplicated message: nothing to run
        hook = _JournaledRun(self, process, flow)
        try:
            with self._trace_context():
                state = flow.resume(job_id, hooks=[hook])
        except JobStateError as exc:
            # Held by another live runner (a duplicate), or finished meanwhile -- or
            # its row was held for an instant by another process: then again later.
            job = process.store.load(job_id)
            if job.status not in FINISHED_STATUSES and job_id in process.store.claimable_jobs(
                flow.flow_id, self._stale_after(flow.flow_id)
            ):
                raise _RowBusy(job_id) from exc
            logger.debug("job %s: not taken over here: %s", job_id, exc)
            return None
        finally:
            with process.lock:
                process.running.pop(job_id, None)
        self._publish(job_id, state.status)
        if state.status == "waiting":
            self._queue_unread_input(process, flow.flow_id, job_id)
        return state.status

    def _queue_unread_input(self, process: _Process, flow_id: str, job_id: str) -> None:
        """After a run settled 'waiting' and released the job: queue it again when the
        store holds input for it. send_input, finding the job held by this run, stored
        its input and left the resend to this worker; looking only after the release
        means an input stored later finds the job released and is queued by its
        send_input, so every input is queued by one of the two."""
        if not any(task["kind"] == "input" for task in process.store.load(job_id).tasks):
            return
        try:
            # Queued from here on, like send_input does: wait() must not return the
            # waiting job it was.
            self._set_parked(job_id, "waiting", "running")
        except JobStateError:
            return  # moved on already (a send_input queued it, a cancel): not ours to send
        self._send(flow_id, job_id, None, None)

    def _store_settled(
        self, process: _Process, state: JobState, epoch: int, commit_seq: int, consumed: list[int]
    ) -> str:
        """Write a settled JobState back: snapshot first, then the row's status (and
        the inputs it consumed) in one commit; then release a parked job."""
        store = process.store
        job_id = state.job_id
        status = state.status
        store.write_snapshot(job_id, epoch, state.serialize(), commit_seq)
        waiting = list(state.waiting_for) if status == "waiting" else None
        store.commit(
            job_id,
            epoch,
            [
                {
                    "seq": commit_seq + 1,
                    "consumed": None,
                    "ops": [],
                    "tasks_added": [],
                    "tasks_removed": consumed,
                    "status": status,
                    "waiting_for": {"set": waiting} if waiting else {"clear": True},
                }
            ],
        )
        if status not in FINISHED_STATUSES:
            store.release(job_id, epoch)
        self._publish(job_id, status)
        if status == "waiting":
            self._queue_unread_input(process, state.flow_id, job_id)
        return status

    @contextlib.contextmanager
    def _trace_context(self) -> Iterator[None]:
        carrier = _current_trace_carrier()
        if self.propagator is None or carrier is None:
            yield
            return
        with self.propagator.attach(carrier):
            yield

    def _sweep_once(self, process: _Process) -> None:
        """Re-send the jobs whose owner died, and the unowned ones left unsent."""
        store = process.store
        now = time.time()
        for flow_id in list(self.flows):
            stale_after = self._stale_after(flow_id)
            claimable = store.claimable_jobs(flow_id, stale_after)
            if not claimable:
                continue
            wanted = set(claimable)
            for summary in store.list_jobs(
                flow_id=flow_id, status=["pending", "running"], limit=10_000
            ):
                if summary.job_id not in wanted:
                    continue
                if summary.owner is None and now - summary.updated_at < self.orphan_after:
                    continue  # queued a short while ago: its message is on the way
                # Claiming (and releasing) decides which sweeper re-sends it and
                # restarts its orphan clock, so it is sent once per orphan_after.
                epoch = store.claim(summary.job_id, f"sweeper-{os.getpid()}", stale_after)
                if epoch is None:
                    continue
                store.release(summary.job_id, epoch)
                logger.info("job %s: owner %s is gone; re-sent", summary.job_id, summary.owner)
                self._send(flow_id, summary.job_id, None, None)


def _next_message(pubsub: Any, timeout: float) -> Optional[dict[str, Any]]:
    """The next notification on ``pubsub``, blocking on its socket up to ``timeout``
    seconds; None when none came. (``get_message`` also returns None at once for the
    subscription's own confirmation, which is not a notification.)"""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        message: Optional[dict[str, Any]] = pubsub.get_message(timeout=left)
        if message is not None:
            return message


class _RowBusy(Exception):
    """Internal: the job's row stayed held by another process; deliver again later."""


# The trace carrier of the message the current thread's task runs (set by the task).
_TRACE = threading.local()


def _current_trace_carrier() -> Optional[Mapping[str, str]]:
    carrier = getattr(_TRACE, "carrier", None)
    return carrier if isinstance(carrier, Mapping) else None


def _task_body(rc: RoutiluxCelery) -> Callable[..., Optional[str]]:
    """The Celery task: its arguments are the whole message."""

    def run_job(
        task: Any,
        flow_id: str,
        job_id: str,
        entry: Optional[str] = None,
        params: Optional[dict[str, Any]] = None,
    ) -> Optional[str]:
        # Custom headers surface as request attributes (and, in some versions, under
        # request.headers): look in both.
        request = task.request
        carrier = getattr(request, TRACE_HEADER, None)
        if carrier is None:
            carrier = (getattr(request, "headers", None) or {}).get(TRACE_HEADER)
        _TRACE.carrier = carrier
        try:
            return rc.run_job(flow_id, job_id)
        except _RowBusy as busy:
            # Celery sends the message again (and acknowledges this one).
            raise task.retry(countdown=0.1, max_retries=100) from busy
        finally:
            _TRACE.carrier = None

    run_job.__name__ = "run_job"
    return run_job

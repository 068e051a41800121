"""What one process keeps per job store for its durable jobs: :class:`Durable` -- the
runner id (registered with host and PID, its lease kept fresh by a heartbeat thread),
the group-commit writers (one per durability mode) and the journals of the jobs this
process owns.  Made once per store object (:meth:`Durable.of`) and shut down at
interpreter exit: writers flushed, runner removed (its jobs become claimable at once).

Other processes reach the jobs this process runs through the store: a control request
(:meth:`~routilux.store.Store.request_control`, e.g. the web UI's pause button) is
taken by the heartbeat thread after each beat, and the job is paused or cancelled on a
thread of its own through the flow that runs it, as a call in this process would.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import uuid
from typing import TYPE_CHECKING

from ..exceptions import StoreError
from ..store import JournalWriter, Store
from ..store.lease import Heartbeat

if TYPE_CHECKING:
    from ..job_state import JobState
    from .journal import JobJournal
    from .run import JobRun

logger = logging.getLogger("routilux.engine.journal")

#: Seconds between two heartbeats of a runner.
HEARTBEAT_INTERVAL = 5.0


class Durable:
    """What this process keeps for one store: its runner id (registered with host
    and PID, heartbeating from a daemon thread), the writers (one per durability
    mode) and the journals of the jobs it runs.  Made once per store
    (:meth:`of`); shut down at interpreter exit (writers flushed, runner removed)."""

    _registry: dict[int, Durable] = {}
    _registry_lock = threading.Lock()

    def __init__(self, store: Store) -> None:
        self.store = store
        self.runner_id = f"runner-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()
        self._writers: dict[str, JournalWriter] = {}
        self._heartbeat: Heartbeat | None = None
        #: job id -> its journal, while this process owns the job.
        self.jobs: dict[str, JobJournal] = {}
        self._pid = os.getpid()

    @classmethod
    def of(cls, store: Store) -> Durable:
        """The one :class:`Durable` of ``store`` in this process."""
        # Asked once per job: the usual answer without the lock or a getpid() call
        # (the PID is kept up to date across fork()).
        durable = cls._registry.get(id(store))
        if durable is not None and durable.store is store and durable._pid == _PID[0]:
            return durable
        with cls._registry_lock:
            durable = cls._registry.get(id(store))
            if durable is None or durable.store is not store or durable._pid != os.getpid():
                durable = cls._registry[id(store)] = Durable(store)
            return durable

    def start(self) -> str:
        """Register the runner and start its heartbeat (once); returns the runner id."""
        if self._heartbeat is not None:  # started already (set once, under the lock)
            return self.runner_id
        with self._lock:
            if self._heartbeat is None:
                self._heartbeat = Heartbeat(
                    self.store,
                    self.runner_id,
                    interval=HEARTBEAT_INTERVAL,
                    on_beat=self._take_control_requests,
                )
        return self.runner_id

    def _take_control_requests(self) -> None:
        """On the heartbeat thread: act on the pause/cancel requests other processes
        left in the store for this runner's jobs (a pause waits for running handlers,
        so each is done on a thread of its own, never on the heartbeat's)."""
        try:
            requests = self.store.take_control_requests(self.runner_id)
        except StoreError as exc:
            logger.warning("control requests of runner %s: %s", self.runner_id, exc)
            return
        for job_id, action, reason in requests:
            with self._lock:
                journal = self.jobs.get(job_id)
            run = journal.run if journal is not None else None
            if run is None or journal is None:
                continue  # no longer this process's job
            threading.Thread(
                target=_control,
                args=(run, journal.job_state, action, reason),
                name=f"routilux-control-{action}",
                daemon=True,
            ).start()

    def writer(self, durability: str) -> JournalWriter:
        """The writer of ``durability`` ("batch" or "sync"), started on first use."""
        writer = self._writers.get(durability)  # one dict read: the usual case, lock-free
        if writer is not None:
            return writer
        with self._lock:
            writer = self._writers.get(durability)
            if writer is None:
                writer = JournalWriter(
                    self.store,
                    durability=durability,
                    on_error=self._writer_failed,
                    name=f"routilux-journal-{durability}",
                )
                self._writers[durability] = writer
            return writer

    def _writer_failed(self, job_id: str, error: StoreError) -> None:
        """On the thread that wrote them: a job's records were refused; fail the job
        (on a thread of its own: failing takes the job's lock, and the writer must go
        on)."""
        with self._lock:
            journal = self.jobs.get(job_id)
        if journal is not None:
            threading.Thread(
                target=journal.store_failed,
                args=(error,),
                name="routilux-journal-fail",
                daemon=True,
            ).start()

    def flush(self) -> None:
        """Wait until every record put so far is committed (errors go to the jobs)."""
        with self._lock:
            writers = list(self._writers.values())
        for writer in writers:
            try:
                writer.flush()
            except StoreError:
                pass  # reported to the job it belongs to (store_failed)

    def shutdown(self) -> None:
        """Flush and stop the writers; stop the heartbeat and forget the runner."""
        with self._lock:
            writers, self._writers = list(self._writers.values()), {}
            heartbeat, self._heartbeat = self._heartbeat, None
        for writer in writers:
            try:
                writer.close()
            except StoreError as exc:
                logger.warning("journal of store %s: %s", self.store.location, exc)
        if heartbeat is not None:
            try:
                heartbeat.stop(remove=True)
            except StoreError as exc:
                # Harmless: a runner row left behind names a PID that is gone, so
                # claims treat it as dead (the store may also be closed by now).
                logger.info("runner %s not removed: %s", self.runner_id, exc)

    @classmethod
    def shutdown_all(cls) -> None:
        """At interpreter exit: shut down every store's runner of this process."""
        with cls._registry_lock:
            durables = [d for d in cls._registry.values() if d._pid == os.getpid()]
            cls._registry.clear()
        for durable in durables:
            durable.shutdown()


def _control(run: JobRun, job_state: JobState, action: str, reason: str) -> None:
    """Pause or cancel ``job_state`` through the flow its run belongs to; a job that
    has meanwhile finished (or paused) refuses, which is logged and harmless."""
    flow = run.flow
    try:
        if action == "pause":
            flow.pause(job_state, reason or "paused from another process")
        else:
            flow.cancel(job_state, reason or "cancelled from another process")
    except Exception as exc:
        logger.info("%s of job %s from another process: %s", action, job_state.job_id, exc)


#: This process's PID, kept current in a forked child (so :meth:`Durable.of` need not
#: ask the kernel on every job).
_PID = [os.getpid()]


def _forked() -> None:
    _PID[0] = os.getpid()


os.register_at_fork(after_in_child=_forked)
atexit.register(Durable.shutdown_all)

"""One watcher of the store shared by every live stream of the web UI.

A daemon thread asks the store every ``interval`` seconds which job rows changed
(:meth:`~routilux.store.Store.jobs_changed_since`: one indexed query, nothing when
nothing changed) -- whoever changed them: this process, another one, a Celery worker.
It keeps

* the **jobs feed**: ``created`` and ``status`` events (a job appeared; its status or
  its open requests changed), numbered by one sequence and kept in a ring buffer, so a
  client reconnecting with ``Last-Event-ID`` gets what it missed (or a ``reset`` when
  it missed more than the buffer holds, or the id is from an earlier server: the
  sequence starts at the server's start time in milliseconds, so ids of an earlier
  server are older than its buffer);
* per job the version the store has (commit seq, status, update time), and the last
  load of each job some stream watches, shared by the streams of that job.

Streams wait on an :class:`asyncio.Event` of their own, set from the watcher's thread
(``call_soon_threadsafe``) when something they show changed; the browser never polls.
:meth:`StoreWatcher.close` wakes every stream for the last time (server shutdown).

The rows' ``updated_at`` is each writer's clock: the watcher reads back a second
(:data:`SLACK`) before the newest change it saw, so a transaction that committed late
is not missed; writers on other hosts need clocks in step to within that.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any, Optional

from routilux.exceptions import JobNotFoundError, StoreError
from routilux.store import JournaledJob, Store

from .views import summary_view

logger = logging.getLogger("routilux.ui")

#: Seconds re-read before the newest change seen (late commits of other writers).
SLACK = 1.0


class Subscriber:
    """One stream's wake-up: an asyncio event of the stream's loop, and which job it
    watches (None: the jobs feed)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, job_id: Optional[str]) -> None:
        self.loop = loop
        self.job_id = job_id
        self.event = asyncio.Event()

    def wake(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # the stream's loop is closed: nobody listens any more
            pass

    async def wait(self, timeout: float) -> bool:
        """Wait until woken (True) or ``timeout`` seconds (False)."""
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        self.event.clear()
        return True


class StoreWatcher:
    """Polls ``store`` for changed jobs from one daemon thread (see the module
    docstring); ``buffer`` events of the jobs feed are kept for replay."""

    def __init__(self, store: Store, *, interval: float = 0.25, buffer: int = 1000) -> None:
        self.store = store
        self.interval = interval
        self.closed = False
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._seq = int(time.time() * 1000)
        self._feed: deque[tuple[int, str, dict[str, Any]]] = deque(maxlen=buffer)
        # job id -> (status, commit seq, updated_at, number of open requests)
        self._versions: dict[str, tuple[str, int, float, int]] = {}
        self._loads: dict[str, JournaledJob] = {}
        self._subscribers: set[Subscriber] = set()
        self._started_at = time.time()
        self._cursor = self._started_at
        self._thread: Optional[threading.Thread] = None

    # -- lifetime -------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self.closed:
                return
            self._thread = threading.Thread(target=self._run, name="routilux-ui-watch", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop polling and wake every stream so it ends."""
        with self._lock:
            self.closed = True
            subscribers = list(self._subscribers)
            thread = self._thread
        self._wakeup.set()
        for subscriber in subscribers:
            subscriber.wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def poke(self) -> None:
        """Poll now (after this process changed a job: its page updates at once)."""
        self._wakeup.set()

    # -- streams --------------------------------------------------------------

    def subscribe(self, job_id: Optional[str]) -> Subscriber:
        subscriber = Subscriber(asyncio.get_running_loop(), job_id)
        with self._lock:
            self._subscribers.add(subscriber)
        self.start()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(subscriber)
            if subscriber.job_id is not None and not any(
                other.job_id == subscriber.job_id for other in self._subscribers
            ):
                self._loads.pop(subscriber.job_id, None)

    @property
    def last_seq(self) -> int:
        """The id of the newest event of the jobs feed."""
        with self._lock:
            return self._seq

    def feed_after(self, seq: int) -> Optional[list[tuple[int, str, dict[str, Any]]]]:
        """The feed's events after ``seq``; None when some of them are gone (or
        ``seq`` is not one of this watcher's): the client needs a reset."""
        with self._lock:
            if seq > self._seq:
                return None
            if seq == self._seq:
                return []
            if not self._feed or self._feed[0][0] > seq + 1:
                return None
            return [item for item in self._feed if item[0] > seq]

    def load(self, job_id: str) -> JournaledJob:
        """The job as the store has it now, shared by the streams of the job: loaded
        again only when the watcher saw it change since the last load."""
        with self._lock:
            cached = self._loads.get(job_id)
            version = self._versions.get(job_id)
        if cached is not None and version is not None and _version(cached) == version:
            return cached
        job = self.store.load(job_id)
        with self._lock:
            if any(s.job_id == job_id for s in self._subscribers):
                self._loads[job_id] = job
        return job

    # -- the watcher thread ---------------------------------------------------

    def _run(self) -> None:
        while not self.closed:
            try:
                self._poll()
            except (StoreError, JobNotFoundError) as exc:
                logger.warning("web UI: watching store %s: %s", self.store.location, exc)
            except Exception:  # keep watching: a stream without updates is worse
                logger.exception("web UI: watching store %s failed", self.store.location)
            self._wakeup.wait(self.interval)
            self._wakeup.clear()

    def _poll(self) -> None:
        since = self._cursor - SLACK
        while True:
            rows = self.store.jobs_changed_since(since, limit=1000)
            changed_jobs: set[str] = set()
            feed_changed = False
            with self._lock:
                for summary, commit_seq in rows:
                    version = (
                        summary.status,
                        commit_seq,
                        summary.updated_at,
                        len(summary.waiting_for or []),
                    )
                    old = self._versions.get(summary.job_id)
                    if old == version:
                        continue
                    self._versions[summary.job_id] = version
                    changed_jobs.add(summary.job_id)
                    if old is None and summary.created_at >= self._started_at - SLACK:
                        self._publish("created", summary_view(summary))
                        feed_changed = True
                    elif old is None or (old[0], old[3]) != (version[0], version[3]):
                        self._publish("status", summary_view(summary))
                        feed_changed = True
                if rows:
                    self._cursor = max(self._cursor, rows[-1][0].updated_at)
                subscribers = [
                    s
                    for s in self._subscribers
                    if (s.job_id is None and feed_changed) or s.job_id in changed_jobs
                ]
            for subscriber in subscribers:
                subscriber.wake()
            if len(rows) < 1000 or self.closed or rows[-1][0].updated_at == since:
                return
            since = rows[-1][0].updated_at  # a full page: read on from its last change

    def _publish(self, name: str, data: dict[str, Any]) -> None:
        """Append an event to the jobs feed (lock held)."""
        self._seq += 1
        self._feed.append((self._seq, name, data))


def _version(job: JournaledJob) -> tuple[str, int, float, int]:
    return (job.status, job.commit_seq, job.updated_at, len(job.waiting_for or []))

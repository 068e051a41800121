"""The group-commit journal writer: one thread that turns many small records into few
transactions.

A caller hands over a job's records with :meth:`JournalWriter.put` (one record) or
:meth:`JournalWriter.put_many` (records that must share one transaction) and goes on;
the writer thread takes everything queued (up to ``max_batch`` entries, waiting at
most ``max_delay`` seconds for a batch to fill) and commits it with one
:meth:`~routilux.store.Store.commit_many` — records of several jobs share the
transaction, each job's in the order they were put; the records of one ``put_many``
are never split between transactions. :meth:`JournalWriter.put_snapshot` queues a
snapshot, written after every record put before it (in the same transaction as the
records queued before it when the store offers ``commit_then_snapshot``, as the
library's SQL stores do). :meth:`flush` waits until
everything put before it is durable; with ``durability="sync"`` every ``put`` waits for
its own record. A caller that waits (``flush``, a sync ``put``) writes the next batch
on its own thread when no batch is being written: no hand-off to the writer thread
and back. A put does not wake the thread either while it is awake: it looks again
by itself once the first queued record is ``max_delay`` old, and parks only after a
whole ``max_delay`` without records (then the next put wakes it). So a short job
whose caller flushes before then (``execute()``) costs the thread no wake-up.

A writer thread can fall behind: on a busy machine the job's own threads take the
interpreter from it while records pile up. :attr:`JournalWriter.behind` says so (a
batch is queued whose first record is ``max_lag`` seconds old); the engine's journal
then writes the backlog itself before the job goes on (see ``flush``), so a job never
runs far ahead of what is durable -- what a crash can take, and the memory the queue
holds, stay bounded.

Nothing fails silently: a batch that the store refuses is retried job by job (so only
the job at fault is hit), and a job's error is raised from every later ``put`` for that
job, once from the next :meth:`flush`, and passed to ``on_error(job_id, error)``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional, Union, cast

from routilux.exceptions import StoreError

from ._base import BuiltRecords, DeltaRecord, Store, delta_of

_log = logging.getLogger("routilux.store")

#: ``on_error(job_id, error)``: called when a job's records fail, on the thread that
#: wrote them (the writer thread, or a caller waiting for them: see ``_help``).
ErrorCallback = Callable[[str, StoreError], None]


class _Snapshot:
    """A queued :meth:`Store.write_snapshot` (see :meth:`JournalWriter.put_snapshot`)."""

    __slots__ = ("snapshot", "upto_seq")

    def __init__(self, snapshot: Mapping[str, Any], upto_seq: int) -> None:
        self.snapshot = snapshot
        self.upto_seq = upto_seq


class OpenRecords(BuiltRecords):
    """A group of one job's records that stays open after it is queued
    (:meth:`JournalWriter.put_open`): its owner appends records to it, under
    ``lock`` and while ``open``, until the writer takes it for a transaction and
    closes it (then the owner starts a new group).  So a job that ends a delivery
    every few microseconds pays one append per record, not one queue entry."""

    __slots__ = ("lock", "open")

    def __init__(self, records: Sequence[Any] = ()) -> None:
        super().__init__(records)
        self.lock = threading.Lock()
        self.open = True


class _Release:
    """A queued :meth:`Store.release` (see :meth:`JournalWriter.put_release`)."""

    __slots__ = ()


_RELEASE = _Release()

#: What one queue entry carries: a group of records (one transaction), a snapshot or
#: a release of the job's ownership.
_Payload = Union[list[DeltaRecord], _Snapshot, _Release]
_Entry = tuple[int, str, int, _Payload]


class JournalWriter:
    """A single writer thread committing :data:`DeltaRecord` batches to ``store``.

    ``durability``: ``"batch"`` (default: ``put`` returns at once; records become
    durable within ``max_delay`` or at the next ``flush``) or ``"sync"`` (``put``
    returns once its record is committed). ``max_batch`` records at most per
    transaction (``put_many`` counts as one). Records must be put in each job's seq
    order (the store checks it). ``max_lag``: how old the first queued record may
    grow before :attr:`behind` says the thread has fallen behind.

    The writer never touches an asyncio loop; from a coroutine await
    :meth:`flush_async`, which waits in a worker thread.
    """

    def __init__(
        self,
        store: Store,
        *,
        durability: str = "batch",
        max_batch: int = 64,
        max_delay: float = 0.002,
        max_lag: float = 0.01,
        on_error: Optional[ErrorCallback] = None,
        name: str = "routilux-journal",
    ) -> None:
        if durability not in ("batch", "sync"):
            raise StoreError(
                f"JournalWriter: durability must be 'batch' or 'sync', got {durability!r}"
            )
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise StoreError(
                f"JournalWriter: max_batch must be a positive integer, got {max_batch!r}"
            )
        if (
            isinstance(max_delay, bool)
            or not isinstance(max_delay, (int, float))
            or not 0 <= max_delay <= 10
        ):
            raise StoreError(f"JournalWriter: max_delay must be 0..10 seconds, got {max_delay!r}")
        if (
            isinstance(max_lag, bool)
            or not isinstance(max_lag, (int, float))
            or not 0 <= max_lag <= 60
        ):
            raise StoreError(f"JournalWriter: max_lag must be 0..60 seconds, got {max_lag!r}")
        self.store = store
        # The store's commit_then_snapshot when it folds (asked once: a store's
        # class does not change), else None.
        fold = getattr(store, "commit_then_snapshot", None)
        self._fold: Optional[Callable[..., None]] = (
            fold if fold is not None and getattr(store, "folds_snapshots", False) else None
        )
        self.durability = durability
        self.max_batch = max_batch
        self.max_delay = float(max_delay)
        self.max_lag = float(max_lag)
        #: True while the queue holds a batch that waited ``max_lag`` seconds or more
        #: (the thread is behind); read without the lock by a job between deliveries,
        #: which then writes the backlog itself (:meth:`flush`).
        self.behind = False
        self.on_error = on_error
        # The condition's own lock, taken directly (``with self._mutex``) where
        # nothing waits: a C-level enter instead of Condition's Python-level one.
        self._mutex = threading.RLock()
        self._cond = threading.Condition(self._mutex)  # callers wait for their records
        self._work = threading.Condition(self._mutex)  # the thread waits for work
        self._queue: deque[_Entry] = deque()
        self._put_count = 0  # entries accepted so far (the ticket of the latest)
        self._done_count = 0  # every entry with a ticket <= this has been handled
        self._urgent = 0  # callers waiting now: do not hold a batch back for them
        self._sleeping = 0  # callers blocked in _cond.wait(): a settled batch wakes them
        # A batch is being written (by the thread, or by a caller that waits for it:
        # see _help). One at a time, in queue order.
        self._busy = False
        # When the oldest queued entry was queued (0.0: write it at once), and whether
        # the thread waits without a timeout (then a put must wake it).
        self._first_at = 0.0
        self._parked = False
        self._failed: dict[str, StoreError] = {}  # job -> the error that stopped it
        self._failed_tickets: dict[int, StoreError] = {}  # for sync puts
        self._unreported: deque[tuple[str, StoreError]] = deque()
        self._closing = False
        self._closed = False
        #: Transactions committed and records in them (for tests and benchmarks).
        self.transactions = 0
        self.records_written = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- callers ---------------------------------------------------------------

    def put(self, job_id: str, epoch: int, record: DeltaRecord) -> None:
        """Queue ``record`` for ``job_id`` (under ``epoch``).

        Raises the error that stopped this job's journal earlier, or (once) an error of
        another job not yet reported; in ``"sync"`` mode also this record's own.
        """
        self._put(job_id, epoch, [record])

    def put_many(
        self, job_id: str, epoch: int, records: Sequence[DeltaRecord], *, wait: bool = True
    ) -> None:
        """Queue ``records`` for ``job_id``, to be committed in ONE transaction (a
        group whose records must become durable together). Raises as :meth:`put`.

        ``wait=False`` (``durability="sync"`` only; batch puts never wait): queue them
        without waiting, for a caller that waits for what it puts next -- a job's
        last records and its final snapshot, then committed in one transaction."""
        if records:
            # BuiltRecords (the engine's journal) keep their type: the store then
            # checks only their seqs.
            self._put(
                job_id,
                epoch,
                records if type(records) is BuiltRecords else list(records),
                wait,
            )

    def put_open(self, job_id: str, epoch: int, group: OpenRecords) -> None:
        """Queue ``group`` (batch mode) like :meth:`put_many`, but open: the caller may
        go on appending records to it (under ``group.lock``, while ``group.open``)
        until the writer takes it -- then they are committed in one transaction, in
        the order appended.  The caller must close the group (``open = False``, under
        its lock) before it puts anything else for the job.  Raises as :meth:`put`."""
        self._put(job_id, epoch, group)

    def put_snapshot(
        self, job_id: str, epoch: int, snapshot: Mapping[str, Any], upto_seq: int
    ) -> None:
        """Queue :meth:`Store.write_snapshot` for ``job_id``: written once every record
        put before it is committed. Raises as :meth:`put`."""
        self._put(job_id, epoch, _Snapshot(snapshot, upto_seq))

    def put_release(self, job_id: str, epoch: int) -> None:
        """Queue :meth:`Store.release` for ``job_id`` (its owner cleared, so any process
        may claim it), done once every record put before it is committed."""
        self._put(job_id, epoch, _RELEASE)

    def _put(self, job_id: str, epoch: int, record: _Payload, wait: bool = True) -> None:
        # Read without the lock (one dict lookup is atomic): a failure set a moment
        # later is found by the next put, as if this one had come first.
        failed = self._failed.get(job_id)
        if failed is not None:
            raise failed
        if self.durability != "sync" or not wait:
            with self._mutex:
                if self._closing:
                    raise StoreError("JournalWriter is closed")
                if self._unreported:
                    self._raise_unreported()
                self._put_count = ticket = self._put_count + 1
                queue = self._queue
                queue.append((ticket, job_id, epoch, record))
                # Wake the writer only when it would not look in time by itself: it
                # is parked (nothing was put for a while) or the batch is full.  A
                # thread that is awake looks again when the first record is
                # ``max_delay`` old, and a caller that flushes before then writes the
                # records itself (_help): a short job whose caller waits for it
                # (execute()) costs the writer thread no wake-up at all.
                size = len(queue)
                if size == 1:
                    self._first_at = time.monotonic()
                    if self._parked and wait:  # not waiting: the caller's next put writes it
                        self._parked = False
                        self._work.notify()
                else:
                    if size >= self.max_batch:
                        self._work.notify()
                    if not self.behind and time.monotonic() - self._first_at >= self.max_lag:
                        self.behind = True
            return
        with self._cond:
            if self._closing:
                raise StoreError("JournalWriter is closed")
            failed = self._failed.get(job_id)
            if failed is not None:
                raise failed
            self._raise_unreported()
            self._put_count += 1
            ticket = self._put_count
            self._queue.append((ticket, job_id, epoch, record))
            # No wake-up: this caller writes its record itself (_help) unless a batch
            # is being written, whose end wakes it.
            if self.durability == "sync":
                self._urgent += 1
                try:
                    while self._done_count < ticket:
                        if self._queue and not self._busy:
                            self._help()
                        else:
                            self._sleep()
                finally:
                    self._urgent -= 1
                error = self._failed_tickets.pop(ticket, None)
                if error is not None:
                    self._discard_report(error)
                    raise error

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Block until every record put so far is committed (or failed).

        Returns False if ``timeout`` seconds passed first. Raises (once) an error not
        yet reported by ``put`` or ``flush``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        # The condition's lock taken directly: wait() needs only that it is held.
        with self._mutex:
            target = self._put_count
            if self._done_count < target:
                self._urgent += 1
                if deadline is not None or self._busy:
                    # It waits rather than writes (see _help): the batch being filled
                    # must not be held open for it.
                    self._work.notify()
                try:
                    while self._done_count < target:
                        if deadline is None:
                            if self._queue and not self._busy:
                                self._help()
                            else:
                                self._sleep()
                        else:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                return False
                            self._sleep(left)
                finally:
                    self._urgent -= 1
            if self._unreported:
                self._raise_unreported()
        return True

    async def flush_async(self, timeout: Optional[float] = None) -> bool:
        """:meth:`flush` for a coroutine: waits in a worker thread, never on the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.flush, timeout)

    def error_of(self, job_id: str) -> Optional[StoreError]:
        """The error that stopped ``job_id``'s journal, or None."""
        # Without the lock: asked after every delivery, and one dict lookup is atomic.
        return self._failed.get(job_id)

    def forget(self, job_id: str) -> None:
        """Drop the error kept for ``job_id`` (after the job was dealt with)."""
        with self._cond:
            self._failed.pop(job_id, None)

    def close(self, timeout: Optional[float] = None) -> None:
        """Commit what is queued, then stop the thread. The store stays open.

        Raises (once) an error of the last records that no ``put`` or ``flush`` has
        reported yet.
        """
        with self._cond:
            if not self._closed:
                self._closing = True
                self._cond.notify_all()
                self._work.notify()
        self._thread.join(timeout)
        with self._cond:
            self._closed = True
            self._raise_unreported()

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        # An exception is on its way out already: do not replace it with ours.
        try:
            self.close()
        except StoreError:
            pass

    # -- caller helpers (lock held) --------------------------------------------

    def _raise_unreported(self) -> None:
        if self._unreported:
            _, error = self._unreported.popleft()
            raise error

    def _sleep(self, timeout: Optional[float] = None) -> None:
        """Wait (lock held) until a batch is settled, or ``timeout`` seconds."""
        self._sleeping += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._sleeping -= 1

    def _discard_report(self, error: StoreError) -> None:
        for index, (_, item) in enumerate(self._unreported):
            if item is error:
                del self._unreported[index]
                return

    # -- the writer thread -------------------------------------------------------

    def _take_batch(self) -> Optional[list[_Entry]]:
        """Wait for records; the next batch, or None when closing with nothing left.

        A batch is taken when it is full, when its first record is ``max_delay``
        old, or at once when someone waits for it or the writer closes.  While
        records keep coming the thread looks every ``max_delay`` by itself (so a
        put need not wake it); after a whole period without any it parks until the
        next put wakes it."""
        with self._cond:
            seen = -1
            while True:
                queue = self._queue
                if queue and not self._busy:
                    if (
                        len(queue) >= self.max_batch
                        or self._urgent
                        or self._closing
                        or self.max_delay <= 0
                    ):
                        return self._pop_batch()
                    left = self._first_at + self.max_delay - time.monotonic()
                    if left <= 0:
                        return self._pop_batch()
                    self._work.wait(left)
                elif self._closing and not queue and not self._busy:
                    return None
                elif self.max_delay <= 0 or (not queue and self._put_count == seen):
                    self._parked = True
                    self._work.wait()
                    self._parked = False
                else:
                    # Being written by a caller (_help), or records came lately: look
                    # again soon rather than be woken.
                    seen = self._put_count
                    self._work.wait(self.max_delay)

    def _pop_batch(self) -> list[_Entry]:
        """The next batch, now being written (lock held)."""
        queue = self._queue
        self._busy = True
        if len(queue) <= self.max_batch:
            batch = list(queue)
            queue.clear()
        else:
            batch = [queue.popleft() for _ in range(self.max_batch)]
        if queue:
            self._first_at = 0.0  # what is left waited already: the next batch at once
        else:
            self.behind = False
        for index, (ticket, job_id, epoch, payload) in enumerate(batch):
            if type(payload) is OpenRecords:
                # Closed now: what its owner appended so far is this batch's.
                with payload.lock:
                    payload.open = False
                    records = BuiltRecords(payload)
                batch[index] = (ticket, job_id, epoch, records)
        return batch

    def _help(self) -> None:
        """(Lock held, by a caller waiting for its records.) Write the next batch on
        this thread instead of waking the writer thread and waiting for it: no
        thread hand-off, and no two threads trading the GIL around each statement.
        Batches are still written one at a time, in queue order."""
        batch = self._pop_batch()
        self._cond.release()
        try:
            self._handle(batch)
        except BaseException as exc:
            # Interrupted (Ctrl-C) or a bug: whether the batch was committed is not
            # known, so its jobs fail; nobody waits for it forever.
            error = StoreError(f"JournalWriter: writing a batch was interrupted: {exc!r}")
            error.__cause__ = exc
            with self._cond:
                self._settle(batch, [(ticket, job_id, error) for ticket, job_id, _, _ in batch])
            raise
        finally:
            self._cond.acquire()

    def _handle(self, batch: list[_Entry]) -> None:
        """Write ``batch`` and settle it (``_busy`` set by whoever took it)."""
        failures = self._write(batch)
        with self._mutex:
            new = self._settle(batch, failures)
        for job_id, error in new:
            self._report(job_id, error)

    def _settle(
        self, batch: list[_Entry], failures: list[tuple[int, str, StoreError]]
    ) -> list[tuple[str, StoreError]]:
        """Record a written batch's outcome and wake its waiters (lock held); the
        jobs that failed for the first time."""
        new: list[tuple[str, StoreError]] = []
        for ticket, job_id, error in failures:
            if job_id not in self._failed:
                self._failed[job_id] = error
                self._unreported.append((job_id, error))
                new.append((job_id, error))
            self._failed_tickets[ticket] = error
        # Tickets are handed out in queue order and batches are written in that
        # order, so the batch's last one covers every record taken so far.
        self._done_count = max(self._done_count, batch[-1][0])
        self._busy = False
        if self._sleeping:
            self._cond.notify_all()
        if self._queue:
            self._work.notify()  # the thread may be waiting for this batch to end
        return new

    def _run(self) -> None:
        try:
            while True:
                batch = self._take_batch()
                if batch is None:
                    return
                self._handle(batch)
        except BaseException as exc:
            # A bug here must not leave flush() waiting forever: fail what is queued
            # and refuse further records.
            error = StoreError(f"JournalWriter thread died: {exc!r}")
            error.__cause__ = exc
            with self._cond:
                self._closing = True
                while self._queue:
                    ticket, job_id, _, _ = self._queue.popleft()
                    self._failed_tickets[ticket] = error
                self._unreported.append(("", error))
                self._done_count = self._put_count
                self._busy = False
                self._cond.notify_all()
                self._work.notify()
            raise

    def _write(self, batch: list[_Entry]) -> list[tuple[int, str, StoreError]]:
        """Commit ``batch``; the entries that failed, with their job's error."""
        # Read without the lock: only the writer of a batch (one at a time, see
        # _busy) adds to _failed, and a copy of a dict is one step.
        failed = self._failed
        stopped = dict(failed) if failed else {}
        folded = self._fold_job(batch, stopped)
        if folded is not None:
            return folded
        jobs: dict[str, tuple[int, list[tuple[int, list[DeltaRecord]]]]] = {}
        failures: list[tuple[int, str, StoreError]] = []
        for ticket, job_id, epoch, payload in batch:
            if job_id in stopped:
                # A record after a failed one would leave a gap: refuse it the same way.
                failures.append((ticket, job_id, stopped[job_id]))
                continue
            if not isinstance(payload, list):
                # Everything put before a snapshot or a release goes first: in the
                # snapshot's own transaction when the store can do both at once.
                if isinstance(payload, _Snapshot) and self._fold_snapshot(
                    ticket, job_id, epoch, payload, jobs, stopped
                ):
                    jobs = {}
                    continue
                self._commit_jobs(jobs, failures, stopped)
                jobs = {}
                if job_id not in stopped:
                    self._write_snapshot(ticket, job_id, epoch, payload, failures, stopped)
                continue
            entry = jobs.get(job_id)
            if entry is None:
                jobs[job_id] = entry = (epoch, [])
            elif entry[0] != epoch:
                # One commit per epoch: flush the older epoch's records first.
                self._commit_jobs({job_id: entry}, failures, stopped)
                jobs[job_id] = entry = (epoch, [])
            entry[1].append((ticket, payload))
        self._commit_jobs(jobs, failures, stopped)
        return failures

    def _fold_job(
        self, batch: list[_Entry], stopped: dict[str, StoreError]
    ) -> Optional[list[tuple[int, str, StoreError]]]:
        """The usual batch of a job that ends (its caller flushing): the job's records
        then its snapshot, one epoch, the job not stopped.  Committed with one
        ``commit_then_snapshot`` without grouping anything; its failures (as
        :meth:`_write` returns them), or None when the batch is not that or the store
        cannot fold (nothing written)."""
        last = batch[-1]
        payload = last[3]
        if type(payload) is not _Snapshot or len(batch) < 2:
            return None
        ticket, job_id, epoch, _ = last
        fold = self._fold
        if fold is None or job_id in stopped:
            return None
        for _, job, job_epoch, group in batch[:-1]:
            if job != job_id or job_epoch != epoch or type(group) is not BuiltRecords:
                return None
        # The usual one group as it is (the loop's last; typed by an annotation,
        # not typing.cast, which is a call); several are joined.
        records: Any = group
        if len(batch) > 2:
            records = BuiltRecords()
            for entry in batch[:-1]:
                records += cast(BuiltRecords, entry[3])
        try:
            fold([(job_id, epoch, records)], job_id, epoch, payload.snapshot, payload.upto_seq)
        except Exception:
            # Nothing was written: one step at a time, as _write does, names the fault.
            failures: list[tuple[int, str, StoreError]] = []
            items = [(entry[0], cast(list[DeltaRecord], entry[3])) for entry in batch[:-1]]
            self._commit_jobs({job_id: (epoch, items)}, failures, stopped)
            if job_id not in stopped:
                self._write_snapshot(ticket, job_id, epoch, payload, failures, stopped)
            return failures
        self.transactions += 1  # (_count, inline)
        self.records_written += len(records)
        return []

    def _fold_snapshot(
        self,
        ticket: int,
        job_id: str,
        epoch: int,
        payload: _Snapshot,
        jobs: dict[str, tuple[int, list[tuple[int, list[DeltaRecord]]]]],
        stopped: dict[str, StoreError],
    ) -> bool:
        """Commit the records queued so far and ``payload`` in one transaction (a
        store with ``commit_then_snapshot``); False when it could not (nothing was
        written: the caller writes them one step at a time, which names the fault)."""
        fold = self._fold
        if fold is None or job_id in stopped:
            return False
        live = {job: entry for job, entry in jobs.items() if job not in stopped and entry[1]}
        batches = [(job, job_epoch, _joined(items)) for job, (job_epoch, items) in live.items()]
        try:
            fold(batches, job_id, epoch, payload.snapshot, payload.upto_seq)
        except Exception:
            return False
        self._count(1, sum(len(records) for _, _, records in batches))
        return True

    def _write_snapshot(
        self,
        ticket: int,
        job_id: str,
        epoch: int,
        payload: Union[_Snapshot, _Release],
        failures: list[tuple[int, str, StoreError]],
        stopped: dict[str, StoreError],
    ) -> None:
        try:
            if isinstance(payload, _Release):
                self.store.release(job_id, epoch)
            else:
                self.store.write_snapshot(job_id, epoch, payload.snapshot, payload.upto_seq)
        except Exception:
            self._fail(job_id, {job_id: (epoch, [(ticket, [])])}, failures, stopped)
        else:
            self._count(1, 0)

    def _commit_jobs(
        self,
        jobs: dict[str, tuple[int, list[tuple[int, list[DeltaRecord]]]]],
        failures: list[tuple[int, str, StoreError]],
        stopped: dict[str, StoreError],
    ) -> None:
        live = {job: entry for job, entry in jobs.items() if job not in stopped and entry[1]}
        if not live:
            return
        batches = [(job_id, epoch, _joined(items)) for job_id, (epoch, items) in live.items()]
        try:
            self.store.commit_many(batches)
        except Exception:
            if len(batches) == 1:
                self._fail(batches[0][0], live, failures, stopped)
                return
            # Some job's batch was refused and the transaction wrote nothing: commit
            # them one by one, so only the job at fault fails.
            for job_id, epoch, records in batches:
                try:
                    self.store.commit(job_id, epoch, records)
                except Exception:
                    self._fail(job_id, live, failures, stopped)
                else:
                    self._count(1, len(records))
            return
        self._count(1, sum(len(records) for _, _, records in batches))

    def _fail(
        self,
        job_id: str,
        live: dict[str, tuple[int, list[tuple[int, list[DeltaRecord]]]]],
        failures: list[tuple[int, str, StoreError]],
        stopped: dict[str, StoreError],
    ) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, StoreError):
            error = exc
        else:
            error = StoreError(f"job {job_id!r}: journal commit failed: {exc!r}")
            error.__cause__ = exc
        stopped[job_id] = error
        for ticket, _ in live[job_id][1]:
            failures.append((ticket, job_id, error))

    def _count(self, transactions: int, records: int) -> None:
        # Without the lock: only the writer of a batch counts, one batch at a time
        # (_busy is handed over under the lock, which orders the counts too).
        self.transactions += transactions
        self.records_written += records

    def _report(self, job_id: str, error: StoreError) -> None:
        if self.on_error is None:
            return
        try:
            self.on_error(job_id, error)
        except Exception:
            # A broken callback must not stop the journal; the error itself stays
            # kept for put/flush, and the callback's failure is logged.
            _log.exception("JournalWriter: on_error callback failed for job %r", job_id)


def _joined(items: list[tuple[int, list[DeltaRecord]]]) -> list[DeltaRecord]:
    """The records of one job's queued groups, in order: :class:`BuiltRecords` when
    every group is (the store then trusts their shape), else a plain list of
    DeltaRecords (built records among them converted: the two forms never mix)."""
    if len(items) == 1:
        return items[0][1]
    records = BuiltRecords()
    built = True
    for _, group in items:
        if type(group) is not BuiltRecords:
            built = False
        records += group
    if built:
        return records
    plain: list[DeltaRecord] = []
    for _, group in items:
        plain += [delta_of(record) for record in group] if type(group) is BuiltRecords else group
    return plain

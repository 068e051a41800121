"""The flows' worker pools: :class:`WorkerPool`, a small pool of daemon threads.

Why not :class:`concurrent.futures.ThreadPoolExecutor`: its threads are joined
when the interpreter exits, so one handler that never returns keeps the
process alive for ever, and a busy thread can never be given up.  Here:

* every worker is a daemon thread: a stuck or abandoned handler never keeps
  the interpreter from exiting;
* :meth:`WorkerPool.abandon` gives up a busy worker (its handler timed out, or
  Ctrl-C interrupted the job): the worker no longer counts against
  ``max_workers``, so the next :meth:`~WorkerPool.submit` starts a replacement,
  and the abandoned thread ends as soon as its call returns, if ever.

Engine threads (these workers, the helper and job threads of ``run.py``, the
timer and loop threads) are started by :func:`start_thread`, with Ctrl-C
blocked from birth, so it reaches the main thread: a signal the kernel hands
to another thread would not wake a main thread blocked waiting for a job, and
Ctrl-C would be lost.

Invariant: ``_workers`` holds the threads that count against ``max_workers``
(idle or running a call); ``_idle`` of them wait on the condition.  Calls wait
in one FIFO queue; idle workers sleep on one condition (no polling) and a
worker is started only when no idle one is left.  Workers are started on
demand and stay until :meth:`~WorkerPool.shutdown`.
"""

from __future__ import annotations

import itertools
import logging
import signal
import threading
from collections import deque
from collections.abc import Iterable
from typing import Callable

logger = logging.getLogger("routilux.engine.pool")

#: Signals Python handles on the main thread that engine threads must not take.
_STEERED = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


_CAN_MASK = bool(_STEERED) and hasattr(signal, "pthread_sigmask")


def start_thread(thread: threading.Thread) -> None:
    """Start an engine thread with Ctrl-C (and SIGTERM, SIGHUP) blocked in it.

    The kernel gives a process-directed signal to any thread that does not
    block it; Python runs the handler on the main thread but wakes a blocked
    main thread only if the signal arrived there.  A new thread inherits its
    creator's mask, so the mask is set around ``start()`` (a signal arriving
    meanwhile waits and is delivered once the creator's mask is back).  Where
    threads have no signal mask (Windows) this is a plain ``start()``.
    """
    if not _CAN_MASK:
        thread.start()
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STEERED)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class WorkerPool:
    """Run calls on at most ``max_workers`` daemon threads, in submission order."""

    def __init__(self, max_workers: int, name: str = "routilux") -> None:
        self.max_workers = max_workers
        self._name = name
        self._calls: deque[Callable[[], object]] = deque()
        self._cond = threading.Condition()
        self._workers: set[threading.Thread] = set()
        self._abandoned: set[threading.Thread] = set()
        self._idle = 0
        self._shutdown = False
        self._numbers = itertools.count(1)

    def __repr__(self) -> str:
        return f"WorkerPool[{self._name}: {len(self._workers)}/{self.max_workers}]"

    def submit(self, call: Callable[[], object]) -> None:
        """Queue ``call``; raises RuntimeError once the pool is shut down."""
        with self._cond:
            if self._shutdown:
                raise RuntimeError(f"{self!r} is shut down")
            self._calls.append(call)
            if self._idle:
                # The waker accounts for the waiter it wakes, so two quick
                # submits never count on the same idle worker.
                self._idle -= 1
                self._cond.notify()
            elif len(self._workers) < self.max_workers:
                self._start_worker_locked()

    def submit_many(self, calls: Iterable[Callable[[], object]]) -> None:
        """:meth:`submit` of several calls, in order, in one round of the pool's lock
        (one thread submitting many calls one by one would contend with the busy
        workers for the lock at every call)."""
        with self._cond:
            if self._shutdown:
                raise RuntimeError(f"{self!r} is shut down")
            for call in calls:
                self._calls.append(call)
                if self._idle:
                    self._idle -= 1
                    self._cond.notify()
                elif len(self._workers) < self.max_workers:
                    self._start_worker_locked()

    def abandon(self, thread: threading.Thread) -> None:
        """Give up ``thread``, a worker busy with a call that may never return.

        The pool starts a replacement if calls are waiting (later submits start
        one anyway); the abandoned thread exits once its call returns.
        """
        with self._cond:
            if thread not in self._workers:
                return
            self._workers.discard(thread)
            self._abandoned.add(thread)
            if self._calls and not self._idle and not self._shutdown:
                self._start_worker_locked()

    def shutdown(self, wait: bool = True) -> None:
        """Refuse new calls; workers finish the queued ones, then exit.  With
        ``wait``, join the (not abandoned) workers."""
        with self._cond:
            self._shutdown = True
            self._idle = 0
            self._cond.notify_all()
            workers = list(self._workers)
        if wait:
            me = threading.current_thread()
            for thread in workers:
                if thread is not me:
                    thread.join()

    def _start_worker_locked(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}_{next(self._numbers)}", daemon=True
        )
        self._workers.add(thread)
        start_thread(thread)

    def _work(self) -> None:
        me = threading.current_thread()
        cond = self._cond
        calls = self._calls
        while True:
            with cond:
                while not calls:
                    if self._shutdown or me in self._abandoned:
                        self._workers.discard(me)
                        self._abandoned.discard(me)
                        return
                    self._idle += 1
                    cond.wait()
                call = calls.popleft()
            try:
                call()
            except BaseException:  # noqa: BLE001 - a worker must survive its calls
                logger.exception("call on %s failed", me.name)
            if self._abandoned and me in self._abandoned:
                with cond:
                    self._abandoned.discard(me)
                return

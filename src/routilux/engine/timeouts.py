"""Bounding one delivery's handler by its slot's (or the flow's) timeout.

A sync handler on one of the job's pool threads runs right there while the timer
thread watches the clock; anywhere else (the sequential drainer, the entry step) it
runs on a helper daemon thread while the delivering thread waits on an event with
the timeout.  An ``async def`` handler is bounded on the loop (``Task.cancel``).
Over time, the delivery is *abandoned*: the job releases it at once and fails it
with :class:`~routilux.HandlerTimeoutError` through the error policy; the thread
keeps running until its handler returns, and whatever it does then is discarded.

Invariant: who finishes a timed sync delivery -- its handler's return or the
timeout -- is decided once, under the job's lock, by its :class:`Timed` record's
``state`` (running -> done | abandoned).  Nothing polls (DESIGN invariant 3).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from ..exceptions import HandlerTimeoutError
from .failure import handle_failure
from .pool import start_thread
from .scheduling import STOPPED
from .timers import timer_service

if TYPE_CHECKING:
    from .executors import Executor
    from .plan import SlotPlan
    from .tasks import Task

logger = logging.getLogger("routilux.engine")

#: Seconds one wait of the *main* thread lasts at most (the job's end still wakes
#: it at once through the condition).  CPython loses the wake-up of a signal
#: that arrives just as a thread starts to block on a lock: the handler is
#: flagged but the wait does not return.  Ending the wait now and then lets a
#: pending Ctrl-C surface as KeyboardInterrupt.  No job state is polled.
MAIN_THREAD_SLICE = 0.25


class DeliveryTimeouts:
    """The timeout part of a running job (mixed into ``JobRun``)."""

    if TYPE_CHECKING:
        # Provided by JobRun.
        _lock: threading.Lock
        _state: str
        _handler_timeout: float | None
        _live: Any
        _timed: Any
        _abandoned: Any
        _pullers: int
        _watch: bool
        executor: Executor

        def _own_set(self, name: str) -> set[Any]: ...
        def _more_pulls_locked(self) -> int: ...
        def _submit_pull(self) -> None: ...
        def _close_delivery(self, task: Task, error: BaseException | None = None) -> None: ...
        def _task_done(self) -> None: ...

        @property
        def _as_run(self) -> Any: ...

    def _timeout_of(self, target: SlotPlan) -> float | None:
        timeout = target.timeout
        return self._handler_timeout if timeout is None else timeout

    def _timeout_error(self, task: Task, timeout: float) -> HandlerTimeoutError:
        source = "its slot's timeout" if task.target.timeout is not None else "handler_timeout"
        return HandlerTimeoutError(
            f"routine '{task.rid}', slot '{task.target.name}': the handler did not return "
            f"within {timeout:g} s ({source}); the delivery was abandoned"
        )

    def _dispatch_timed(self, task: Task, merged: Any) -> Any:
        """Call a sync handler within its timeout (DESIGN invariant 3: no polling).

        On one of this job's pool threads the handler runs right here and the
        engine's timer abandons the delivery when it is due (the pool gets a
        replacement thread).  Anywhere else (the sequential drainer, the thread
        running the entry step) it runs on a helper daemon thread while this
        thread waits on an event with the timeout.  ``async def`` handlers are
        bounded on the loop instead (:meth:`_await_bounded`)."""
        target = task.target
        assert target.call is not None
        if target.is_async:
            return target.call(merged)
        timeout = self._timeout_of(target)
        assert timeout is not None
        me = threading.current_thread()
        if me in self._live:
            return self._dispatch_on_worker(task, merged, timeout, me)
        return self._dispatch_on_helper(task, merged, timeout)

    def _dispatch_on_worker(
        self, task: Task, merged: Any, timeout: float, me: threading.Thread
    ) -> Any:
        timed = Timed()

        def give_up(_handle: Any = None) -> None:
            self._worker_timed_out(timed, me, task, merged, timeout)

        timed.abandon = give_up  # cancel() gives it up at once
        with self._lock:
            self._own_set("_timed").add(timed)
        handle = timer_service.schedule(timeout, give_up)
        call = task.target.call
        assert call is not None
        try:
            result = call(merged)
        except BaseException:
            if not self._claim(timed):
                return None  # abandoned meanwhile: the late failure is discarded
            handle.cancel()
            raise
        if not self._claim(timed):
            return None
        handle.cancel()
        return result

    def _claim(self, timed: Timed) -> bool:
        """The handler returned: True when the delivery is still ours to finish."""
        with self._lock:
            self._timed.discard(timed)  # added before the handler started
            if timed.state is _ABANDONED:
                return False
            timed.state = _DONE
            return True

    def _worker_timed_out(
        self, timed: Timed, me: threading.Thread, task: Task, merged: Any, timeout: float
    ) -> None:
        """On the timer thread: a pool thread's handler is over time; give it up."""
        with self._lock:
            if timed.state is not _RUNNING:
                return
            timed.state = _ABANDONED
            self._timed.discard(timed)
            if self._live.pop(me, None) is None:
                return  # Ctrl-C abandoned it first (and accounted for it)
            self._own_set("_abandoned").add(me)
            self._pullers -= 1
            pulls = self._more_pulls_locked()
            stopped = self._state is STOPPED
        self.executor.abandon(me)
        for _ in range(pulls):
            self._submit_pull()
        logger.warning("routine %s, slot %s: handler over %gs", task.rid, task.target.name, timeout)
        if not stopped:
            handle_failure(self._as_run, task, merged, self._timeout_error(task, timeout))
        if self._watch:
            self._close_delivery(task)
        self._task_done()

    def _dispatch_on_helper(self, task: Task, merged: Any, timeout: float) -> Any:
        timed = Timed()
        target = task.target
        call = target.call
        assert call is not None

        def body() -> None:
            try:
                timed.result = call(merged)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                timed.error = exc
            finally:
                with self._lock:
                    if timed.state is _RUNNING:
                        timed.state = _DONE
                    else:
                        self._abandoned.discard(threading.current_thread())
                timed.event.set()

        # The helper runs in a copy of this context: it serves the same job.
        thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(body,),
            name=f"routilux-{task.rid}.{target.name}",
            daemon=True,
        )
        timed.abandon = timed.event.set  # cancel() wakes this thread, which gives it up
        with self._lock:
            self._own_set("_timed").add(timed)
        try:
            start_thread(thread)
            wait_event(timed.event, timeout)
        finally:
            with self._lock:
                self._timed.discard(timed)
                abandoned = timed.state is _RUNNING
                if abandoned:  # over time, cancelled, or Ctrl-C in the wait
                    timed.state = _ABANDONED
                    self._own_set("_abandoned").add(thread)
        if abandoned:
            if self._state is STOPPED:
                return None  # cancel() woke us: nothing to report
            logger.warning("routine %s, slot %s: handler over %gs", task.rid, target.name, timeout)
            raise self._timeout_error(task, timeout)
        if timed.error is not None:
            raise timed.error
        return timed.result

    async def _await_bounded(self, task: Task, merged: Any, awaitable: Any) -> None:
        """Await a handler's coroutine within the slot's (or flow's) timeout.

        On time-out the coroutine is cancelled (``Task.cancel``) and the delivery
        fails with :class:`HandlerTimeoutError`; a cancellation by ``cancel()`` or
        Ctrl-C ends it quietly (the job has stopped or paused)."""
        timeout = self._timeout_of(task.target)
        if timeout is None:
            await awaitable
            return
        me = asyncio.current_task()
        assert me is not None
        expired = []

        def expire() -> None:
            expired.append(True)
            me.cancel()

        timer = asyncio.get_running_loop().call_later(timeout, expire)
        try:
            await awaitable
        except asyncio.CancelledError:
            if not expired:
                raise
            raise self._timeout_error(task, timeout) from None
        finally:
            timer.cancel()
        if expired:  # the handler swallowed the cancellation
            raise self._timeout_error(task, timeout)


def main_thread_slice() -> float | None:
    """How long one wait may last on this thread: see MAIN_THREAD_SLICE."""
    if threading.current_thread() is threading.main_thread():
        return MAIN_THREAD_SLICE
    return None


def wait_event(event: threading.Event, timeout: float) -> bool:
    """``event.wait(timeout)``; on the main thread in slices (see MAIN_THREAD_SLICE)."""
    if threading.current_thread() is not threading.main_thread():
        return event.wait(timeout)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return event.is_set()
        if event.wait(min(left, MAIN_THREAD_SLICE)):
            return True


# States of a Timed delivery; who changes it does so under the job's lock.
_RUNNING, _DONE, _ABANDONED = "running", "done", "abandoned"


class Timed:
    """One sync delivery running under a timeout: who finishes it (the handler's
    return or the timeout) is decided by ``state``, under the job's lock."""

    __slots__ = ("state", "event", "result", "error", "abandon")

    def __init__(self) -> None:
        self.state = _RUNNING
        self.event = threading.Event()
        self.abandon: Callable[[], None] = self.event.set
        self.result: Any = None
        self.error: BaseException | None = None

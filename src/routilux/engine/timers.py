"""One timer thread for the whole process.

Retries and routine timeouts are *scheduled*, never slept in a worker
(DESIGN invariant 5).  A callback runs on the timer thread and must be quick:
the engine's callbacks only put a task back on its job's queue.  The clock is
injectable for tests.

No delay can stop the thread: a single wait is capped at ``threading.TIMEOUT_MAX``
(``Condition.wait`` raises OverflowError above it) and the loop simply waits again, so
a timer due in 1e10 seconds, or at infinity, waits "forever" while every other timer
of every job keeps firing.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Callable

from .pool import start_thread

logger = logging.getLogger("routilux.engine.timers")

# The longest single Condition.wait (longer raises OverflowError); the loop re-waits.
_MAX_WAIT = threading.TIMEOUT_MAX


class TimerHandle:
    """A scheduled callback; :meth:`cancel` stops it if it has not fired yet."""

    __slots__ = ("due", "callback", "_state", "_service")

    def __init__(
        self, due: float, callback: Callable[[TimerHandle], None], service: TimerService
    ) -> None:
        self.due = due
        self.callback = callback
        self._state = "pending"  # -> "fired" | "cancelled"
        self._service = service

    @property
    def pending(self) -> bool:
        """True until the callback has started or the timer was cancelled."""
        return self._state == "pending"

    def cancel(self) -> bool:
        """Cancel the timer; True when it had not fired (the callback will never run)."""
        return self._service._cancel(self)


class TimerService:
    """A heap of due times served by one daemon thread, started on first use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, callback: Callable[[TimerHandle], None]) -> TimerHandle:
        """Run ``callback(handle)`` on the timer thread after ``delay`` seconds."""
        handle = TimerHandle(self.clock() + max(0.0, delay), callback, self)
        with self._cond:
            heapq.heappush(self._heap, (handle.due, next(self._counter), handle))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="routilux-timers", daemon=True
                )
                start_thread(self._thread)  # Ctrl-C belongs to the main thread
            self._cond.notify()
        return handle

    def _cancel(self, handle: TimerHandle) -> bool:
        with self._cond:
            if handle._state != "pending":
                return False
            handle._state = "cancelled"
            return True

    def _loop(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while True:
                    while self._heap and self._heap[0][2]._state != "pending":
                        heapq.heappop(self._heap)
                    if not self._heap:
                        cond.wait()
                        continue
                    wait = self._heap[0][0] - self.clock()
                    if wait <= 0:
                        handle = heapq.heappop(self._heap)[2]
                        handle._state = "fired"
                        break
                    # A timed wait until the earliest due time, woken early by
                    # schedule(); this is the only waiting the timer does. Capped:
                    # a longer wait would raise and kill the thread.
                    cond.wait(min(wait, _MAX_WAIT))
            try:
                handle.callback(handle)
            except Exception:  # noqa: BLE001 - the timer thread must survive
                logger.exception("timer callback failed")


#: The process-wide timer service used by the engine.
timer_service = TimerService()

"""Where a job's work runs: the executors, chosen once per job.

A :class:`~.run.JobRun` keeps its queue, its outstanding count and its settling; an
executor only says *where* the job's steps run.  One protocol, :class:`Executor`:

* :meth:`Executor.launch` runs the job's first step (the entry handler, or a
  resume's re-emissions) and, for an inline executor, the drain of the queue;
* :meth:`Executor.submit` hands over a *pull* -- a call that runs the job's next
  ready tasks -- for a pooled executor (an inline one never gets any: the thread
  that launched the job drains the queue itself);
* :meth:`Executor.abandon` gives up a thread stuck in a delivery the job no longer
  waits for (a handler timeout, Ctrl-C);
* :meth:`Executor.close` releases what the executor owns (nothing, for those here:
  the flow owns its pool and shuts it down).

:data:`INLINE` (the sequential strategy) and :class:`PoolExecutor` (the concurrent
one, on the flow's :class:`~.pool.WorkerPool`) implement it.  ``async def``
deliveries of either go to the :class:`AsyncioExecutor`, the engine's one loop.  A
distributed runner implements the same protocol: its ``submit`` sends the pull to a
worker that runs it against the same job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Protocol

from . import aio
from .pool import start_thread

if TYPE_CHECKING:
    from .pool import WorkerPool

logger = logging.getLogger("routilux.engine")

__all__ = ["AIO", "INLINE", "AsyncioExecutor", "Executor", "InlineExecutor", "PoolExecutor"]


class Startable(Protocol):
    """What an executor asks of the job it launches (``run.JobRun``, which imports
    this module): to run its first steps on the calling thread."""

    def start(self, first_steps: Callable[[], bool | None]) -> None: ...


class Executor(Protocol):
    """Where one job's steps run (see the module docstring)."""

    #: True when ready tasks are handed over as pulls (:meth:`submit`); False when
    #: the launching thread drains the job's queue itself.
    pooled: bool
    #: Pulls of one job that can usefully run at once (the pool's size).
    width: int
    #: The flow's pool this executor runs on, if any (the flow retires pools).
    pool: WorkerPool | None

    def launch(
        self,
        run: Startable,
        first_steps: Callable[[], bool | None],
        wait: bool,
        timeout: float | None,
        off_caller: bool,
    ) -> None:
        """Start ``run`` with ``first_steps``; ``off_caller``: never on this thread."""

    def submit(self, pull: Callable[[], None]) -> None:
        """Run ``pull`` (one batch of the job's ready tasks) somewhere, soon."""

    def abandon(self, thread: threading.Thread) -> None:
        """Give up ``thread``, busy with a delivery the job no longer waits for."""

    def close(self) -> None:
        """Release what this executor owns."""


def _own_thread(run: Startable, first_steps: Callable[[], bool | None]) -> None:
    """Start ``run`` on a daemon thread of its own (Ctrl-C stays with the main thread)."""
    start_thread(
        threading.Thread(
            target=run.start, args=(first_steps,), name=f"routilux-job-{run}", daemon=True
        )
    )


class InlineExecutor:
    """The sequential strategy: the thread that launches the job runs it, one task
    at a time (a thread of the job's own when the caller does not wait)."""

    pooled = False
    width = 1
    pool: WorkerPool | None = None

    def __repr__(self) -> str:
        return "InlineExecutor()"

    def launch(
        self,
        run: Startable,
        first_steps: Callable[[], bool | None],
        wait: bool,
        timeout: float | None,
        off_caller: bool,
    ) -> None:
        if off_caller or not wait or timeout is not None:
            # A job the caller will not drain gets a thread of its own.
            _own_thread(run, first_steps)
        else:
            run.start(first_steps)

    def submit(self, pull: Callable[[], None]) -> None:
        raise RuntimeError("an inline executor takes no pulls: its job drains its own queue")

    def abandon(self, thread: threading.Thread) -> None:
        return None  # an inline job's helper threads are daemons nobody waits for

    def close(self) -> None:
        return None


#: The one inline executor (it keeps no state).
INLINE = InlineExecutor()


class PoolExecutor:
    """The concurrent strategy: pulls run on the flow's pool of ``width`` threads."""

    pooled = True

    def __init__(self, pool: WorkerPool, width: int, name: str = "") -> None:
        self.pool: WorkerPool | None = pool
        self._pool = pool
        self.width = max(1, width)
        self._name = name

    def __repr__(self) -> str:
        return f"PoolExecutor({self._pool!r})"

    def launch(
        self,
        run: Startable,
        first_steps: Callable[[], bool | None],
        wait: bool,
        timeout: float | None,
        off_caller: bool,
    ) -> None:
        if off_caller:
            self.submit(lambda: run.start(first_steps))
        else:
            run.start(first_steps)

    def submit(self, pull: Callable[[], None]) -> None:
        try:
            self._pool.submit(pull)
        except RuntimeError:
            # The pool refuses work (it was shut down by hand, or the interpreter
            # is exiting): run the pull on a thread of its own rather than strand
            # the job's tasks and hang it.
            logger.warning("worker pool %s refused a task", self._name or self._pool)
            start_thread(threading.Thread(target=pull, daemon=True))

    def abandon(self, thread: threading.Thread) -> None:
        self._pool.abandon(thread)

    def close(self) -> None:
        return None  # the flow owns the pool (Flow.shutdown)


class AsyncioExecutor:
    """``async def`` deliveries: coroutines on the engine's one asyncio loop."""

    def __repr__(self) -> str:
        return "AsyncioExecutor()"

    def wake(self, call: Callable[[], None]) -> None:
        """Call ``call()`` on the loop's thread, soon (from any thread)."""
        aio.engine_loop().call_soon_threadsafe(call)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """On the loop's thread: start ``coro`` as an asyncio task."""
        aio.spawn(coro)

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        """Run ``coro`` on the loop (from any other thread); a concurrent Future."""
        return aio.submit(coro)

    def cancel(self, tasks: list[Any]) -> None:
        """Cancel these asyncio tasks (from any thread)."""
        if not tasks:
            return

        def cancel_all() -> None:
            for task in tasks:
                task.cancel()

        self.wake(cancel_all)

    def close(self) -> None:
        return None  # the loop serves the whole process


#: The engine's asyncio executor.
AIO = AsyncioExecutor()

"""The engine's asyncio event loop, for ``async def`` handlers.

One loop runs on a daemon thread, started on first use.  A coroutine handler is
handed to it and the worker that started the task is free again at once
(DESIGN invariant 5).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any

from .pool import start_thread

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_thread: threading.Thread | None = None


def engine_loop() -> asyncio.AbstractEventLoop:
    """The engine's event loop, started on first call."""
    global _loop, _loop_thread
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=serve, name="routilux-asyncio", daemon=True)
            start_thread(thread)  # Ctrl-C belongs to the main thread
            ready.wait()
            _loop, _loop_thread = loop, thread
        return _loop


def on_engine_loop() -> bool:
    """True on the engine loop's own thread (where blocking would stall every
    ``async def`` handler)."""
    return _loop_thread is not None and threading.current_thread() is _loop_thread


_running_tasks: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any]) -> None:
    """On the engine loop's thread: start ``coro`` as a task and keep it referenced."""
    task = asyncio.get_running_loop().create_task(coro)
    _running_tasks.add(task)
    task.add_done_callback(_running_tasks.discard)


def submit(coro: Coroutine[Any, Any, Any]) -> Future[Any]:
    """Run ``coro`` on the engine loop; returns a concurrent Future."""
    return asyncio.run_coroutine_threadsafe(coro, engine_loop())

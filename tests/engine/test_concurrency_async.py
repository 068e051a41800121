"""``async def`` handlers and the awaitable entry point ``flow.execute_async``.

Issue 4 acceptance 2.  Overlap is shown with events, not timing: every handler
waits for an ``asyncio.Event`` that is set only once all of them are waiting,
so handlers that ran one after another would time out instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import pytest

from helpers import Step, TaggedSource
from routilux import Flow, Routine

TIMEOUT = 10.0


class AsyncWorker(Routine):
    """An ``async def`` handler that awaits ``self.body(self, tag, i)`` and emits ``done``."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        self.body = body
        self.define_slot("in", handler=self.on_item)
        self.define_event("done", ["tag", "i"])

    async def on_item(self, tag: str, i: int) -> None:
        await self.body(self, tag, i)
        self.emit("done", tag=tag, i=i)


def async_flow(body: Any, **flow_kwargs: Any) -> Flow:
    flow = Flow(**flow_kwargs)
    flow.add_routine(TaggedSource(), "source")
    flow.add_routine(AsyncWorker(body), "worker")
    flow.connect("source", "out", "worker", "in")
    return flow


def records(js: Any) -> Counter:
    return Counter(
        (r.routine_id, r.event_name, r.data["tag"], r.data["i"]) for r in js.execution_history
    )


def expected_records(tag: str, n: int) -> Counter:
    return Counter(
        [("source", "out", tag, i) for i in range(n)]
        + [("worker", "done", tag, i) for i in range(n)]
    )


class AllWaiting:
    """Releases its waiters only once ``count`` of them are waiting.

    The ``asyncio.Event`` is created lazily by the first waiter, so it belongs
    to whatever loop runs the handlers.  A waiter that times out sets the event
    so the others fail fast instead of each waiting out its own timeout.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.waiting = 0
        self.released = 0
        self.timed_out = 0
        self.loops: set[int] = set()
        self.threads: set[int] = set()
        self._event: asyncio.Event | None = None
        self._lock = threading.Lock()

    async def wait(self) -> None:
        self.loops.add(id(asyncio.get_running_loop()))
        self.threads.add(threading.get_ident())
        with self._lock:
            if self._event is None:
                self._event = asyncio.Event()
            event = self._event
            self.waiting += 1
            if self.waiting == self.count:
                event.set()
        try:
            await asyncio.wait_for(event.wait(), timeout=TIMEOUT / 2)
        except asyncio.TimeoutError:
            with self._lock:
                self.timed_out += 1
            event.set()
        with self._lock:
            self.released += 1


def test_1000_async_handlers_of_one_job_overlap():
    n = 1000
    meeting = AllWaiting(n)

    async def body(routine, tag, i):
        await meeting.wait()

    flow = async_flow(body, execution_strategy="concurrent", max_workers=4)
    caller_thread = threading.get_ident()
    js = flow.execute("source", {"tag": "t", "n": n})
    assert js.status == "completed"
    assert meeting.timed_out == 0
    assert (meeting.waiting, meeting.released) == (n, n)
    assert records(js) == expected_records("t", n)
    # One loop, owned by the engine: not the caller's thread, not a pool worker per handler.
    assert len(meeting.loops) == 1 and len(meeting.threads) == 1
    assert caller_thread not in meeting.threads


def test_async_handlers_of_two_jobs_overlap():
    meeting = AllWaiting(20)

    async def body(routine, tag, i):
        await meeting.wait()

    flow = async_flow(body, execution_strategy="concurrent", max_workers=2)
    jobs = {t: flow.execute("source", {"tag": t, "n": 10}, wait=False) for t in "ab"}
    assert flow.wait_for_completion(timeout=TIMEOUT)
    assert meeting.timed_out == 0
    for tag, js in jobs.items():
        assert js.status == "completed"
        assert records(js) == expected_records(tag, 10)


def test_async_handler_never_holds_a_worker_while_it_awaits():
    """One worker: the sync handler can run only if the awaiting async handler freed it."""
    holder: dict[str, Any] = {}
    ready = threading.Event()
    outcome: list[str] = []

    class Waiter(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("in", handler=self.wait_for_release)

        async def wait_for_release(self, **_: Any) -> None:
            holder["loop"] = asyncio.get_running_loop()
            holder["event"] = asyncio.Event()
            ready.set()
            try:
                await asyncio.wait_for(holder["event"].wait(), timeout=TIMEOUT / 2)
                outcome.append("released")
            except asyncio.TimeoutError:
                outcome.append("timed out")

    def release(routine: Routine, data: dict[str, Any]) -> None:
        if ready.wait(TIMEOUT):
            holder["loop"].call_soon_threadsafe(holder["event"].set)

    flow = Flow(execution_strategy="concurrent", max_workers=1)
    flow.add_routine(TaggedSource(), "source")
    flow.add_routine(Waiter(), "waiter")
    flow.add_routine(Step(release), "releaser")
    flow.connect("source", "out", "waiter", "in")  # queued first
    flow.connect("source", "out", "releaser", "in")
    js = flow.execute("source", {"tag": "t"})
    assert js.status == "completed"
    assert outcome == ["released"]


def test_execution_context_inside_async_handlers_names_the_right_job():
    meeting = AllWaiting(6)
    problems: list[str] = []

    async def body(routine, tag, i):
        ctx = routine.get_execution_context()
        before = (ctx.job_state.get_shared_data("tag"), ctx.routine_id, ctx.flow)
        await meeting.wait()  # every handler of both jobs is suspended here at once
        ctx = routine.get_execution_context()
        after = (ctx.job_state.get_shared_data("tag"), ctx.routine_id, ctx.flow)
        if before != (tag, "worker", flow) or after != before:
            problems.append(f"{tag}/{i}: {before} -> {after}")
        # A task spawned by the handler inherits the job's context.
        child = await asyncio.create_task(_context_of(routine))
        if child != (tag, "worker"):
            problems.append(f"{tag}/{i}: child task saw {child}")
        ctx.job_state.append_to_shared_log({"tag": tag, "i": i})

    flow = async_flow(body, execution_strategy="concurrent", max_workers=2)
    jobs = {t: flow.execute("source", {"tag": t, "n": 3}, wait=False) for t in "ab"}
    assert flow.wait_for_completion(timeout=TIMEOUT)
    assert meeting.timed_out == 0
    assert problems == []
    for tag, js in jobs.items():
        assert js.status == "completed"
        assert sorted((e["tag"], e["i"]) for e in js.get_shared_log()) == [
            (tag, i) for i in range(3)
        ]
    assert flow.routines["worker"].get_execution_context() is None


async def _context_of(routine: Routine) -> Any:
    ctx = routine.get_execution_context()
    return None if ctx is None else (ctx.job_state.get_shared_data("tag"), ctx.routine_id)


def test_async_handlers_in_the_sequential_strategy_run_one_at_a_time_in_order():
    order: list[int] = []
    running = []

    async def body(routine, tag, i):
        running.append(i)
        assert len(running) == 1, "two async handlers overlapped in sequential mode"
        await asyncio.sleep(0)
        order.append(i)
        running.remove(i)

    flow = async_flow(body)
    js = flow.execute("source", {"tag": "t", "n": 20})
    assert js.status == "completed"
    assert order == list(range(20))
    assert records(js) == expected_records("t", 20)


@pytest.mark.parametrize("strategy", ["concurrent", "sequential"])
def test_failing_async_handler_fails_the_job(strategy):
    async def body(routine, tag, i):
        await asyncio.sleep(0)
        raise RuntimeError(f"boom {i}")

    flow = async_flow(body, execution_strategy=strategy, max_workers=2)
    js = flow.execute("source", {"tag": "t", "n": 1})
    assert js.status == "failed"
    errors = [r for r in js.execution_history if r.event_name == "error"]
    assert [(r.routine_id, r.data["error"]) for r in errors] == [("worker", "boom 0")]


# -- execute_async ------------------------------------------------------------------------


class Blocker(Routine):
    """A sync handler that reports it started, then waits for the test's gate."""

    def __init__(self, started: threading.Event, gate: threading.Event, seen: list) -> None:
        super().__init__()
        self.started, self.gate, self.seen = started, gate, seen
        self.define_slot("in", handler=self.block)

    def block(self, **_: Any) -> None:
        self.started.set()
        self.seen.append(self.gate.wait(TIMEOUT / 2))


@pytest.mark.parametrize("strategy", ["concurrent", "sequential"])
def test_execute_async_does_not_block_the_callers_loop(strategy):
    """The job's handler waits for a gate that only a coroutine on the caller's loop opens."""
    started, gate, seen = threading.Event(), threading.Event(), []
    flow = Flow(execution_strategy=strategy, max_workers=2)
    flow.add_routine(TaggedSource(), "source")
    flow.add_routine(Blocker(started, gate, seen), "blocker")
    flow.connect("source", "out", "blocker", "in")

    async def main() -> Any:
        job = asyncio.ensure_future(flow.execute_async("source", {"tag": "t"}))
        assert await asyncio.to_thread(started.wait, TIMEOUT)
        assert not job.done()
        gate.set()  # runs on the caller's loop, while the job is in flight
        return await asyncio.wait_for(job, TIMEOUT)

    try:
        js = asyncio.run(main())
    finally:
        gate.set()
    assert seen == [True]
    assert js.status == "completed"


def test_execute_async_many_jobs_with_gather():
    seen_loops: set[int] = set()

    async def body(routine, tag, i):
        seen_loops.add(id(asyncio.get_running_loop()))
        await asyncio.sleep(0)

    flow = async_flow(body, execution_strategy="concurrent", max_workers=4)

    async def main() -> Any:
        caller_loop = id(asyncio.get_running_loop())
        jobs = await asyncio.gather(
            *(flow.execute_async("source", {"tag": f"job{k}", "n": 3}) for k in range(20))
        )
        return caller_loop, jobs

    caller_loop, jobs = asyncio.run(main())
    assert len({js.job_id for js in jobs}) == 20
    for k, js in enumerate(jobs):
        assert js.status == "completed"
        assert records(js) == expected_records(f"job{k}", 3)
    assert seen_loops and caller_loop not in seen_loops  # handlers ran on the engine's loop


def test_execute_async_passes_the_strategy_override():
    meeting = AllWaiting(2)  # the two handlers overlap only in the concurrent strategy

    async def body(routine, tag, i):
        await meeting.wait()

    flow = async_flow(body)
    js = asyncio.run(flow.execute_async("source", {"tag": "t", "n": 2}, "concurrent"))
    assert js.status == "completed"
    assert meeting.timed_out == 0
    assert records(js) == expected_records("t", 2)
    assert flow.execution_strategy == "sequential"
    with pytest.raises(ValueError, match="Invalid execution strategy: nope"):
        asyncio.run(flow.execute_async("source", {"tag": "t"}, "nope"))


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_an_async_entry_handler_finishes_before_execute_returns(strategy):
    started = threading.Event()

    class AsyncEntry(Routine):
        def __init__(self):
            super().__init__()
            self.define_slot("trigger", handler=self.run)
            self.define_event("out", ["v"])

        async def run(self, **kwargs):
            started.set()
            await asyncio.sleep(0)
            ctx = self.get_execution_context()
            ctx.job_state.update_shared_data("ran", True)
            self.emit("out", v=1)

    seen = []

    class Sink(Routine):
        def __init__(self):
            super().__init__()
            self.define_slot("in", handler=lambda v: seen.append(v))

    flow = Flow(execution_strategy=strategy)
    flow.add_routine(AsyncEntry(), "entry")
    flow.add_routine(Sink(), "sink")
    flow.connect("entry", "out", "sink", "in")
    js = flow.execute("entry")
    assert started.is_set()
    assert js.status == "completed"
    assert js.shared_data == {"ran": True}
    assert len(js.get_execution_history("entry")) == 1
    assert seen == [1]
    assert flow.wait_for_completion(0)


def test_an_async_handler_cannot_block_on_a_job_but_can_await_one():
    inner = Flow("inner")

    inner.add_routine(Step(lambda routine, data: None, "trigger"), "leaf")
    outcome = {}

    class Outer(Routine):
        def __init__(self):
            super().__init__()
            self.define_slot("trigger", handler=self.run)

        async def run(self, **kwargs):
            try:
                inner.execute("leaf")
            except Exception as exc:  # the blocking call is refused
                outcome["error"] = exc
            job = await inner.execute_async("leaf")
            outcome["awaited"] = job.status

    outer = Flow("outer", execution_strategy="concurrent")
    outer.add_routine(Outer(), "o")
    js = outer.execute("o")
    assert js.status == "completed"
    assert isinstance(outcome["error"], RuntimeError)
    assert "execute_async" in str(outcome["error"])
    assert outcome["awaited"] == "completed"
    assert inner.wait_for_completion(0)

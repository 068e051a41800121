"""asyncio programs: ``await flow.execute_async()`` holds no thread of the
caller's executor, and ``flow.pause()`` in an ``async def`` handler does not
block the engine's loop."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from helpers import Sink
from routilux import Flow, Routine

STRATEGIES = ["sequential", "concurrent"]
JOBS = 24


class Gate(Routine):
    """An async entry handler that waits until the test opens the gate."""

    def __init__(self, started: threading.Event) -> None:
        super().__init__()
        self.started = started
        self.count = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.gate: asyncio.Event | None = None
        self.define_slot("trigger", handler=self.wait_for_gate)

    async def wait_for_gate(self, **_: Any) -> None:
        # Every handler runs on the engine's loop: no lock needed for the count.
        if self.gate is None:
            self.loop, self.gate = asyncio.get_running_loop(), asyncio.Event()
        self.count += 1
        if self.count == JOBS:
            self.started.set()
        await self.gate.wait()

    def open(self) -> None:
        assert self.loop is not None and self.gate is not None
        self.loop.call_soon_threadsafe(self.gate.set)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_execute_async_holds_no_thread_of_the_default_executor(strategy: str) -> None:
    started = threading.Event()
    gate = Gate(started)
    flow = Flow(execution_strategy=strategy, max_workers=JOBS)
    flow.add_routine(gate, "gate")

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        jobs = [asyncio.ensure_future(flow.execute_async("gate")) for _ in range(JOBS)]
        # An unrelated call on the one executor thread: it waits until all 24
        # handlers run, which can only happen if no job holds that thread.
        all_started = await asyncio.wait_for(loop.run_in_executor(None, started.wait, 30), 40)
        assert all_started
        gate.open()
        done = await asyncio.wait_for(asyncio.gather(*jobs), 30)
        return [job.status for job in done]

    try:
        assert asyncio.run(main()) == ["completed"] * JOBS
    finally:
        started.set()
        if gate.gate is not None:
            gate.open()


def test_execute_async_timeout_and_no_wait() -> None:
    started = threading.Event()
    gate = Gate(started)
    flow = Flow()
    flow.add_routine(gate, "gate")

    async def main() -> tuple[str, str]:
        job = await flow.execute_async("gate", timeout=0.05)  # returns though still running
        other = await flow.execute_async("gate", wait=False)
        return job.status, other.status

    try:
        assert asyncio.run(main()) == ("running", "running")
    finally:
        gate.open()
    assert flow.wait_for_completion(10)


def test_execute_async_raises_bad_arguments_at_once() -> None:
    flow = Flow()

    async def main() -> None:
        await flow.execute_async("missing")

    with pytest.raises(ValueError, match="missing"):
        asyncio.run(main())


class Source(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("go", [])

    def start(self, **_: Any) -> None:
        self.emit("go")


def test_pause_in_an_async_handler_does_not_block_the_loop() -> None:
    progressed = threading.Event()
    shared: dict[str, asyncio.Event] = {}

    class Sibling(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", handler=self.work)
            self.define_event("after", [])

        async def work(self, **_: Any) -> None:
            shared.setdefault("paused", asyncio.Event())
            shared.setdefault("running", asyncio.Event()).set()
            await shared["paused"].wait()  # runs on while the other handler pauses
            progressed.set()
            self.emit("after")

    class Pauser(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", handler=self.work)

        async def work(self, **_: Any) -> None:
            shared.setdefault("paused", asyncio.Event())
            await shared.setdefault("running", asyncio.Event()).wait()
            ctx = self.get_execution_context()
            assert ctx is not None
            # Waiting here for the running sibling would block the loop it runs on.
            ctx.flow.pause(ctx.job_state, reason="stop here", wait_timeout=60)
            shared["paused"].set()

    flow = Flow(execution_strategy="concurrent")
    flow.add_routine(Source(), "source")
    flow.add_routine(Sibling(), "sibling")
    flow.add_routine(Pauser(), "pauser")
    flow.add_routine(Sink(), "sink")
    flow.connect("source", "go", "sibling", "input")
    flow.connect("source", "go", "pauser", "input")
    flow.connect("sibling", "after", "sink", "input")
    job = flow.execute("source", wait=False)
    assert progressed.wait(20), "the sibling handler could not run while the job paused"
    assert job.wait_for_completion(20)
    assert job.status == "paused"
    # The sibling's emission after the pause waits in pending_tasks for a resume.
    assert [t["slot_routine_id"] for t in job.pending_tasks] == ["sink"]
    assert job.pause_points[-1]["reason"] == "stop here"
    flow.resume(job, timeout=20)
    assert job.status == "completed"


class Boom(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.fail)

    def fail(self, **_: Any) -> None:
        raise RuntimeError("boom")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_execute_async_returns_a_failed_job(strategy: str) -> None:
    flow = Flow(execution_strategy=strategy)
    flow.add_routine(Boom(), "boom")
    job = asyncio.run(flow.execute_async("boom"))
    assert job.status == "failed"
    assert flow.wait_for_completion(0)


def test_execute_async_from_an_async_handler_of_another_flow() -> None:
    inner = Flow("inner")
    inner.add_routine(Source(), "source")
    inner.add_routine(Sink(), "sink")
    inner.connect("source", "go", "sink", "input")
    statuses: list[str] = []

    class Outer(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.run_inner)

        async def run_inner(self, **_: Any) -> None:
            job = await inner.execute_async("source")  # on the engine's own loop
            statuses.append(job.status)

    outer = Flow("outer", execution_strategy="concurrent")
    outer.add_routine(Outer(), "outer")
    job = outer.execute("outer", timeout=30)
    assert job.wait_for_completion(30)
    assert job.status == "completed"
    assert statuses == ["completed"]

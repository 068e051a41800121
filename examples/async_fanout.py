"""Async fan-out: many awaiting handlers of one job overlap on a concurrent flow.

    source --url--> fetcher (async def) --fetched--> collector

The source emits N URLs; the fetcher's ``async def`` handler awaits
``asyncio.sleep(0.05)`` in place of an HTTP request, so the N fetches wait at the same
time on the engine's event loop and the whole job takes about as long as one fetch.
The collector appends each result to the job's shared data under the job's lock, since
its deliveries may run on several worker threads at once.

The job is started from an asyncio program with ``await flow.execute_async(...)``,
which does not block the program's own event loop: a heartbeat coroutine keeps ticking
while the job runs.

Run with ``.venv/bin/python examples/async_fanout.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from routilux import Flow, Routine

N_URLS = 8
FETCH_SECONDS = 0.05


class Source(Routine):
    """Emits one ``url`` event per URL it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("url", ["url"])

    def start(self, urls: Sequence[str] = (), **kwargs: Any) -> None:
        ctx = self.context
        ctx.job_state.merge_routine_state(ctx.routine_id, {"emitted": len(urls)})
        for url in urls:
            self.emit("url", url=url)


class Fetcher(Routine):
    """Fetches a URL (simulated with ``asyncio.sleep``) and forwards the result."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.fetch)
        self.define_event("fetched", ["url", "title"])

    async def fetch(self, url: str = "", **kwargs: Any) -> None:
        await asyncio.sleep(FETCH_SECONDS)  # stands for the network round trip
        # The context still names this job after the await.
        ctx = self.context
        with ctx.job_state.lock:
            state = ctx.job_state.get_routine_state(ctx.routine_id) or {}
            ctx.job_state.merge_routine_state(
                ctx.routine_id, {"fetched": state.get("fetched", 0) + 1}
            )
        page = url.rsplit("/", 1)[-1]
        self.emit("fetched", url=url, title=f"Page {page}")


class Collector(Routine):
    """Gathers every fetched result into the job's shared data."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.collect)

    def collect(self, url: str = "", title: str = "", **kwargs: Any) -> None:
        ctx = self.context
        # get_shared_data returns the stored list itself: change it under the lock.
        with ctx.job_state.lock:
            results = ctx.job_state.get_shared_data("results")
            if results is None:
                results = []
                ctx.job_state.update_shared_data("results", results)
            results.append((url, title))


def build_flow() -> Flow:
    flow = Flow(flow_id="async_fanout", execution_strategy="concurrent", max_workers=4)
    flow.add_routine(Source(), "source")
    flow.add_routine(Fetcher(), "fetcher")
    flow.add_routine(Collector(), "collector")
    flow.connect("source", "url", "fetcher", "input")
    flow.connect("fetcher", "fetched", "collector", "input")
    return flow


async def heartbeat(stop: asyncio.Event, ticks: list[int]) -> None:
    """Ticks every 10 ms on the program's loop until ``stop`` is set."""
    while not stop.is_set():
        await asyncio.sleep(0.01)
        ticks.append(1)


async def main() -> None:
    flow = build_flow()
    urls = [f"https://example.org/page/{i}" for i in range(N_URLS)]

    stop = asyncio.Event()
    ticks: list[int] = []
    beat = asyncio.create_task(heartbeat(stop, ticks))
    start = time.perf_counter()
    job = await flow.execute_async("source", {"urls": urls})
    elapsed = time.perf_counter() - start
    stop.set()
    await beat

    print(f"Status: {job.status}")
    source_state = job.get_routine_state("source") or {}
    print(f"Source state: {source_state.get('emitted')} urls emitted")
    print(f"Fetcher state: {job.get_routine_state('fetcher')}")
    print("\nResults (sorted):")
    for url, title in sorted(job.get_shared_data("results", [])):
        print(f"  {url} -> {title!r}")
    # Only the comparison is printed: the raw time differs from run to run.
    fast = elapsed < N_URLS * FETCH_SECONDS
    print(f"\n{N_URLS} fetches took less than {N_URLS} x {FETCH_SECONDS} s: {fast}")
    print(f"The caller's event loop kept running meanwhile: {len(ticks) > 0}")


if __name__ == "__main__":
    asyncio.run(main())

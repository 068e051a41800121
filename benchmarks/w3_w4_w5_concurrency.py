"""W3, W4 and W5: the concurrent strategy, async handlers, and many jobs at once.

W3: 1 source -> 8 workers -> 1 aggregator, N messages in one job: events per
second (one event = one emission delivered to one handler, 16 per message),
concurrent and sequential, beside a plain-Python deque loop doing the same
fan-out/fan-in.
W4: 64 handlers each blocking 20 ms in ``time.sleep`` on 16 workers (ideal
64 / 16 * 20 ms = 80 ms), and 1,000 ``async def`` handlers each awaiting
``asyncio.sleep(0.02)`` (ideal 20 ms): wall time against the ideal, beside a
plain ThreadPoolExecutor and a plain ``asyncio.gather``.
W5: 1,000 jobs of one 3-routine flow started at once with ``wait=False`` and
then waited for: jobs per second and peak RSS, beside a plain ThreadPoolExecutor
running the same three calls per job.

Targets: W4 threads within 1.3x of ideal, W4 async within 3x of ideal,
W5 >= 5,000 jobs/s.  Figures are medians; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait

sys.path.insert(0, os.path.dirname(__file__))

from _common import Source, median_seconds, row  # noqa: E402

from routilux import Flow, Routine  # noqa: E402

FAN = 8
SLEEP = 0.02


# -- routines --------------------------------------------------------------------------


class Worker(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_value)
        self.define_event("output", ["value"])

    def on_value(self, value: int) -> None:
        self.emit("output", value=value * 2)


class Aggregator(Routine):
    """Sums what arrives in the job's state (a read-modify-write under the job lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_value)

    def on_value(self, value: int) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        js = ctx.job_state
        with js.lock:
            js.shared_data["total"] = js.shared_data.get("total", 0) + value


class Sleeper(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_value)

    def on_value(self, value: int) -> None:
        time.sleep(SLEEP)


class AsyncSleeper(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_value)

    async def on_value(self, value: int) -> None:
        await asyncio.sleep(SLEEP)


# -- W3 -----------------------------------------------------------------------------------


def build_w3(strategy: str, workers: int) -> Flow:
    flow = Flow(flow_id=f"w3-{strategy}", execution_strategy=strategy, max_workers=workers)
    flow.add_routine(Source(), "source")
    flow.add_routine(Aggregator(), "aggregator")
    for w in range(FAN):
        flow.add_routine(Worker(), f"worker{w}")
        flow.connect("source", "output", f"worker{w}", "input")
        flow.connect(f"worker{w}", "output", "aggregator", "input")
    return flow


def deque_fan(n: int) -> int:
    """W3's work as a plain work queue: (stage, value) items, stage 0 = worker, 1 = aggregator."""
    total = 0
    queue: deque[tuple[int, int]] = deque()
    for i in range(n):
        for _ in range(FAN):
            queue.append((0, i))
        while queue:
            stage, value = queue.popleft()
            if stage == 0:
                queue.append((1, value * 2))
            else:
                total += value
    return total


def w3(messages: int) -> None:
    events = messages * FAN * 2
    expected = deque_fan(messages)
    print(f"W3: 1 source -> {FAN} workers -> 1 aggregator, {messages} messages ({events} events)")
    t_base = median_seconds(lambda: deque_fan(messages))
    for strategy, workers in (("concurrent", FAN), ("sequential", 1)):
        flow = build_w3(strategy, workers)
        check = flow.execute("source", {"n": messages})
        assert check.status == "completed" and check.shared_data["total"] == expected
        t = median_seconds(lambda flow=flow: flow.execute("source", {"n": messages}), repeats=5)
        label = f"routilux, {strategy}" + (f" ({workers} workers)" if workers > 1 else "")
        row(label, events / t, "events/s", f"{t / t_base:,.0f}x deque loop")
        flow.shutdown()
    row("plain Python, deque loop", events / t_base, "events/s")


# -- W4 -----------------------------------------------------------------------------------


def build_sleepers(routine: Routine, workers: int) -> Flow:
    flow = Flow(flow_id="w4", execution_strategy="concurrent", max_workers=workers)
    flow.add_routine(Source(), "source")
    flow.add_routine(routine, "sleeper")
    flow.connect("source", "output", "sleeper", "input")
    return flow


def w4() -> None:
    handlers, workers = 64, 16
    ideal = handlers / workers * SLEEP
    print(f"W4a: {handlers} handlers each time.sleep({SLEEP}) on {workers} workers")
    flow = build_sleepers(Sleeper(), workers)
    t = median_seconds(lambda: flow.execute("source", {"n": handlers}))
    flow.shutdown()
    pool = ThreadPoolExecutor(max_workers=workers)

    def plain_threads() -> None:
        wait([pool.submit(time.sleep, SLEEP) for _ in range(handlers)])

    t_plain = median_seconds(plain_threads)
    pool.shutdown()
    row("routilux, concurrent", t * 1e3, "ms", f"{t / ideal:.2f}x ideal (target <= 1.3x)")
    row("plain ThreadPoolExecutor", t_plain * 1e3, "ms", f"{t_plain / ideal:.2f}x ideal")
    row("ideal", ideal * 1e3, "ms")

    coroutines = 1000
    print(f"W4b: {coroutines} async def handlers each awaiting asyncio.sleep({SLEEP})")
    flow = build_sleepers(AsyncSleeper(), workers)
    t = median_seconds(lambda: flow.execute("source", {"n": coroutines}))
    flow.shutdown()

    async def gather() -> None:
        await asyncio.gather(*(asyncio.sleep(SLEEP) for _ in range(coroutines)))

    t_plain = median_seconds(lambda: asyncio.run(gather()))
    row("routilux, concurrent", t * 1e3, "ms", f"{t / SLEEP:.2f}x ideal (target <= 3x)")
    row("plain asyncio.gather (incl. asyncio.run)", t_plain * 1e3, "ms", f"{t_plain / SLEEP:.2f}x")
    row("ideal", SLEEP * 1e3, "ms")


# -- W5 -----------------------------------------------------------------------------------


def build_w5(workers: int) -> Flow:
    flow = Flow(flow_id="w5", execution_strategy="concurrent", max_workers=workers)
    flow.add_routine(Source(), "source")
    flow.add_routine(Worker(), "worker")
    flow.add_routine(Aggregator(), "aggregator")
    flow.connect("source", "output", "worker", "input")
    flow.connect("worker", "output", "aggregator", "input")
    return flow


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20  # KiB on Linux


def w5(jobs: int, workers: int) -> None:
    print(f"W5: {jobs} jobs of a 3-routine flow, started with wait=False, then waited")
    flow = build_w5(workers)

    def start_and_wait() -> None:
        states = [flow.execute("source", {"n": 1}, wait=False) for _ in range(jobs)]
        flow.wait_for_completion()
        assert all(js.status == "completed" for js in states)

    rss_before = peak_rss_mb()
    t = median_seconds(start_and_wait)
    rss_after = peak_rss_mb()
    flow.shutdown()

    pool = ThreadPoolExecutor(max_workers=workers)

    def plain() -> None:
        # Per job: the source step on this thread, then a worker task that submits an
        # aggregator task (as the flow does); a countdown tells when all jobs are done.
        lock = threading.Lock()
        done = threading.Event()
        remaining = [jobs]

        def aggregate(state: dict[str, int], value: int) -> None:
            with lock:
                state["total"] = state.get("total", 0) + value
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

        def work(state: dict[str, int], value: int) -> None:
            pool.submit(aggregate, state, value * 2)

        for i in range(jobs):
            pool.submit(work, {}, i)
        done.wait()

    t_plain = median_seconds(plain)
    pool.shutdown()
    rate = jobs / t
    row(
        f"routilux, concurrent ({workers} workers)",
        rate,
        "jobs/s",
        f"{rate / 5000:.2f}x target (>= 5,000)",
    )
    row("plain ThreadPoolExecutor, 2 tasks a job", jobs / t_plain, "jobs/s")
    row("peak RSS of the process after W5", rss_after, "MiB", f"(+{rss_after - rss_before:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="W3 messages per run")
    parser.add_argument("--jobs", type=int, default=1000, help="W5 jobs per run")
    parser.add_argument("--w5-workers", type=int, default=4, help="W5 pool size")
    parser.add_argument("--only", choices=["w3", "w4", "w5"], help="run one workload")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    if args.only in (None, "w5"):
        w5(args.jobs, args.w5_workers)  # first, so its peak RSS is its own
    if args.only in (None, "w3"):
        w3(args.messages)
    if args.only in (None, "w4"):
        w4()


if __name__ == "__main__":
    main()

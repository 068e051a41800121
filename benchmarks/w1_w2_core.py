"""W1 and W2: the core engine's per-job and per-event cost, sequential strategy.

W1: a 2-routine flow (source -> sink), one message per job, many jobs back to
back: microseconds per job.
W2: a source pushes N messages through a 10-stage chain to a sink: events per
second (one event = one emission delivered to one handler).

Each is printed beside plain-Python baselines doing the same work in the same
run: direct function calls, and a ``collections.deque`` work-queue loop.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import deque

sys.path.insert(0, os.path.dirname(__file__))

from _common import Source, median_seconds, row  # noqa: E402

from routilux import Flow, Routine  # noqa: E402

STAGES = 10


class Stage(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_value)
        self.define_event("output", ["value"])

    def on_value(self, value: int) -> None:
        self.emit("output", value=value + 1)


class Sink(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.define_slot("input", handler=self.on_value)

    def on_value(self, value: int) -> None:
        self.total += value


def build_w1() -> Flow:
    flow = Flow(flow_id="w1")
    flow.add_routine(Source(), "source")
    flow.add_routine(Sink(), "sink")
    flow.connect("source", "output", "sink", "input")
    return flow


def build_w2() -> Flow:
    flow = Flow(flow_id="w2")
    flow.add_routine(Source(), "source")
    previous = "source"
    for i in range(STAGES):
        flow.add_routine(Stage(), f"stage{i}")
        flow.connect(previous, "output", f"stage{i}", "input")
        previous = f"stage{i}"
    flow.add_routine(Sink(), "sink")
    flow.connect(previous, "output", "sink", "input")
    return flow


def direct_chain(n: int) -> int:
    total = 0

    def stage(v: int) -> int:
        return v + 1

    for i in range(n):
        v = i
        for _ in range(STAGES):
            v = stage(v)
        total += v
    return total


def deque_chain(n: int) -> int:
    """The same work as W2 as a plain work queue: (stage index, value) items."""
    total = 0
    queue: deque[tuple[int, int]] = deque()
    for i in range(n):
        queue.append((0, i))
    while queue:
        stage, value = queue.popleft()
        if stage < STAGES:
            queue.append((stage + 1, value + 1))
        else:
            total += value
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="W1 jobs per run")
    parser.add_argument("--messages", type=int, default=5000, help="W2 messages per run")
    args = parser.parse_args()

    flow1 = build_w1()
    jobs = args.jobs

    def w1() -> None:
        for _ in range(jobs):
            flow1.execute("source", {"n": 1})

    def w1_direct() -> None:
        for _ in range(jobs):
            direct_chain(1)

    def w1_deque() -> None:
        for _ in range(jobs):
            deque_chain(1)

    t_w1 = median_seconds(w1, repeats=5) / jobs * 1e6
    t_w1_direct = median_seconds(w1_direct) / jobs * 1e6
    t_w1_deque = median_seconds(w1_deque) / jobs * 1e6
    print(f"W1: 2-routine flow, 1 message per job, {jobs} jobs back to back (median of runs)")
    row("routilux, sequential", t_w1, "us/job", f"{t_w1 / t_w1_deque:,.0f}x deque loop")
    row("plain Python, direct calls", t_w1_direct, "us/job")
    row("plain Python, deque loop", t_w1_deque, "us/job")

    flow2 = build_w2()
    n = args.messages
    events = n * (STAGES + 1)

    t_w2 = median_seconds(lambda: flow2.execute("source", {"n": n}), repeats=5)
    t_w2_direct = median_seconds(lambda: direct_chain(n))
    t_w2_deque = median_seconds(lambda: deque_chain(n))
    print(f"W2: source -> {STAGES}-stage chain -> sink, {n} messages ({events} events per run)")
    row("routilux, sequential", events / t_w2, "events/s", f"{t_w2 / t_w2_deque:,.0f}x deque loop")
    row("plain Python, direct calls", events / t_w2_direct, "events/s")
    row("plain Python, deque loop", events / t_w2_deque, "events/s")


if __name__ == "__main__":
    main()

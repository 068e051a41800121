"""Helpers shared by the benchmark scripts: timing with medians, printing, the source routine."""

from __future__ import annotations

import statistics
import time
from typing import Callable

from routilux import Routine


def median_seconds(fn: Callable[[], object], repeats: int = 7) -> float:
    """The median wall time of ``fn()`` over ``repeats`` runs (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_cpu(fn: Callable[[], object], repeats: int) -> float:
    """The median CPU time of this process (every thread) for ``fn()`` over ``repeats``
    runs, after one warm-up run.  CPU time, not wall time: on a shared machine the
    time other processes take is not counted (their cache and frequency effects
    still are)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def row(label: str, value: float, unit: str, note: str = "") -> None:
    """Print one aligned result line."""
    print(f"  {label:<44} {value:>14,.2f} {unit:<10} {note}")


class Source(Routine):
    """Entry routine of the benchmark flows: emits ``value=i`` for i in range(n)."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.run)
        self.define_event("output", ["value"])

    def run(self, n: int = 1, **_: object) -> None:
        for i in range(n):
            self.emit("output", value=i)

"""Helpers shared by the benchmark scripts: timing with medians, and printing."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(fn: Callable[[], object], repeats: int = 7) -> float:
    """The median wall time of ``fn()`` over ``repeats`` runs (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def row(label: str, value: float, unit: str, note: str = "") -> None:
    """Print one aligned result line."""
    print(f"  {label:<44} {value:>14,.2f} {unit:<10} {note}")

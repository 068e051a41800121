"""Runs an attack corpus against the expression language in a process of its own.

Reads ``{"attacks": [[expression, data_kind], ...], "sentinel": path}`` as JSON on
stdin and writes one JSON object: per attack its outcome (exception class, whether it
is an ExpressionError), its CPU and elapsed times and its peak memory (resident set size on
Linux, else a second pass with tracemalloc), plus what the corpus may have done:
modules imported, the sentinel file, calls of the canary's methods.

The address space is limited (RLIMIT_AS) to what the process uses before the corpus
plus 200 MB, so no attack can get more than that (it would end in a MemoryError, which
the test reports) and a regression cannot take the machine down with it.
"""

from __future__ import annotations

import json
import re
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

BACKSTOP_BYTES = 2 * 1024**3  # the address space assumed when /proc is not there
MAX_GROWTH_BYTES = 200 * 1024**2  # the bound per attack

CALLED: list[str] = []


class Canary:
    """Data whose methods record any call (no attack may get to call one)."""

    def pwn(self) -> None:
        CALLED.append("pwn")

    def __reduce__(self) -> Any:  # pragma: no cover - must never run
        CALLED.append("__reduce__")
        return (str, ())


def generator() -> Any:
    yield 1


def data_of(kind: Any) -> Any:
    if isinstance(kind, list):  # ["literal", value]
        return kind[1]
    return {
        "none": lambda: None,
        "dict": lambda: {"a": 1, "b": [1, 2], "s": "x"},
        "str": lambda: "ab",
        "int": lambda: 10**5,
        "obj": Canary,
        "gen": generator,
        "big": lambda: list(range(400_000)),
        "shared": lambda: [[0] * 1000] * 1000,  # what a YAML alias bomb gives
    }[kind]()


class _RssPeaks:
    """Peak resident memory per attack on Linux: writing 5 to /proc/self/clear_refs
    resets VmHWM (the high-water mark), which /proc/self/status reports."""

    def __init__(self) -> None:
        self.before = 0

    @classmethod
    def create(cls) -> _RssPeaks | None:
        try:
            peaks = cls()
            peaks.reset()
            peaks.peak()
        except (OSError, ValueError, AttributeError):
            return None
        return peaks

    @staticmethod
    def _status(field: str) -> int:
        text = Path("/proc/self/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
        if match is None:
            raise ValueError(field)
        return int(match.group(1)) * 1024

    def reset(self) -> None:
        Path("/proc/self/clear_refs").write_text("5")
        self.before = self._status("VmRSS")

    def peak(self) -> int:
        return self._status("VmHWM") - self.before


def _limit_address_space() -> None:
    """No attack may grow the process by more than MAX_GROWTH_BYTES: beyond, allocations
    fail with MemoryError (which the test looks for) instead of exhausting the host."""
    try:
        text = Path("/proc/self/status").read_text()
        match = re.search(r"^VmSize:\s+(\d+) kB", text, re.MULTILINE)
        size = int(match.group(1)) * 1024 if match else BACKSTOP_BYTES
    except OSError:
        size = BACKSTOP_BYTES
    limit = size + MAX_GROWTH_BYTES
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def main() -> None:
    request = json.load(sys.stdin)

    from routilux.builtin_routines._expressions import ExpressionError, evaluate

    attacks = [(expression, data_of(kind)) for expression, kind in request["attacks"]]
    rss_peaks = _RssPeaks.create()
    _limit_address_space()
    modules_before = set(sys.modules)
    results: list[dict[str, Any]] = []
    for expression, data in attacks:
        if rss_peaks is not None:
            rss_peaks.reset()
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            evaluate(expression, data, {"threshold": 1})
            outcome, message, refused = "returned", "", False
        except ExpressionError as exc:
            outcome, message, refused = type(exc).__name__, str(exc), True
        except Exception as exc:  # noqa: BLE001 - reported, the test decides
            outcome, message, refused = type(exc).__name__, str(exc), False
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        results.append(
            {
                "expression": expression[:60],
                "outcome": outcome,
                "message": message[:200],
                "refused": refused,
                "elapsed": elapsed,
                "cpu": cpu,
                "peak_bytes": None if rss_peaks is None else rss_peaks.peak(),
            }
        )
    if rss_peaks is None:  # no /proc/self/clear_refs: measure with tracemalloc (slower)
        tracemalloc.start()
        for result, (expression, data) in zip(results, attacks):
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            try:
                evaluate(expression, data, {"threshold": 1})
            except Exception:  # noqa: BLE001 - outcomes were taken in the first pass
                pass
            result["peak_bytes"] = tracemalloc.get_traced_memory()[1] - baseline
        tracemalloc.stop()
    report = {
        "results": results,
        "new_modules": sorted(set(sys.modules) - modules_before - {"tracemalloc"}),
        "sentinel_exists": Path(request["sentinel"]).exists(),
        "canary_calls": CALLED,
    }
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()

"""Live progress of one job for ``routilux run``, fed by the public lifecycle hooks.

:class:`RunProgress` is a :class:`~routilux.JobHooks`: it counts, per routine, the
deliveries queued (emissions of connected events and scheduled timers, minus those
started), running, done and failed, and the time from a routine's first delivery to
its last. Hooks run on the engine's threads, so every count is kept under one lock and
the display reads a snapshot (:meth:`RunProgress.snapshot`).

:func:`progress_table` renders a snapshot as a Rich table (the live display on a
terminal and the final summary); :func:`progress_lines` as plain text lines (when the
output is not a terminal).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from rich.table import Table

from routilux.hooks import Delivery, JobHooks

if TYPE_CHECKING:
    from routilux.flow.flow import Flow
    from routilux.job_state import ExecutionRecord, JobState


@dataclass(frozen=True)
class RoutineCounts:
    """Deliveries of one routine so far; ``elapsed`` is seconds from its first
    delivery's start to its latest one's end (or to now while one runs)."""

    routine_id: str
    class_name: str
    queued: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    elapsed: float = 0.0

    @property
    def status(self) -> str:
        if self.running:
            return "running"
        if self.queued:
            return "queued"
        if self.failed and not self.done:
            return "failed"
        if self.done:
            return "done"
        return "idle"


class RunProgress(JobHooks):
    """Counts of every routine of ``flow`` in the job it observes (one job)."""

    def __init__(self, flow: Flow) -> None:
        self._lock = threading.Lock()
        self._targets: dict[tuple[str, str], list[str]] = {}
        for connection in flow.connections:
            event = connection.source_event
            source, target = connection._source_routine_id, connection._target_routine_id
            if event is not None and source is not None and target is not None:
                self._targets.setdefault((source, event.name), []).append(target)
        self._order = list(flow.routines)
        self._classes = {rid: type(r).__name__ for rid, r in flow.routines.items()}
        self._queued = dict.fromkeys(self._order, 0)
        self._running = dict.fromkeys(self._order, 0)
        self._done = dict.fromkeys(self._order, 0)
        self._failed = dict.fromkeys(self._order, 0)
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self.started = time.monotonic()
        self.errors: list[tuple[str, str]] = []
        """(routine id, error text) of every failed delivery, in order."""

    # -- hooks (engine threads) ----------------------------------------------------

    def on_delivery_start(self, job_state: JobState, delivery: Delivery) -> None:
        rid = delivery.routine_id
        with self._lock:
            if rid not in self._queued:
                return
            if not delivery.entry:
                # A retry re-queued without a timer, or a job-end delivery, was never
                # counted as queued: never go below zero.
                self._queued[rid] = max(0, self._queued[rid] - 1)
            self._running[rid] += 1
            self._first.setdefault(rid, time.monotonic())

    def on_delivery_end(
        self,
        job_state: JobState,
        delivery: Delivery,
        duration: float,
        error: BaseException | None,
    ) -> None:
        rid = delivery.routine_id
        with self._lock:
            if rid not in self._running:
                return
            self._running[rid] = max(0, self._running[rid] - 1)
            if error is None:
                self._done[rid] += 1
            elif isinstance(error, KeyboardInterrupt):
                # Ctrl-C: the job gave the delivery up and saved it to run on resume.
                self._queued[rid] += 1
            else:
                self._failed[rid] += 1
                self.errors.append((rid, f"{type(error).__name__}: {error}"))
            self._last[rid] = time.monotonic()

    def on_emit(self, job_state: JobState, record: ExecutionRecord) -> None:
        targets = self._targets.get((record.routine_id, record.event_name))
        if not targets:
            return
        with self._lock:
            for target in targets:
                self._queued[target] += 1

    def on_timer(self, job_state: JobState, routine_id: str, slot_name: str, delay: float) -> None:
        with self._lock:
            if routine_id in self._queued:
                self._queued[routine_id] += 1

    # -- reading (any thread) ------------------------------------------------------

    def snapshot(self) -> list[RoutineCounts]:
        """The counts of every routine, in the flow's order."""
        now = time.monotonic()
        with self._lock:
            out = []
            for rid in self._order:
                first = self._first.get(rid)
                end = now if self._running[rid] else self._last.get(rid, first)
                elapsed = (end - first) if first is not None and end is not None else 0.0
                out.append(
                    RoutineCounts(
                        rid,
                        self._classes[rid],
                        self._queued[rid],
                        self._running[rid],
                        self._done[rid],
                        self._failed[rid],
                        max(0.0, elapsed),
                    )
                )
            return out

    def settled(self) -> list[RoutineCounts]:
        """The counts once the job has settled: nothing is running or queued any more
        (a cancelled or failed job drops what was queued)."""
        return [replace(c, queued=0, running=0) for c in self.snapshot()]

    def elapsed(self) -> float:
        """Seconds since the progress was created (just before the job started)."""
        return time.monotonic() - self.started


_STYLES = {
    "running": "bold cyan",
    "queued": "yellow",
    "failed": "bold red",
    "done": "green",
    "idle": "dim",
}


def progress_table(counts: list[RoutineCounts], title: str = "") -> Table:
    """A Rich table of ``counts``: one row per routine."""
    table = Table(title=title or None, title_justify="left", expand=False)
    table.add_column("routine")
    table.add_column("class", style="dim")
    table.add_column("status")
    for name in ("done", "queued", "running", "failed"):
        table.add_column(name, justify="right")
    table.add_column("elapsed", justify="right")
    for c in counts:
        style = _STYLES[c.status]
        table.add_row(
            c.routine_id,
            c.class_name,
            f"[{style}]{c.status}[/]",
            str(c.done),
            str(c.queued),
            str(c.running),
            f"[red]{c.failed}[/]" if c.failed else "0",
            f"{c.elapsed:.2f}s",
        )
    return table


def progress_lines(counts: list[RoutineCounts]) -> list[str]:
    """``counts`` as plain text, one line per routine."""
    width = max((len(c.routine_id) for c in counts), default=0)
    return [
        f"  {c.routine_id:<{width}}  {c.status:<7}  done {c.done}  queued {c.queued}  "
        f"running {c.running}  failed {c.failed}  {c.elapsed:.2f}s"
        for c in counts
    ]


def counts_as_data(counts: list[RoutineCounts]) -> dict[str, Any]:
    """``counts`` as JSON-safe data: routine id -> its numbers."""
    return {
        c.routine_id: {
            "class": c.class_name,
            "status": c.status,
            "done": c.done,
            "queued": c.queued,
            "running": c.running,
            "failed": c.failed,
            "elapsed": round(c.elapsed, 6),
        }
        for c in counts
    }

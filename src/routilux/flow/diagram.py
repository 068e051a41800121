"""Pictures of a flow: Mermaid and Graphviz DOT text, and SVG/PNG through Graphviz.

This module owns the diagram of a flow's public structure (routines, their slots and
events, connections with their parameter mappings) and, given a JobState, what each
routine did in that job (done / failed / skipped / waiting, with delivery counts).
It reads the flow and the job; it never changes either.

``Flow.to_mermaid``/``Flow.to_dot`` call :func:`to_mermaid`/:func:`to_dot`. Rendering to
SVG or PNG (:func:`render`) needs the ``graphviz`` Python package and Graphviz's ``dot``
program; a missing one raises :class:`DiagramError` naming it.
"""

from __future__ import annotations

import importlib
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Protocol

from ..exceptions import RoutiluxError

if TYPE_CHECKING:
    from ..connection import Connection
    from ..job_state import JobState
    from ..routine import Routine

__all__ = ["DiagramError", "RoutineActivity", "activity", "render", "to_dot", "to_mermaid"]


class Drawn(Protocol):
    """What a diagram reads of a flow (``flow.Flow``, which imports this module)."""

    @property
    def flow_id(self) -> str: ...
    @property
    def routines(self) -> Mapping[str, Routine]: ...
    @property
    def connections(self) -> Sequence[Connection]: ...


#: What a routine did in a job, and the colour it gets (fill, border).
STATUS_COLOURS = {
    "done": ("#d4edda", "#28a745"),
    "failed": ("#f8d7da", "#dc3545"),
    "skipped": ("#fff3cd", "#e0a800"),
    "waiting": ("#e2e3e5", "#6c757d"),
    "not run": ("#ffffff", "#adb5bd"),
}

FORMATS = ("mermaid", "dot", "svg", "png")

DIRECTIONS = ("LR", "TB")
"""Which way a diagram runs: left to right (the default) or top to bottom."""


class DiagramError(RoutiluxError):
    """A diagram could not be made (a missing renderer, an unknown format)."""


@dataclass(frozen=True)
class RoutineActivity:
    """What one routine did in a job: ``status`` is one of :data:`STATUS_COLOURS`;
    ``delivered`` counts the deliveries made to its slots (the entry's trigger
    included), ``pending`` those saved but not run yet (a paused job), ``emitted`` its
    emissions and ``errors`` its recorded failures."""

    status: str
    delivered: int = 0
    pending: int = 0
    emitted: int = 0
    errors: int = 0

    def label(self) -> str:
        parts = [self.status, f"{self.delivered} in", f"{self.emitted} out"]
        if self.pending:
            parts.append(f"{self.pending} waiting")
        if self.errors:
            parts.append(f"{self.errors} errors")
        return ", ".join(parts)


_ERROR_EVENTS = ("error", "error_continued")


def activity(flow: Drawn, job_state: JobState) -> dict[str, RoutineActivity]:
    """Routine id -> what it did in ``job_state`` (a job of ``flow``).

    Worked out from the job's history (emissions, recorded errors), its routine
    states (failed, skipped, continued after an error) and its saved pending tasks;
    the deliveries to a routine are the emissions of the events connected to it.
    A history trimmed by ``history_limit`` gives lower counts.
    """
    emitted: dict[str, int] = {}
    errors: dict[str, int] = {}
    delivered: dict[str, int] = {}
    targets: dict[tuple[str, str], list[str]] = {}
    for connection in flow.connections:
        source, target = connection._source_routine_id, connection._target_routine_id
        event = connection.source_event
        if source is not None and target is not None and event is not None:
            targets.setdefault((source, event.name), []).append(target)
    for record in list(job_state.execution_history):
        rid = record.routine_id
        if record.event_name in _ERROR_EVENTS:
            errors[rid] = errors.get(rid, 0) + 1
            continue
        emitted[rid] = emitted.get(rid, 0) + 1
        for target in targets.get((rid, record.event_name), ()):
            delivered[target] = delivered.get(target, 0) + 1
    entry = job_state.current_routine_id
    if entry is not None and job_state.status != "pending":
        delivered[entry] = delivered.get(entry, 0) + 1
    pending: dict[str, int] = {}
    for task in list(job_state.pending_tasks):
        waiting = task.get("slot_routine_id") if isinstance(task, dict) else None
        if isinstance(waiting, str):
            pending[waiting] = pending.get(waiting, 0) + 1
    out = {}
    for rid in flow.routines:
        state = job_state.routine_states.get(rid) or {}
        saved = state.get("status")
        if saved == "failed":
            status = "failed"
        elif saved == "skipped":
            status = "skipped"
        elif pending.get(rid):
            status = "waiting"
        elif delivered.get(rid) or emitted.get(rid) or errors.get(rid):
            status = "done"
        elif job_state.status in ("running", "paused", "pending"):
            status = "waiting"
        else:
            status = "not run"
        out[rid] = RoutineActivity(
            status,
            delivered.get(rid, 0),
            pending.get(rid, 0),
            emitted.get(rid, 0),
            errors.get(rid, 0),
        )
    return out


def _node_id(rid: str, taken: dict[str, str]) -> str:
    """A diagram-safe id for routine ``rid`` (letters, digits, ``_``), unique."""
    if rid in taken:
        return taken[rid]
    base = "r_" + re.sub(r"[^A-Za-z0-9_]", "_", rid)
    candidate, n = base, 1
    used = set(taken.values())
    while candidate in used:
        n += 1
        candidate = f"{base}_{n}"
    taken[rid] = candidate
    return candidate


def _mermaid_text(text: str) -> str:
    # Inside "...": Mermaid has no escape for a quote but accepts HTML entities.
    return (
        text.replace("&", "&amp;")
        .replace('"', "&quot;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("|", "&#124;")
    )


def _names(items: Iterable[str]) -> str:
    return ", ".join(items) or "-"


def _edges(flow: Drawn) -> list[tuple[str, str, str, str, dict[str, str]]]:
    """(source id, event, target id, slot, mapping) of every connection."""
    out = []
    for connection in flow.connections:
        event, slot = connection.source_event, connection.target_slot
        source, target = connection._source_routine_id, connection._target_routine_id
        if event is None or slot is None or source is None or target is None:
            continue
        out.append((source, event.name, target, slot.name, dict(connection.param_mapping)))
    return out


def _edge_label(event: str, slot: str, mapping: dict[str, str]) -> str:
    label = f"{event} → {slot}"
    if mapping:
        label += " (" + ", ".join(f"{k}→{v}" for k, v in mapping.items()) + ")"
    return label


def _direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise DiagramError(
            f"unknown diagram direction {direction!r}; choose one of {', '.join(DIRECTIONS)}"
        )
    return direction


def to_mermaid(flow: Drawn, job_state: Optional[JobState] = None, *, direction: str = "LR") -> str:
    """The flow as a Mermaid ``flowchart``: one node per routine (its id, class, slots
    and events), one arrow per connection labelled ``event → slot`` and its parameter
    mapping. With ``job_state`` every node is coloured by what it did in that job and
    shows its delivery counts."""
    done = activity(flow, job_state) if job_state is not None else None
    ids: dict[str, str] = {}
    lines = [f"flowchart {_direction(direction)}"]
    for rid, routine in flow.routines.items():
        node = _node_id(rid, ids)
        label = (
            f"<b>{_mermaid_text(rid)}</b><br/>{_mermaid_text(type(routine).__name__)}"
            f"<br/>in: {_mermaid_text(_names(routine._slots))}"
            f"<br/>out: {_mermaid_text(_names(routine._events))}"
        )
        if done is not None:
            label += f"<br/><i>{_mermaid_text(done[rid].label())}</i>"
        lines.append(f'    {node}["{label}"]')
    for source, event, target, slot, mapping in _edges(flow):
        text = _mermaid_text(_edge_label(event, slot, mapping))
        lines.append(f'    {_node_id(source, ids)} -->|"{text}"| {_node_id(target, ids)}')
    if done is not None:
        for status, (fill, stroke) in STATUS_COLOURS.items():
            name = status.replace(" ", "_")
            lines.append(f"    classDef {name} fill:{fill},stroke:{stroke},stroke-width:2px")
        for rid, what in done.items():
            lines.append(f"    class {ids[rid]} {what.status.replace(' ', '_')}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(flow: Drawn, job_state: Optional[JobState] = None, *, direction: str = "LR") -> str:
    """The flow as a Graphviz ``digraph`` (same content as :func:`to_mermaid`)."""
    done = activity(flow, job_state) if job_state is not None else None
    ids: dict[str, str] = {}
    lines = [
        f'digraph "{_dot_text(flow.flow_id)}" {{',
        f"    rankdir={_direction(direction)};",
        '    node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
    ]
    for rid, routine in flow.routines.items():
        node = _node_id(rid, ids)
        label = (
            f"{rid}\n{type(routine).__name__}\nin: {_names(routine._slots)}"
            f"\nout: {_names(routine._events)}"
        )
        attrs = ""
        if done is not None:
            what = done[rid]
            label += f"\n{what.label()}"
            fill, stroke = STATUS_COLOURS[what.status]
            attrs = f', fillcolor="{fill}", color="{stroke}", penwidth=2'
        lines.append(f'    {node} [label="{_dot_text(label)}"{attrs}];')
    for source, event, target, slot, mapping in _edges(flow):
        label = _dot_text(_edge_label(event, slot, mapping))
        lines.append(f'    {_node_id(source, ids)} -> {_node_id(target, ids)} [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(
    flow: Drawn, fmt: str, job_state: Optional[JobState] = None, *, direction: str = "LR"
) -> bytes:
    """The diagram in ``fmt`` (one of :data:`FORMATS`) as bytes: Mermaid and DOT as
    UTF-8 text, SVG and PNG rendered by Graphviz. ``direction``: ``"LR"`` or ``"TB"``."""
    if fmt == "mermaid":
        return to_mermaid(flow, job_state, direction=direction).encode("utf-8")
    if fmt == "dot":
        return to_dot(flow, job_state, direction=direction).encode("utf-8")
    if fmt not in FORMATS:
        raise DiagramError(f"unknown diagram format {fmt!r}; choose one of {', '.join(FORMATS)}")
    try:
        graphviz: Any = importlib.import_module("graphviz")
    except ImportError:
        raise DiagramError(
            f"rendering {fmt.upper()} needs the 'graphviz' Python package "
            "(pip install 'routilux[cli]') and Graphviz's 'dot' program "
            "(Debian/Ubuntu: apt-get install graphviz)"
        ) from None
    if shutil.which("dot") is None:
        raise DiagramError(
            f"rendering {fmt.upper()} needs Graphviz's 'dot' program on PATH "
            "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz)"
        )
    source = to_dot(flow, job_state, direction=direction)
    try:
        data = graphviz.pipe("dot", fmt, source.encode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - graphviz's own error classes vary by version
        raise DiagramError(f"Graphviz could not render the flow as {fmt}: {exc}") from exc
    return bytes(data)

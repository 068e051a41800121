"""Dependency views of a flow's graph (informative; scheduling does not use them)."""

from __future__ import annotations

from typing import Any


def build_dependency_graph(routines: dict[str, Any], connections: list[Any]) -> dict[str, set[str]]:
    """Map each routine id to the ids of the routines it receives data from."""
    ids = {id(r): rid for rid, r in reversed(list(routines.items()))}
    graph: dict[str, set[str]] = {rid: set() for rid in routines}
    for conn in connections:
        source = conn.source_event.routine if conn.source_event is not None else None
        target = conn.target_slot.routine if conn.target_slot is not None else None
        src, dst = ids.get(id(source)), ids.get(id(target))
        if src is not None and dst is not None and src != dst:
            graph[dst].add(src)
    return graph


def get_ready_routines(
    completed: set[str], dependency_graph: dict[str, set[str]], running: set[str]
) -> list[str]:
    """Routines whose dependencies are all completed and that are neither done nor running."""
    return [
        rid
        for rid, deps in dependency_graph.items()
        if rid not in completed and rid not in running and deps <= completed
    ]

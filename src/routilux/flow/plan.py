"""Compiling a flow's definition into the engine's read-only :class:`~routilux.engine.plan.Plan`.

This is the one place that reads the definition objects for the engine: which
routine id each routine object has, which slots each event feeds and through which
connection, how each slot's handler is called, whether it keeps a merge buffer, its
timeout, and which error handler applies to each routine (its own, else the flow's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from ..engine import plan as engine_plan
from ..engine.plan import EventPlan, Plan, Route, SlotPlan

if TYPE_CHECKING:
    from ..connection import Connection
    from ..error_handler import ErrorHandler
    from ..routine import Routine


class FlowDefinition(Protocol):
    """What the compiler reads of a flow (``flow.Flow``, which imports this module)."""

    @property
    def flow_id(self) -> str: ...
    @property
    def routines(self) -> Mapping[str, Routine]: ...
    @property
    def error_handler(self) -> ErrorHandler | None: ...
    @property
    def _connection_index(self) -> Mapping[tuple[int, int], Connection]: ...


def compile_plan(flow: FlowDefinition) -> Plan:
    """The plan of ``flow`` as defined now (at the current definition revision)."""
    revision = engine_plan.revision
    routine_ids: dict[int, str] = {}
    legacy_ids: dict[str, str] = {}
    for rid, routine in flow.routines.items():
        # Identity lookups find the first id a routine object was added under.
        routine_ids.setdefault(id(routine), rid)
        legacy_ids.setdefault(routine._id, rid)
    slots: dict[tuple[str, str], SlotPlan] = {}
    # Which error handler applies to a routine: decided here and nowhere else.
    error_handlers = {
        rid: routine._error_handler or flow.error_handler for rid, routine in flow.routines.items()
    }
    for rid, routine in flow.routines.items():
        handler = error_handlers[rid]
        for name, slot in routine._slots.items():
            slots[(rid, name)] = SlotPlan(
                rid,
                name,
                slot,
                slot._call,
                slot._is_async,
                slot._timeout,
                slot.merge_strategy,
                handler,
            )
    connections = flow._connection_index
    events: dict[int, EventPlan] = {}
    routes: dict[tuple[str, str, str, str], Route] = {}
    for rid, routine in flow.routines.items():
        if routine_ids[id(routine)] != rid:
            continue  # a second id of the same object: its events are the first's
        for event in routine._events.values():
            found = []
            broken = None
            for slot in event.connected_slots:
                target_rid = routine_ids.get(id(slot.routine))
                if target_rid is None:
                    broken = (
                        f"Event '{event.name}' of routine '{rid}' is connected to {slot!r}, "
                        f"whose routine is not in flow '{flow.flow_id}'"
                    )
                    continue
                target = slots.get((target_rid, slot.name))
                if target is None or target.slot is not slot:
                    # A slot object its routine no longer lists: deliver to it as it is.
                    target = SlotPlan(
                        target_rid,
                        slot.name,
                        slot,
                        slot._call,
                        slot._is_async,
                        slot._timeout,
                        slot.merge_strategy,
                        error_handlers[target_rid],
                    )
                connection = connections.get((id(event), id(slot)))
                mapping = connection.param_mapping if connection is not None else None
                route = Route(target, mapping, rid, event.name)
                found.append(route)
                routes.setdefault((rid, event.name, target_rid, slot.name), route)
            events[id(event)] = EventPlan(rid, event.name, tuple(found), broken)
    return Plan(revision, routine_ids, events, slots, routes, error_handlers, legacy_ids)

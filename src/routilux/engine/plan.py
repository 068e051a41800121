"""The compiled, read-only plan of a flow's routing, and the delivery rules it applies.

A :class:`Plan` is what the engine runs: for every event of the flow's routines the
routes it feeds (:class:`EventPlan`, :class:`Route`), and for every slot what one
delivery needs (:class:`SlotPlan`: how to call its handler, whether it keeps a merge
buffer, its timeout, which error handler applies).  ``routilux.flow.plan`` compiles it
from the definition; the engine reads nothing else of a routine, slot, event or
connection, and writes none of them.

This module also owns the rules every delivery follows, in one place for the engine
and for deliveries outside a job (``Slot.receive``, ``Connection.activate``):
:func:`apply_mapping` (a connection's parameter renaming), :func:`merge` (a slot's
merge strategies) and :func:`make_caller` (how a handler is called with the merged
data, spec 10 §3.3).

Invariant: a plan never changes once built.  Editing a definition (a slot's handler,
a routine's error handler, ``Flow.connect`` ...) calls :func:`definition_changed`;
a flow whose plan was compiled at an older :data:`revision` compiles a new one for its
next job, while running jobs keep the plan they started with.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Callable, Union

__all__ = [
    "EventPlan",
    "Plan",
    "Route",
    "SlotPlan",
    "apply_mapping",
    "definition_changed",
    "make_caller",
    "merge",
]

MergeStrategy = Union[str, Callable[[Any, dict[str, Any]], Any]]

#: Bumped by every change to a definition object; plans record the value they saw.
revision = 0


def definition_changed() -> None:
    """A routine, slot, event, connection or flow definition changed: plans compiled
    before now are stale (each flow rebuilds its own before its next job)."""
    global revision
    revision += 1


# -- the delivery rules -----------------------------------------------------


def apply_mapping(mapping: Mapping[str, str], data: dict[str, Any]) -> dict[str, Any]:
    """Rename keys by ``mapping`` (``{event_key: slot_key}``); keys that are neither a
    source nor a target of the mapping pass unchanged (the mapped value wins a
    collision).  ``data`` itself is never modified."""
    if not mapping:
        return data
    out = {dst: data[src] for src, dst in mapping.items() if src in data}
    targets = mapping.values()
    for key, value in data.items():
        if key not in mapping and key not in targets:
            out[key] = value
    return out


_MISSING = object()


def merge(strategy: MergeStrategy, current: Any, new: dict[str, Any]) -> tuple[Any, Any]:
    """Merge ``new`` into ``current`` by ``strategy``: returns (stored, passed to handler)."""
    if strategy == "append":
        if not isinstance(current, dict):
            current = {}
        for key, value in new.items():
            existing = current.get(key, _MISSING)
            if existing is _MISSING:
                current[key] = [value]
            elif isinstance(existing, list):
                existing.append(value)
            else:
                current[key] = [existing, value]
        # The handler sees the live lists (spec 10 §3.2): later appends show through.
        return current, {key: current[key] for key in new}
    if callable(strategy):
        result = strategy(current, new)
        return (dict(result) if isinstance(result, dict) else result), result
    stored = dict(new)
    return stored, stored


def keeps_buffer(strategy: MergeStrategy) -> bool:
    """True when ``strategy`` keeps data between deliveries (append, a function):
    override (and unknown names, which act as override) keeps nothing."""
    return strategy == "append" or callable(strategy)


# How a handler is called with the merged data (spec 10 §3.3), decided once per handler.
KWARGS, WHOLE, SINGLE, MATCH = 0, 1, 2, 3


def call_kind(handler: Callable[..., Any]) -> tuple[int, tuple[str, ...]]:
    """How ``handler`` takes the merged data: ``(kind, parameter names)``."""
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature take the dict
        return WHOLE, ()
    names = []
    for p in params:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return KWARGS, ()
        if p.kind is not inspect.Parameter.VAR_POSITIONAL:
            names.append(p.name)
    if len(names) == 1:
        return (WHOLE, ()) if names[0] == "data" else (SINGLE, (names[0],))
    return MATCH, tuple(names)


def make_caller(handler: Callable[..., Any]) -> Callable[[Any], Any]:
    """A function ``call(merged)`` that calls ``handler`` by the dispatch rule:
    ``**merged`` for a ``**kwargs`` handler, the whole value for a handler of one
    ``data`` parameter (or none with a signature), the named value for a handler of
    one other parameter (the whole value when it is absent), else the matching keys
    as keyword arguments (the whole value when none match)."""
    kind, names = call_kind(handler)
    if kind == WHOLE:
        return handler  # no wrapper at all: the commonest fast case
    if kind == KWARGS:

        def call_kwargs(merged: Any) -> Any:
            return handler(**merged)

        return call_kwargs
    if kind == SINGLE:
        name = names[0]

        def call_single(merged: Any) -> Any:
            if isinstance(merged, dict) and name in merged:
                return handler(merged[name])
            return handler(merged)

        # What the engine calls directly when the value is there (no copy, no frame).
        call_single._single = (name, handler)  # type: ignore[attr-defined]
        return call_single

    def call_matching(merged: Any) -> Any:
        matched = {n: merged[n] for n in names if n in merged} if isinstance(merged, dict) else {}
        return handler(**matched) if matched else handler(merged)

    return call_matching


# -- the plan ----------------------------------------------------------------


class SlotPlan:
    """What delivering to one slot of one routine (``rid``) needs, read-only.

    ``call`` is None for a slot without a handler (a delivery only merges).
    ``error_handler`` is the one that applies: the routine's own, else the flow's.
    ``slot`` is the definition object (for messages only; the engine never reads
    its attributes)."""

    __slots__ = (
        "rid",
        "name",
        "slot",
        "call",
        "is_async",
        "timeout",
        "keeps_buffer",
        "strategy",
        "error_handler",
        "single",
    )

    def __init__(
        self,
        rid: str,
        name: str,
        slot: Any,
        call: Callable[[Any], Any] | None,
        is_async: bool,
        timeout: float | None,
        strategy: MergeStrategy,
        error_handler: Any,
    ) -> None:
        self.rid = rid
        self.name = name
        self.slot = slot
        self.call = call
        self.is_async = is_async
        self.timeout = timeout
        self.strategy = strategy
        self.keeps_buffer = keeps_buffer(strategy)
        self.error_handler = error_handler
        # A handler of one named parameter, as (name, handler): the engine passes
        # it ``data[name]`` of an override slot's data without copying the data.
        self.single: tuple[str, Callable[..., Any]] | None = getattr(call, "_single", None)

    def __repr__(self) -> str:
        return f"SlotPlan[{self.rid}.{self.name}]"


class Route:
    """One connection as the engine follows it: from ``source_rid``'s event
    ``event_name`` to ``target``, renaming keys by ``mapping`` (None: no renaming).
    ``row_text``: the journal's text of a ready task queued along it, around the
    task's seq and data, and its extra's text (``store._base.ready_task_text``), made
    once when first needed (None until then)."""

    __slots__ = ("target", "mapping", "source_rid", "event_name", "row_text")

    def __init__(
        self, target: SlotPlan, mapping: dict[str, str] | None, source_rid: str, event_name: str
    ) -> None:
        self.target = target
        self.mapping = mapping or None
        self.source_rid = source_rid
        self.event_name = event_name
        self.row_text: tuple[str, str, str] | None = None

    def __repr__(self) -> str:
        return f"Route[{self.source_rid}.{self.event_name} -> {self.target.rid}.{self.target.name}]"


class EventPlan:
    """An event of a routine of the flow: the routes an emission follows, in
    connection order.  ``broken`` says why emitting it must fail the job (a connected
    slot whose routine is not in the flow), or is None."""

    __slots__ = ("rid", "name", "routes", "broken")

    def __init__(self, rid: str, name: str, routes: tuple[Route, ...], broken: str | None):
        self.rid = rid
        self.name = name
        self.routes = routes
        self.broken = broken


class Plan:
    """The routing of one flow at one :data:`revision`, compiled once.

    ``routine_ids``: ``id(routine)`` -> the flow id it was first added under;
    ``events``: ``id(event)`` -> :class:`EventPlan`; ``slots``: ``(rid, slot name)`` ->
    :class:`SlotPlan`; ``routes``: ``(source rid, event name, target rid, slot name)``
    -> :class:`Route` (to rebuild saved tasks); ``error_handlers``: routine id -> the
    error handler that applies to it (its own, else the flow's, else None);
    ``legacy_ids``: a routine's own ``_id`` -> its flow id (files of older versions
    named routines by it)."""

    __slots__ = (
        "revision",
        "routine_ids",
        "events",
        "slots",
        "routes",
        "error_handlers",
        "legacy_ids",
    )

    def __init__(
        self,
        revision: int,
        routine_ids: dict[int, str],
        events: dict[int, EventPlan],
        slots: dict[tuple[str, str], SlotPlan],
        routes: dict[tuple[str, str, str, str], Route],
        error_handlers: dict[str, Any],
        legacy_ids: dict[str, str],
    ) -> None:
        self.revision = revision
        self.routine_ids = routine_ids
        self.events = events
        self.slots = slots
        self.routes = routes
        self.error_handlers = error_handlers
        self.legacy_ids = legacy_ids


def _refuse(error: Exception) -> Callable[[Any, dict[str, Any]], Any]:
    def refuse(_current: Any, _new: dict[str, Any]) -> Any:
        raise error

    return refuse


def missing_slot(rid: str, name: str, error: Exception, error_handler: Any) -> SlotPlan:
    """A stand-in for a slot that does not exist: delivering to it fails with ``error``
    (its merge raises, so the failure goes through ``error_handler``'s policy)."""
    return SlotPlan(rid, name, None, None, False, None, _refuse(error), error_handler)

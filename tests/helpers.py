"""Routines and helpers shared by the test suite.

Tests import this module as ``helpers`` (``tests/`` is on pytest's ``pythonpath``). It
owns the small routines that many tests need -- sources, sinks, a routine that runs a
callable, doublers -- and the helpers that read a job's results, so a test file defines
a routine of its own only when that routine is what the test is about.

Every routine here whose ``__init__`` takes no required argument is registered as
serializable, so flows built from them can be saved and loaded; the names are distinct
from the routines that test files still define themselves, because the class registry
is keyed by class name.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

from routilux import Flow, JobState, Routine, register_serializable

# -- entry routines ---------------------------------------------------------------------


@register_serializable
class Source(Routine):
    """Entry routine: ``trigger(value=1)`` emits ``output(value=value)`` once."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("output", ["value"])

    def start(self, value: Any = 1, **_: Any) -> None:
        self.emit("output", value=value)


@register_serializable
class Values(Routine):
    """Entry routine: ``trigger(values=[...])`` emits ``output(value=v)`` for each ``v``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("output", ["value"])

    def start(self, values: list[Any] | None = None, **_: Any) -> None:
        for value in values or []:
            self.emit("output", value=value)


@register_serializable
class Items(Routine):
    """Entry routine: ``trigger(items=[...])`` emits ``output(data=item)`` for each item."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("output", ["data"])

    def start(self, items: Any = None, **_: Any) -> None:
        for item in items or []:
            self.emit("output", data=item)


@register_serializable
class Numbers(Routine):
    """Entry routine: ``trigger(n=count)`` emits ``output(value=i)`` for ``i < n``.

    ``count`` is the ``n`` used when the job is started without one.
    """

    def __init__(self, count: int = 1) -> None:
        super().__init__()
        self.count = count
        self.define_slot("trigger", handler=self.start)
        self.define_event("output", ["value"])

    def start(self, n: int | None = None, **_: Any) -> None:
        for i in range(self.count if n is None else n):
            self.emit("output", value=i)


@register_serializable
class TaggedSource(Routine):
    """Entry routine: ``trigger(tag="", n=1)`` writes ``tag`` into the job's shared data
    (so each job shows which call it is), then emits ``out(tag=tag, i=i)`` for ``i < n``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("out", ["tag", "i"])

    def start(self, tag: str = "", n: int = 1, **_: Any) -> None:
        self.context.job_state.update_shared_data("tag", tag)
        for i in range(n):
            self.emit("out", tag=tag, i=i)


# -- sinks ------------------------------------------------------------------------------


@register_serializable
class Sink(Routine):
    """``input`` accepts any data and keeps nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.take)

    def take(self, **_: Any) -> None:
        pass


@register_serializable
class Store(Routine):
    """``input(value)`` writes ``value`` into the job's shared data under ``"got"``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.store)

    def store(self, value: Any = None, **_: Any) -> None:
        self.context.job_state.update_shared_data("got", value)


@register_serializable
class Collector(Routine):
    """``input`` appends each delivery's data (a dict) to the job's shared-data list
    ``"sink"``; read it back with :func:`collected`."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.collect)

    def collect(self, **data: Any) -> None:
        job_state = self.context.job_state
        with job_state.lock:  # concurrent deliveries must not lose an append
            seen = list(job_state.get_shared_data("sink", []))
            seen.append(data)
            job_state.update_shared_data("sink", seen)


def collected(job_state: JobState) -> list[dict[str, Any]]:
    """What a :class:`Collector` received in ``job_state``, in delivery order."""
    return list(job_state.get_shared_data("sink", []))


# -- middle routines --------------------------------------------------------------------


class Step(Routine):
    """One input slot (``slot``, default ``in``) whose handler returns
    ``action(self, data)``; one event ``out`` for the action to emit on."""

    def __init__(
        self,
        action: Callable[[Routine, dict[str, Any]], Any],
        slot: str = "in",
        merge_strategy: str = "override",
    ) -> None:
        super().__init__()
        self._action = action
        self.define_slot(slot, handler=self._on_data, merge_strategy=merge_strategy)
        self.define_event("out")

    def _on_data(self, **data: Any) -> Any:
        return self._action(self, data)


def forward(routine: Routine, data: dict[str, Any]) -> None:
    """A :class:`Step` action: emit the delivery's data unchanged on ``out``."""
    routine.emit("out", **data)


@register_serializable
class Doubler(Routine):
    """``input(i)`` emits ``out(i=2 * i)``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_input)
        self.define_event("out", ["i"])

    def on_input(self, i: int) -> None:
        self.emit("out", i=2 * i)


@register_serializable
class AsyncDoubler(Routine):
    """:class:`Doubler` with an ``async def`` handler that yields to the loop once."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_input)
        self.define_event("out", ["i"])

    async def on_input(self, i: int) -> None:
        await asyncio.sleep(0)
        self.emit("out", i=2 * i)


# -- reading a job ----------------------------------------------------------------------

FAILURE_EVENTS = ("error", "error_continued")


def failures(job: JobState, routine_id: str) -> list[Any]:
    """The failure records of ``routine_id`` in the job's history, oldest first."""
    return [r for r in job.get_execution_history(routine_id) if r.event_name in FAILURE_EVENTS]


def routine_seen(job: JobState, routine_id: str) -> list[Any]:
    """The ``"seen"`` list a routine keeps in its routine state in ``job``."""
    return list((job.get_routine_state(routine_id) or {}).get("seen", []))


def json_trip(data: Any) -> Any:
    """``data`` as a JSON file would give it back (written, then read)."""
    return json.loads(json.dumps(data, ensure_ascii=False))


# -- building flows ---------------------------------------------------------------------


def pipeline(
    *routines: tuple[str, Routine],
    event: str = "output",
    slot: str = "input",
    **flow_options: Any,
) -> Flow:
    """A flow of ``(id, routine)`` pairs, each one's ``event`` connected to the next
    one's ``slot``; ``flow_options`` go to :class:`Flow`."""
    flow = Flow(**flow_options)
    for routine_id, routine in routines:
        flow.add_routine(routine, routine_id)
    for (source_id, _), (target_id, _) in zip(routines, routines[1:]):
        flow.connect(source_id, event, target_id, slot)
    return flow


#: Fields of a JobState that say when, not what: they may differ between a live JobState
#: and the one rebuilt from its journal (which keeps updated_at as of the last commit).
VOLATILE = ("updated_at",)


def comparable(job: JobState) -> dict[str, Any]:
    """``job``'s saved form without its :data:`VOLATILE` fields."""
    data = job.serialize()
    for key in VOLATILE:
        data.pop(key, None)
    return data

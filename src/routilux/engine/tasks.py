"""The unit of work of a job, and its saved (JSON-safe) form.

A :class:`Task` is one delivery of data to one slot.  ``premerged`` tasks carry
data that already went through the slot's merge (a retry must not merge twice);
``at_job_end`` tasks wait until the rest of the job is done.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..error_handler import MAX_RETRIES
from ..exceptions import SerializationError
from ..serialization import from_iso, short_repr
from .plan import Plan

if TYPE_CHECKING:
    from .plan import Route, SlotPlan

logger = logging.getLogger("routilux.engine.tasks")


class Task:
    """Deliver ``data`` to ``target`` (a slot of the routine known in the flow as
    ``rid``), having come along ``route`` (None: the entry, a timer, a resume).

    ``seq`` is the task's number in its job: assigned when the task is made,
    strictly increasing within the job, kept by the retries of the same
    delivery, saved with pending tasks.  ``f"{job_id}:{seq}"`` is the delivery's
    id (``ExecutionContext.delivery_id``).  ``timer`` is the name of the named timer
    (``Routine.set_timer``) that delivers it, or None; ``answers``, the id of the
    request for input (``Routine.request_input``) whose answer it delivers, or None."""

    __slots__ = (
        "rid",
        "target",
        "data",
        "route",
        "retries",
        "premerged",
        "entry",
        "seq",
        "timer",
        "answers",
    )

    def __init__(
        self,
        target: SlotPlan,
        data: Any,
        seq: int,
        route: Route | None = None,
        retries: int = 0,
        premerged: bool = False,
        entry: bool = False,
    ) -> None:
        self.rid = target.rid
        self.target = target
        self.data = data
        self.seq = seq
        self.route = route
        self.retries = retries
        self.premerged = premerged
        self.entry = entry
        self.timer: str | None = None
        self.answers: str | None = None

    def __repr__(self) -> str:
        return f"Task[{self.rid}.{self.target.name} #{self.seq} retries={self.retries}]"

    def retry(self, data: Any, premerged: bool, count: bool = True) -> Task:
        """The next attempt of this delivery (same ``seq``); ``count=False`` keeps
        the retry count (the same attempt, saved to run again)."""
        return Task(
            self.target,
            data,
            self.seq,
            self.route,
            self.retries + 1 if count else self.retries,
            premerged,
            self.entry,
        )


def task_to_dict(task: Task, at_job_end: bool = False) -> dict[str, Any]:
    """The saved form of a task (spec 50 §4, with flow routine ids and ``seq``)."""
    route = task.route
    mapping = route.mapping if route is not None else None
    return {
        "slot_routine_id": task.rid,
        "slot_name": task.target.name,
        "data": task.data,
        "connection_source_routine_id": route.source_rid if route is not None else None,
        "connection_source_event_name": route.event_name if route is not None else None,
        "connection_target_routine_id": task.rid if route is not None else None,
        "connection_target_slot_name": task.target.name if route is not None else None,
        "param_mapping": dict(mapping) if mapping else {},
        "priority": 2,
        "retry_count": task.retries,
        "max_retries": 0,
        "created_at": None,
        "premerged": task.premerged,
        "entry": task.entry,
        "at_job_end": at_job_end,
        "seq": task.seq,
        **({"answers": task.answers} if task.answers is not None else {}),
    }


_TEXT_KEYS = (
    "slot_routine_id",
    "slot_name",
    "connection_source_routine_id",
    "connection_source_event_name",
    "connection_target_routine_id",
    "connection_target_slot_name",
)
_FLAG_KEYS = ("premerged", "entry", "at_job_end")
_COUNT_KEYS = ("retry_count", "max_retries")

#: Upper bound of a saved task number (a JSON integer far beyond any real job).
MAX_SEQ = 2**62

#: Task numbers each owner of a journaled job (each epoch) has to itself.
SEQS_PER_EPOCH = 2**32


def first_seq_of_epoch(epoch: int) -> int:
    """Where the task numbers of a journaled job's ``epoch`` start.

    A run that crashed may have numbered tasks it never journaled, and handlers may
    have used their delivery ids outside; a run taking the job over must not hand
    those numbers to different deliveries, so every epoch numbers new tasks in a
    range of its own (journaled tasks keep their numbers, hence their ids)."""
    return min(max(epoch - 1, 0) * SEQS_PER_EPOCH, MAX_SEQ // 2)


_NONE = type(None)
_TEXT_TYPES = frozenset({str, _NONE})
_FLAG_TYPES = frozenset({bool, _NONE})
_INT_TYPES = frozenset({int, _NONE})
_DATA_TYPES = frozenset({dict, _NONE})


def check_task_entry(entry: Any, where: str) -> None:
    """Raise :class:`SerializationError` naming ``where`` and the key when a saved task
    has a value of the wrong type or out of range (each key may be missing or null)."""
    if type(entry) is dict:
        # Fast path for a well-formed entry (a paused job may hold a million of them);
        # anything unusual takes the slow path below, which names what is wrong.
        get = entry.get
        retries = get("retry_count")
        limit = get("max_retries")
        mapping = get("param_mapping")
        if (
            type(get("slot_routine_id")) in _TEXT_TYPES
            and type(get("slot_name")) in _TEXT_TYPES
            and type(get("connection_source_routine_id")) in _TEXT_TYPES
            and type(get("connection_source_event_name")) in _TEXT_TYPES
            and type(get("connection_target_routine_id")) in _TEXT_TYPES
            and type(get("connection_target_slot_name")) in _TEXT_TYPES
            and type(get("premerged")) in _FLAG_TYPES
            and type(get("entry")) in _FLAG_TYPES
            and type(get("at_job_end")) in _FLAG_TYPES
            and (retries is None or (type(retries) is int and 0 <= retries <= MAX_RETRIES))
            and (limit is None or (type(limit) is int and 0 <= limit <= MAX_RETRIES))
            and type(get("priority")) in _INT_TYPES
            and _good_seq(get("seq"))
            and type(get("data")) in _DATA_TYPES
            and (mapping is None or (type(mapping) is dict and not mapping))
            and get("created_at") is None
        ):
            return
    if not isinstance(entry, Mapping):
        raise SerializationError(f"'{where}' must be a JSON object, got {type(entry).__name__}")

    def bad(key: str, wanted: str) -> SerializationError:
        return SerializationError(f"'{where}.{key}' must be {wanted}, got {short_repr(entry[key])}")

    for key in _TEXT_KEYS:
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise bad(key, "a string")
    for key in _FLAG_KEYS:
        if entry.get(key) is not None and not isinstance(entry[key], bool):
            raise bad(key, "true or false")
    for key in _COUNT_KEYS:
        value = entry.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES
        ):
            raise bad(key, f"an integer from 0 to {MAX_RETRIES}")
    if not _good_seq(entry.get("seq")):
        raise bad("seq", f"an integer from 0 to {MAX_SEQ}")
    priority = entry.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise bad("priority", "an integer")
    data = entry.get("data")
    if data is not None and not isinstance(data, dict):
        raise bad("data", "a JSON object")
    mapping = entry.get("param_mapping")
    if mapping is not None and not (
        isinstance(mapping, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
    ):
        raise bad("param_mapping", "an object mapping strings to strings")
    created = entry.get("created_at")
    if created is not None:
        try:
            from_iso(created)
        except SerializationError as exc:
            raise SerializationError(f"In field '{where}.created_at': {exc}") from None


def _good_seq(value: Any) -> bool:
    return value is None or (type(value) is int and 0 <= value <= MAX_SEQ)


class PlanSource(Protocol):
    """What a flow (a layer above) gives :func:`task_from_dict`: its current plan."""

    @property
    def plan(self) -> Plan: ...


def task_from_dict(source: Plan | PlanSource, entry: dict[str, Any], seq: int = -1) -> Task | None:
    """Rebuild a saved task against ``source`` (a plan, or a flow: its current plan);
    None (with a warning) when it does not fit.

    ``seq`` numbers a task saved without one (by an older version; -1 by default,
    for the caller to number).  A value of the wrong type or out of range raises
    :class:`SerializationError` (see :func:`check_task_entry`)."""
    check_task_entry(entry, "pending task")
    plan = source if isinstance(source, Plan) else source.plan
    rid = entry.get("slot_routine_id")
    name = entry.get("slot_name") or ""
    target = plan.slots.get((rid, name)) if rid is not None else None
    if target is None and rid is not None and rid in plan.legacy_ids:
        # Older files wrote the routine's own ``_id``; accept it as a fallback.
        rid = plan.legacy_ids[rid]
        target = plan.slots.get((rid, name))
    if target is None or rid is None:
        logger.warning(
            "pending task for %s.%s does not match the flow; dropped",
            entry.get("slot_routine_id"),
            entry.get("slot_name"),
        )
        return None
    route = None
    src_rid = entry.get("connection_source_routine_id")
    src_event = entry.get("connection_source_event_name")
    if src_event and src_rid:
        route = plan.routes.get((src_rid, src_event, rid, name))
    saved = entry.get("seq")
    task = Task(
        target,
        entry.get("data") or {},
        saved if saved is not None else seq,
        route,
        int(entry.get("retry_count") or 0),
        bool(entry.get("premerged", False)),
        bool(entry.get("entry", False)),
    )
    answers = entry.get("answers")
    if type(answers) is str and answers:
        task.answers = answers
    return task


def next_free_seq(saved: int, entries: list[dict[str, Any]]) -> int:
    """The first task number a run may give out: above ``saved`` (the job's counter
    when it was saved) and above every number among the saved ``entries``."""
    start = saved
    for entry in entries:
        seq = entry.get("seq") if isinstance(entry, dict) else None
        if type(seq) is int and seq >= start:
            start = seq + 1
    return start


def delivery_id(job_id: str, seq: int) -> str:
    """The id handlers see as ``context.delivery_id``: ``"<job_id>:<seq>"``, the same
    for every attempt of the delivery and after a save, a resume or a recovery."""
    return f"{job_id}:{seq}"

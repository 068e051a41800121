"""The unit of work of a job, and its saved (JSON-safe) form.

A :class:`Task` is one delivery of data to one slot.  ``premerged`` tasks carry
data that already went through the slot's merge (a retry must not merge twice);
``at_job_end`` tasks wait until the rest of the job is done.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..error_handler import MAX_RETRIES
from ..exceptions import SerializationError
from ..serialization import from_iso, short_repr

if TYPE_CHECKING:
    from ..connection import Connection
    from ..slot import Slot

logger = logging.getLogger("routilux.engine.tasks")


class Task:
    """Deliver ``data`` to ``slot`` of the routine known in the flow as ``rid``."""

    __slots__ = ("rid", "slot", "data", "connection", "retries", "premerged", "entry")

    def __init__(
        self,
        rid: str,
        slot: Slot,
        data: Any,
        connection: Connection | None = None,
        retries: int = 0,
        premerged: bool = False,
        entry: bool = False,
    ) -> None:
        self.rid = rid
        self.slot = slot
        self.data = data
        self.connection = connection
        self.retries = retries
        self.premerged = premerged
        self.entry = entry

    def __repr__(self) -> str:
        return f"Task[{self.rid}.{self.slot.name} retries={self.retries}]"

    def retry(self, data: Any, premerged: bool) -> Task:
        """The next attempt of this delivery."""
        return Task(
            self.rid, self.slot, data, self.connection, self.retries + 1, premerged, self.entry
        )


def task_to_dict(task: Task, at_job_end: bool = False) -> dict[str, Any]:
    """The saved form of a task (spec 50 §4, with flow routine ids)."""
    conn = task.connection
    source = conn.source_event if conn is not None else None
    source_routine = source.routine if source is not None else None
    return {
        "slot_routine_id": task.rid,
        "slot_name": task.slot.name,
        "data": task.data,
        "connection_source_routine_id": _flow_id_of(conn, source_routine),
        "connection_source_event_name": source.name if source is not None else None,
        "connection_target_routine_id": task.rid if conn is not None else None,
        "connection_target_slot_name": task.slot.name if conn is not None else None,
        "param_mapping": dict(conn.param_mapping) if conn is not None else {},
        "priority": 2,
        "retry_count": task.retries,
        "max_retries": 0,
        "created_at": None,
        "premerged": task.premerged,
        "entry": task.entry,
        "at_job_end": at_job_end,
    }


def _flow_id_of(conn: Connection | None, routine: Any) -> str | None:
    if conn is None or routine is None:
        return None
    return getattr(conn, "_source_routine_id", None) or getattr(routine, "_id", None)


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


def task_from_dict(flow: Any, entry: dict[str, Any]) -> Task | None:
    """Rebuild a saved task against ``flow``; None (with a warning) when it does not fit.

    A value of the wrong type or out of range raises :class:`SerializationError`
    (see :func:`check_task_entry`)."""
    check_task_entry(entry, "pending task")
    rid = entry.get("slot_routine_id")
    routine = flow.routines.get(rid)
    if routine is None:
        # Older files wrote the routine's own ``_id``; accept it as a fallback.
        for flow_rid, candidate in flow.routines.items():
            if getattr(candidate, "_id", None) == rid:
                rid, routine = flow_rid, candidate
                break
    slot = routine.get_slot(entry.get("slot_name", "")) if routine is not None else None
    if routine is None or slot is None or rid is None:
        logger.warning(
            "pending task for %s.%s does not match flow %s; dropped",
            entry.get("slot_routine_id"),
            entry.get("slot_name"),
            flow.flow_id,
        )
        return None
    connection = None
    src_rid = entry.get("connection_source_routine_id")
    src_event = entry.get("connection_source_event_name")
    if src_event:
        src_routine = flow.routines.get(src_rid) if src_rid else None
        event = src_routine.get_event(src_event) if src_routine is not None else None
        if event is not None:
            connection = flow._find_connection(event, slot)
    return Task(
        rid,
        slot,
        entry.get("data") or {},
        connection,
        int(entry.get("retry_count") or 0),
        bool(entry.get("premerged", False)),
        bool(entry.get("entry", False)),
    )

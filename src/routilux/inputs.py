"""Requests for human input: the schema a request declares, and the checks of the
input sent to it (``Routine.request_input``, ``Flow.send_input``).

A *request* is a JSON-safe dict, one entry of ``job_state.waiting_for``::

    {"id": "9f1c...",                      # unique in the job
     "routine_id": "review", "slot": "decision",
     "prompt": "Publish this draft?",
     "schema": {"approved": "bool", "note": "str"},   # or None: any dict
     "defaults": {"note": ""},             # fields that may be left out
     "requested_at": "2026-12-01T11:40:00.123456"}

A schema maps field names to one of the types :data:`TYPES` names (``bool``, ``int``,
``float``, ``str``, ``list``, ``dict``), or to ``(type, default)``: such a field may be
left out of the input, and the default is delivered in its place.  Input must be a dict
holding every field without a default, no field the schema does not name, and values of
the declared types (``bool`` is not an ``int``; an ``int`` is a ``float``).

Everything here is pure checking on plain data, so it serves the running job, a saved
file being loaded and a process that only has the store's copy of the request alike.
"""

from __future__ import annotations

import copy
import math
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Optional

from .exceptions import InvalidArgumentError, InvalidInputError, SerializationError

__all__ = [
    "TYPES",
    "check_input",
    "input_row",
    "check_request",
    "describe_open",
    "find_request",
    "new_request",
]

#: The field types a schema may name, by the name saved in ``waiting_for``.
TYPES: dict[str, type] = {
    "bool": bool,
    "int": int,
    "float": float,
    "str": str,
    "list": list,
    "dict": dict,
}
_NAME_OF = {cls: name for name, cls in TYPES.items()}

_REQUEST_KEYS = frozenset(
    {"id", "routine_id", "slot", "prompt", "schema", "defaults", "requested_at"}
)


def _fits(value: Any, type_name: str) -> bool:
    """True when ``value`` is of the schema type ``type_name``."""
    if type_name == "bool":
        return type(value) is bool
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "float":
        # JSON has one number type: an int is a float too; NaN and infinities
        # cannot be saved, so they are not accepted.
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    return isinstance(value, TYPES[type_name])


def _type_name(kind: Any, where: str, field: str) -> str:
    name = _NAME_OF.get(kind) if isinstance(kind, type) else None
    if name is None:
        raise InvalidArgumentError(
            f"{where}: schema field {field!r} must be one of the types "
            f"{', '.join(TYPES)} (or a (type, default) pair), got {kind!r}"
        )
    return name


def compile_schema(
    schema: Optional[Mapping[str, Any]], where: str
) -> tuple[Optional[dict[str, str]], dict[str, Any]]:
    """A request's ``schema`` as saved (field -> type name) and its defaults.

    ``None`` stays None (any dict is accepted).  Anything but the forms the module
    docstring lists raises :class:`~routilux.exceptions.InvalidArgumentError` naming
    ``where`` and the field.
    """
    if schema is None:
        return None, {}
    if not isinstance(schema, Mapping):
        raise InvalidArgumentError(
            f"{where}: schema must be a dict of field name -> type, got {type(schema).__name__}"
        )
    names: dict[str, str] = {}
    defaults: dict[str, Any] = {}
    for field, kind in schema.items():
        if not isinstance(field, str) or not field:
            raise InvalidArgumentError(
                f"{where}: schema field names must be non-empty strings, got {field!r}"
            )
        if isinstance(kind, tuple):
            if len(kind) != 2:
                raise InvalidArgumentError(
                    f"{where}: schema field {field!r} must be a type or a (type, default) "
                    f"pair, got a tuple of {len(kind)}"
                )
            kind, default = kind
            name = _type_name(kind, where, field)
            if default is not None and not _fits(default, name):
                raise InvalidArgumentError(
                    f"{where}: the default of schema field {field!r} must be a {name} "
                    f"(or None), got {type(default).__name__}"
                )
            defaults[field] = copy.deepcopy(default)
        else:
            name = _type_name(kind, where, field)
        names[field] = name
    return names, defaults


def new_request(
    routine_id: str,
    slot: str,
    prompt: str,
    schema: Optional[Mapping[str, Any]],
    where: str,
) -> dict[str, Any]:
    """A new open request (the dict the module docstring shows), checked."""
    if not isinstance(prompt, str):
        raise InvalidArgumentError(f"{where}: prompt must be a string, got {type(prompt).__name__}")
    names, defaults = compile_schema(schema, where)
    return {
        "id": uuid.uuid4().hex,
        "routine_id": routine_id,
        "slot": slot,
        "prompt": prompt,
        "schema": names,
        "defaults": defaults,
        "requested_at": datetime.now().isoformat(),
    }


def find_request(
    waiting_for: list[dict[str, Any]], routine_id: str, slot: str
) -> Optional[dict[str, Any]]:
    """The oldest open request of ``routine_id``'s slot ``slot``, or None."""
    for request in waiting_for:
        if request.get("routine_id") == routine_id and request.get("slot") == slot:
            return request
    return None


def describe_open(waiting_for: list[dict[str, Any]]) -> str:
    """The open requests, for an error message."""
    if not waiting_for:
        return "it has no open request"
    shown = ", ".join(f"'{r.get('routine_id')}'.'{r.get('slot')}'" for r in waiting_for)
    return f"its open requests are {shown}"


def check_input(request: Mapping[str, Any], data: Any, where: str) -> dict[str, Any]:
    """The payload to deliver for ``data`` sent to ``request``: a new dict with the
    defaults of the fields left out filled in.

    Input that does not fit raises :class:`~routilux.exceptions.InvalidInputError`
    naming ``where`` and the field at fault (and the type it expects).
    """
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"{where}: input must be a dict, got {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise InvalidInputError(f"{where}: field names must be strings, got {key!r}")
    schema = request.get("schema")
    payload = dict(data)
    if schema is None:
        return payload
    defaults = request.get("defaults") or {}
    unknown = [key for key in payload if key not in schema]
    if unknown:
        raise InvalidInputError(
            f"{where}: field {unknown[0]!r} is not in the request's schema "
            f"(fields: {', '.join(schema)})"
        )
    for field, type_name in schema.items():
        if field not in payload:
            if field in defaults:
                payload[field] = copy.deepcopy(defaults[field])
                continue
            raise InvalidInputError(f"{where}: field {field!r} ({type_name}) is missing")
        value = payload[field]
        if value is None and field in defaults and defaults[field] is None:
            continue  # an optional field whose default is None may be sent as None
        if not _fits(value, type_name):
            raise InvalidInputError(
                f"{where}: field {field!r} must be a {type_name}, got {type(value).__name__} "
                f"{_short(value)}"
            )
    return payload


def input_row(stored: Any, routine_id: str, slot: str, data: Any) -> dict[str, Any]:
    """The store's input task (a TaskRow without its seq) answering the oldest open
    request of ``routine_id``'s ``slot`` in ``stored`` (a ``store.load()`` result).

    Checked against the stored request like :func:`check_input`; a request that an
    input task already pending answers counts as closed.  The row's ``extra`` names
    the request, so the process that delivers it closes that request.
    """
    job_id = stored.job_id
    where = f"job {job_id}: input for '{routine_id}'.'{slot}'"
    waiting = [
        check_request(entry, f"job {job_id} waiting_for[{index}]")
        for index, entry in enumerate(stored.waiting_for or [])
    ]
    answered = {
        (row.get("extra") or {}).get("request") for row in stored.tasks if row["kind"] == "input"
    }
    still_open = [request for request in waiting if request["id"] not in answered]
    request = find_request(still_open, routine_id, slot)
    if request is None:
        raise InvalidInputError(
            f"{where}: no request for it is open (the job is {stored.status}; "
            f"{describe_open(still_open)})"
        )
    return {
        "kind": "input",
        "routine": routine_id,
        "slot": slot,
        "data": check_input(request, data, where),
        "retries": 0,
        "due_at": None,
        "extra": {"request": request["id"]},
    }


def check_request(entry: Any, where: str) -> dict[str, Any]:
    """Range-check one saved request (a file or a store may hold anything);
    :class:`~routilux.exceptions.SerializationError` names the key at fault."""
    if not isinstance(entry, dict):
        raise SerializationError(f"'{where}' must be a dict, got {type(entry).__name__}")
    extra = set(entry) - _REQUEST_KEYS
    if extra:
        raise SerializationError(f"'{where}' has unknown key(s) {sorted(map(str, extra))}")
    for key in ("id", "routine_id", "slot"):
        value = entry.get(key)
        if not isinstance(value, str) or not value:
            raise SerializationError(
                f"'{where}.{key}' must be a non-empty string, got {_short(value)}"
            )
    if not isinstance(entry.get("prompt", ""), str):
        raise SerializationError(f"'{where}.prompt' must be a string")
    stamp = entry.get("requested_at")
    try:
        datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
    except ValueError:
        stamp = None
    if not isinstance(stamp, str):
        raise SerializationError(f"'{where}.requested_at' must be an ISO date-time string")
    schema = entry.get("schema")
    if schema is not None:
        if not isinstance(schema, dict):
            raise SerializationError(f"'{where}.schema' must be a dict or null")
        for field, type_name in schema.items():
            if type_name not in TYPES:
                raise SerializationError(
                    f"'{where}.schema.{field}' must be one of {', '.join(TYPES)}, "
                    f"got {_short(type_name)}"
                )
    defaults = entry.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SerializationError(f"'{where}.defaults' must be a dict")
    for field, value in defaults.items():
        if schema is None or field not in schema:
            raise SerializationError(f"'{where}.defaults.{field}' names no field of the schema")
        if value is not None and not _fits(value, schema[field]):
            raise SerializationError(f"'{where}.defaults.{field}' must be a {schema[field]}")
    return {**entry, "prompt": entry.get("prompt", ""), "schema": schema, "defaults": defaults}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

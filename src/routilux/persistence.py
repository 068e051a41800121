"""Saving and restoring flows, routines and job states (spec 50 §3, 30 §9).

This module owns the *layout* of every saved Routilux object -- Slot, Event, Connection,
Routine, Flow, ErrorHandler, ExecutionRecord, JobState, ExecutionTracker -- and registers
each with :func:`routilux.serialization.register_layout` when it is imported
(``routilux/__init__`` imports it). The classes' public ``serialize``/``deserialize`` (and
JobState's ``save``/``load``) look their layout up there, so none of them imports this
module: it sits above the classes whose private attributes it reads, and only imports
downwards. ``routilux.serialization`` owns the codec underneath (class registry, callable
codec, format version, atomic JSON files).

Invariants:

* **Data, not code** (DESIGN invariant 8). Classes come only from the registry
  (``lookup_class(name)()``); callables only through ``decode_callable``. Nothing here
  imports a module named by the data, and nothing is imported while loading (the
  built-in routines are registered by ``import routilux``, before this module runs).
* **Restored in place.** A routine is rebuilt as ``cls()`` and then updated: the slots
  and events its ``__init__`` created stay the same objects (``self.input_slot is
  self._slots["input"]``); missing ones are created.
* **Flows keep their indexes.** Routines are added with ``flow.add_routine`` and
  connections made with ``flow.connect``, by flow routine id (90 D12). A flow is only
  changed once everything in the data has been read without error.
* **Snapshots.** ``serialize`` output never shares containers with live objects: it is
  taken under the job's lock, so a save during a run sees each mutator's whole effect.
  The journal's snapshot (``encode_job_state``) is the store's JSON text of that same
  output, encoded at once under the lock, so it needs no copies.
* **Nothing is lost silently** (DESIGN invariant 9). Saving data JSON cannot represent
  faithfully (a set, an object, a non-string dict key, NaN) raises SerializationError
  naming its key path, before the file is touched. Bad saved data raises
  SerializationError (a ValueError) naming the field; what the spec says may be dropped
  (an unresolvable connection) is dropped with a warning. A callable that is not
  registered is an error, not a None.
* **Loaders raise only RoutiluxErrors** (issue 9). Every value read is type- and
  range-checked where it is read; ``_loader`` turns whatever slipped through (a
  RecursionError, a TypeError from a routine's own ``_config_from_data``) into a
  SerializationError naming the object, so a crafted file never surfaces as a
  RecursionError, TypeError, OverflowError, AttributeError or KeyError.
"""

from __future__ import annotations

import functools
import logging
import os
import types
import warnings
from collections import ChainMap
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Callable, TypeVar, Union, cast

from .connection import Connection
from .engine.tasks import MAX_SEQ, check_task_entry, next_free_seq

# The constructor's own range checks, so a saved handler is held to the same bounds.
from .error_handler import (
    MAX_RETRIES,
    MAX_RETRY_BACKOFF,
    MAX_RETRY_DELAY,
    ErrorHandler,
    _bounded_int,
    _bounded_number,
    _strategy,
)
from .event import Event
from .exceptions import (
    InvalidArgumentError,
    NotConstructableError,
    RoutiluxError,
    SerializationError,
)
from .execution_tracker import ExecutionTracker
from .flow.flow import MAX_WORKERS, Flow
from .inputs import check_request
from .job_state import ExecutionRecord, JobState
from .jsontext import quote, record_text
from .routine import Routine
from .serialization import (
    FORMAT_VERSION,
    check_format_version,
    decode_callable,
    encode_callable,
    find_unserializable,
    from_iso,
    iso_text,
    iso_texts,
    key_path,
    lookup_class,
    lookup_exception_class,
    read_json,
    register_layout,
    required_init_parameters,
    short_repr,
    stamp,
    to_iso,
    write_json,
)
from .slot import Slot, check_timeout

# The store's own JSON encoding (compact, ASCII, no NaN): a journal's snapshot is
# written as this text. Called directly, once per history record: any wrapper would
# cost a frame per record. It raises TypeError, ValueError or RecursionError.
from .store._base import _ENCODE as _store_json
from .store._base import value_text

__all__ = [
    "NotConstructableError",
    "deserialize_connection",
    "deserialize_event",
    "deserialize_flow",
    "deserialize_job_state",
    "deserialize_routine",
    "deserialize_slot",
    "load_job_state",
    "save_job_state",
    "serialize_connection",
    "serialize_event",
    "serialize_flow",
    "serialize_job_state",
    "serialize_routine",
    "serialize_slot",
]

logger = logging.getLogger("routilux.persistence")

PathLike = Union[str, "os.PathLike[str]"]
Owners = Mapping[str, object]
_F = TypeVar("_F", bound=Callable[..., Any])


def _loader(what: str) -> Callable[[_F], _F]:
    """Make a loading function raise only RoutiluxErrors (issue 9, item 6).

    Specific checks name the key path; this is the backstop for what none anticipated,
    e.g. data nested so deeply that copying it exhausts the stack. The original
    exception stays attached as ``__cause__``.
    """

    def decorate(fn: _F) -> _F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except RoutiluxError:
                raise
            except RecursionError:
                raise SerializationError(
                    f"Cannot load {what}: the data is nested too deeply"
                ) from None
            except Exception as exc:  # noqa: BLE001 - the contract: RoutiluxErrors only
                raise SerializationError(
                    f"Cannot load {what}: unexpected {type(exc).__name__}: {exc}"
                ) from exc

        return cast(_F, wrapper)

    return decorate


# ---------------------------------------------------------------------------
# Snapshots of plain data
# ---------------------------------------------------------------------------

_ATOMS = frozenset({str, int, float, bool, type(None)})


class _BadKey(Exception):
    """Internal: a dict key JSON would silently turn into a string."""


def _copy(value: Any) -> Any:
    """A copy of the JSON-shaped part of ``value``: dicts and lists are new (tuples
    become lists, as JSON would make them); anything else is shared as is."""
    cls = type(value)
    if cls in _ATOMS:
        return value
    atoms = _ATOMS
    if cls is dict or isinstance(value, dict):
        return {k: v if type(v) in atoms else _copy(v) for k, v in value.items()}
    if cls is list or isinstance(value, (list, tuple)):
        return [v if type(v) in atoms else _copy(v) for v in value]
    return value


def _copy_strict(value: Any) -> Any:
    """:func:`_copy` that also refuses dict keys that are not strings (for saving)."""
    cls = type(value)
    if cls in _ATOMS:
        return value
    atoms = _ATOMS
    if cls is dict or isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _BadKey
            out[k] = v if type(v) in atoms else _copy_strict(v)
        return out
    if cls is list or isinstance(value, (list, tuple)):
        return [v if type(v) in atoms else _copy_strict(v) for v in value]
    return value


def _snapshot(value: Any, path: str, strict: bool) -> Any:
    """Copy ``value`` (see :func:`_copy`); SerializationError naming ``path`` when it
    is circular or (``strict``) has a non-string key."""
    try:
        return _copy_strict(value) if strict else _copy(value)
    except (_BadKey, RecursionError):
        try:
            found = find_unserializable(value, path, string_keys=True)
        except RecursionError:
            found = None
        where, problem = found if found is not None else (path, "it is nested too deeply")
        raise SerializationError(f"cannot save value at '{where}': {problem}") from None


# ---------------------------------------------------------------------------
# Reading saved data: typed accessors that name the field
# ---------------------------------------------------------------------------


def _expect_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SerializationError(
            f"'{where}' must be a JSON object (dict), got {type(value).__name__}"
        )
    return value


def _expect_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise SerializationError(
            f"'{where}' must be a JSON array (list), got {type(value).__name__}"
        )
    return value


def _dict_field(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any] | None:
    """``data[key]`` as a dict, None when absent or null."""
    value = data.get(key)
    return None if value is None else _expect_dict(value, key_path(where, key))


def _list_of_dicts(data: Mapping[str, Any], key: str, where: str) -> list[dict[str, Any]] | None:
    value = data.get(key)
    if value is None:
        return None
    path = key_path(where, key)
    for index, item in enumerate(_expect_list(value, path)):
        _expect_dict(item, f"{path}[{index}]")
    return value


def _str_field(data: Mapping[str, Any], key: str, where: str, optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and (optional or key not in data):
        return None
    if not isinstance(value, str):
        raise SerializationError(
            f"'{key_path(where, key)}' must be a string, got {type(value).__name__}: "
            f"{short_repr(value)}"
        )
    return value


def _int_field(
    data: Mapping[str, Any], key: str, where: str, minimum: int, maximum: int | None = None
) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        wanted = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise SerializationError(
            f"'{key_path(where, key)}' must be an integer {wanted}, got {short_repr(value)}"
        )
    return value


def _timeout_field(data: Mapping[str, Any], key: str, where: str) -> float | None:
    """``data[key]`` as a handler timeout (positive, finite, bounded) or None."""
    try:
        return check_timeout(data.get(key), f"'{key_path(where, key)}'")
    except InvalidArgumentError as exc:
        raise SerializationError(str(exc)) from None


def _own(own: Callable[[Any], Any], value: Any, where: str) -> Any:
    """``own(value)``, naming ``where`` when the value is too deeply nested to copy."""
    try:
        return own(value)
    except RecursionError:
        raise SerializationError(f"'{where}' is nested too deeply") from None


def _check_type(data: Mapping[str, Any], expected: str, where: str) -> None:
    name = data.get("_type")
    if name is not None and name != expected:
        raise SerializationError(
            f"Cannot deserialize {short_repr(name)} data as {expected} ({where})"
        )


def _lookup(name: Any, where: str) -> type:
    """The registered class ``name`` (the built-ins are registered: ``import routilux``
    imports them before this module)."""
    try:
        return lookup_class(name)
    except SerializationError as exc:
        raise SerializationError(f"In field '{where}': {exc}") from None


# ---------------------------------------------------------------------------
# Callables (slot handlers and merge strategies)
# ---------------------------------------------------------------------------


def _encode(fn: Any) -> dict[str, Any] | None:
    owner = fn.__self__ if isinstance(fn, types.MethodType) else None
    return encode_callable(fn, owner=owner)


def _same_callable(fn: Any, spec: Mapping[str, Any]) -> bool:
    """True when ``spec`` names ``fn`` itself (so restoring it would change nothing)."""
    kind = spec.get("callable_type")
    if kind == "method":
        return (
            isinstance(fn, types.MethodType)
            and type(fn.__self__).__name__ == spec.get("class_name")
            and fn.__func__.__name__ == spec.get("method_name")
            and getattr(fn.__self__, "_id", None) == spec.get("object_id")
        )
    if kind == "function":
        return (
            isinstance(fn, types.FunctionType)
            and fn.__module__ == spec.get("module")
            and fn.__qualname__ == (spec.get("qualname") or spec.get("name"))
        )
    if kind == "builtin":
        return (
            isinstance(fn, (types.BuiltinFunctionType, type))
            and getattr(fn, "__name__", None) == spec.get("name")
            and spec.get("module") in (None, "builtins")
            and getattr(fn, "__module__", None) == "builtins"
        )
    return False


def _restore_callable(current: Any, spec: Any, owners: Owners | None, where: str) -> Any:
    """The callable ``spec`` names. When it names the callable the object already has
    (the one ``__init__`` installed, even a lambda), that one is kept as is."""
    if spec is None:
        return None
    spec = _expect_dict(spec, where)
    if current is not None and callable(current) and _same_callable(current, spec):
        return current
    try:
        return decode_callable(spec, owners)
    except SerializationError as exc:
        raise SerializationError(f"In field '{where}': {exc}") from None


# ---------------------------------------------------------------------------
# Slot, Event, Connection
# ---------------------------------------------------------------------------


def serialize_slot(s: Slot) -> dict[str, Any]:
    """``{"_type": "Slot", "name", "_data", "handler", "merge_strategy"}``, plus
    ``"timeout"`` when the slot has one."""
    strategy = s.merge_strategy
    with s._lock:
        buffer = _copy(s._data)
    data = {
        "_type": "Slot",
        "name": s.name,
        "_data": buffer,
        "handler": _encode(s.handler),
        "merge_strategy": strategy if isinstance(strategy, str) else _encode(strategy),
    }
    if s.timeout is not None:  # written only when set: spec 50 pins the other keys
        data["timeout"] = s.timeout
    return data


@_loader("Slot")
def deserialize_slot(s: Slot, data: dict[str, Any]) -> None:
    """Restore ``s`` in place; a method handler is found on the slot's own routine."""
    routine = s.routine
    owners = {routine._id: routine} if routine is not None else None
    _restore_slot(s, data, owners, "Slot")


def _restore_slot(s: Slot, data: Any, owners: Owners | None, where: str) -> None:
    data = _expect_dict(data, where)
    _check_type(data, "Slot", where)
    name = _str_field(data, "name", where)
    handler = _restore_callable(s.handler, data.get("handler"), owners, f"{where}.handler")
    saved_strategy = data.get("merge_strategy", "override")
    strategy: Any
    if saved_strategy is None:
        strategy = "override"
    elif isinstance(saved_strategy, str):
        strategy = saved_strategy
    else:
        strategy = _restore_callable(
            s.merge_strategy, saved_strategy, owners, f"{where}.merge_strategy"
        )
    saved_buffer = _dict_field(data, "_data", where)
    buffer = _own(_copy, saved_buffer, f"{where}._data") if saved_buffer is not None else {}
    timeout = _timeout_field(data, "timeout", where)
    if name is not None and s.routine is None:
        s.name = name
    s.handler = handler
    s.merge_strategy = strategy
    if "timeout" in data:  # older files: keep what __init__ chose
        s.timeout = timeout
    with s._lock:
        s._data = buffer


def serialize_event(e: Event) -> dict[str, Any]:
    """``{"_type": "Event", "name", "output_params"}``."""
    return {"_type": "Event", "name": e.name, "output_params": list(e.output_params)}


@_loader("Event")
def deserialize_event(e: Event, data: dict[str, Any]) -> None:
    """Restore ``e`` in place (its connections are the flow's business)."""
    _restore_event(e, data, "Event")


def _restore_event(e: Event, data: Any, where: str) -> None:
    data = _expect_dict(data, where)
    _check_type(data, "Event", where)
    name = _str_field(data, "name", where)
    params = data.get("output_params")
    if params is not None:
        path = f"{where}.output_params"
        if not all(isinstance(p, str) for p in _expect_list(params, path)):
            raise SerializationError(
                f"'{path}' must be a list of strings, got {short_repr(params)}"
            )
        e.output_params = list(params)
    if name is not None and e.routine is None:
        e.name = name


def serialize_connection(c: Connection) -> dict[str, Any]:
    """``{"_type": "Connection", "param_mapping", "_source_event_name",
    "_target_slot_name"}``, plus the two flow routine ids when the connection has them."""
    data: dict[str, Any] = {
        "_type": "Connection",
        "param_mapping": dict(c.param_mapping),
        "_source_event_name": (
            c.source_event.name
            if c.source_event is not None
            else getattr(c, "_source_event_name", None)
        ),
        "_target_slot_name": (
            c.target_slot.name
            if c.target_slot is not None
            else getattr(c, "_target_slot_name", None)
        ),
    }
    if c._source_routine_id is not None or c._target_routine_id is not None:
        data["_source_routine_id"] = c._source_routine_id
        data["_target_routine_id"] = c._target_routine_id
    return data


@_loader("Connection")
def deserialize_connection(c: Connection, data: dict[str, Any]) -> None:
    """Restore ``param_mapping`` and the four reference values (kept as attributes of
    the same names); ``source_event``/``target_slot`` stay None for a flow to resolve."""
    where = "Connection"
    data = _expect_dict(data, where)
    _check_type(data, "Connection", where)
    mapping = _param_mapping(data, where)
    source_event = _str_field(data, "_source_event_name", where, optional=True)
    target_slot = _str_field(data, "_target_slot_name", where, optional=True)
    source_id = _str_field(data, "_source_routine_id", where, optional=True)
    target_id = _str_field(data, "_target_routine_id", where, optional=True)
    c.param_mapping = mapping
    c._source_event_name = source_event  # type: ignore[attr-defined]
    c._target_slot_name = target_slot  # type: ignore[attr-defined]
    c._source_routine_id = source_id
    c._target_routine_id = target_id


def _param_mapping(data: Mapping[str, Any], where: str) -> dict[str, str]:
    mapping = data.get("param_mapping") or {}
    path = f"{where}.param_mapping"
    if not all(
        isinstance(k, str) and isinstance(v, str) for k, v in _expect_dict(mapping, path).items()
    ):
        raise SerializationError(f"'{path}' must map strings to strings, got {short_repr(mapping)}")
    return dict(mapping)


# ---------------------------------------------------------------------------
# ErrorHandler
# ---------------------------------------------------------------------------


def serialize_error_handler(h: ErrorHandler) -> dict[str, Any]:
    """``{"_type": "ErrorHandler", "strategy", "max_retries", "retry_delay",
    "retry_backoff", "retry_count", "is_critical", "is_optional",
    "retryable_exceptions"}``; exception classes as ``"<module>.<qualname>"``."""
    return {
        "_type": "ErrorHandler",
        "strategy": h.strategy.value,
        "max_retries": h.max_retries,
        "retry_delay": h.retry_delay,
        "retry_backoff": h.retry_backoff,
        "retry_count": h.retry_count,
        "is_critical": h.is_critical,
        "is_optional": h.is_optional,
        "retryable_exceptions": [
            f"{cls.__module__}.{cls.__qualname__}" for cls in h.retryable_exceptions
        ],
    }


def deserialize_error_handler(h: ErrorHandler, data: Any) -> None:
    """Restore ``h`` in place; every value is checked (with the constructor's own
    checks) before anything changes."""
    if not isinstance(data, Mapping):
        raise SerializationError(
            f"ErrorHandler data must be a JSON object (dict), got {type(data).__name__}"
        )
    try:
        strategy = _strategy(data.get("strategy", "stop"))
        max_retries = _bounded_int("max_retries", data.get("max_retries", 3), MAX_RETRIES)
        retry_delay = _bounded_number("retry_delay", data.get("retry_delay", 1.0), MAX_RETRY_DELAY)
        retry_backoff = _bounded_number(
            "retry_backoff", data.get("retry_backoff", 2.0), MAX_RETRY_BACKOFF
        )
        retry_count = _bounded_int("retry_count", data.get("retry_count", 0), MAX_RETRIES)
    except InvalidArgumentError as exc:
        raise SerializationError(str(exc)) from None
    is_critical = _saved_bool(data, "is_critical")
    is_optional = _saved_bool(data, "is_optional")
    names = data.get("retryable_exceptions")
    if names is None:
        names = []
    if not isinstance(names, list):
        raise SerializationError(
            f"'retryable_exceptions' must be a list of class names, got "
            f"{type(names).__name__}: {short_repr(names)}"
        )
    classes = tuple(
        _exception_class(name, f"retryable_exceptions[{index}]") for index, name in enumerate(names)
    )
    h.strategy = strategy
    h.max_retries = max_retries
    h.retry_delay = retry_delay
    h.retry_backoff = retry_backoff
    h.retry_count = retry_count
    h.is_critical = is_critical
    h.is_optional = is_optional
    h.retryable_exceptions = classes or (Exception,)


def _saved_bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        # bool("false") is True: a file must say true or false.
        raise SerializationError(f"'{key}' must be true or false, got {short_repr(value)}")
    return value


def _exception_class(dotted: object, where: str) -> type[BaseException]:
    """A saved exception class name, resolved without importing anything (DESIGN
    invariant 8): see :func:`routilux.serialization.lookup_exception_class`."""
    if not isinstance(dotted, str):
        raise SerializationError(
            f"'{where}' must be an exception class name (a string), got {short_repr(dotted)}"
        )
    try:
        return lookup_exception_class(dotted)
    except SerializationError as exc:
        raise SerializationError(f"'{where}': {exc}") from None


# ---------------------------------------------------------------------------
# Routine
# ---------------------------------------------------------------------------


def serialize_routine(r: Routine) -> dict[str, Any]:
    """``{"_type", "_id", "_config", "_error_handler", "_slots", "_events"}``."""
    handler = r._error_handler
    return {
        "_type": type(r).__name__,
        "_id": r._id,
        "_config": _copy(r._config_to_data()),
        "_error_handler": handler.serialize() if handler is not None else None,
        "_slots": {name: serialize_slot(slot) for name, slot in r._slots.items()},
        "_events": {name: serialize_event(event) for name, event in r._events.items()},
    }


@_loader("Routine")
def deserialize_routine(r: Routine, data: dict[str, Any]) -> None:
    """Restore ``r`` (built with no arguments) in place; method handlers are looked up
    on ``r`` itself."""
    where = f"{type(r).__name__}"
    data = _expect_dict(data, where)
    _restore_id(r, data, where)
    _restore_routine(r, data, {r._id: r}, where)


def _restore_id(r: Routine, data: Mapping[str, Any], where: str) -> None:
    rid = _str_field(data, "_id", where)
    if rid is not None:
        r._id = rid


def _restore_routine(r: Routine, data: dict[str, Any], owners: Owners, where: str) -> None:
    """Restore everything but ``_id`` (already restored, so owners can be mapped)."""
    config = _dict_field(data, "_config", where)
    error_handler = _rebuild_error_handler(data.get("_error_handler"), f"{where}._error_handler")
    slots = _dict_field(data, "_slots", where) or {}
    events = _dict_field(data, "_events", where) or {}
    # The configuration goes first: a routine may define events from it (routers).
    if config is not None:
        try:
            r._config_from_data(_copy(config))
        except SerializationError as exc:
            raise SerializationError(f"In field '{where}._config': {exc}") from None
        except RecursionError:
            raise SerializationError(f"'{where}._config' is nested too deeply") from None
        except Exception as exc:  # noqa: BLE001 - a routine's own check, whatever it raises
            raise SerializationError(f"In field '{where}._config': {exc}") from exc
    r._error_handler = error_handler
    for name, slot_data in slots.items():
        slot = r._slots.get(name)
        if slot is None:
            slot = r.define_slot(name)
        slot.routine = r
        _restore_slot(slot, slot_data, owners, f"{where}._slots[{name!r}]")
    for name, event_data in events.items():
        event = r._events.get(name)
        if event is None:
            event = r.define_event(name)
        event.routine = r
        _restore_event(event, event_data, f"{where}._events[{name!r}]")


def _rebuild_error_handler(data: Any, where: str) -> ErrorHandler | None:
    if data is None:
        return None
    data = _expect_dict(data, where)
    name = data.get("_type", "ErrorHandler")
    # ErrorHandler is this library's own class; subclasses must be registered.
    cls = ErrorHandler if name == "ErrorHandler" else _lookup(name, where)
    if not (isinstance(cls, type) and issubclass(cls, ErrorHandler)):
        raise SerializationError(
            f"In field '{where}': class {short_repr(name)} is not an ErrorHandler"
        )
    try:
        handler = cls()
        handler.deserialize(data)
    except SerializationError as exc:
        raise SerializationError(f"In field '{where}': {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a subclass's own deserialize, whatever it raises
        raise SerializationError(f"In field '{where}': {exc}") from exc
    return handler


def _new_routine(data: Any, where: str) -> Routine:
    data = _expect_dict(data, where)
    name = data.get("_type")
    if not isinstance(name, str):
        raise SerializationError(f"In field '{where}': '_type' must name a routine class")
    cls = _lookup(name, where)
    if not (isinstance(cls, type) and issubclass(cls, Routine)):
        raise SerializationError(f"In field '{where}': class {short_repr(name)} is not a Routine")
    try:
        routine = cls()
    except Exception as exc:
        raise SerializationError(f"In field '{where}': {name}() failed: {exc}") from exc
    _restore_id(routine, data, where)
    return routine


# ---------------------------------------------------------------------------
# Flow
# ---------------------------------------------------------------------------


def _not_constructable(obj: object, where: str) -> NotConstructableError | None:
    required = required_init_parameters(type(obj))
    if not required:
        return None
    cls = type(obj)
    return NotConstructableError(
        f"In field '{where}' of Flow: Found non-constructable Serializable object: {obj!r} "
        f"(class {cls.__module__}.{cls.__qualname__}: __init__ requires "
        f"{', '.join(required)}; objects are rebuilt as {cls.__name__}() on load, so give "
        f"every __init__ parameter a default)"
    )


def _validate_flow(flow: Flow) -> None:
    """Spec 50 §2: everything reachable must be rebuildable with no arguments."""
    problems = []
    if flow.error_handler is not None:
        problems.append(_not_constructable(flow.error_handler, "error_handler"))
    for rid, routine in flow.routines.items():
        where = f'routines["{rid}"]'
        problems.append(_not_constructable(routine, where))
        if routine._error_handler is not None:
            problems.append(_not_constructable(routine._error_handler, f"{where}._error_handler"))
    for problem in problems:
        if problem is not None:
            raise problem


def serialize_flow(f: Flow) -> dict[str, Any]:
    """The flow's definition: ``{"_type": "Flow", "format_version", "flow_id",
    "execution_strategy", "max_workers", "history_limit", "handler_timeout",
    "max_deliveries", "error_handler", "routines", "connections"}``; never any job's
    state (slot ``_data`` buffers outside jobs are)."""
    _validate_flow(f)
    connections = []
    for c in f.connections:
        data = serialize_connection(c)
        if "_source_routine_id" not in data:
            source = c.source_event.routine if c.source_event is not None else None
            target = c.target_slot.routine if c.target_slot is not None else None
            data["_source_routine_id"] = f._get_routine_id(source) if source else None
            data["_target_routine_id"] = f._get_routine_id(target) if target else None
        connections.append(data)
    return stamp(
        {
            "_type": "Flow",
            "flow_id": f.flow_id,
            "execution_strategy": f.execution_strategy,
            "max_workers": f.max_workers,
            "history_limit": f.history_limit,
            "handler_timeout": f.handler_timeout,
            "max_deliveries": f.max_deliveries,
            "error_handler": f.error_handler.serialize() if f.error_handler else None,
            "routines": {rid: serialize_routine(r) for rid, r in f.routines.items()},
            "connections": connections,
            # Written only when set, so files of flows without it stay as they were.
            **({"output_limit": f.output_limit} if f.output_limit is not None else {}),
        }
    )


@_loader("Flow")
def deserialize_flow(f: Flow, data: dict[str, Any]) -> None:
    """Restore a definition written by :func:`serialize_flow` into the empty flow ``f``."""
    data = check_format_version(data, "Flow")
    _check_type(data, "Flow", "Flow")
    if f.routines or f.connections:
        raise SerializationError(
            f"Cannot deserialize into {f!r}: it already has {len(f.routines)} routine(s) and "
            f"{len(f.connections)} connection(s); deserialize into a new Flow()"
        )
    flow_id = _str_field(data, "flow_id", "Flow", optional=True)
    strategy = _str_field(data, "execution_strategy", "Flow", optional=True) or "sequential"
    max_workers = _int_field(data, "max_workers", "Flow", minimum=1, maximum=MAX_WORKERS)
    history_limit = _int_field(data, "history_limit", "Flow", minimum=1)
    handler_timeout = _timeout_field(data, "handler_timeout", "Flow")
    max_deliveries = _int_field(data, "max_deliveries", "Flow", minimum=1)
    output_limit = _int_field(data, "output_limit", "Flow", minimum=1)
    error_handler = _rebuild_error_handler(data.get("error_handler"), "Flow.error_handler")
    saved_routines = _dict_field(data, "routines", "Flow") or {}
    saved_connections = _list_of_dicts(data, "connections", "Flow") or []

    # Build every routine and restore its _id first, so method references between
    # routines (a handler bound to another routine) find their owner.
    routines: dict[str, Routine] = {}
    for rid, routine_data in saved_routines.items():
        if not rid:
            raise SerializationError("'Flow.routines' has a routine with an empty id")
        routines[rid] = _new_routine(routine_data, f'routines["{rid}"]')
    owners: dict[str, object] = {}
    for routine in routines.values():
        owners.setdefault(routine._id, routine)
    for rid, routine in routines.items():
        # A routine's own methods win over another routine that shares its _id.
        mine: ChainMap[str, object] = ChainMap({routine._id: routine}, owners)
        _restore_routine(routine, saved_routines[rid], mine, f'routines["{rid}"]')

    links = _resolve_connections(saved_connections, routines, flow_id or f.flow_id)

    # Everything was read: now change the flow.
    if flow_id:
        f.flow_id = flow_id
    if strategy in ("sequential", "concurrent"):
        f.set_execution_strategy(strategy, max_workers)
    else:
        logger.warning(
            "unknown execution strategy %r in saved flow; running sequentially", strategy
        )
        f.execution_strategy = strategy
        f.max_workers = 1
    f.history_limit = history_limit
    f.handler_timeout = handler_timeout
    f.max_deliveries = max_deliveries
    f.output_limit = output_limit
    f.error_handler = error_handler
    for rid, routine in routines.items():
        f.add_routine(routine, rid)
    for source_id, event_name, target_id, slot_name, mapping in links:
        f.connect(source_id, event_name, target_id, slot_name, mapping or None)


def _first_with(routines: Mapping[str, Routine], has: Callable[[Routine], bool]) -> str | None:
    for rid, routine in routines.items():
        if has(routine):
            return rid
    return None


def _resolve_end(
    routines: Mapping[str, Routine], rid: str | None, has: Callable[[Routine], bool]
) -> str | None:
    if rid is None:  # older files: the first routine with that name (spec 50 §3)
        return _first_with(routines, has)
    routine = routines.get(rid)
    return rid if routine is not None and has(routine) else None


def _has_event(name: str) -> Callable[[Routine], bool]:
    return lambda routine: name in routine._events


def _has_slot(name: str) -> Callable[[Routine], bool]:
    return lambda routine: name in routine._slots


def _resolve_connections(
    saved: list[dict[str, Any]], routines: Mapping[str, Routine], flow_id: str
) -> list[tuple[str, str, str, str, dict[str, str]]]:
    links = []
    for index, data in enumerate(saved):
        where = f"connections[{index}]"
        _check_type(data, "Connection", where)
        event = _str_field(data, "_source_event_name", where, optional=True)
        slot = _str_field(data, "_target_slot_name", where, optional=True)
        source = _str_field(data, "_source_routine_id", where, optional=True)
        target = _str_field(data, "_target_routine_id", where, optional=True)
        mapping = _param_mapping(data, where)
        source_id = target_id = None
        if event is not None and slot is not None:
            source_id = _resolve_end(routines, source, _has_event(event))
            target_id = _resolve_end(routines, target, _has_slot(slot))
        if source_id is None or target_id is None or event is None or slot is None:
            message = (
                f"Connection {index} of flow '{flow_id}' ({source}.{event} -> "
                f"{target}.{slot}) does not match any routine; it is dropped"
            )
            logger.warning(message)
            warnings.warn(message, UserWarning, stacklevel=4)
            continue
        links.append((source_id, event, target_id, slot, mapping))
    return links


# ---------------------------------------------------------------------------
# JobState
# ---------------------------------------------------------------------------

_JOB_LISTS = ("pause_points", "pending_tasks", "deferred_events", "shared_log", "output_log")


def serialize_execution_record(record: ExecutionRecord) -> dict[str, Any]:
    """``{"_type": "ExecutionRecord", "routine_id", "event_name", "data",
    "timestamp"}``, the timestamp as an ISO string; ``data`` is not copied."""
    return {
        "_type": "ExecutionRecord",
        "routine_id": record.routine_id,
        "event_name": record.event_name,
        "data": record.data,
        "timestamp": record.timestamp.isoformat(),
    }


def deserialize_execution_record(record: ExecutionRecord, data: Any) -> None:
    """Restore ``record`` in place; a missing timestamp becomes now."""
    record.saved_text = None  # (no longer what the record holds)
    record.routine_id = data.get("routine_id", "")
    record.event_name = data.get("event_name", "")
    record.data = data.get("data") or {}
    ts = data.get("timestamp")
    try:
        record.timestamp = from_iso(ts) if ts is not None else datetime.now()
    except SerializationError as exc:
        raise SerializationError(f"ExecutionRecord field 'timestamp': {exc}") from None


def serialize_job_state(js: JobState) -> dict[str, Any]:
    """Every field of the job except its output handler (spec 30 §9, 50 §3), plus
    ``format_version``, ``slot_buffers``, ``history_limit`` and ``history_dropped``;
    ``output_limit`` when it is not the default (the history limit) and
    ``output_dropped`` when outputs were dropped."""
    return _job_state_data(js, strict=False)


def _job_state_data(js: JobState, strict: bool) -> dict[str, Any]:
    with js.lock:
        head, tail = _job_state_fields(js, 0)
        data = {
            key: _snapshot(value, key, strict) if key in _SHARED else value
            for key, value in head.items()
        }
        data["execution_history"] = _history_data(js.execution_history, strict)
        for key, value in tail.items():
            data[key] = _snapshot(value, key, strict) if key in _SHARED else value
    return data


# The saved form's fields that hold the JobState's own containers.
_SHARED = frozenset({"routine_states", "shared_data", "slot_buffers", "waiting_for", *_JOB_LISTS})


def _job_state_fields(js: JobState, task_seq: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The saved form's fields before and after ``execution_history``, in their
    order, the values of :data:`_SHARED` being the JobState's own (not copied); its
    ``task_seq`` at least ``task_seq``. The caller holds the job's lock."""
    head: dict[str, Any] = {
        "_type": "JobState",
        "flow_id": js.flow_id,
        "job_id": js.job_id,
        "status": js.status,
        "current_routine_id": js.current_routine_id,
        "routine_states": js.routine_states,
    }
    tail: dict[str, Any] = {
        "created_at": to_iso(js.created_at),
        "updated_at": to_iso(js.updated_at),
        "shared_data": js.shared_data,
        "slot_buffers": js.slot_buffers,
        "history_limit": js.history_limit,
        "history_dropped": js.history_dropped,
    }
    if js.output_limit != js.history_limit:
        tail["output_limit"] = js.output_limit
    if js.output_dropped:
        tail["output_dropped"] = js.output_dropped
    # The job's task counter, above every saved task's number: a resumed run
    # never gives out a number (a delivery id) the job has used.
    task_seq = max(next_free_seq(js.task_seq, js.pending_tasks), task_seq)
    if task_seq:
        tail["task_seq"] = task_seq
    for key in _JOB_LISTS:
        tail[key] = getattr(js, key)
    if js.waiting_for:  # open requests for input (routilux.inputs); absent: none
        tail["waiting_for"] = js.waiting_for
    return head, stamp(tail)


def encode_job_state(js: JobState, task_seq: int = 0) -> str:
    """The JSON text the store writes for :func:`serialize_job_state` of ``js``
    (``routilux.store``'s compact encoding), its ``task_seq`` at least ``task_seq``:
    what the journal writes as a job's snapshot.

    Encoded at once, under the job's lock, so nothing can change in between and
    nothing is copied (``serialize_job_state`` copies every container, the history's
    data included, for a dict that outlives the lock). The text is the store's
    encoding of that dict, byte for byte; a value JSON cannot hold (a set, an
    object, NaN, a circular reference) raises :class:`SerializationError` naming its
    key path, as the dict's encoding would fail.
    """
    with js._lock:  # (the ``lock`` property's, without the call: a snapshot per job end)
        text = _fields_text(js, task_seq)
        if text is not None:
            return text
        head, tail = _job_state_fields(js, task_seq)
        head_text = _encode_fields(head)
        history = _history_text(js.execution_history)
        tail_text = _encode_fields(tail)
    return f'{head_text[:-1]},"execution_history":{history},{tail_text[1:]}'


def _fields_text(js: JobState, task_seq: int) -> str | None:
    """:func:`encode_job_state`'s text, put together from each field's text (the
    caller holds the job's lock); None when a field is unusual (a name that is not a
    string, a timestamp that is not a plain datetime, a value JSON cannot hold),
    which the plain way then encodes or names.

    A snapshot of a small job -- every job's first, most jobs' last -- is mostly
    these fields, and encoding them as two dicts made two dicts and walked them
    key by key; an empty container's text is known, a string's is one call of the
    encoder's own quoting helper, and the texts around the job id and after the
    timestamps, which differ only in a few names and numbers from job to job, are
    remembered by those. The text is the same, byte for byte."""
    created, updated = js.created_at, js.updated_at
    limit, dropped = js.history_limit, js.history_dropped
    pending = js.pending_tasks
    seq = next_free_seq(js.task_seq, pending) if pending else js.task_seq
    if task_seq > seq:
        seq = task_seq
    if (
        type(created) is not datetime
        or type(updated) is not datetime
        or type(dropped) is not int
        or type(seq) is not int
        or (limit is not None and type(limit) is not int)
        or js.output_limit != limit
        or js.output_dropped
    ):
        return None
    current = js.current_routine_id
    encode = _store_json
    # ``x == {}`` (``== []``) is True for an empty dict (list), a subclass included,
    # whose text the encoder writes as "{}" ("[]"); anything else is encoded.  A
    # string is quoted by the encoder's own helper (which refuses a non-string).
    # A mapping is encoded as ``dict.copy`` of it, a plain dict of its items (the
    # journal's tracked mappings would have the encoder call their Python-level
    # ``items``; a mapping that is no dict raises TypeError: the plain way).
    try:
        states, shared, buffers = js.routine_states, js.shared_data, js.slot_buffers
        names = (js.flow_id, js.status, current)
        around = _HEADS.get(names)
        if around is None:
            around = _head_around(names)
        job_text = quote(js.job_id)
        states_text = "{}" if states == {} else encode(dict.copy(states))
        values = (js.pause_points, pending, js.deferred_events, js.shared_log, js.output_log)
        waiting = js.waiting_for
        # (A tuple compares item by item: one C-level test of the usual five empties.)
        if values == _EMPTIES and shared == {} and buffers == {} and not waiting:
            # A small job's: everything after its timestamps is one of a few texts.
            rest = _EMPTY_RESTS.get((limit, dropped, seq))
            if rest is None:
                rest = _empty_rest(limit, dropped, seq)
        else:
            rest = _rest_text(
                "{}" if shared == {} else encode(dict.copy(shared)),
                "{}" if buffers == {} else encode(dict.copy(buffers)),
                limit,
                dropped,
                seq,
                ["[]" if v == [] else encode(v) for v in values],
                f",{_WAITING_KEY}{encode(waiting)}" if waiting else "",
            )
    except _UNENCODABLE:
        return None
    history = _history_text(js.execution_history)
    # isoformat() writes digits and "-:.+T" only: its JSON text needs no escapes.
    # (A new JobState's two timestamps are one datetime.)
    created_text = iso_text(created)
    updated_text = created_text if updated is created else iso_text(updated)
    # (One f-string: the parts are copied into the text once.)
    return (
        f'{around[0]}{job_text}{around[1]}{states_text},"execution_history":{history},'
        f'"created_at":"{created_text}","updated_at":"{updated_text}",{rest}'
    )


def _rest_text(
    shared: str,
    buffers: str,
    limit: int | None,
    dropped: int,
    seq: int,
    lists: Sequence[str],
    waiting: str,
) -> str:
    """The text of the fields after the timestamps (see :func:`_fields_text`), from
    the texts of the containers (``waiting``: a comma, its key and value; or "")."""
    return (
        f'"shared_data":{shared},"slot_buffers":{buffers},'
        f'"history_limit":{"null" if limit is None else int.__repr__(limit)},'
        f'"history_dropped":{int.__repr__(dropped)},'
        f"{f'{_TASK_SEQ_KEY}{int.__repr__(seq)},' if seq else ''}"
        f'"pause_points":{lists[0]},"pending_tasks":{lists[1]},'
        f'"deferred_events":{lists[2]},"shared_log":{lists[3]},"output_log":{lists[4]}'
        f'{waiting},"format_version":{FORMAT_VERSION}}}'
    )


def _empty_rest(limit: int | None, dropped: int, seq: int) -> str:
    """:func:`_rest_text` of empty containers, remembered (bounded: a job's task
    counter and dropped records take many values over a process's jobs)."""
    rest = _rest_text("{}", "{}", limit, dropped, seq, _EMPTY_TEXTS, "")
    if len(_EMPTY_RESTS) >= _EMPTY_RESTS_MAX:
        _EMPTY_RESTS.clear()
    _EMPTY_RESTS[(limit, dropped, seq)] = rest
    return rest


_UNENCODABLE = (TypeError, ValueError, RecursionError)

# The five job lists of _fields_text empty, and their texts.
_EMPTIES: tuple[list[Any], ...] = ([], [], [], [], [])
_EMPTY_TEXTS = ("[]",) * 5

#: :func:`_empty_rest` by (history limit, dropped records, task counter): ints (or a
#: None limit), checked by the caller, so equal keys have equal texts.
_EMPTY_RESTS: dict[tuple[int | None, int, int], str] = {}
_EMPTY_RESTS_MAX = 1024


def _head_around(names: tuple[str, str, str | None]) -> tuple[str, str]:
    """The head's text before and after the job id (up to the routine states' value),
    for a job's flow id, status and current routine (TypeError for a name that is not
    a string), remembered: a flow's few names recur in every snapshot."""
    flow_id, status, current = names
    around = (
        f'{{"_type":"JobState","flow_id":{_quoted(flow_id)},"job_id":',
        f',"status":{_quoted(status)},'
        f'"current_routine_id":{"null" if current is None else _quoted(current)},'
        '"routine_states":',
    )
    if len(_HEADS) >= _QUOTED_MAX:
        _HEADS.clear()
    _HEADS[names] = around
    return around


#: :func:`_head_around` by (flow id, status, current routine): strings (or None), so
#: equal keys have equal texts (a tuple of anything else never gets in).
_HEADS: dict[tuple[str, str, str | None], tuple[str, str]] = {}

#: Names (flow, routine, event, status) as JSON text: a flow's few names recur in
#: every snapshot, and strings are values, so the text of one is the text of any
#: equal one.  Bounded: names made up per job do not pile up.
_QUOTED: dict[str, str] = {}
_QUOTED_MAX = 4096


def _quoted(name: str) -> str:
    """``quote(name)``, remembered; TypeError for a name that is not a string."""
    text = _QUOTED.get(name)
    if text is None:
        text = quote(name)  # TypeError unless a string
        if len(_QUOTED) >= _QUOTED_MAX:
            _QUOTED.clear()
        _QUOTED[name] = text
    return text


# Keys of the optional fields, as the text has them.
_TASK_SEQ_KEY = '"task_seq":'
_WAITING_KEY = '"waiting_for":'


def _encode_fields(fields: dict[str, Any]) -> str:
    try:
        return _store_json(fields)
    except _UNENCODABLE:
        pass
    for key, value in fields.items():
        _encode_value(value, key)
    raise SerializationError(f"cannot save the JobState's fields {sorted(fields)}")


def _encode_value(value: Any, path: str) -> str:
    """``value``'s JSON text; SerializationError naming what in it JSON cannot hold."""
    try:
        return _store_json(value)
    except _UNENCODABLE:
        pass
    try:
        found = find_unserializable(value, path)
    except RecursionError:
        found = None
    where, problem = found if found is not None else (path, "it is nested too deeply")
    raise SerializationError(f"cannot save value at '{where}': {problem}") from None


def _history_text(records: list[ExecutionRecord]) -> str:
    """The JSON text of :func:`_history_data` (non-strict) of ``records``.

    Most of a snapshot's cost.  A record whose op a durable job's change capture
    wrote holds its text already (``ExecutionRecord.saved_text``), so a long job's
    snapshots encode each record once; the others are encoded by
    :func:`_record_texts`."""
    if not records:
        return "[]"
    saved = [record.saved_text for record in records]
    if None not in saved:
        return f"[{','.join(saved)}]"  # type: ignore[arg-type]  # (no None in it)
    if len(records) <= _FEW_RECORDS:
        text = _few_records_text(records)
        if text is not None:
            return text
    if saved.count(None) == len(saved):
        unsaved = records
    else:
        unsaved = [record for record, text in zip(records, saved) if text is None]
    texts = _record_texts(unsaved)
    if texts is None:
        return _encode_records(records)  # raises, naming a record JSON cannot hold
    if unsaved is not records:
        encoded = iter(texts)
        texts = [text if text is not None else next(encoded) for text in saved]
    return f"[{','.join(texts)}]"


def _record_texts(records: list[ExecutionRecord]) -> list[str] | None:
    """The JSON text of each record's saved form: one f-string round its data's
    encoding -- no dict per record, and the keys, the routine and event names
    (encoded once per name) and the timestamps (``iso_texts``) are not run through
    the encoder for every record.  None when something is unusual (a name that is
    not a string, a timestamp needing escapes, data JSON cannot hold): the plain way
    then encodes the records' dicts."""
    try:
        names = {record.routine_id for record in records}
        names.update(record.event_name for record in records)
    except TypeError:  # a name that is not even hashable
        return None
    stamps = iso_texts([record.timestamp for record in records])
    joined = "".join(stamps)
    if not (
        all(type(name) is str for name in names)
        and joined.isascii()
        and joined.isprintable()
        and '"' not in joined
        and "\\" not in joined
    ):
        return None
    encoded = {name: _store_json(name) for name in names}
    encode = value_text  # (an emission's data: mostly a small dict of atoms)
    try:
        return [
            record_text(
                encoded[record.routine_id],
                encoded[record.event_name],
                encode(record.data),
                f'"{stamp_text}"',
            )
            for record, stamp_text in zip(records, stamps)
        ]
    except _UNENCODABLE:
        return None


#: Up to this many history records (a small job's), :func:`_few_records_text`: the
#: names and timestamps of so few are cheaper formatted one by one than in bulk.
_FEW_RECORDS = 8


def _few_records_text(records: list[ExecutionRecord]) -> str | None:
    """:func:`_history_text` of a few records, each name quoted and each timestamp
    formatted on its own; None when one is unusual (a name that is not a string, a
    timestamp that is not a plain datetime, data JSON cannot hold)."""
    encode = value_text
    try:
        texts = [
            record_text(
                _quoted(record.routine_id),
                _quoted(record.event_name),
                encode(record.data),
                f'"{iso_text(record.timestamp)}"',
            )
            for record in records
            if type(record.timestamp) is datetime
        ]
    except _UNENCODABLE:
        return None
    # A record left out above (its timestamp is not a datetime) takes the plain way.
    return f"[{','.join(texts)}]" if len(texts) == len(records) else None


def _encode_records(records: list[ExecutionRecord]) -> str:
    """:func:`_history_text` the plain way; SerializationError naming a record's data
    that JSON cannot hold."""
    history = [serialize_execution_record(record) for record in records]
    try:
        return _store_json(history)
    except _UNENCODABLE:
        pass
    for index, saved in enumerate(history):
        for key, value in saved.items():
            _encode_value(value, f"execution_history[{index}].{key}")
    raise SerializationError("cannot save the JobState's history")  # pragma: no cover


def _history_data(records: list[ExecutionRecord], strict: bool) -> list[dict[str, Any]]:
    """The saved form of a job's history: :func:`serialize_execution_record` of each
    record with its data copied (:func:`_copy`, or :func:`_copy_strict`).

    This is most of a snapshot's cost, so it is one comprehension (no call per
    record), the timestamps are formatted together (``iso_texts``) and a record's
    data whose values are all atoms -- the usual case -- is copied by ``dict``."""
    copy = _copy_strict if strict else _copy
    atoms = _ATOMS
    keys = _STR_ONLY if strict else None
    try:
        return [
            {
                "_type": "ExecutionRecord",
                "routine_id": record.routine_id,
                "event_name": record.event_name,
                "data": dict(data)
                if type(data) is dict
                and {*map(type, data.values())} <= atoms
                and (keys is None or {*map(type, data)} <= keys)
                else copy(data),
                "timestamp": stamp,
            }
            for record, data, stamp in zip(
                records,
                [record.data for record in records],
                iso_texts([record.timestamp for record in records]),
            )
        ]
    except (_BadKey, RecursionError):
        pass
    # Again, the slow way, to name the record at fault.
    history = [serialize_execution_record(record) for record in records]
    for index, saved in enumerate(history):
        saved["data"] = _snapshot(saved["data"], f"execution_history[{index}].data", strict)
    return history


_STR_ONLY = frozenset({str})


@_loader("JobState")
def deserialize_job_state(js: JobState, data: dict[str, Any]) -> None:
    """Restore ``js`` in place from :func:`serialize_job_state` output (also after a
    trip through JSON). Its lock, waiters and output handler are kept."""
    _restore_job_state(js, data, copy=True)


@_loader("JobState")
def deserialize_job_state_owned(js: JobState, data: dict[str, Any]) -> None:
    """:func:`deserialize_job_state` of data nobody else holds (just decoded from
    JSON, e.g. a store's snapshot): the same checks, without copying it."""
    _restore_job_state(js, data, copy=False)


def _restore_job_state(js: JobState, data: Any, copy: bool) -> None:
    where = "JobState"
    data = check_format_version(_expect_dict(data, where), where)
    _check_type(data, "JobState", where)
    own = _copy if copy else _identity

    history_limit = _int_field(data, "history_limit", where, minimum=1)
    dropped = _int_field(data, "history_dropped", where, minimum=0) or 0
    records = [
        _record(item, f"execution_history[{index}]", own)
        for index, item in enumerate(
            _expect_list(data.get("execution_history") or [], "execution_history")
        )
    ]
    if history_limit is not None and len(records) > history_limit:
        # A limit lower than the saved history keeps the newest records, as a run does.
        dropped += len(records) - history_limit
        del records[: len(records) - history_limit]

    # An absent output_limit is the default (the history limit); null is unbounded.
    if "output_limit" in data:
        output_limit = _int_field(data, "output_limit", where, minimum=1)
    else:
        output_limit = history_limit
    output_dropped = _int_field(data, "output_dropped", where, minimum=0) or 0
    task_seq = _int_field(data, "task_seq", where, minimum=0, maximum=MAX_SEQ) or 0

    routine_states = _dict_field(data, "routine_states", where) or {}
    for rid, state in routine_states.items():
        _expect_dict(state, f"routine_states[{rid!r}]")
    slot_buffers = _dict_field(data, "slot_buffers", where) or {}
    for rid, buffers in slot_buffers.items():
        for slot_name, buffer in _expect_dict(buffers, f"slot_buffers[{rid!r}]").items():
            _expect_dict(buffer, f"slot_buffers[{rid!r}][{slot_name!r}]")  # a merge buffer
    lists = {key: _list_of_dicts(data, key, where) or [] for key in _JOB_LISTS}
    _check_saved_work(lists["pending_tasks"], lists["deferred_events"])
    waiting_for = [
        check_request(entry, f"waiting_for[{index}]")
        for index, entry in enumerate(_expect_list(data.get("waiting_for") or [], "waiting_for"))
    ]
    shared_data = _dict_field(data, "shared_data", where) or {}
    created_at = _datetime(data, "created_at")
    updated_at = _datetime(data, "updated_at")
    status = _str_field(data, "status", where, optional=True)
    flow_id = _str_field(data, "flow_id", where, optional=True)
    job_id = _str_field(data, "job_id", where, optional=True)
    current = _str_field(data, "current_routine_id", where, optional=True)

    # Copied before anything changes, so data too deep to copy leaves ``js`` as it was.
    routine_states = _own(own, routine_states, "routine_states")
    shared_data = _own(own, shared_data, "shared_data")
    slot_buffers = _own(own, slot_buffers, "slot_buffers")
    lists = {key: _own(own, value, key) for key, value in lists.items()}
    waiting_for = _own(own, waiting_for, "waiting_for")

    with js.lock:
        if flow_id is not None:
            js.flow_id = flow_id
        if job_id is not None:
            js.job_id = job_id
        if status is not None:
            js.status = status
        js.current_routine_id = current
        js.routine_states = routine_states
        js.history_limit = history_limit
        js.execution_history = records
        js.history_dropped = dropped
        js.shared_data = shared_data
        js.slot_buffers = slot_buffers
        for key, value in lists.items():
            setattr(js, key, value)
        js.waiting_for = waiting_for
        outputs = js.output_log
        if output_limit is not None and len(outputs) > output_limit:
            output_dropped += len(outputs) - output_limit
            del outputs[: len(outputs) - output_limit]
        js.output_limit = output_limit
        js.output_dropped = output_dropped
        js.task_seq = task_seq
        if created_at is not None:
            js.created_at = created_at
        if updated_at is not None:
            js.updated_at = updated_at


def _identity(value: Any) -> Any:
    return value


def _check_saved_work(pending: list[dict[str, Any]], deferred: list[dict[str, Any]]) -> None:
    """Type- and range-check the work a resume will run (issue 9, item 6), so a crafted
    file fails here, naming the entry, rather than inside the resumed job."""
    for index, entry in enumerate(pending):
        check_task_entry(entry, f"pending_tasks[{index}]")
    for index, event in enumerate(deferred):
        where = f"deferred_events[{index}]"
        _str_field(event, "routine_id", where, optional=True)
        _str_field(event, "event_name", where, optional=True)
        _dict_field(event, "data", where)
        _datetime(event, "timestamp", where)


def _datetime(data: Mapping[str, Any], key: str, where: str = "") -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        return from_iso(value)
    except SerializationError as exc:
        raise SerializationError(f"In field '{key_path(where, key)}': {exc}") from None


def _record(item: Any, where: str, own: Callable[[Any], Any]) -> ExecutionRecord:
    # Fast path for the common, well-formed record; anything unusual takes the slow
    # path, which names what is wrong.
    if type(item) is dict:
        rid = item.get("routine_id")
        event = item.get("event_name")
        data = item.get("data")
        stamp_value = item.get("timestamp")
        if (
            type(rid) is str
            and type(event) is str
            and type(data) is dict
            and type(stamp_value) is str
            and item.get("_type", "ExecutionRecord") == "ExecutionRecord"
        ):
            try:
                timestamp = datetime.fromisoformat(stamp_value)
            except ValueError:
                pass
            else:
                return ExecutionRecord(rid, event, own(data) if data else None, timestamp)
    return _record_checked(item, where, own)


def _record_checked(item: Any, where: str, own: Callable[[Any], Any]) -> ExecutionRecord:
    item = _expect_dict(item, where)
    _check_type(item, "ExecutionRecord", where)
    data = item.get("data")
    if data is not None and not isinstance(data, dict):
        raise SerializationError(f"'{where}.data' must be a dict, got {type(data).__name__}")
    stamp_value = item.get("timestamp")
    try:
        timestamp = from_iso(stamp_value) if stamp_value is not None else None
    except SerializationError as exc:
        raise SerializationError(f"In field '{where}.timestamp': {exc}") from None
    return ExecutionRecord(
        _str_field(item, "routine_id", where, optional=True) or "",
        _str_field(item, "event_name", where, optional=True) or "",
        own(data) if data else None,
        timestamp,
    )


def save_job_state(js: JobState, path: PathLike) -> None:
    """Write ``js`` to ``path`` as JSON (indent 2, UTF-8), atomically.

    Data JSON cannot represent faithfully raises :class:`SerializationError` naming its
    key path (e.g. ``'shared_data.tags'``) before the file is touched.
    """
    write_json(path, _job_state_data(js, strict=True))


def load_job_state(path: PathLike, cls: type[JobState] = JobState) -> JobState:
    """Read a JobState written by :func:`save_job_state`; the file is only read.

    A missing file raises ``FileNotFoundError("JobState file not found: <path>")``; a
    file that is not a saved JobState ``ValueError("Invalid JobState file format:
    <path>")``; a corrupt or truncated one, one from a newer version of routilux, or one
    with a malformed field a :class:`SerializationError` (a ValueError) naming the file.
    """
    try:
        data = read_json(path, "JobState")
    except FileNotFoundError:
        raise FileNotFoundError(f"JobState file not found: {path}") from None
    if data.get("_type") != "JobState":
        raise SerializationError(f"Invalid JobState file format: {path}")
    check_format_version(data, f"JobState file '{path}'")
    js = cls()
    try:
        _loader("JobState")(_restore_job_state)(js, data, copy=False)
    except SerializationError as exc:
        raise SerializationError(f"Cannot load JobState file '{path}': {exc}") from None
    return js


# ---------------------------------------------------------------------------
# ExecutionTracker
# ---------------------------------------------------------------------------


def serialize_execution_tracker(t: ExecutionTracker) -> dict[str, Any]:
    """``{"_type", "flow_id", "routine_executions", "event_flow",
    "performance_metrics"}``, plus ``max_events`` when set; records are copied, event
    data is not."""
    data: dict[str, Any] = {
        "_type": type(t).__name__,
        "flow_id": t.flow_id,
        "routine_executions": {
            routine_id: [dict(r) for r in records]
            for routine_id, records in list(t.routine_executions.items())
        },
        "event_flow": [dict(e) for e in t.event_flow],
        "performance_metrics": dict(t.performance_metrics),
    }
    if t.max_events is not None:  # the spec's five keys otherwise
        data["max_events"] = t.max_events
    return data


def deserialize_execution_tracker(t: ExecutionTracker, data: Any) -> None:
    """Replace the contents of ``t``; unknown keys are ignored, missing ones get their
    defaults, wrongly typed values raise SerializationError."""
    data = check_format_version(data, "ExecutionTracker")
    type_name = data.get("_type")
    accepted = {cls.__name__ for cls in type(t).__mro__}
    if type_name is not None and type_name not in accepted:
        raise SerializationError(f"Cannot deserialize {type_name!r} data into {type(t).__name__}")

    flow_id = data.get("flow_id", "")
    if flow_id is None:
        flow_id = ""
    if not isinstance(flow_id, str):
        raise SerializationError(f"ExecutionTracker.flow_id must be a string, got {flow_id!r}")

    executions = _or_default(data.get("routine_executions"), {})
    if not isinstance(executions, dict):
        raise SerializationError("ExecutionTracker.routine_executions must be a dict")
    restored: dict[str, list[dict[str, Any]]] = {}
    for routine_id, records in executions.items():
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise SerializationError(
                f"ExecutionTracker.routine_executions[{routine_id!r}] must be a list of dicts"
            )
        restored[str(routine_id)] = [dict(r) for r in records]

    events = _or_default(data.get("event_flow"), [])
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise SerializationError("ExecutionTracker.event_flow must be a list of dicts")

    metrics = _or_default(data.get("performance_metrics"), {})
    if not isinstance(metrics, dict):
        raise SerializationError("ExecutionTracker.performance_metrics must be a dict")

    max_events = data.get("max_events")
    if max_events is not None and (
        not isinstance(max_events, int) or isinstance(max_events, bool) or max_events < 1
    ):
        raise SerializationError(
            f"ExecutionTracker.max_events must be a positive integer, got {max_events!r}"
        )

    t.flow_id = flow_id
    t.max_events = max_events
    t.routine_executions = restored
    t.event_flow = events
    t.performance_metrics = dict(metrics)


def _or_default(value: Any, default: Any) -> Any:
    return default if value is None else value


# ---------------------------------------------------------------------------
# The layouts, registered (routilux/__init__ imports this module)
# ---------------------------------------------------------------------------

register_layout(Slot, serialize_slot, deserialize_slot)
register_layout(Event, serialize_event, deserialize_event)
register_layout(Connection, serialize_connection, deserialize_connection)
register_layout(Routine, serialize_routine, deserialize_routine)
register_layout(Flow, serialize_flow, deserialize_flow)
register_layout(ErrorHandler, serialize_error_handler, deserialize_error_handler)
register_layout(ExecutionRecord, serialize_execution_record, deserialize_execution_record)
register_layout(ExecutionTracker, serialize_execution_tracker, deserialize_execution_tracker)
register_layout(
    JobState,
    serialize_job_state,
    deserialize_job_state,
    save=save_job_state,
    load=load_job_state,
    deserialize_owned=deserialize_job_state_owned,
    encode=encode_job_state,
)

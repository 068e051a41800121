"""Writing a flow as a flow file: :func:`flow_to_dict` and :func:`save_flow`.

What is written reads back to the same definition (a round trip): registered class
names (or ``module:Class``), configuration that differs from a new instance, error
policies, connections with their mappings. Only plain data can be written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from routilux.builtin_routines._base import check_plain_data
from routilux.error_handler import ErrorHandler
from routilux.flow.flow import Flow
from routilux.routine import Routine
from routilux.serialization import registered_classes

from ._errors import FlowFileError
from ._format import ID_PATTERN, PathLike
from ._source import yaml_module


def _class_name(routine: Routine, where: str) -> str:
    cls = type(routine)
    if registered_classes().get(cls.__name__) is cls:
        return cls.__name__
    if "<" in cls.__qualname__ or cls.__module__ == "__main__":
        raise FlowFileError(
            f"{cls.__qualname__} can be written neither as a registered name nor as "
            "'module:Class' (it is local or defined in __main__); register it with "
            "@register_serializable",
            key_path=where,
        )
    return f"{cls.__module__}:{cls.__qualname__}"


def _error_handler_to_dict(handler: ErrorHandler) -> dict[str, Any]:
    default = ErrorHandler()
    out: dict[str, Any] = {"strategy": handler.strategy.value}
    for key in ("max_retries", "retry_delay", "retry_backoff", "is_critical", "is_optional"):
        value = getattr(handler, key)
        if value != getattr(default, key):
            out[key] = value
    if tuple(handler.retryable_exceptions) != default.retryable_exceptions:
        names = []
        for exc in handler.retryable_exceptions:
            module = "" if exc.__module__ == "builtins" else f"{exc.__module__}."
            names.append(f"{module}{exc.__qualname__}")
        out["retryable_exceptions"] = names
    return out


def _plain(value: Any, where: str) -> Any:
    problem = check_plain_data(value)
    if problem is not None:
        raise FlowFileError(
            f"a flow file holds data only: {problem} (write conditions and transforms "
            "as safe expression strings)",
            key_path=where,
        )
    return json.loads(json.dumps(value))  # tuples become lists, as they read back


def flow_to_dict(
    flow: Flow, *, entry: str | None = None, timeout: float | None = None
) -> dict[str, Any]:
    """The flow as the content of a flow file (what :func:`flow_from_dict` reads).

    Only configuration that differs from a new instance of each routine's class is
    written. A routine whose class is neither registered nor importable by name, or
    whose configuration holds something other than plain data (a callable), raises
    :class:`FlowFileError` naming it.
    """
    out: dict[str, Any] = {"flow_id": flow.flow_id}
    if entry is not None:
        out["entry"] = entry
    execution: dict[str, Any] = {"strategy": flow.execution_strategy}
    if flow.execution_strategy == "concurrent":
        execution["max_workers"] = flow.max_workers
    settings = {
        "timeout": timeout,
        "handler_timeout": flow.handler_timeout,
        "max_deliveries": flow.max_deliveries,
        "history_limit": flow.history_limit,
        "output_limit": flow.output_limit,
    }
    execution.update({k: v for k, v in settings.items() if v is not None})
    if flow.strict:
        execution["strict"] = True
    out["execution"] = execution
    if flow.error_handler is not None:
        out["error_handler"] = _error_handler_to_dict(flow.error_handler)
    routines: dict[str, Any] = {}
    for rid, routine in flow.routines.items():
        where = f"routines.{rid}"
        if not ID_PATTERN.match(rid):
            raise FlowFileError(
                f"routine id {rid!r} cannot be written: use letters, digits, '_' and '-'",
                key_path=where,
            )
        spec: dict[str, Any] = {"class": _class_name(routine, where)}
        try:
            fresh = type(routine)().config()
        except Exception:  # noqa: BLE001 - then write the whole configuration
            fresh = {}
        config = {
            key: _plain(value, f"{where}.config.{key}")
            for key, value in routine.config().items()
            if key not in fresh or fresh[key] != value
        }
        if config:
            spec["config"] = config
        handler = routine.get_error_handler()
        if handler is not None:
            spec["error_handler"] = _error_handler_to_dict(handler)
        routines[rid] = spec
    out["routines"] = routines
    connections = []
    for connection in flow.connections:
        event, slot = connection.source_event, connection.target_slot
        if event is None or slot is None:
            continue
        source = connection._source_routine_id
        target = connection._target_routine_id
        if source is None and event.routine is not None:
            source = flow._get_routine_id(event.routine)
        if target is None and slot.routine is not None:
            target = flow._get_routine_id(slot.routine)
        item: dict[str, Any] = {"from": f"{source}.{event.name}", "to": f"{target}.{slot.name}"}
        if connection.param_mapping:
            item["param_mapping"] = dict(connection.param_mapping)
        connections.append(item)
    out["connections"] = connections
    return out


def save_flow(
    flow: Flow, path: PathLike, *, entry: str | None = None, timeout: float | None = None
) -> None:
    """Write ``flow`` as a flow file: JSON for a ``.json`` path, YAML for ``.yaml``/``.yml``."""
    file = Path(os.fspath(path))
    data = flow_to_dict(flow, entry=entry, timeout=timeout)
    suffix = file.suffix.lower()
    if suffix == ".json":
        text = json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    elif suffix in (".yaml", ".yml"):
        yaml = yaml_module()
        if yaml is None:
            raise FlowFileError(
                "writing YAML needs PyYAML: pip install 'routilux[yaml]' (or write .json)",
                source=str(file),
            )
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    else:
        raise FlowFileError(
            f"unknown flow file type {suffix or '(no suffix)'!r}: use .yaml, .yml or .json",
            source=str(file),
        )
    file.write_text(text, encoding="utf-8")

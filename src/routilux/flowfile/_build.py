"""Building a :class:`~routilux.Flow` from a flow file's content, and the public
reading functions (:func:`read_flow_file`, :func:`load_flow`, :func:`flow_from_dict`).

Every value is checked where it is read, and every error names where it was written.
Numbers go through the same checks as in code (``Flow``, ``ErrorHandler``, the
built-ins' ``set_config``) after a type and range check of their own.
"""

from __future__ import annotations

import importlib
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from routilux.builtin_routines._base import check_plain_data
from routilux.error_handler import MAX_RETRIES, MAX_RETRY_BACKOFF, MAX_RETRY_DELAY, ErrorHandler
from routilux.exceptions import RoutiluxError, RoutiluxWarning, SerializationError
from routilux.flow.flow import MAX_WORKERS, STRATEGIES, Flow
from routilux.routine import Routine
from routilux.serialization import lookup_exception_class, registered_classes, short_repr

from ._errors import FlowFileError, Locator, describe, did_you_mean
from ._format import (
    ATTRIBUTE_PATTERN,
    CONNECTION_KEYS,
    ERROR_HANDLER_KEYS,
    ERROR_STRATEGIES,
    EXECUTION_KEYS,
    ID_PATTERN,
    MAX_LIMIT,
    MAX_TIMEOUT,
    MODULE_PATTERN,
    ROUTINE_KEYS,
    TOP_KEYS,
    Path_,
    PathLike,
)
from ._imports import check_modules, is_allowed, project_imports
from ._source import is_json, parse_text, read_text


@dataclass
class FlowFile:
    """A flow read from a file, with what the file says about running it.

    ``entry`` is the file's ``entry`` routine (None when it names none), ``timeout``
    its ``execution.timeout`` (seconds a run may take, None for no limit) and
    ``warnings`` what building the flow warned about (handler signatures that do not
    fit a connection), each starting with where in the file.
    """

    flow: Flow
    entry: Optional[str] = None
    timeout: Optional[float] = None
    source: str = ""
    description: Optional[str] = None
    warnings: list[str] = field(default_factory=list)

    def default_entry(self) -> str:
        """The routine a run starts at: the file's ``entry``, else the only routine
        with a ``trigger`` slot that no connection reaches; FlowFileError otherwise."""
        if self.entry is not None:
            return self.entry
        reached = {c._target_routine_id for c in self.flow.connections}
        candidates = [
            rid
            for rid, routine in self.flow.routines.items()
            if rid not in reached and routine.get_slot("trigger") is not None
        ]
        if len(candidates) == 1:
            return candidates[0]
        listed = ", ".join(repr(c) for c in candidates) or "none"
        raise FlowFileError(
            f"cannot tell which routine starts the flow (candidates: {listed}); "
            "add 'entry: <routine id>' to the file or pass --entry",
            source=self.source,
        )


class Builder:
    """Turns a file's content into a :class:`FlowFile`, checking each value as it goes;
    ``allowed`` are the modules ``module:Class`` names may import."""

    def __init__(self, reader: Locator, allowed: tuple[str, ...]) -> None:
        self.reader = reader
        self.allowed = allowed

    def fail(self, path: Path_, message: str, *, at_key: bool = False) -> FlowFileError:
        return self.reader.error(path, message, at_key=at_key)

    # -- shapes -------------------------------------------------------------------

    def mapping(self, value: Any, path: Path_, keys: Sequence[str] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping, got {describe(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.fail(path, f"the key {short_repr(key)} is not a string")
            if keys is not None and key not in keys:
                raise self.fail(
                    (*path, key),
                    f"unknown key {key!r}{did_you_mean(key, keys)}; known keys: {', '.join(keys)}",
                    at_key=True,
                )
        return value

    def string(self, value: Any, path: Path_, *, optional: bool = False) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"must be a non-empty string, got {describe(value)}")
        return value

    def boolean(self, value: Any, path: Path_) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"must be true or false, got {describe(value)}")
        return value

    def integer(self, value: Any, path: Path_, low: int, high: int) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(
                path, f"must be an integer from {low} to {high:,}, got {describe(value)}"
            )
        return value

    def number(self, value: Any, path: Path_, low: float, high: float, *, above: bool) -> Any:
        if value is None:
            return None
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and (low < value if above else low <= value)
            and value <= high
        )
        if not ok:
            relation = f"greater than {low:g}" if above else f"from {low:g}"
            raise self.fail(
                path, f"must be a finite number {relation} up to {high:g}, got {describe(value)}"
            )
        return float(value)

    def choice(self, value: Any, path: Path_, choices: Sequence[str]) -> str:
        if not isinstance(value, str) or value not in choices:
            hint = did_you_mean(value, choices) if isinstance(value, str) else ""
            raise self.fail(
                path, f"must be one of {', '.join(choices)}, got {describe(value)}{hint}"
            )
        return value

    # -- parts ---------------------------------------------------------------------

    def error_handler(self, value: Any, path: Path_) -> ErrorHandler:
        spec = self.mapping(value, path, ERROR_HANDLER_KEYS)
        kwargs: dict[str, Any] = {}
        if "strategy" in spec:
            kwargs["strategy"] = self.choice(spec["strategy"], (*path, "strategy"),
                                             ERROR_STRATEGIES)  # fmt: skip
        if "max_retries" in spec:
            kwargs["max_retries"] = self.integer(
                spec["max_retries"], (*path, "max_retries"), 0, MAX_RETRIES
            )
        for key, high in (("retry_delay", MAX_RETRY_DELAY), ("retry_backoff", MAX_RETRY_BACKOFF)):
            if key in spec:
                kwargs[key] = self.number(spec[key], (*path, key), 0, high, above=False)
        for key in ("is_critical", "is_optional"):
            if key in spec:
                kwargs[key] = self.boolean(spec[key], (*path, key))
        if "retryable_exceptions" in spec:
            names = spec["retryable_exceptions"]
            where = (*path, "retryable_exceptions")
            if not isinstance(names, list):
                raise self.fail(where, f"must be a list of exception names, got {describe(names)}")
            classes = []
            for index, name in enumerate(names):
                try:
                    classes.append(lookup_exception_class(self.string(name, (*where, index))))
                except SerializationError as exc:
                    raise self.fail((*where, index), str(exc)) from None
            kwargs["retryable_exceptions"] = tuple(classes)
        try:
            return ErrorHandler(**{k: v for k, v in kwargs.items() if v is not None})
        except (RoutiluxError, ValueError, TypeError) as exc:
            raise self.fail(path, str(exc)) from None

    def routine_class(self, name: Any, path: Path_) -> type[Routine]:
        name = self.string(name, path)
        if ":" in name:
            module, _, attribute = name.partition(":")
            if not MODULE_PATTERN.match(module) or not ATTRIBUTE_PATTERN.match(attribute):
                raise self.fail(path, f"{name!r} is not 'module:Class'")
            if not is_allowed(module, self.allowed):
                raise self.fail(
                    path,
                    f"the file names {name!r}, but module {module!r} is not allowed to be "
                    f"imported; allow it with load_flow(..., allow_imports=[{module!r}]), "
                    f"the command line's --import {module}, or [tool.routilux] imports = "
                    f'["{module}"] in the project\'s pyproject.toml',
                )
            try:
                found: Any = importlib.import_module(module)
            except Exception as exc:  # noqa: BLE001 - any failure of the user's module
                raise self.fail(
                    path, f"importing {module!r} failed: {type(exc).__name__}: {exc}"
                ) from None
            for part in attribute.split("."):
                found = getattr(found, part, None)
            if not (isinstance(found, type) and issubclass(found, Routine)):
                raise self.fail(
                    path, f"{name!r} is not a Routine class (found {short_repr(found)})"
                )
            return found
        classes = registered_classes()
        cls = classes.get(name)
        if cls is None:
            routines = [n for n, c in classes.items() if issubclass(c, Routine)]
            raise self.fail(
                path,
                f"no routine class {name!r} is registered{did_you_mean(name, routines)}; "
                "decorate it with @register_serializable and import it before loading, or "
                "write 'module:Class' and allow the module to be imported",
            )
        if not issubclass(cls, Routine):
            raise self.fail(path, f"{name!r} is registered but is not a Routine class")
        return cls

    def routine(self, flow: Flow, rid: str, value: Any, path: Path_) -> Routine:
        spec = self.mapping(value, path, ROUTINE_KEYS)
        if "class" not in spec:
            raise self.fail(path, "a routine needs a 'class'")
        cls = self.routine_class(spec["class"], (*path, "class"))
        self.string(spec.get("description"), (*path, "description"), optional=True)
        try:
            routine = cls()
        except Exception as exc:  # noqa: BLE001 - the user's constructor
            raise self.fail(
                (*path, "class"), f"{cls.__name__}() failed: {type(exc).__name__}: {exc}"
            ) from None
        flow.add_routine(routine, rid)  # first, so errors name the routine by its id
        config = spec.get("config")
        if config is not None:
            config = self.mapping(config, (*path, "config"), None)
            for key, item in config.items():
                problem = check_plain_data(item)
                if problem is not None:
                    raise self.fail((*path, "config", key), f"must be plain data: {problem}")
            for key, item in config.items():
                try:
                    routine.set_config(**{key: item})
                except (RoutiluxError, ValueError, TypeError) as exc:
                    known = sorted(type(routine).config_schema or ())
                    hint = did_you_mean(key, known) if key not in known and known else ""
                    raise self.fail((*path, "config", key), f"{exc}{hint}", at_key=bool(hint)) \
                        from None  # fmt: skip
        if spec.get("error_handler") is not None:
            routine.set_error_handler(
                self.error_handler(spec["error_handler"], (*path, "error_handler"))
            )
        return routine

    def endpoint(self, value: Any, path: Path_, flow: Flow, kind: str) -> tuple[str, str]:
        text = self.string(value, path)
        rid, dot, name = text.rpartition(".")
        if not dot or not rid or not name:
            raise self.fail(path, f"must be 'routine.{kind}', got {text!r}")
        routine = flow.routines.get(rid)
        if routine is None:
            raise self.fail(
                path, f"no routine {rid!r} in the flow{did_you_mean(rid, flow.routines)}"
            )
        names = list(routine._events if kind == "event" else routine._slots)
        if name not in names:
            raise self.fail(
                path,
                f"routine {rid!r} ({type(routine).__name__}) has no {kind} {name!r}"
                f"{did_you_mean(name, names)}; its {kind}s: {', '.join(names) or 'none'}",
            )
        return rid, name

    def build(self, data: Any, cls: type[Flow]) -> FlowFile:
        top = self.mapping(data, (), TOP_KEYS)
        flow_id = self.string(top.get("flow_id"), ("flow_id",), optional=True)
        description = self.string(top.get("description"), ("description",), optional=True)
        execution = self.mapping(top.get("execution") or {}, ("execution",), EXECUTION_KEYS)
        where = ("execution",)
        strategy = self.choice(execution.get("strategy", "sequential"), (*where, "strategy"),
                               STRATEGIES)  # fmt: skip
        workers = self.integer(execution.get("max_workers"), (*where, "max_workers"), 1,
                               MAX_WORKERS)  # fmt: skip
        limits = {
            key: self.integer(execution.get(key), (*where, key), 1, MAX_LIMIT)
            for key in ("history_limit", "output_limit", "max_deliveries")
        }
        timeout = self.number(execution.get("timeout"), (*where, "timeout"), 0, MAX_TIMEOUT,
                              above=True)  # fmt: skip
        handler_timeout = self.number(execution.get("handler_timeout"),
                                      (*where, "handler_timeout"), 0, MAX_TIMEOUT,
                                      above=True)  # fmt: skip
        strict = self.boolean(execution.get("strict", False), (*where, "strict"))
        try:
            flow = cls(
                flow_id=flow_id,
                execution_strategy=strategy,
                max_workers=workers if workers is not None else 5,
                strict=strict,
                handler_timeout=handler_timeout,
                **limits,
            )
        except (RoutiluxError, ValueError, TypeError) as exc:
            raise self.fail(where, str(exc)) from None
        if top.get("error_handler") is not None:
            flow.set_error_handler(self.error_handler(top["error_handler"], ("error_handler",)))

        routines = self.mapping(top.get("routines") or {}, ("routines",), None)
        if not routines:
            raise self.fail(("routines",), "a flow file needs at least one routine")
        for rid, spec in routines.items():
            path: Path_ = ("routines", rid)
            if not ID_PATTERN.match(rid):
                raise self.fail(
                    path,
                    f"routine id {rid!r} must be letters, digits, '_' and '-' "
                    "(not starting with '-')",
                    at_key=True,
                )
            self.routine(flow, rid, spec, path)

        found: list[str] = []
        connections = top.get("connections") or []
        if not isinstance(connections, list):
            raise self.fail(("connections",), f"must be a list, got {describe(connections)}")
        for index, item in enumerate(connections):
            path = ("connections", index)
            spec = self.mapping(item, path, CONNECTION_KEYS)
            for key in ("from", "to"):
                if key not in spec:
                    raise self.fail(path, f"a connection needs '{key}'")
            source, event = self.endpoint(spec["from"], (*path, "from"), flow, "event")
            target, slot = self.endpoint(spec["to"], (*path, "to"), flow, "slot")
            mapping = spec.get("param_mapping")
            if mapping is not None:
                mapping = self.mapping(mapping, (*path, "param_mapping"), None)
                for key, renamed in mapping.items():
                    if not isinstance(renamed, str) or not renamed:
                        raise self.fail(
                            (*path, "param_mapping", key),
                            f"must name a slot parameter (a string), got {describe(renamed)}",
                        )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RoutiluxWarning)
                try:
                    flow.connect(source, event, target, slot, mapping or None)
                except (RoutiluxError, ValueError, TypeError) as exc:
                    raise self.fail(path, str(exc)) from None
            for warning in caught:
                found.append(str(self.fail(path, str(warning.message))))

        entry = self.string(top.get("entry"), ("entry",), optional=True)
        if entry is not None:
            routine = flow.routines.get(entry)
            if routine is None:
                raise self.fail(
                    ("entry",), f"no routine {entry!r} in the flow{did_you_mean(entry, routines)}"
                )
            if routine.get_slot("trigger") is None:
                raise self.fail(
                    ("entry",), f"routine {entry!r} has no 'trigger' slot, so it cannot start a job"
                )
        return FlowFile(flow, entry, timeout, self.reader.source, description, found)


def flow_from_dict(
    data: Mapping[str, Any],
    *,
    source: str = "<data>",
    allow_imports: Iterable[str] = (),
    cls: type[Flow] = Flow,
) -> FlowFile:
    """Build a flow from the parsed content of a flow file (a dict).

    Only the modules of ``allow_imports`` (and their submodules) may be imported for
    ``module:Class`` names; the project's pyproject.toml is not read here.
    """
    allowed = check_modules(allow_imports, "allow_imports")
    return Builder(Locator(source), allowed).build(data, cls)


def read_flow_file(
    path: PathLike,
    *,
    allow_imports: Iterable[str] = (),
    use_project_imports: bool = True,
    cls: type[Flow] = Flow,
) -> FlowFile:
    """Read the flow file at ``path`` (YAML, or JSON for ``.json``) into a :class:`FlowFile`.

    ``module:Class`` names may import the modules of ``allow_imports`` and, with
    ``use_project_imports``, those of ``[tool.routilux] imports`` in the nearest
    pyproject.toml at or above the current directory (:func:`project_imports`); any
    other module is never imported. Every problem raises :class:`FlowFileError` naming
    the file, the line and column (YAML) and the key path. The warnings of building the
    flow are in :attr:`FlowFile.warnings` and issued as :class:`~routilux.RoutiluxWarning`.
    """
    allowed = check_modules(allow_imports, "allow_imports")
    if use_project_imports:
        allowed = (*allowed, *project_imports())
    file = Path(os.fspath(path))
    text = read_text(file)
    data, reader = parse_text(text, str(file), is_json(file, text))
    result = Builder(reader, allowed).build(data, cls)
    for message in result.warnings:
        warnings.warn(message, RoutiluxWarning, stacklevel=2)
    return result


def load_flow(
    path: PathLike,
    *,
    allow_imports: Iterable[str] = (),
    use_project_imports: bool = True,
    cls: type[Flow] = Flow,
) -> Flow:
    """The flow of the flow file at ``path`` (see :func:`read_flow_file`)."""
    return read_flow_file(
        path, allow_imports=allow_imports, use_project_imports=use_project_imports, cls=cls
    ).flow

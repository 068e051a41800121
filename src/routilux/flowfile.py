"""Flow files: a flow written as YAML or JSON, read back into a :class:`~routilux.Flow`.

This module owns the flow-file format (the shape upstream Routilux 1.x users write),
reading it (:func:`load_flow`, :func:`read_flow_file`, :func:`flow_from_dict`), writing it
(:func:`save_flow`, :func:`flow_to_dict`), its JSON Schema (:func:`flow_file_schema`)
and the import allow-list (:func:`project_imports`).

A file is data (DESIGN invariant 8):

* YAML is read with PyYAML's safe loader only (the ``routilux[yaml]`` extra); the node
  tree is composed first so every error names the file, line and column.
* A routine ``class`` is a name from the class registry (the built-ins, anything
  decorated with ``register_serializable``). A ``module:Class`` name imports ``module``
  only when the caller allowed that module (``allow_imports=[...]``, the CLI's
  ``--import``, or ``[tool.routilux] imports = [...]`` in the project's pyproject.toml);
  otherwise nothing is imported and the error says how to allow it.
* Every key is known (an unknown one is an error with a "did you mean"), every number
  is range-checked (by the same checks :class:`~routilux.Flow`, :class:`~routilux.ErrorHandler`
  and the built-ins' configuration apply to values given in code), and configuration
  values are plain JSON data.

Importing this module registers it with the codec (``register_flow_file_codec``), which
is how ``Flow.from_file``/``Flow.to_file`` reach it without importing it.
"""

from __future__ import annotations

import difflib
import importlib
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from .builtin_routines._base import check_plain_data
from .error_handler import MAX_RETRIES, MAX_RETRY_BACKOFF, MAX_RETRY_DELAY, ErrorHandler
from .exceptions import DefinitionError, RoutiluxError, RoutiluxWarning, SerializationError
from .flow.flow import MAX_WORKERS, STRATEGIES, Flow
from .routine import Routine
from .serialization import (
    loads_json,
    lookup_exception_class,
    register_flow_file_codec,
    registered_classes,
    short_repr,
)

__all__ = [
    "FlowFile",
    "FlowFileError",
    "MAX_FILE_BYTES",
    "MAX_LIMIT",
    "flow_file_schema",
    "flow_from_dict",
    "flow_to_dict",
    "load_flow",
    "project_imports",
    "read_flow_file",
    "save_flow",
]

PathLike = Union[str, "os.PathLike[str]"]
Path_ = tuple[Union[str, int], ...]

MAX_FILE_BYTES = 10 * 1024 * 1024
"""Largest flow file read (10 MiB)."""

MAX_NODES = 200_000
"""Most YAML nodes one file may expand to (aliases counted each time they are used),
so a file of nested aliases cannot make the reader walk billions of nodes."""

MAX_DEPTH = 64
"""Deepest nesting of a flow file's values."""

MAX_LIMIT = 1_000_000_000
"""Largest ``history_limit``, ``output_limit`` and ``max_deliveries`` in a file."""

MAX_TIMEOUT = 365 * 24 * 3600.0
"""Longest ``timeout`` and ``handler_timeout`` in a file (one year, in seconds)."""

_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*\Z")

TOP_KEYS = ("flow_id", "description", "entry", "execution", "error_handler", "routines",
            "connections")  # fmt: skip
EXECUTION_KEYS = ("strategy", "max_workers", "timeout", "handler_timeout", "max_deliveries",
                  "history_limit", "output_limit", "strict")  # fmt: skip
ROUTINE_KEYS = ("class", "description", "config", "error_handler")
ERROR_HANDLER_KEYS = ("strategy", "max_retries", "retry_delay", "retry_backoff",
                      "retryable_exceptions", "is_critical", "is_optional")  # fmt: skip
CONNECTION_KEYS = ("from", "to", "param_mapping")
ERROR_STRATEGIES = ("stop", "continue", "retry", "skip")


class FlowFileError(DefinitionError):
    """A flow file could not be read or written.

    The message starts with where: ``file:line:column: key.path:`` (the line and column
    when the file is YAML). The parts are also attributes: :attr:`source`,
    :attr:`line`, :attr:`column` (1-based, or None) and :attr:`key_path`.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str = "",
        line: int | None = None,
        column: int | None = None,
        key_path: str = "",
    ) -> None:
        where = source or "<flow file>"
        if line is not None:
            where += f":{line}:{column}"
        if key_path:
            where += f": {key_path}"
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line
        self.column = column
        self.key_path = key_path
        self.problem = message


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


# ---------------------------------------------------------------------------
# Reading text: YAML node tree (with marks) or JSON
# ---------------------------------------------------------------------------

_KEY = "<key>"  # marks[path + (_KEY,)] is where the key of path is written


class _Reader:
    """Where each value of the file was written, and errors that say so."""

    def __init__(self, source: str, marks: dict[Path_, tuple[int, int]] | None = None) -> None:
        self.source = source
        self.marks = marks or {}

    def error(self, path: Path_, message: str, *, at_key: bool = False) -> FlowFileError:
        mark = None
        if at_key:
            mark = self.marks.get((*path, _KEY))
        probe = path
        while mark is None:
            mark = self.marks.get(probe)
            if not probe:
                break
            probe = probe[:-1]
        line, column = mark if mark is not None else (None, None)
        return FlowFileError(
            message, source=self.source, line=line, column=column, key_path=_show(path)
        )


def _show(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _yaml_module() -> Any:
    try:
        import yaml
    except ImportError:
        return None
    return yaml


def _compose_yaml(text: str, reader: _Reader) -> Any:
    """The document of ``text`` as plain values, filling ``reader.marks``."""
    yaml = _yaml_module()
    if yaml is None:
        raise FlowFileError(
            "reading YAML needs PyYAML: pip install 'routilux[yaml]' (or write the flow as JSON)",
            source=reader.source,
        )
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            column = mark.column + 1 if mark is not None else None
            problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
            raise FlowFileError(
                f"not valid YAML: {problem}", source=reader.source, line=line, column=column
            ) from None
        except yaml.YAMLError as exc:
            raise FlowFileError(f"not valid YAML: {exc}", source=reader.source) from None
        except RecursionError:
            raise FlowFileError("nested too deeply", source=reader.source) from None
        if node is None:
            return None
        budget = [MAX_NODES]
        return _node_value(yaml, loader, node, (), reader, budget)
    finally:
        loader.dispose()


def _node_value(
    yaml: Any, loader: Any, node: Any, path: Path_, reader: _Reader, budget: list[int]
) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise reader.error(path, f"the file expands to more than {MAX_NODES:,} values")
    if len(path) > MAX_DEPTH:
        raise reader.error(path, f"nested more than {MAX_DEPTH} levels")
    reader.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise reader.error(path, "a key must be a plain string")
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise reader.error(path, "merge keys ('<<') are not supported in flow files")
            key = loader.construct_object(key_node)
            if not isinstance(key, str):
                key = key_node.value  # `1: x` or `true: x`: keys are names here
            child = (*path, key)
            mark = key_node.start_mark
            if key in out:
                raise FlowFileError(
                    f"duplicate key {key!r}",
                    source=reader.source,
                    line=mark.line + 1,
                    column=mark.column + 1,
                    key_path=_show(child),
                )
            reader.marks[child + (_KEY,)] = (mark.line + 1, mark.column + 1)
            out[key] = _node_value(yaml, loader, value_node, child, reader, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _node_value(yaml, loader, item, (*path, index), reader, budget)
            for index, item in enumerate(node.value)
        ]
    try:
        return loader.construct_object(node)
    except yaml.YAMLError as exc:
        raise reader.error(path, f"not a valid value: {exc}") from None


def _parse(text: str, source: str, as_json: bool) -> tuple[Any, _Reader]:
    reader = _Reader(source)
    if as_json:
        try:
            return loads_json(text, source), reader
        except SerializationError as exc:
            raise FlowFileError(f"not valid JSON: {exc}", source=source) from None
    return _compose_yaml(text, reader), reader


def _read_text(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise FlowFileError("no such file", source=str(path)) from None
    except OSError as exc:
        raise FlowFileError(f"cannot read it: {exc.strerror or exc}", source=str(path)) from None
    if len(raw) > MAX_FILE_BYTES:
        raise FlowFileError(
            f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; not a flow file",
            source=str(path),
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FlowFileError(f"not UTF-8 text ({exc.reason})", source=str(path)) from None


def _is_json(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return True
    if suffix in (".yaml", ".yml"):
        return False
    return text.lstrip().startswith("{")


# ---------------------------------------------------------------------------
# The import allow-list
# ---------------------------------------------------------------------------


def project_imports(start: PathLike | None = None) -> tuple[str, ...]:
    """The modules the project allows flow files to import: ``[tool.routilux] imports``
    of the nearest pyproject.toml at or above ``start`` (default: the current
    directory). Empty when there is none, or it has no such table."""
    here = Path(start if start is not None else os.getcwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return _imports_of(candidate)
    return ()


def _imports_of(pyproject: Path) -> tuple[str, ...]:
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowFileError(f"cannot read it: {exc}", source=str(pyproject)) from None
    if "routilux" not in text:
        return ()
    toml: Any = None
    for name in ("tomllib", "tomli"):  # tomllib from Python 3.11 on; tomli before
        try:
            toml = importlib.import_module(name)
            break
        except ImportError:
            continue
    if toml is None:
        if "[tool.routilux]" in text:
            raise FlowFileError(
                "reading [tool.routilux] on Python < 3.11 needs tomli: pip install tomli",
                source=str(pyproject),
            )
        return ()
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise FlowFileError(f"not valid TOML: {exc}", source=str(pyproject)) from None
    table = data.get("tool", {}).get("routilux", {})
    if not isinstance(table, dict):
        raise FlowFileError("[tool.routilux] must be a table", source=str(pyproject))
    unknown = sorted(set(table) - {"imports"})
    if unknown:
        hint = _did_you_mean(unknown[0], ["imports"])
        raise FlowFileError(
            f"unknown key {unknown[0]!r} in [tool.routilux]{hint}",
            source=str(pyproject),
        )
    imports = table.get("imports", [])
    if not isinstance(imports, list) or not all(
        isinstance(m, str) and _MODULE.match(m) for m in imports
    ):
        raise FlowFileError(
            "[tool.routilux] imports must be a list of module names", source=str(pyproject)
        )
    return tuple(imports)


def _check_modules(modules: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(modules, str):
        modules = [modules]
    out = tuple(modules)
    for module in out:
        if not isinstance(module, str) or not _MODULE.match(module):
            raise FlowFileError(f"{what}: {short_repr(module)} is not a module name")
    return out


def _allowed(module: str, allowed: Sequence[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------
# Building the flow
# ---------------------------------------------------------------------------


class _Builder:
    def __init__(self, reader: _Reader, allowed: tuple[str, ...]) -> None:
        self.reader = reader
        self.allowed = allowed

    def fail(self, path: Path_, message: str, *, at_key: bool = False) -> FlowFileError:
        return self.reader.error(path, message, at_key=at_key)

    # -- shapes -------------------------------------------------------------------

    def mapping(self, value: Any, path: Path_, keys: Sequence[str] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping, got {_kind(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.fail(path, f"the key {short_repr(key)} is not a string")
            if keys is not None and key not in keys:
                raise self.fail(
                    (*path, key),
                    f"unknown key {key!r}{_did_you_mean(key, keys)}; known keys: {', '.join(keys)}",
                    at_key=True,
                )
        return value

    def string(self, value: Any, path: Path_, *, optional: bool = False) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"must be a non-empty string, got {_kind(value)}")
        return value

    def boolean(self, value: Any, path: Path_) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"must be true or false, got {_kind(value)}")
        return value

    def integer(self, value: Any, path: Path_, low: int, high: int) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(path, f"must be an integer from {low} to {high:,}, got {_kind(value)}")
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
                path, f"must be a finite number {relation} up to {high:g}, got {_kind(value)}"
            )
        return float(value)

    def choice(self, value: Any, path: Path_, choices: Sequence[str]) -> str:
        if not isinstance(value, str) or value not in choices:
            hint = _did_you_mean(value, choices) if isinstance(value, str) else ""
            raise self.fail(path, f"must be one of {', '.join(choices)}, got {_kind(value)}{hint}")
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
                raise self.fail(where, f"must be a list of exception names, got {_kind(names)}")
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
            if not _MODULE.match(module) or not _ATTRIBUTE.match(attribute):
                raise self.fail(path, f"{name!r} is not 'module:Class'")
            if not _allowed(module, self.allowed):
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
                f"no routine class {name!r} is registered{_did_you_mean(name, routines)}; "
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
                    hint = _did_you_mean(key, known) if key not in known and known else ""
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
                path, f"no routine {rid!r} in the flow{_did_you_mean(rid, flow.routines)}"
            )
        names = list(routine._events if kind == "event" else routine._slots)
        if name not in names:
            raise self.fail(
                path,
                f"routine {rid!r} ({type(routine).__name__}) has no {kind} {name!r}"
                f"{_did_you_mean(name, names)}; its {kind}s: {', '.join(names) or 'none'}",
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
            if not _ID.match(rid):
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
            raise self.fail(("connections",), f"must be a list, got {_kind(connections)}")
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
                            f"must name a slot parameter (a string), got {_kind(renamed)}",
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
                    ("entry",), f"no routine {entry!r} in the flow{_did_you_mean(entry, routines)}"
                )
            if routine.get_slot("trigger") is None:
                raise self.fail(
                    ("entry",), f"routine {entry!r} has no 'trigger' slot, so it cannot start a job"
                )
        return FlowFile(flow, entry, timeout, self.reader.source, description, found)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, (bool, int, float, str)):
        return f"{type(value).__name__} {short_repr(value)}"
    return type(value).__name__


# ---------------------------------------------------------------------------
# Public reading API
# ---------------------------------------------------------------------------


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
    allowed = _check_modules(allow_imports, "allow_imports")
    return _Builder(_Reader(source), allowed).build(data, cls)


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
    allowed = _check_modules(allow_imports, "allow_imports")
    if use_project_imports:
        allowed = (*allowed, *project_imports())
    file = Path(os.fspath(path))
    text = _read_text(file)
    data, reader = _parse(text, str(file), _is_json(file, text))
    result = _Builder(reader, allowed).build(data, cls)
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


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


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
        if not _ID.match(rid):
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
        yaml = _yaml_module()
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


# ---------------------------------------------------------------------------
# The JSON Schema
# ---------------------------------------------------------------------------


def flow_file_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of the flow-file format, for editors and checks.

    It describes the shape and ranges; what it cannot know (which classes are
    registered, which events and slots they have, their configuration) is checked
    when the file is loaded.
    """
    identifier = {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_-]*$"}
    error_handler = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "strategy": {"enum": list(ERROR_STRATEGIES)},
            "max_retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES},
            "retry_delay": {"type": "number", "minimum": 0, "maximum": MAX_RETRY_DELAY},
            "retry_backoff": {"type": "number", "minimum": 0, "maximum": MAX_RETRY_BACKOFF},
            "retryable_exceptions": {"type": "array", "items": {"type": "string"}},
            "is_critical": {"type": "boolean"},
            "is_optional": {"type": "boolean"},
        },
    }
    limit = {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_LIMIT}
    seconds = {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT}
    endpoint = {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_-]*\.[^.]+$"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "routilux-flow-file",
        "title": "Routilux flow file",
        "type": "object",
        "additionalProperties": False,
        "required": ["routines"],
        "properties": {
            "flow_id": {"type": "string", "minLength": 1},
            "description": {"type": "string"},
            "entry": identifier,
            "execution": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "strategy": {"enum": list(STRATEGIES)},
                    "max_workers": {"type": "integer", "minimum": 1, "maximum": MAX_WORKERS},
                    "timeout": seconds,
                    "handler_timeout": seconds,
                    "max_deliveries": limit,
                    "history_limit": limit,
                    "output_limit": limit,
                    "strict": {"type": "boolean"},
                },
            },
            "error_handler": error_handler,
            "routines": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": identifier,
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["class"],
                    "properties": {
                        "class": {
                            "type": "string",
                            "description": "a registered class name, or module:Class "
                            "(imported only when the module is allowed)",
                            "minLength": 1,
                        },
                        "description": {"type": "string"},
                        "config": {"type": "object"},
                        "error_handler": error_handler,
                    },
                },
            },
            "connections": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["from", "to"],
                    "properties": {
                        "from": {**endpoint, "description": "routine.event"},
                        "to": {**endpoint, "description": "routine.slot"},
                        "param_mapping": {
                            "type": "object",
                            "additionalProperties": {"type": "string", "minLength": 1},
                        },
                    },
                },
            },
        },
    }


# ---------------------------------------------------------------------------
# Flow.from_file / Flow.to_file
# ---------------------------------------------------------------------------


def _load_for_flow(path: PathLike, cls: type[Flow], allow_imports: Iterable[str]) -> Flow:
    return read_flow_file(path, allow_imports=allow_imports, cls=cls).flow


def _save_for_flow(flow: Flow, path: PathLike) -> None:
    save_flow(flow, path)


register_flow_file_codec(_load_for_flow, _save_for_flow)

"""Flow files: a flow written as YAML or JSON, read back into a :class:`~routilux.Flow`.

This package owns the flow-file format (the shape upstream Routilux 1.x users write),
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

Importing this package registers it with the codec (``register_flow_file_codec``), which
is how ``Flow.from_file``/``Flow.to_file`` reach it without importing it.
"""

from __future__ import annotations

from collections.abc import Iterable

from routilux.flow.flow import Flow
from routilux.serialization import register_flow_file_codec

from ._build import FlowFile, flow_from_dict, load_flow, read_flow_file
from ._errors import FlowFileError
from ._format import (
    CONNECTION_KEYS,
    ERROR_HANDLER_KEYS,
    EXECUTION_KEYS,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_LIMIT,
    MAX_NODES,
    MAX_TIMEOUT,
    ROUTINE_KEYS,
    TOP_KEYS,
    PathLike,
)
from ._imports import project_imports
from ._schema import flow_file_schema
from ._write import flow_to_dict, save_flow

__all__ = [
    "CONNECTION_KEYS",
    "ERROR_HANDLER_KEYS",
    "EXECUTION_KEYS",
    "FlowFile",
    "FlowFileError",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_LIMIT",
    "MAX_NODES",
    "MAX_TIMEOUT",
    "ROUTINE_KEYS",
    "TOP_KEYS",
    "flow_file_schema",
    "flow_from_dict",
    "flow_to_dict",
    "load_flow",
    "project_imports",
    "read_flow_file",
    "save_flow",
]


def _load_for_flow(path: PathLike, cls: type[Flow], allow_imports: Iterable[str]) -> Flow:
    return read_flow_file(path, allow_imports=allow_imports, cls=cls).flow


def _save_for_flow(flow: Flow, path: PathLike) -> None:
    save_flow(flow, path)


register_flow_file_codec(_load_for_flow, _save_for_flow)

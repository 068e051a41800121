"""The import allow-list: which modules a flow file's ``module:Class`` names may import.

A module is importable only when the caller listed it (or a package containing it):
``allow_imports=[...]``, the command line's ``--import``, or ``[tool.routilux]
imports`` in the project's pyproject.toml (:func:`project_imports`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from routilux.serialization import short_repr

from ._errors import FlowFileError, did_you_mean
from ._format import MODULE_PATTERN, PathLike


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
        hint = did_you_mean(unknown[0], ["imports"])
        raise FlowFileError(
            f"unknown key {unknown[0]!r} in [tool.routilux]{hint}",
            source=str(pyproject),
        )
    imports = table.get("imports", [])
    if not isinstance(imports, list) or not all(
        isinstance(m, str) and MODULE_PATTERN.match(m) for m in imports
    ):
        raise FlowFileError(
            "[tool.routilux] imports must be a list of module names", source=str(pyproject)
        )
    return tuple(imports)


def check_modules(modules: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(modules, str):
        modules = [modules]
    out = tuple(modules)
    for module in out:
        if not isinstance(module, str) or not MODULE_PATTERN.match(module):
            raise FlowFileError(f"{what}: {short_repr(module)} is not a module name")
    return out


def is_allowed(module: str, allowed: Sequence[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)

"""Errors of flow files, and where in a file a value was written.

:class:`FlowFileError` names the file, line, column and key path; :class:`Locator`
keeps the line and column of every value of a YAML file (filled by ``_source``) and
makes errors that point at them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from routilux.exceptions import DefinitionError
from routilux.serialization import short_repr

from ._format import Path_


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


KEY = "<key>"  # marks[path + (KEY,)] is where the key of path is written


class Locator:
    """Where each value of the file was written, and errors that say so."""

    def __init__(self, source: str, marks: dict[Path_, tuple[int, int]] | None = None) -> None:
        self.source = source
        self.marks = marks or {}

    def error(self, path: Path_, message: str, *, at_key: bool = False) -> FlowFileError:
        mark = None
        if at_key:
            mark = self.marks.get((*path, KEY))
        probe = path
        while mark is None:
            mark = self.marks.get(probe)
            if not probe:
                break
            probe = probe[:-1]
        line, column = mark if mark is not None else (None, None)
        return FlowFileError(
            message, source=self.source, line=line, column=column, key_path=show_path(path)
        )


def show_path(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, (bool, int, float, str)):
        return f"{type(value).__name__} {short_repr(value)}"
    return type(value).__name__

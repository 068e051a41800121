"""Reading a flow file's text: size and encoding checks, YAML through PyYAML's safe
loader (the node tree is composed first, so every value keeps its line and column),
JSON through the codec's strict reader.

Only plain mappings, lists and the safe loader's scalars are accepted: a tag such as
``!!python/object/apply`` is refused before anything is built, and aliases may expand
to at most :data:`MAX_NODES` values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from routilux.exceptions import SerializationError
from routilux.serialization import loads_json

from ._errors import KEY, FlowFileError, Locator, show_path
from ._format import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, Path_


def yaml_module() -> Any:
    try:
        import yaml
    except ImportError:
        return None
    return yaml


def _compose_yaml(text: str, reader: Locator) -> Any:
    """The document of ``text`` as plain values, filling ``reader.marks``."""
    yaml = yaml_module()
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


# The tags of plain mappings and lists; the safe loader itself refuses unsafe scalars.
_PLAIN_TAGS = {"MappingNode": "tag:yaml.org,2002:map", "SequenceNode": "tag:yaml.org,2002:seq"}


def _node_value(
    yaml: Any, loader: Any, node: Any, path: Path_, reader: Locator, budget: list[int]
) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise reader.error(path, f"the file expands to more than {MAX_NODES:,} values")
    if len(path) > MAX_DEPTH:
        raise reader.error(path, f"nested more than {MAX_DEPTH} levels")
    reader.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    expected = _PLAIN_TAGS.get(type(node).__name__)
    if expected is not None and node.tag != expected:
        # !!python/object/apply:..., !!set, !!omap, a custom !tag: not plain data.
        raise reader.error(path, f"the YAML tag {node.tag!r} is not allowed in a flow file")
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
                    key_path=show_path(child),
                )
            reader.marks[child + (KEY,)] = (mark.line + 1, mark.column + 1)
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


def parse_text(text: str, source: str, as_json: bool) -> tuple[Any, Locator]:
    reader = Locator(source)
    if as_json:
        try:
            return loads_json(text, source), reader
        except SerializationError as exc:
            raise FlowFileError(f"not valid JSON: {exc}", source=source) from None
    return _compose_yaml(text, reader), reader


def read_text(path: Path) -> str:
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


def is_json(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return True
    if suffix in (".yaml", ".yml"):
        return False
    return text.lstrip().startswith("{")

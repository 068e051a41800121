"""DataFlattener: turns nested dicts and lists into one flat dict of dotted keys."""

from __future__ import annotations

from typing import Any

from routilux.serialization import register_serializable

from .._base import MAX_FLATTEN_DEPTH, BuiltinRoutine

CIRCULAR = "[Circular Reference]"


@register_serializable
class DataFlattener(BuiltinRoutine):
    """Flatten ``{"a": {"b": 1}}`` to ``{"a.b": 1}``.

    Slot ``input``; event ``output`` with ``flattened_data``, ``original_type`` and
    ``depth`` (the deepest level reached).
    """

    config_schema = {
        "separator": str,
        "preserve_lists": bool,
        "max_depth": int,
    }

    def __init__(self) -> None:
        super().__init__()
        self.input_slot = self._define_input(self._handle_input)
        self.output_event = self.define_event(
            "output", ["flattened_data", "original_type", "depth"]
        )
        self.set_config(separator=".", preserve_lists=True, max_depth=100)

    def _check_config_value(self, key: str, value: Any) -> None:
        if key == "max_depth":
            self._require_range(key, value, 0, MAX_FLATTEN_DEPTH)

    def _handle_input(self, data: Any = None, **kwargs: Any) -> None:
        value = self._extract_input_data(data, **kwargs)
        flat, depth = self.flatten(value)
        self.emit("output", flattened_data=flat, original_type=type(value).__name__, depth=depth)

    def flatten(self, value: Any) -> tuple[dict[str, Any], int]:
        """``(flat dict, depth)`` for ``value``."""
        out: dict[str, Any] = {}
        depth = self._flatten(value, "", 0, out, set())
        return out, depth

    def _flatten(
        self, value: Any, prefix: str, level: int, out: dict[str, Any], path: set[int]
    ) -> int:
        value = _serializable_view(value)
        if not isinstance(value, (dict, list, tuple)):
            out[prefix or "value"] = value
            return level
        if id(value) in path:
            out[prefix or "value"] = CIRCULAR
            return level
        if level >= int(self.get_config("max_depth", 100)) and prefix:
            out[prefix] = str(value)
            return level
        if not value:
            if prefix:
                out[prefix] = value
            return level
        separator = str(self.get_config("separator", "."))
        preserve_lists = bool(self.get_config("preserve_lists", True))
        path.add(id(value))
        deepest = level
        try:
            if isinstance(value, dict):
                items: list[tuple[str | None, Any]] = [(str(k), v) for k, v in value.items()]
            else:
                items = [(str(i) if preserve_lists else None, v) for i, v in enumerate(value)]
            for key, item in items:
                if key is None:
                    child = prefix
                else:
                    child = f"{prefix}{separator}{key}" if prefix else key
                deepest = max(deepest, self._flatten(item, child, level + 1, out, path))
        finally:
            path.discard(id(value))
        return deepest


def _serializable_view(value: Any) -> Any:
    """A Serializable object (anything with a ``serialize()`` method) as its dict."""
    serialize = getattr(value, "serialize", None)
    if serialize is not None and callable(serialize) and not isinstance(value, type):
        try:
            result = serialize()
        except Exception:  # noqa: BLE001 - not flattenable that way: keep the object
            return value
        if isinstance(result, dict):
            return result
    return value

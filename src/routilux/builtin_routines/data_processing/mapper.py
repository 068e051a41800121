"""Mapper: applies one configured transform to every item that passes through."""

from __future__ import annotations

import threading
from typing import Any, Callable, ClassVar

from routilux.serialization import register_serializable

from .._base import CALLABLE, BuiltinRoutine
from .._expressions import ExpressionError

_MISSING = object()


@register_serializable
class Mapper(BuiltinRoutine):
    """Transform each item with a function, an expression and/or a field mapping.

    Slot ``input``; event ``output`` with ``data`` (the mapped item) plus the keys
    that came with the item (``index``, ``total``, ...). Configuration:

    * ``function``: a callable, or the name of a function registered with
      :meth:`Mapper.register_function`;
    * ``expression``: a safe expression over ``data`` (``"data['price'] * 2"``);
    * ``field_map``: ``{output_key: source_path}``, where ``source_path`` is a key
      or a dotted path (``"user.name"``, ``"items.0"``) into the item; a missing
      source gives None;
    * ``keep_unmapped``: with ``field_map``, also keep the item's other keys;
    * ``apply_to_elements``: when the item is a list, map each element instead.

    The steps run in the order function, expression, field_map; with none configured
    the item passes unchanged. An exception is an error of this routine.
    """

    config_schema = {
        "function": (str, CALLABLE, type(None)),
        "expression": (str, type(None)),
        "field_map": (dict, type(None)),
        "keep_unmapped": bool,
        "apply_to_elements": bool,
    }

    _functions: ClassVar[dict[str, Callable[[Any], Any]]] = {}
    _functions_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        super().__init__()
        self.input_slot = self._define_input(self._handle_input)
        self.output_event = self.define_event("output", ["data"])
        self.set_config(
            function=None,
            expression=None,
            field_map=None,
            keep_unmapped=False,
            apply_to_elements=False,
        )

    @classmethod
    def register_function(cls, name: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Make ``fn`` usable as ``function=name`` by every Mapper (returns ``fn``).

        Only the name is saved with a flow; register the function again in the process
        that loads it.
        """
        if not isinstance(name, str) or not name or not callable(fn):
            raise TypeError("Mapper.register_function needs a non-empty name and a callable")
        with cls._functions_lock:
            Mapper._functions[name] = fn
        return fn

    def _check_config_value(self, key: str, value: Any) -> None:
        if key == "expression":
            self._require_expression(key, value)
        elif key == "field_map" and value is not None:
            for out_key, source in value.items():
                if not isinstance(out_key, str) or not isinstance(source, str):
                    raise self._config_error(key, "must map output keys (str) to source paths")

    def _handle_input(self, **kwargs: Any) -> None:
        item, extras = self._split_input(kwargs)
        if self.get_config("apply_to_elements", False) and isinstance(item, list):
            mapped: Any = [self.map_item(element) for element in item]
        else:
            mapped = self.map_item(item)
        self.emit("output", **{**extras, "data": mapped})

    def map_item(self, item: Any) -> Any:
        """The configured transform applied to one item."""
        function = self.get_config("function")
        if isinstance(function, str):
            fn = Mapper._functions.get(function)
            if fn is None:
                raise LookupError(
                    f"{self!r}: no function registered as {function!r} "
                    f"(use Mapper.register_function)"
                )
            item = fn(item)
        elif function is not None:
            try:
                item = function(item)
            except ExpressionError as exc:  # a restored lambda (SafeLambda) over budget
                raise self._expression_failure(exc, "config 'function'") from None
        expression = self.get_config("expression")
        if expression is not None:
            item = self._evaluate("expression", expression, item)
        field_map = self.get_config("field_map")
        if field_map is not None:
            item = self._apply_field_map(item, field_map)
        return item

    def _apply_field_map(self, item: Any, field_map: dict[str, str]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if self.get_config("keep_unmapped", False) and isinstance(item, dict):
            sources = set(field_map.values())
            result.update({k: v for k, v in item.items() if k not in sources})
        for out_key, source in field_map.items():
            value = _lookup_path(item, source)
            result[out_key] = None if value is _MISSING else value
        return result


def _lookup_path(item: Any, path: str) -> Any:
    """``item[path]``, or a walk along ``a.b.0``; _MISSING when it is not there."""
    if isinstance(item, dict) and path in item:
        return item[path]
    current = item
    for part in path.split("."):
        if isinstance(current, dict):
            if part not in current:
                return _MISSING
            current = current[part]
        elif isinstance(current, (list, tuple)):
            try:
                current = current[int(part)]
            except (ValueError, IndexError):
                return _MISSING
        else:
            return _MISSING
    return current

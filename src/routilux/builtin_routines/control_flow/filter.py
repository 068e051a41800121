"""Filter: passes items on when a predicate holds and sends the others to ``rejected``."""

from __future__ import annotations

from typing import Any

from routilux.serialization import register_serializable

from .._base import CALLABLE, BuiltinRoutine
from .._expressions import ExpressionError, call_condition


@register_serializable
class Filter(BuiltinRoutine):
    """Emit the item on ``output`` when ``condition`` holds, else on ``rejected``.

    ``condition`` is a safe expression over ``data``/``config`` (``"data['age'] >= 18"``),
    a callable (called like a ConditionalRouter condition), a dict of expected values
    (``{"status": "ok"}``), or None (the item's own truth value). Both events carry
    ``data`` plus the keys that came with the item. A condition that raises, string or
    callable, is an error of this routine, handled by its error strategy.
    """

    config_schema = {
        "condition": (str, dict, CALLABLE, type(None)),
    }

    def __init__(self) -> None:
        super().__init__()
        self.input_slot = self._define_input(self._handle_input)
        self.output_event = self.define_event("output", ["data"])
        self.rejected_event = self.define_event("rejected", ["data"])
        self.set_config(condition=None)

    def _check_config_value(self, key: str, value: Any) -> None:
        if key == "condition":
            self._require_expression(key, value)

    def _handle_input(self, **kwargs: Any) -> None:
        item, extras = self._split_input(kwargs)
        event = "output" if self.accepts(item) else "rejected"
        self.emit(event, **{**extras, "data": item})

    def accepts(self, item: Any) -> bool:
        """Whether ``item`` passes the filter."""
        condition = self.get_config("condition")
        if condition is None:
            return bool(item)
        if isinstance(condition, str):
            return bool(self._evaluate("condition", condition, item))
        try:
            return self._matches(condition, item)
        except ExpressionError as exc:  # a restored lambda (SafeLambda) over budget
            raise self._expression_failure(exc, "config 'condition'") from None

    def _matches(self, condition: Any, item: Any) -> bool:
        if isinstance(condition, dict):
            if not isinstance(item, dict):
                return False
            for key, expected in condition.items():
                if key not in item:
                    return False
                if callable(expected):
                    if not expected(item[key]):
                        return False
                elif item[key] != expected:
                    return False
            return True
        return bool(call_condition(condition, item, self.config()))

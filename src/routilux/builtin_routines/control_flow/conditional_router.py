"""ConditionalRouter: sends each input to the event of the first (or every) route
whose condition holds."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Union

from routilux.exceptions import ExpressionBudgetError, SerializationError
from routilux.serialization import register_serializable

from .._base import BuiltinRoutine, check_plain_data
from .._expressions import (
    ExpressionError,
    call_condition,
    compile_expression,
    decode_config_value,
    encode_config_value,
    evaluate,
)

logger = logging.getLogger("routilux.builtin_routines.conditional_router")

Condition = Union[str, dict, Callable[..., Any]]


@register_serializable
class ConditionalRouter(BuiltinRoutine):
    """Route the input by conditions.

    Config ``routes`` is a list of ``(route_name, condition)``; a condition is a safe
    expression string over ``data``/``config``/``stats`` (one that raises counts as
    False), a callable (one that raises is an error of this routine), or a dict of
    expected values. Each matching route emits ``data`` and ``route`` on the event of
    the same name; with no match, ``default_route`` or else ``output`` with
    ``route="unmatched"``. ``route_priority`` is ``first_match`` or ``all_matches``.

    Keys other than these three may be set too, for conditions to read
    (``set_config(threshold=10)`` and ``"data['v'] > config['threshold']"``). Their
    values must be plain JSON data (None, bool, int, finite float, str, and lists,
    tuples and str-keyed dicts of those), so the router can always be saved.

    A string condition that raises counts as False, except when it goes over the
    expression budget: that is an error of this routine (ExpressionBudgetError).
    """

    config_schema = {
        "routes": list,
        "default_route": (str, type(None)),
        "route_priority": str,
    }

    def __init__(self) -> None:
        super().__init__()
        self._events_lock = threading.Lock()
        self.input_slot = self._define_input(self._handle_input)
        self.default_output = self.define_event("output", ["data", "route"])
        self.set_config(routes=[], default_route=None, route_priority="first_match")

    # -- configuration -------------------------------------------------------------

    def _validate_config_item(self, key: str, value: Any) -> None:
        if key in (type(self).config_schema or {}):
            super()._validate_config_item(key, value)
            return
        if not isinstance(key, str) or not key:
            raise self._config_error(str(key), "is not a valid config key (a non-empty str)")
        problem = check_plain_data(value)
        if problem is not None:
            raise self._config_error(
                key,
                f"must be plain JSON data for conditions to read ({problem}); "
                f"known keys: {', '.join(sorted(type(self).config_schema or {}))}",
            )

    def _check_config_value(self, key: str, value: Any) -> None:
        if key == "route_priority":
            self._require_choice(key, value, ("first_match", "all_matches"))
        elif key == "routes":
            for index, route in enumerate(value):
                self._check_route(index, route)

    def _check_route(self, index: int, route: Any) -> None:
        if not isinstance(route, (tuple, list)) or len(route) != 2:
            raise self._config_error(
                "routes", f"entry {index} must be a (route_name, condition) pair, got {route!r}"
            )
        name, condition = route
        if not isinstance(name, str) or not name:
            raise self._config_error("routes", f"entry {index} has a route name {name!r}")
        if isinstance(condition, str):
            try:
                compile_expression(condition)
            except ExpressionError as exc:
                raise type(exc)(
                    f"{self!r}: config key 'routes': condition of route '{name}' is not a "
                    f"valid expression: {exc}"
                ) from None
        elif not isinstance(condition, dict) and not callable(condition):
            raise self._config_error(
                "routes",
                f"condition of route '{name}' must be an expression, a dict or a callable",
            )

    def set_config(self, **kwargs: Any) -> None:
        """Update the configuration; route events are created for new route names."""
        if "routes" in kwargs and isinstance(kwargs["routes"], tuple):
            kwargs["routes"] = list(kwargs["routes"])
        schema = type(self).config_schema or {}
        extras = {k: v for k, v in kwargs.items() if k not in schema}
        for key, value in extras.items():
            self._validate_config_item(key, value)
        super().set_config(**{k: v for k, v in kwargs.items() if k in schema})
        self._config.update(extras)  # Routine.set_config knows only the schema's keys
        self._ensure_route_events()

    def add_route(self, route_name: str, condition: Condition) -> None:
        """Append a route and create its event."""
        routes = list(self.get_config("routes") or [])
        routes.append((route_name, condition))
        self.set_config(routes=routes)

    def _ensure_route_events(self) -> None:
        names = [r[0] for r in self.get_config("routes") or [] if isinstance(r[0], str)]
        default = self.get_config("default_route")
        if isinstance(default, str):
            names.append(default)
        for name in names:
            self._ensure_event(name)

    def _ensure_event(self, name: str) -> None:
        if self.get_event(name) is None:
            with self._events_lock:
                if self.get_event(name) is None:
                    self.define_event(name, ["data", "route"])

    def _config_to_data(self) -> dict[str, Any]:
        routes = self.get_config("routes") or []
        data = {k: v for k, v in self.config().items() if k != "routes"}
        encoded = {k: encode_config_value(v, f"{self!r} config '{k}'") for k, v in data.items()}
        saved_routes = []
        for name, condition in routes:
            saved = encode_config_value(condition, f"Condition for route '{name}'")
            saved_routes.append([name, saved])
        encoded["routes"] = saved_routes
        return encoded

    def _config_from_data(self, data: dict[str, Any]) -> None:
        data = dict(data)
        routes = []
        for index, entry in enumerate(data.pop("routes", None) or []):
            if not isinstance(entry, (list, tuple)) or len(entry) != 2:
                raise SerializationError(f"{self!r}: saved route {index} is malformed: {entry!r}")
            name, saved = entry
            condition = decode_config_value(saved, f"Condition for route '{name}'")
            routes.append((name, condition))
        super()._config_from_data(data)
        self._validate_config_item("routes", routes)
        self._config["routes"] = routes
        self._ensure_route_events()

    # -- routing ---------------------------------------------------------------------

    def _handle_input(self, data: Any = None, **kwargs: Any) -> None:
        value = self._extract_input_data(data, **kwargs)
        matched = self.match(value)
        if matched:
            for name in matched:
                self._ensure_event(name)
                self.emit(name, data=value, route=name)
            return
        default = self.get_config("default_route")
        if isinstance(default, str):
            self._ensure_event(default)
            self.emit(default, data=value, route=default)
        else:
            self.emit("output", data=value, route="unmatched")

    def match(self, value: Any) -> list[str]:
        """Names of the routes ``value`` takes (at most one under ``first_match``)."""
        all_matches = self.get_config("route_priority") == "all_matches"
        matched: list[str] = []
        for name, condition in list(self.get_config("routes") or []):
            if self.evaluate_condition(condition, value, name):
                matched.append(name)
                if not all_matches:
                    break
        return matched

    def evaluate_condition(self, condition: Condition, value: Any, route: str = "?") -> bool:
        """Whether ``condition`` holds for ``value``."""
        try:
            return self._holds(condition, value, route)
        except ExpressionError as exc:
            raise self._expression_failure(exc, f"condition of route '{route}'") from None

    def _holds(self, condition: Condition, value: Any, route: str) -> bool:
        config = self.config()
        if isinstance(condition, str):
            try:
                return bool(evaluate(condition, value, config, {}))
            except ExpressionBudgetError:
                raise  # over budget is never "False": the router fails
            except Exception as exc:  # noqa: BLE001 - spec 80: a failing string is False
                logger.debug("%r: condition of route %r raised %r", self, route, exc)
                return False
        if isinstance(condition, dict):
            if not isinstance(value, dict):
                return False
            for key, expected in condition.items():
                if key not in value:
                    return False
                if callable(expected):
                    if not expected(value[key]):
                        return False
                elif value[key] != expected:
                    return False
            return True
        return bool(call_condition(condition, value, config))

"""DataTransformer: applies a chain of named or callable transformations to a value."""

from __future__ import annotations

from typing import Any, Callable

from routilux.exceptions import ExpressionBudgetError
from routilux.serialization import register_serializable

from .._base import BuiltinRoutine


def _lowercase(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _uppercase(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _strip_whitespace(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _to_string(value: Any) -> Any:
    return str(value)


def _to_int(value: Any) -> Any:
    return int(value) if isinstance(value, (int, float, str)) else value


def _to_float(value: Any) -> Any:
    return float(value) if isinstance(value, (int, float, str)) else value


def _remove_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    return value


# Kept outside the config so the config stays plain data (spec 90 D13).
BUILTIN_TRANSFORMATIONS: dict[str, Callable[[Any], Any]] = {
    "lowercase": _lowercase,
    "uppercase": _uppercase,
    "strip_whitespace": _strip_whitespace,
    "to_string": _to_string,
    "to_int": _to_int,
    "to_float": _to_float,
    "remove_none": _remove_none,
}


@register_serializable
class DataTransformer(BuiltinRoutine):
    """Apply ``transformations`` (names or callables) in order.

    Slot ``input``; event ``output`` with ``transformed_data``,
    ``transformation_applied`` (names of the steps that ran) and ``errors`` (None when
    there were none). A ``transformations`` key in the delivery overrides the config.
    """

    config_schema = {
        "transformations": list,
        "transformation_map": dict,
        "chain_transformations": bool,
    }

    def __init__(self) -> None:
        super().__init__()
        self.input_slot = self._define_input(self._handle_input)
        self.output_event = self.define_event(
            "output", ["transformed_data", "transformation_applied", "errors"]
        )
        self.set_config(transformations=[], transformation_map={}, chain_transformations=True)

    def _check_config_value(self, key: str, value: Any) -> None:
        if key == "transformations":
            for step in value:
                if not isinstance(step, str) and not callable(step):
                    raise self._config_error(key, f"holds {step!r}: steps are names or callables")
        elif key == "transformation_map":
            for name, fn in value.items():
                if not isinstance(name, str) or not callable(fn):
                    raise self._config_error(key, "must map names (str) to callables")

    def register_transformation(self, name: str, fn: Callable[[Any], Any]) -> None:
        """Make ``fn`` available under ``name`` (kept in ``transformation_map``)."""
        if not callable(fn):
            raise self._config_error("transformation_map", f"entry '{name}' must be callable")
        mapping = dict(self.get_config("transformation_map") or {})
        mapping[name] = fn
        self.set_config(transformation_map=mapping)

    def _handle_input(self, data: Any = None, transformations: Any = None, **kwargs: Any) -> None:
        value = self._extract_input_data(data, **kwargs)
        steps = (
            transformations
            if transformations is not None
            else self.get_config("transformations", [])
        )
        result, applied, errors = self.transform(value, list(steps or []))
        self.emit(
            "output",
            transformed_data=result,
            transformation_applied=applied,
            errors=errors or None,
        )

    def transform(self, value: Any, steps: list[Any]) -> tuple[Any, list[str], list[str]]:
        """``(result, names applied, errors)`` of running ``steps`` on ``value``."""
        user_map = self.get_config("transformation_map") or {}
        applied: list[str] = []
        errors: list[str] = []
        for step in steps:
            if isinstance(step, str):
                fn = user_map.get(step) or BUILTIN_TRANSFORMATIONS.get(step)
                if fn is None:
                    errors.append(f"Unknown transformation: {step}")
                    continue
                name = step
            elif callable(step):
                fn = step
                name = getattr(step, "__name__", None) or "custom"
            else:
                errors.append(f"Invalid transformation: {step}")
                continue
            try:
                value = fn(value)
            except ExpressionBudgetError as exc:  # a restored lambda over budget: fail
                raise self._expression_failure(exc, f"transformation '{name}'") from None
            except Exception as exc:  # noqa: BLE001 - reported in `errors`
                errors.append(f"Error applying {name}: {exc}")
                continue
            applied.append(name)
        return value, applied, errors

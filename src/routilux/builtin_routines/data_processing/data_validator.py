"""DataValidator: checks a value against per-field rules; emits ``valid`` or ``invalid``."""

from __future__ import annotations

from typing import Any, Callable, Optional

from routilux.exceptions import ExpressionBudgetError
from routilux.serialization import register_serializable

from .._base import BuiltinRoutine


def _not_empty(value: Any) -> bool:
    if value is None:
        return False
    try:
        return len(value) > 0
    except TypeError:
        return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


BUILTIN_VALIDATORS: dict[str, Callable[[Any], bool]] = {
    "not_empty": _not_empty,
    "is_string": lambda v: isinstance(v, str),
    "is_int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "is_float": lambda v: isinstance(v, float),
    "is_number": _is_number,
    "is_dict": lambda v: isinstance(v, dict),
    "is_list": lambda v: isinstance(v, list),
    "is_positive": lambda v: _is_number(v) and v > 0,
    "is_non_negative": lambda v: _is_number(v) and v >= 0,
}


@register_serializable
class DataValidator(BuiltinRoutine):
    """Validate the input with ``rules`` (field -> validator name or callable).

    Slot ``input``; events ``valid`` (``validated_data``) and ``invalid`` (``errors``,
    ``data``). Dicts are checked field by field, lists with the rule ``items``, other
    values with the rule ``value``. Validators added with :meth:`register_validator`
    live in the ``custom_validators`` config key.
    """

    config_schema = {
        "rules": dict,
        "strict_mode": bool,
        "required_fields": list,
        "allow_extra_fields": bool,
        "custom_validators": dict,
    }

    def __init__(self) -> None:
        super().__init__()
        self.input_slot = self._define_input(self._handle_input)
        self.valid_event = self.define_event("valid", ["validated_data"])
        self.invalid_event = self.define_event("invalid", ["errors", "data"])
        self.set_config(
            rules={},
            strict_mode=False,
            required_fields=[],
            allow_extra_fields=True,
            custom_validators={},
        )

    def _check_config_value(self, key: str, value: Any) -> None:
        if key == "rules":
            for field, rule in value.items():
                if not isinstance(rule, str) and not callable(rule):
                    raise self._config_error(
                        key, f"rule for '{field}' must be a validator name or a callable"
                    )
        elif key == "required_fields":
            if not all(isinstance(f, str) for f in value):
                raise self._config_error(key, "must be a list of field names (str)")
        elif key == "custom_validators":
            for name, fn in value.items():
                if not isinstance(name, str) or not callable(fn):
                    raise self._config_error(key, "must map names (str) to callables")

    def register_validator(self, name: str, fn: Callable[[Any], Any]) -> None:
        """Make ``fn`` available as the rule ``name``."""
        if not callable(fn):
            raise self._config_error("custom_validators", f"entry '{name}' must be callable")
        validators = dict(self.get_config("custom_validators") or {})
        validators[name] = fn
        self.set_config(custom_validators=validators)

    def _handle_input(self, data: Any = None, rules: Any = None, **kwargs: Any) -> None:
        value = self._extract_input_data(data, **kwargs)
        errors = self.validate(value, rules if isinstance(rules, dict) else None)
        if errors:
            self.emit("invalid", errors=errors, data=value)
        else:
            self.emit("valid", validated_data=value)

    def validate(self, value: Any, rules: Optional[dict[str, Any]] = None) -> list[str]:
        """The error messages for ``value`` (empty when it is valid)."""
        rules = rules if rules is not None else dict(self.get_config("rules") or {})
        strict = bool(self.get_config("strict_mode", False))
        errors: list[str] = []

        def add(message: Optional[str]) -> bool:
            """Record ``message``; True when validation must stop now."""
            if message is None:
                return False
            errors.append(message)
            return strict

        if isinstance(value, dict):
            required = list(self.get_config("required_fields") or [])
            for field in required:
                if field not in value and add(f"Required field '{field}' is missing"):
                    return errors
            allow_extra = bool(self.get_config("allow_extra_fields", True))
            for field, item in value.items():
                if field in rules:
                    if add(self._check(str(field), item, rules[field])):
                        return errors
                elif not allow_extra and field not in required:
                    if add(f"Unexpected field '{field}'"):
                        return errors
        elif isinstance(value, (list, tuple)):
            if "items" in rules:
                for index, item in enumerate(value):
                    if add(self._check(f"items[{index}]", item, rules["items"])):
                        return errors
        elif "value" in rules:
            add(self._check("value", value, rules["value"]))
        return errors

    def _check(self, field: str, value: Any, rule: Any) -> Optional[str]:
        if isinstance(rule, str):
            custom = self.get_config("custom_validators") or {}
            fn = custom.get(rule) or BUILTIN_VALIDATORS.get(rule)
            if fn is None:
                return f"Unknown validator: {rule}"
        elif callable(rule):
            fn = rule
        else:
            return f"Unknown validator: {rule}"
        try:
            result = fn(value)
        except ExpressionBudgetError as exc:  # a restored lambda over budget: fail
            raise self._expression_failure(exc, f"validator for field '{field}'") from None
        except Exception as exc:  # noqa: BLE001 - reported as a validation error
            return f"Validation error for field '{field}': {exc}"
        if isinstance(result, tuple) and len(result) == 2:
            ok, message = result
            if ok:
                return None
            return str(message) if message else f"Field '{field}' failed validation"
        return None if result else f"Field '{field}' failed validation"

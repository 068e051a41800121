"""The safe expression language and the configuration callable codec."""

from __future__ import annotations

import json

import pytest

from routilux.builtin_routines._expressions import (
    ExpressionError,
    SafeLambda,
    call_condition,
    compile_expression,
    decode_config_value,
    encode_config_value,
    evaluate,
    expression_from_callable,
)
from routilux.exceptions import SerializationError
from routilux.serialization import register_function


@register_function  # saved by reference: it must be registered (issue 9)
def module_level_condition(data):
    return data > 10


class TestEvaluate:
    @pytest.mark.parametrize(
        ("expression", "data", "expected"),
        [
            ("data > 3", 5, True),
            ("data['a'] + 1", {"a": 1}, 2),
            ("data.get('missing', 7)", {}, 7),
            ("'x' in data and not 'y' in data", {"x": 1}, True),
            ("isinstance(data, dict) and len(data) == 2", {"a": 1, "b": 2}, True),
            ("data[1:3]", [1, 2, 3, 4], [2, 3]),
            ("data['n'] * 2 if data['n'] > 0 else -1", {"n": 4}, 8),
            ("1 < data < 5", 3, True),
            ("data is None", None, True),
            ("str(data).startswith('ab')", "abc", True),
            ("{'k': data, 'l': [data, (1, 2)]}", 3, {"k": 3, "l": [3, (1, 2)]}),
            ("getattr(data, 'real')", 5, 5),
            ("hasattr(data, 'keys')", {}, True),
            ("data ** 2 % 7 // 1 - -1", 3, 3),
            ("data or 'empty'", "", "empty"),
        ],
    )
    def test_allowed_expressions(self, expression, data, expected):
        assert evaluate(expression, data) == expected

    def test_config_and_stats_names(self):
        assert evaluate("data > config['threshold']", 5, {"threshold": 3}) is True
        assert evaluate("stats == {}", None) is True

    @pytest.mark.parametrize(
        "expression",
        [
            "__import__('os')",
            "open('/etc/passwd')",
            "data.__class__",
            "getattr(data, '__class__')",
            "(lambda: 1)()",
            "[x for x in data]",
            "eval('1')",
            "data.pop('a')",
            "os.system('true')",
            "f(*data)",
            "dict(**data)",
            "x := 1",
            "data.get.__self__",
            "type(data)",
        ],
    )
    def test_forbidden_expressions(self, expression):
        with pytest.raises(ExpressionError):
            evaluate(expression, {"a": 1})

    def test_methods_only_on_builtin_receivers(self):
        class Sneaky:
            def get(self, key):  # pragma: no cover - must never be called
                raise AssertionError("called a user method")

        with pytest.raises(ExpressionError):
            evaluate("data.get('a')", Sneaky())

    def test_work_is_bounded(self):
        with pytest.raises(ExpressionError):
            evaluate("10 ** 10 ** 10")
        with pytest.raises(ExpressionError):
            evaluate("'a' * 10 ** 9")
        with pytest.raises(ExpressionError):
            compile_expression("1 + " * 3000 + "1")

    def test_runtime_errors_are_ordinary_exceptions(self):
        with pytest.raises(KeyError):
            evaluate("data['missing']", {})

    def test_syntax_error_is_expression_error(self):
        with pytest.raises(ExpressionError):
            compile_expression("data >")


class TestSafeLambda:
    def test_call_and_equality(self):
        fn = SafeLambda("data * 2")
        assert fn(4) == 8
        assert fn == SafeLambda("data * 2")
        assert hash(fn) == hash(SafeLambda("data * 2"))

    def test_rejects_unsafe_expression(self):
        with pytest.raises(ExpressionError):
            SafeLambda("__import__('os')")


class TestCallCondition:
    def test_one_parameter(self):
        assert call_condition(lambda d: d == 1, 1, {}) is True

    def test_two_parameters_positional(self):
        assert call_condition(lambda d, c: c["k"] == d, 2, {"k": 2}) is True

    def test_two_parameters_by_name(self):
        assert call_condition(lambda data, stats: stats == {} and data, 1, {}) == 1

    def test_three_parameters_by_name(self):
        assert call_condition(lambda data, config, stats: config["x"], 0, {"x": 5}) == 5

    def test_unbindable_falls_back_to_data(self):
        assert call_condition(lambda a, b=1, *, c=2: a, 9, {}) == 9

    def test_exception_propagates(self):
        def broken(data):
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            call_condition(broken, 1, {})


class TestExpressionFromCallable:
    def test_lambda_parameter_becomes_data(self):
        assert expression_from_callable(lambda x: x["p"] > 5) == "data['p'] > 5"

    def test_two_lambdas_on_one_line(self):
        pair = (lambda a: a > 1, lambda b: b < 0)
        assert expression_from_callable(pair[0]) == "data > 1"
        assert expression_from_callable(pair[1]) == "data < 0"

    def test_def_returning_an_expression(self):
        def check(item):
            """Docstrings are fine."""
            return item.get("ok") is True

        assert expression_from_callable(check) == "data.get('ok') is True"

    def test_two_parameters_become_data_and_config(self):
        assert expression_from_callable(lambda v, cfg: v > cfg["t"]) == "data > config['t']"

    def test_closures_are_refused(self):
        limit = 3
        with pytest.raises(ExpressionError):
            expression_from_callable(lambda d: d > limit)

    def test_statements_are_refused(self):
        def two_steps(data):
            x = data + 1
            return x

        with pytest.raises(ExpressionError):
            expression_from_callable(two_steps)

    def test_unsafe_body_is_refused(self):
        with pytest.raises(ExpressionError):
            expression_from_callable(lambda d: d.__class__)


class TestConfigCodec:
    def roundtrip(self, value):
        encoded = encode_config_value(value, "test")
        return decode_config_value(json.loads(json.dumps(encoded)), "test")

    def test_plain_values_unchanged(self):
        value = {"a": [1, "x", None, {"b": False}], "t": 'é\n"q"'}
        assert self.roundtrip(value) == value

    def test_module_function_by_reference(self):
        encoded = encode_config_value(module_level_condition, "test")
        assert encoded["_type"] == "callable"
        assert self.roundtrip(module_level_condition) is module_level_condition

    def test_registered_lambda_by_reference(self):
        fn = register_function(lambda d: d, name="tests.builtin.identity")
        assert self.roundtrip(fn) is fn

    def test_lambda_as_expression(self):
        restored = self.roundtrip([lambda item: item * 3])[0]
        assert isinstance(restored, SafeLambda)
        assert restored(2) == 6
        assert self.roundtrip(restored) == restored

    def test_builtin_type(self):
        assert self.roundtrip(str) is str

    def test_unserializable_callable(self):
        limit = 3
        with pytest.raises(SerializationError, match="where"):
            encode_config_value(lambda d: d > limit, "where")

    def test_bad_saved_expression(self):
        with pytest.raises(SerializationError, match="route"):
            decode_config_value(
                {"_type": "lambda_expression", "expression": "__import__('os')"}, "route"
            )

    def test_legacy_parameter_names(self):
        for name in ("x", "item", "value", "obj"):
            fn = decode_config_value(
                {"_type": "lambda_expression", "expression": f"{name} > 1"}, "w"
            )
            assert fn(2) is True

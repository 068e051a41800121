"""TimeProvider, DataFlattener, DataTransformer, DataValidator and Mapper, standalone."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from routilux.builtin_routines.data_processing import DataTransformer, DataValidator, Mapper
from routilux.builtin_routines.utils import DataFlattener, TimeProvider


class TestTimeProvider:
    def test_slot_is_request(self):
        provider = TimeProvider()
        assert provider.trigger_slot is provider.get_slot("request")
        # The trigger slot (so a TimeProvider can be a flow's entry) shares the handler.
        assert provider.get_slot("trigger").handler == provider.trigger_slot.handler

    def test_iso_default(self, capture):
        provider = TimeProvider()
        out = capture(provider)
        provider.trigger_slot.receive({})
        result = out.last()
        assert set(result) == {"time_string", "timestamp", "datetime", "formatted"}
        datetime.fromisoformat(result["time_string"])
        assert isinstance(result["timestamp"], float)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", result["formatted"])

    def test_format_override(self, capture):
        provider = TimeProvider()
        out = capture(provider)
        provider.trigger_slot.receive({"format": "timestamp"})
        float(out.last()["time_string"])
        provider.trigger_slot.receive({"data": {"format": "custom"}})
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", out.last()["time_string"])
        provider.trigger_slot.receive({"format": "unknown"})
        datetime.fromisoformat(out.last()["time_string"])

    def test_formatted_variants(self):
        provider = TimeProvider()
        now = datetime(2024, 1, 7, 9, 5, 3)  # a Sunday
        assert provider.format_time(now, "formatted") == "2024年01月07日，星期日，09:05:03"
        provider.set_config(locale="en_US")
        assert provider.format_time(now, "formatted") == "Sunday, January 07, 2024 09:05:03"
        provider.set_config(include_weekday=False)
        assert provider.format_time(now, "formatted") == "2024-01-07 09:05:03"


class TestDataFlattener:
    def test_spec_example(self, capture):
        flattener = DataFlattener()
        out = capture(flattener)
        flattener.input_slot.receive({"data": {"a": {"b": 1, "c": [2, 3]}}})
        assert out.last() == {
            "flattened_data": {"a.b": 1, "a.c.0": 2, "a.c.1": 3},
            "original_type": "dict",
            "depth": 3,
        }

    def test_scalar(self, capture):
        flattener = DataFlattener()
        out = capture(flattener)
        flattener.input_slot.receive({"data": 5})
        assert out.last() == {"flattened_data": {"value": 5}, "original_type": "int", "depth": 0}

    def test_separator_and_lists_not_preserved(self):
        flattener = DataFlattener()
        flattener.set_config(separator="/", preserve_lists=False)
        flat, _ = flattener.flatten({"a": [1, 2, 3], "b": {"c": None}})
        assert flat == {"a": 3, "b/c": None}

    def test_max_depth_stringifies(self):
        flattener = DataFlattener()
        flattener.set_config(max_depth=1)
        flat, depth = flattener.flatten({"a": {"b": 1}, "c": 2})
        assert flat == {"a": "{'b': 1}", "c": 2}
        assert depth == 1

    def test_cycle(self):
        data: dict = {"a": 1}
        data["me"] = data
        flat, _ = DataFlattener().flatten(data)
        assert flat == {"a": 1, "me": "[Circular Reference]"}

    def test_serializable_objects(self):
        class Obj:
            def serialize(self):
                return {"x": 1}

        flat, _ = DataFlattener().flatten({"o": Obj()})
        assert flat == {"o.x": 1}

    def test_empty_containers_kept(self):
        flat, _ = DataFlattener().flatten({"a": {}, "b": []})
        assert flat == {"a": {}, "b": []}


class TestDataTransformer:
    def test_spec_example(self, capture):
        transformer = DataTransformer()
        transformer.set_config(transformations=["strip_whitespace", "uppercase", "nope"])
        out = capture(transformer)
        transformer.input_slot.receive({"data": "  hi "})
        assert out.last() == {
            "transformed_data": "HI",
            "transformation_applied": ["strip_whitespace", "uppercase"],
            "errors": ["Unknown transformation: nope"],
        }

    def test_no_errors_is_none(self, capture):
        transformer = DataTransformer()
        out = capture(transformer)
        transformer.input_slot.receive({"data": "x", "transformations": ["uppercase"]})
        assert out.last()["errors"] is None
        assert out.last()["transformed_data"] == "X"

    def test_builtins(self):
        transformer = DataTransformer()
        assert transformer.transform(" A ", ["lowercase", "strip_whitespace"])[0] == "a"
        assert transformer.transform(3, ["to_string"])[0] == "3"
        assert transformer.transform("4", ["to_int"])[0] == 4
        assert transformer.transform("4.5", ["to_float"])[0] == 4.5
        assert transformer.transform([1], ["to_int", "uppercase"])[0] == [1]
        assert transformer.transform({"a": None, "b": 1}, ["remove_none"])[0] == {"b": 1}

    def test_callables_errors_and_registration(self):
        transformer = DataTransformer()

        def double(value):
            return value * 2

        transformer.register_transformation("inc", lambda v: v + 1)
        result, applied, errors = transformer.transform(
            2, [double, "inc", 42, "to_int", lambda v: v / 0]
        )
        assert result == 5
        assert applied == ["double", "inc", "to_int"]
        assert errors == ["Invalid transformation: 42", "Error applying <lambda>: division by zero"]

    def test_error_keeps_previous_value(self):
        result, applied, errors = DataTransformer().transform("abc", ["to_int", "uppercase"])
        assert result == "ABC"
        assert applied == ["uppercase"]
        assert errors[0].startswith("Error applying to_int:")


class TestDataValidator:
    def make(self, **config):
        validator = DataValidator()
        validator.set_config(**config)
        return validator

    def test_valid_and_invalid_events(self, capture):
        validator = self.make(
            rules={"name": "is_string", "age": "is_positive"}, required_fields=["name"]
        )
        valid, invalid = capture(validator, "valid"), capture(validator, "invalid")
        validator.input_slot.receive({"data": {"name": "A", "age": 3}})
        assert valid.last() == {"validated_data": {"name": "A", "age": 3}}
        validator.input_slot.receive({"data": {"age": -1}})
        assert invalid.last() == {
            "errors": ["Required field 'name' is missing", "Field 'age' failed validation"],
            "data": {"age": -1},
        }
        assert validator.get_event("output") is None

    def test_strict_mode_stops_at_first_error(self):
        validator = self.make(rules={"a": "is_int"}, required_fields=["x", "y"], strict_mode=True)
        assert validator.validate({"a": "no"}) == ["Required field 'x' is missing"]

    def test_extra_fields(self):
        validator = self.make(
            rules={"a": "is_int"}, allow_extra_fields=False, required_fields=["r"]
        )
        assert validator.validate({"a": 1, "r": 0, "z": 2}) == ["Unexpected field 'z'"]

    def test_lists_and_scalars(self):
        validator = self.make(rules={"items": "is_number", "value": "not_empty"})
        assert validator.validate([1, "x", 2.5]) == ["Field 'items[1]' failed validation"]
        assert validator.validate("") == ["Field 'value' failed validation"]
        assert validator.validate(True) == []

    def test_callable_results_and_errors(self):
        validator = self.make(
            rules={
                "a": lambda v: (v > 0, "a must be positive"),
                "b": lambda v: v["missing"],
                "c": "no_such_rule",
                "d": lambda v: "truthy",
            }
        )
        assert validator.validate({"a": 0, "b": {}, "c": 1, "d": 1}) == [
            "a must be positive",
            "Validation error for field 'b': 'missing'",
            "Unknown validator: no_such_rule",
        ]

    def test_builtin_validators(self):
        validator = self.make(
            rules={
                "i": "is_int",
                "f": "is_float",
                "d": "is_dict",
                "l": "is_list",
                "n": "is_non_negative",
                "s": "is_string",
            }
        )
        good = {"i": 1, "f": 1.5, "d": {}, "l": [], "n": 0, "s": ""}
        assert validator.validate(good) == []
        bad = {"i": True, "f": 1, "d": [], "l": (), "n": -1, "s": 1}
        assert len(validator.validate(bad)) == 6

    def test_rules_argument_overrides(self):
        validator = self.make(rules={"a": "is_int"})
        errors = validator.validate({"a": "x"}, rules={"a": "is_string"})
        assert errors == []

    def test_register_validator(self):
        validator = DataValidator()
        validator.register_validator("even", lambda v: v % 2 == 0)
        validator.set_config(rules={"value": "even"})
        assert validator.validate(3) == ["Field 'value' failed validation"]
        assert validator.validate(4) == []


def shout(value):
    return str(value).upper()


class TestMapper:
    def test_identity_without_config(self, capture):
        mapper = Mapper()
        out = capture(mapper)
        mapper.input_slot.receive({"data": {"a": 1}, "index": 0, "total": 2})
        assert out.last() == {"data": {"a": 1}, "index": 0, "total": 2}

    def test_callable(self, capture):
        mapper = Mapper()
        mapper.set_config(function=shout)
        out = capture(mapper)
        mapper.input_slot.receive({"data": "abc"})
        assert out.last() == {"data": "ABC"}

    def test_registered_name(self, capture):
        Mapper.register_function("tests.square", lambda v: v * v)
        mapper = Mapper()
        mapper.set_config(function="tests.square")
        out = capture(mapper)
        mapper.input_slot.receive({"data": 7})
        assert out.last()["data"] == 49

    def test_unknown_name_is_an_error(self):
        mapper = Mapper()
        mapper.set_config(function="tests.never_registered")
        with pytest.raises(LookupError, match="never_registered"):
            mapper.map_item(1)

    def test_expression(self):
        mapper = Mapper()
        mapper.set_config(expression="data['price'] * data['qty']")
        assert mapper.map_item({"price": 2, "qty": 3}) == 6

    def test_field_map(self):
        mapper = Mapper()
        mapper.set_config(field_map={"name": "user.name", "first": "tags.0", "gone": "nope"})
        item = {"user": {"name": "ann"}, "tags": ["x", "y"]}
        assert mapper.map_item(item) == {"name": "ann", "first": "x", "gone": None}

    def test_field_map_keep_unmapped(self):
        mapper = Mapper()
        mapper.set_config(field_map={"id": "key"}, keep_unmapped=True)
        assert mapper.map_item({"key": 1, "v": 2}) == {"v": 2, "id": 1}

    def test_apply_to_elements(self):
        mapper = Mapper()
        mapper.set_config(expression="data + 1", apply_to_elements=True)
        out = []
        mapper.get_event("output").connect(
            __import__("routilux").Slot("c", None, lambda **kw: out.append(kw))
        )
        mapper.input_slot.receive({"data": [1, 2]})
        assert out == [{"data": [2, 3]}]

    def test_error_propagates_from_handler(self):
        mapper = Mapper()
        mapper.set_config(expression="data['missing']")
        with pytest.raises(KeyError):
            mapper.input_slot.call_handler({"data": {}}, propagate_exceptions=True)

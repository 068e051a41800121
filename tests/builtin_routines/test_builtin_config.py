"""Configuration of every built-in: defaults, validation errors, registration and a
JSON round trip of the configuration."""

from __future__ import annotations

import json

import pytest

import routilux.builtin_routines as builtins_pkg
from routilux.builtin_routines import (
    Aggregator,
    Batcher,
    ConditionalRouter,
    DataFlattener,
    DataTransformer,
    DataValidator,
    Debouncer,
    Filter,
    Mapper,
    ResultExtractor,
    Splitter,
    TextClipper,
    TextRenderer,
    TimeProvider,
    control_flow,
    data_processing,
    text_processing,
    utils,
)
from routilux.exceptions import ConfigError
from routilux.serialization import lookup_class, register_function

ALL = [
    TextClipper, TextRenderer, ResultExtractor, TimeProvider, DataFlattener, DataTransformer,
    DataValidator, ConditionalRouter, Splitter, Filter, Mapper, Aggregator, Batcher, Debouncer,
]  # fmt: skip


def test_package_exports():
    assert sorted(builtins_pkg.__all__) == sorted(cls.__name__ for cls in ALL)
    assert set(text_processing.__all__) == {"TextClipper", "TextRenderer", "ResultExtractor"}
    assert set(utils.__all__) == {"TimeProvider", "DataFlattener"}
    assert {"DataTransformer", "DataValidator"} <= set(data_processing.__all__)
    assert "ConditionalRouter" in control_flow.__all__
    for name in builtins_pkg.__all__:
        assert getattr(builtins_pkg, name).__name__ == name


@pytest.mark.parametrize("cls", ALL)
def test_registered_and_no_arg_constructor(cls):
    assert lookup_class(cls.__name__) is cls
    routine = cls()
    assert routine.config() == routine.config()


# ConditionalRouter accepts extra keys (plain data) for its conditions to read: see
# test_builtin_router_config.py.
@pytest.mark.parametrize("cls", [c for c in ALL if c is not ConditionalRouter])
def test_unknown_key_names_routine_and_key(cls):
    routine = cls()
    with pytest.raises(ConfigError) as info:
        routine.set_config(no_such_key=1)
    assert repr(routine) in str(info.value)
    assert "no_such_key" in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    ("cls", "key", "value"),
    [
        (TextClipper, "max_length", "10"),
        (TextClipper, "max_length", True),
        (TextClipper, "max_length", -1),
        (TextRenderer, "tag_format", "html"),
        (ResultExtractor, "strategy", "best"),
        (ResultExtractor, "code_block_languages", [1]),
        (TimeProvider, "include_weekday", "yes"),
        (DataFlattener, "max_depth", 1.5),
        (DataTransformer, "transformations", "uppercase"),
        (DataTransformer, "transformations", [3]),
        (DataValidator, "rules", {"a": 5}),
        (DataValidator, "strict_mode", 1),
        (ConditionalRouter, "routes", [("a", 5)]),
        (ConditionalRouter, "default_route", 3),
        (Filter, "condition", 5),
        (Mapper, "expression", "data.__class__"),
        (Mapper, "field_map", {"a": 1}),
        (Aggregator, "expected_count", 0),
        (Aggregator, "timeout", -1),
        (Aggregator, "timeout", False),
        (Batcher, "batch_size", 0),
        (Batcher, "batch_size", 2.0),
        (Batcher, "max_wait", "1"),
        (Debouncer, "wait", None),
    ],
)
def test_wrong_values_rejected(cls, key, value):
    routine = cls()
    before = routine.config()
    with pytest.raises(ConfigError) as info:
        routine.set_config(**{key: value})
    assert repr(routine) in str(info.value) and key in str(info.value)
    assert routine.config() == before


def test_ints_accepted_for_float_settings():
    batcher = Batcher()
    batcher.set_config(max_wait=1)
    Debouncer().set_config(wait=0)
    Aggregator().set_config(timeout=2)


@register_function  # saved by reference: it must be registered (issue 9)
def double(value):
    return value * 2


def configured():
    """One instance of each built-in with a non-default configuration."""
    clipper = TextClipper()
    clipper.set_config(max_length=50, truncation_message="[{remaining}]")
    renderer = TextRenderer()
    renderer.set_config(tag_format="markdown", indent="\t")
    extractor = ResultExtractor()
    extractor.set_config(strategy="all", code_block_languages=["python"])
    extractor.register_extractor("first_word", lambda data, config: (str(data)[:3], "w", {}))
    provider = TimeProvider()
    provider.set_config(format="custom", custom_format="%H")
    flattener = DataFlattener()
    flattener.set_config(separator="__", max_depth=5)
    transformer = DataTransformer()
    transformer.set_config(transformations=["strip_whitespace", double, lambda v: v + "!"])
    transformer.register_transformation("shout", lambda v: v.upper())
    validator = DataValidator()
    validator.set_config(
        rules={"a": "is_int", "b": lambda v: len(v) > 1}, required_fields=["a"], strict_mode=True
    )
    validator.register_validator("short", lambda v: len(v) < 5)
    router = ConditionalRouter()
    router.set_config(
        routes=[("x", "data == 1"), ("y", lambda item: item == 2)],
        default_route="z",
        route_priority="all_matches",
    )
    filt = Filter()
    filt.set_config(condition=lambda d: d != 3)
    mapper = Mapper()
    mapper.set_config(function=double, expression="data + 1", field_map=None)
    agg = Aggregator()
    agg.set_config(expected_count=3, correlation_key="k", timeout=0.5)
    batcher = Batcher()
    batcher.set_config(batch_size=4, max_wait=0.25, flush_on_job_end=False)
    debouncer = Debouncer()
    debouncer.set_config(wait=0.2)
    return [
        clipper,
        renderer,
        extractor,
        provider,
        flattener,
        transformer,
        validator,
        router,
        filt,
        mapper,
        agg,
        batcher,
        debouncer,
        Splitter(),
    ]


def behaviour(routine):
    """A few calls whose results depend on the configuration."""
    if isinstance(routine, TextClipper):
        return routine.clip("a\n" * 40, routine.get_config("max_length"))
    if isinstance(routine, TextRenderer):
        return routine.render({"a": [1]})
    if isinstance(routine, ResultExtractor):
        return routine.extract("```python\nx\n``` tail")["extracted_result"]
    if isinstance(routine, DataTransformer):
        return routine.transform(" ab ", routine.get_config("transformations") + ["shout"])
    if isinstance(routine, DataValidator):
        short = routine.validate("abcdef", {"value": "short"})
        return routine.validate({"a": "x", "b": "y"}), short
    if isinstance(routine, ConditionalRouter):
        return routine.match(1), routine.match(2), routine.match(3)
    if isinstance(routine, Filter):
        return routine.accepts(3), routine.accepts(4)
    if isinstance(routine, Mapper):
        return routine.map_item(5)
    return None


@pytest.mark.parametrize("routine", configured(), ids=lambda r: type(r).__name__)
def test_config_round_trips_through_json(routine):
    saved = json.loads(json.dumps(routine._config_to_data()))
    clone = type(routine)()
    clone._config_from_data(saved)
    assert json.loads(json.dumps(clone._config_to_data())) == saved
    assert behaviour(clone) == behaviour(routine)
    assert set(clone.config()) == set(routine.config())


def test_loading_bad_config_names_routine():
    clone = Batcher()
    with pytest.raises(ConfigError, match="batch_size"):
        clone._config_from_data({"batch_size": "many"})

"""ConditionalRouter accepts extra config keys for its conditions to read; their values
are plain JSON data, so a router always saves and loads."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from helpers import Items
from routilux import Flow
from routilux.builtin_routines import ConditionalRouter
from routilux.exceptions import ConfigError, SerializationError


def routed(job: Any) -> list[tuple[str, Any]]:
    return [(r.event_name, r.data["data"]) for r in job.get_execution_history("router")]


def router_flow(router: ConditionalRouter) -> Flow:
    flow = Flow(flow_id="router-config")
    flow.add_routine(Items(), "source")
    flow.add_routine(router, "router")
    flow.connect("source", "output", "router", "input")
    return flow


class TestExtraKeys:
    def test_conditions_read_extra_keys(self):
        router = ConditionalRouter()
        router.set_config(routes=[("high", "data['v'] > config['threshold']")], threshold=10)
        assert router.get_config("threshold") == 10
        assert router.match({"v": 11}) == ["high"]
        assert router.match({"v": 9}) == []

    def test_extra_keys_can_be_set_later_and_changed(self):
        router = ConditionalRouter()
        router.set_config(routes=[("hit", "data in config['allowed']")])
        router.set_config(allowed=["a", "b"])
        assert router.match("a") == ["hit"]
        router.set_config(allowed=["c"])
        assert router.match("a") == []

    def test_callable_conditions_see_extra_keys_too(self):
        router = ConditionalRouter()
        router.set_config(routes=[("big", lambda data, config: data > config["limit"])], limit=3)
        assert router.match(4) == ["big"]

    @pytest.mark.parametrize(
        "value",
        [None, True, 3, 2.5, "s", [1, "x", None], (1, 2), {"a": {"b": [1.5, {"c": None}]}}],
    )
    def test_plain_data_is_accepted(self, value):
        router = ConditionalRouter()
        router.set_config(extra=value)
        assert router.get_config("extra") == value

    @pytest.mark.parametrize(
        ("value", "why"),
        [
            ({1, 2}, "set"),
            (object(), "object"),
            (lambda d: d, "function"),
            (math.nan, "finite"),
            ([math.inf], "finite"),
            ({1: "int key"}, "key"),
            ({"deep": [b"bytes"]}, "bytes"),
        ],
    )
    def test_other_values_are_refused_naming_the_key(self, value, why):
        router = ConditionalRouter()
        with pytest.raises(ConfigError) as info:
            router.set_config(extra=value)
        message = str(info.value)
        assert "'extra'" in message and why in message, message
        assert router.get_config("extra") is None

    def test_too_deep_a_value_is_refused_without_recursion(self):
        value: Any = 1
        for _ in range(5000):
            value = [value]
        with pytest.raises(ConfigError, match="nested"):
            ConditionalRouter().set_config(deep=value)

    def test_known_keys_are_still_checked(self):
        with pytest.raises(ConfigError, match="route_priority"):
            ConditionalRouter().set_config(route_priority="sometimes")
        with pytest.raises(ConfigError, match="routes"):
            ConditionalRouter().set_config(routes="not a list")

    def test_other_builtins_still_refuse_unknown_keys(self):
        from routilux.builtin_routines import Filter

        with pytest.raises(ConfigError, match="unknown config key 'threshold'"):
            Filter().set_config(threshold=10)


class TestRoundTrip:
    def test_router_with_extra_keys_survives_json_round_trip(self):
        router = ConditionalRouter()
        router.set_config(
            routes=[
                ("high", "data['v'] > config['threshold']"),
                ("tagged", "data.get('tag') in config['tags']"),
            ],
            default_route="low",
            threshold=10,
            tags=["x", "y"],
            meta={"owner": "ops", "weights": [0.5, 1.5]},
        )
        flow = router_flow(router)
        saved = json.loads(json.dumps(flow.serialize()))
        restored = Flow().deserialize(saved)
        again = restored.routines["router"]
        assert again.get_config("threshold") == 10
        assert again.get_config("tags") == ["x", "y"]
        assert again.get_config("meta") == {"owner": "ops", "weights": [0.5, 1.5]}
        items = [{"v": 11}, {"v": 1, "tag": "y"}, {"v": 2}]
        expected = [("high", {"v": 11}), ("tagged", {"v": 1, "tag": "y"}), ("low", {"v": 2})]
        assert routed(flow.execute("source", {"items": items}, timeout=10)) == expected
        assert routed(restored.execute("source", {"items": items}, timeout=10)) == expected
        # And the restored flow saves to the same data again.
        assert (
            json.loads(json.dumps(restored.serialize()))["routines"]["router"]
            == (saved["routines"]["router"])
        )

    @pytest.mark.parametrize(
        "bad",
        [
            {"_type": "callable", "callable_type": "function", "module": "os", "name": "system"},
            [1, {"_type": "lambda_expression", "expression": "data"}],
            {"k": 1e400},
        ],
    )
    def test_a_file_cannot_put_anything_but_plain_data_in_extra_keys(self, bad):
        router = ConditionalRouter()
        router.set_config(routes=[("r", "True")], extra=1)
        saved = json.loads(json.dumps(router_flow(router).serialize()))
        saved["routines"]["router"]["_config"]["extra"] = bad
        with pytest.raises((SerializationError, ConfigError)) as info:
            Flow().deserialize(json.loads(json.dumps(saved)))
        assert "extra" in str(info.value)

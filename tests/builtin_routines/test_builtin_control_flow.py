"""ConditionalRouter, Splitter, Filter, and the time-based routines used standalone
(no job: no timers, explicit flushes)."""

from __future__ import annotations

import pytest

from routilux import register_function
from routilux.builtin_routines.control_flow import (
    Aggregator,
    Batcher,
    ConditionalRouter,
    Debouncer,
    Filter,
    Splitter,
)


@register_function  # saved by reference: it must be registered (issue 9)
def is_urgent(data):
    return data.get("priority") == "urgent"


class TestConditionalRouter:
    def test_string_callable_and_dict_conditions(self, capture):
        router = ConditionalRouter()
        router.add_route("high", "data['p'] > 5")
        router.add_route("urgent", is_urgent)
        router.add_route("typed", {"type": "x", "n": lambda v: v > 0})
        high, urgent, typed = (
            capture(router, "high"),
            capture(router, "urgent"),
            capture(router, "typed"),
        )
        default = capture(router, "output")
        router.input_slot.receive({"data": {"p": 9}})
        router.input_slot.receive({"data": {"p": 1, "priority": "urgent"}})
        router.input_slot.receive({"data": {"p": 1, "type": "x", "n": 2}})
        router.input_slot.receive({"data": {"p": 1, "type": "x", "n": 0}})
        assert high == [{"data": {"p": 9}, "route": "high"}]
        assert urgent == [{"data": {"p": 1, "priority": "urgent"}, "route": "urgent"}]
        assert typed == [{"data": {"p": 1, "type": "x", "n": 2}, "route": "typed"}]
        assert default == [{"data": {"p": 1, "type": "x", "n": 0}, "route": "unmatched"}]

    def test_first_match_vs_all_matches(self, capture):
        router = ConditionalRouter()
        router.set_config(routes=[("a", "data > 0"), ("b", "data > 1")])
        a, b = capture(router, "a"), capture(router, "b")
        router.input_slot.receive({"data": 5})
        assert (len(a), len(b)) == (1, 0)
        router.set_config(route_priority="all_matches")
        router.input_slot.receive({"data": 5})
        assert (len(a), len(b)) == (2, 1)

    def test_default_route(self, capture):
        router = ConditionalRouter()
        router.set_config(routes=[("a", "data > 0")], default_route="other")
        other = capture(router, "other")
        router.input_slot.receive({"data": -1})
        assert other == [{"data": -1, "route": "other"}]

    def test_route_events_exist_after_set_config(self):
        router = ConditionalRouter()
        router.set_config(routes=[("x", "True")])
        assert router.get_event("x") is not None
        assert router.default_output is router.get_event("output")

    def test_string_condition_that_raises_is_false(self, capture):
        router = ConditionalRouter()
        router.set_config(routes=[("a", "data['missing'] > 1")])
        out = capture(router, "output")
        router.input_slot.call_handler({"data": {}}, propagate_exceptions=True)
        assert out.last()["route"] == "unmatched"

    def test_callable_condition_that_raises_propagates(self):
        router = ConditionalRouter()
        router.add_route("a", lambda d: d["missing"])
        with pytest.raises(KeyError):
            router.input_slot.call_handler({"data": {}}, propagate_exceptions=True)

    def test_config_names_in_conditions(self, capture):
        router = ConditionalRouter()
        router.add_route("big", lambda data, config: data > config["limit"])
        router.add_route("neg", "data < 0 and config['route_priority'] == 'first_match'")
        router._config["limit"] = 10  # conditions see the routine's config
        big, neg = capture(router, "big"), capture(router, "neg")
        router.input_slot.receive({"data": 11})
        router.input_slot.receive({"data": -1})
        assert (len(big), len(neg)) == (1, 1)

    def test_invalid_routes(self):
        router = ConditionalRouter()
        with pytest.raises(ValueError, match="routes"):
            router.set_config(routes=[("a",)])
        with pytest.raises(ValueError, match="not a valid expression"):
            router.add_route("bad", "__import__('os')")
        with pytest.raises(ValueError, match="route_priority"):
            router.set_config(route_priority="sometimes")

    def test_routes_round_trip(self):
        import json

        router = ConditionalRouter()
        router.add_route("s", "data == 1")
        router.add_route("f", is_urgent)
        router.add_route("l", lambda x: x == 3)
        router.add_route("d", {"k": 1})
        saved = json.loads(json.dumps(router._config_to_data()))
        assert saved["routes"][2] == [
            "l",
            {"_type": "lambda_expression", "expression": "data == 3"},
        ]
        clone = ConditionalRouter()
        clone._config_from_data(saved)
        routes = clone.get_config("routes")
        assert all(isinstance(r, tuple) for r in routes)
        assert routes[1][1] is is_urgent
        assert routes[2][1](3) is True
        assert clone.match({"k": 1, "priority": "urgent"}) == ["f"]
        assert clone.get_event("l") is not None

    def test_unserializable_route(self):
        router = ConditionalRouter()
        threshold = 3
        router.add_route("closure", lambda d: d > threshold)
        with pytest.raises(ValueError, match="Condition for route 'closure' cannot be serialized"):
            router._config_to_data()


class TestSplitter:
    def test_one_emission_per_item(self, capture):
        splitter = Splitter()
        out, done = capture(splitter), capture(splitter, "done")
        splitter.input_slot.receive({"data": ["a", "b"], "request_id": 7})
        assert out == [
            {"request_id": 7, "data": "a", "index": 0, "total": 2},
            {"request_id": 7, "data": "b", "index": 1, "total": 2},
        ]
        assert done == [{"request_id": 7, "total": 2}]

    def test_single_kwarg_and_tuple(self, capture):
        splitter = Splitter()
        out = capture(splitter)
        splitter.input_slot.receive({"items": (1, 2, 3)})
        assert [e["data"] for e in out] == [1, 2, 3]

    def test_empty_list(self, capture):
        splitter = Splitter()
        out, done = capture(splitter), capture(splitter, "done")
        splitter.input_slot.receive({"data": []})
        assert out == [] and done == [{"total": 0}]

    @pytest.mark.parametrize("bad", ["text", {"a": 1}, 5])
    def test_non_list_is_an_error(self, bad):
        with pytest.raises(TypeError, match="splits lists"):
            Splitter().input_slot.call_handler({"data": bad}, propagate_exceptions=True)


class TestFilter:
    def test_expression(self, capture):
        filt = Filter()
        filt.set_config(condition="data['age'] >= 18")
        passed, rejected = capture(filt), capture(filt, "rejected")
        filt.input_slot.receive({"data": {"age": 20}, "index": 0})
        filt.input_slot.receive({"data": {"age": 3}, "index": 1})
        assert passed == [{"index": 0, "data": {"age": 20}}]
        assert rejected == [{"index": 1, "data": {"age": 3}}]

    def test_callable_dict_and_none(self):
        filt = Filter()
        assert filt.accepts(1) and not filt.accepts(0)
        filt.set_config(condition=lambda d: d % 2 == 0)
        assert filt.accepts(2) and not filt.accepts(3)
        filt.set_config(condition={"ok": True})
        assert filt.accepts({"ok": True}) and not filt.accepts({"ok": False})
        assert not filt.accepts("not a dict")

    def test_raising_condition_propagates(self):
        for condition in ("data['x']", lambda d: d["x"]):
            filt = Filter()
            filt.set_config(condition=condition)
            with pytest.raises(KeyError):
                filt.input_slot.call_handler({"data": {}}, propagate_exceptions=True)

    def test_invalid_expression(self):
        with pytest.raises(ValueError, match="condition"):
            Filter().set_config(condition="import os")


class TestStandaloneTimeBased:
    def test_batcher_full_batches_and_flush(self, capture):
        batcher = Batcher()
        batcher.set_config(batch_size=2, max_wait=0.01)
        out = capture(batcher)
        for i in range(5):
            batcher.input_slot.receive({"data": i})
        assert [e["batch"] for e in out] == [[0, 1], [2, 3]]
        batcher.flush_slot.receive({})
        assert out.last() == {"batch": [4], "size": 1, "batch_index": 2, "reason": "flush"}
        batcher.flush_slot.receive({})
        assert len(out) == 3

    def test_aggregator_by_count_and_key(self, capture):
        agg = Aggregator()
        agg.set_config(expected_count=2, correlation_key="req")
        out = capture(agg)
        agg.input_slot.receive({"data": {"req": "a", "v": 1}})
        agg.input_slot.receive({"data": {"req": "b", "v": 2}})
        agg.input_slot.receive({"data": {"req": "a", "v": 3}})
        assert out == [
            {
                "items": [{"req": "a", "v": 1}, {"req": "a", "v": 3}],
                "key": "a",
                "count": 2,
                "expected": 2,
                "reason": "complete",
            }
        ]
        agg.flush_slot.receive({})
        assert out.last()["key"] == "b" and out.last()["reason"] == "flush"

    def test_aggregator_uses_total_and_index(self, capture):
        agg = Aggregator()
        out = capture(agg)
        for index in (2, 0, 1):
            agg.input_slot.receive({"data": f"item{index}", "index": index, "total": 3})
        assert out.last()["items"] == ["item0", "item1", "item2"]
        assert out.last()["expected"] == 3

    def test_debouncer_waits_for_flush(self, capture):
        debouncer = Debouncer()
        out = capture(debouncer)
        for i in range(3):
            debouncer.input_slot.receive({"data": i, "tag": "t"})
        assert out == []
        debouncer.flush_slot.receive({})
        assert out == [{"tag": "t", "data": 2, "count": 3}]

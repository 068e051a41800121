"""Property tests: buffering routines never lose, duplicate or reorder items, and the
flattener keeps every leaf."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routilux import Slot
from routilux.builtin_routines import Aggregator, Batcher, DataFlattener, Splitter


def attach(routine, event="output"):
    out: list = []
    routine.get_event(event).connect(Slot("c", None, lambda **kw: out.append(kw)))
    return out


@given(st.lists(st.integers()), st.integers(min_value=1, max_value=7))
def test_batcher_partitions_the_stream(items, size):
    batcher = Batcher()
    batcher.set_config(batch_size=size)
    out = attach(batcher)
    for item in items:
        batcher.input_slot.receive({"data": item})
    batcher.flush_slot.receive({})
    batches = [o["batch"] for o in out]
    assert [x for b in batches for x in b] == items
    assert all(len(b) == size for b in batches[:-1])
    assert all(0 < len(b) <= size for b in batches)
    assert [o["batch_index"] for o in out] == list(range(len(out)))


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers())), st.integers(1, 4))
def test_aggregator_groups_without_loss(pairs, expected):
    agg = Aggregator()
    agg.set_config(expected_count=expected, correlation_key="k")
    out = attach(agg)
    for key, value in pairs:
        agg.input_slot.receive({"data": {"k": key, "v": value}})
    agg.flush_slot.receive({})
    for key in "abc":
        got = [i["v"] for o in out if o["key"] == key for i in o["items"]]
        assert got == [v for k, v in pairs if k == key]
    assert all(o["count"] == expected for o in out if o["reason"] == "complete")


@given(st.permutations(list(range(8))))
def test_aggregator_orders_by_index(order):
    splitter, agg = Splitter(), Aggregator()
    items = attach(splitter)
    out = attach(agg)
    splitter.input_slot.receive({"data": [f"i{n}" for n in range(8)]})
    for position in order:
        agg.input_slot.receive(items[position])
    assert out == [{"items": [f"i{n}" for n in range(8)], "key": None, "count": 8,
                    "expected": 8, "reason": "complete"}]  # fmt: skip


json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
nested = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3),
        st.dictionaries(st.text("abc", min_size=1, max_size=3), inner, min_size=1, max_size=3),
    ),
    max_leaves=20,
)


def leaves(value):
    if isinstance(value, dict):
        return [x for v in value.values() for x in leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in leaves(v)]
    return [value]


@given(st.dictionaries(st.text("abc", min_size=1, max_size=3), nested, min_size=1))
def test_flattener_keeps_every_leaf(data):
    flattener = DataFlattener()
    flattener.set_config(separator="\x1f")  # a separator no generated key contains
    flat, _ = flattener.flatten(data)
    assert sorted(map(repr, flat.values())) == sorted(map(repr, leaves(data)))

"""Property tests of the engine (hypothesis).

Random DAGs of routines, each emitting a random number of times per delivery:
every emission is delivered exactly once to every connected slot, the history
holds exactly the emissions, and the job ends ``completed`` -- for both
strategies.  In the sequential strategy the delivery order is also exactly the
FIFO (breadth-first) order of spec 20 §4.
"""

from __future__ import annotations

import threading
from collections import Counter, deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routilux import Connection, Event, Flow, Routine, Slot

SETTINGS = settings(max_examples=50, deadline=None)


class Node(Routine):
    """On each delivery of token ``t``, emits ``t + ((index, k),)`` for k < count."""

    def __init__(self, index, count, deliveries, lock) -> None:
        super().__init__()
        self.index = index
        self.count = count
        self.deliveries = deliveries
        self.lock = lock
        self.define_slot("trigger", handler=self.start)
        self.define_slot("in", handler=self.receive_token)
        self.define_event("out", ["token"])

    def start(self, **kwargs):
        self._fan_out(())

    def receive_token(self, token):
        with self.lock:
            self.deliveries.append((self.index, token))
        self._fan_out(token)

    def _fan_out(self, token):
        for k in range(self.count):
            self.emit("out", token=token + ((self.index, k),))


@st.composite
def dags(draw):
    n = draw(st.integers(min_value=1, max_value=5))
    counts = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    edges = []
    for i in range(n):
        for j in range(i + 1, n):
            if draw(st.booleans()):
                edges.append((i, j))
    # connection order of each event = the order edges are connected
    edges = draw(st.permutations(edges))
    return n, counts, edges


def _model(n, counts, edges):
    """FIFO simulation: (emissions, delivery order) the engine must produce."""
    targets = {i: [j for a, j in edges if a == i] for i in range(n)}
    emissions = []
    deliveries = []
    queue = deque()

    def emit_all(i, token):
        for k in range(counts[i]):
            t = token + ((i, k),)
            emissions.append((i, t))
            for j in targets[i]:
                queue.append((j, t))

    emit_all(0, ())
    while queue:
        j, t = queue.popleft()
        deliveries.append((j, t))
        emit_all(j, t)
    return emissions, deliveries


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
@SETTINGS
@given(graph=dags())
def test_every_emission_delivered_exactly_once(strategy, graph):
    n, counts, edges = graph
    deliveries = []
    lock = threading.Lock()
    flow = Flow(execution_strategy=strategy, max_workers=4)
    for i in range(n):
        flow.add_routine(Node(i, counts[i], deliveries, lock), f"n{i}")
    for i, j in edges:
        flow.connect(f"n{i}", "out", f"n{j}", "in")
    try:
        js = flow.execute("n0")
    finally:
        flow.shutdown()

    expected_emissions, expected_deliveries = _model(n, counts, edges)
    assert js.status == "completed"
    assert Counter(deliveries) == Counter(expected_deliveries)
    history = js.get_execution_history()
    assert all(r.event_name == "out" for r in history)
    recorded = [(int(r.routine_id[1:]), r.data["token"]) for r in history]
    assert Counter(recorded) == Counter(expected_emissions)
    if strategy == "sequential":
        assert deliveries == expected_deliveries
        raw = [(int(r.routine_id[1:]), r.data["token"]) for r in js.execution_history]
        assert raw == expected_emissions


# ---------------------------------------------------------------------------
# merge and mapping properties

keys = st.sampled_from(["a", "b", "c", "d"])
deliveries_st = st.lists(st.dictionaries(keys, st.integers(), max_size=4), max_size=12)


@SETTINGS
@given(deliveries=deliveries_st)
def test_append_accumulates_every_value_in_order(deliveries):
    seen = []
    slot = Slot("s", None, lambda data: seen.append(data), "append")
    for d in deliveries:
        slot.receive(d)
    for key in ["a", "b", "c", "d"]:
        values = [d[key] for d in deliveries if key in d]
        if values:
            assert slot._data[key] == values
        else:
            assert key not in slot._data
    # each call got exactly the keys of its delivery, as the live lists
    assert [set(m) for m in seen] == [set(d) for d in deliveries]
    for m in seen:
        for key, lst in m.items():
            assert lst is slot._data[key]


@SETTINGS
@given(deliveries=deliveries_st)
def test_override_passes_each_delivery_as_is(deliveries):
    seen = []
    slot = Slot("s", None, lambda data: seen.append(dict(data)))
    for d in deliveries:
        slot.receive(d)
    assert seen == deliveries
    assert slot._data == (deliveries[-1] if deliveries else {})


names = st.sampled_from(["a", "b", "c", "d", "e", "f"])


@st.composite
def mappings(draw):
    sources = draw(st.lists(names, unique=True, max_size=4))
    targets = draw(st.lists(names, unique=True, min_size=len(sources), max_size=len(sources)))
    return dict(zip(sources, targets))


@SETTINGS
@given(mapping=mappings(), data=st.dictionaries(names, st.integers(), max_size=6))
def test_apply_mapping_rename_rule(mapping, data):
    out = Connection(Event("e"), Slot("s"), mapping)._apply_mapping(data)
    if not mapping:
        assert out == data
        return
    targets = set(mapping.values())
    expected = {dst: data[src] for src, dst in mapping.items() if src in data}
    for key, value in data.items():
        if key not in mapping and key not in targets:
            expected[key] = value
    assert out == expected
    # every mapped source value is present under its new name
    for src, dst in mapping.items():
        if src in data:
            assert out[dst] == data[src]
        else:
            assert dst not in out  # a data key colliding with a target is dropped
        if src not in targets:
            assert src not in out  # renamed, not copied (90 D17)

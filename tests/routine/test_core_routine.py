"""Core definition objects: Routine, ExecutionContext, Slot, Event, Connection.

Spec: 10-routine-slot-event.md (with the decisions of spec/README.md).
Behaviour that needs a running job (history, context inside handlers) is in
test_core_flow.py; these tests use the objects on their own or in tiny flows.
"""

from __future__ import annotations

import pytest

from routilux import Connection, ErrorHandler, ErrorStrategy, Event, Flow, Routine, Slot
from routilux.routine import ExecutionContext

# ---------------------------------------------------------------------------
# helpers


class Recorder:
    """A handler that remembers every call (args and kwargs)."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))


class Empty(Routine):
    pass


class Emitter(Routine):
    """One event ``out``, no slots."""

    def __init__(self) -> None:
        super().__init__()
        self.define_event("out", ["value"])


class Sink(Routine):
    """One slot ``in`` whose handler records what it got."""

    def __init__(self, merge_strategy="override") -> None:
        super().__init__()
        self.got: list[dict] = []
        self.define_slot("in", handler=self.handle, merge_strategy=merge_strategy)

    def handle(self, **kwargs):
        self.got.append(kwargs)


# ---------------------------------------------------------------------------
# Routine: construction and repr


def test_plain_routine_has_nothing_defined():
    r = Routine()
    assert r._slots == {}
    assert r._events == {}
    assert r._config == {}
    assert r._error_handler is None
    assert r.get_error_handler() is None
    assert isinstance(r._id, str) and r._id


def test_routine_ids_are_distinct_per_instance():
    a, b = Routine(), Routine()
    assert a._id != b._id


def test_routine_repr_uses_class_name_and_id():
    r = Empty()
    assert repr(r) == f"Empty[{r._id}]"
    base = Routine()
    assert repr(base) == f"Routine[{base._id}]"


def test_routine_call_is_a_legacy_noop():
    r = Routine()
    assert r(a=1) is None
    assert r() is None


# ---------------------------------------------------------------------------
# Routine: define_slot / define_event / get_slot / get_event


def test_define_slot_creates_and_stores_slot():
    r = Routine()
    handler = Recorder()
    slot = r.define_slot("input", handler=handler, merge_strategy="append")
    assert isinstance(slot, Slot)
    assert slot.name == "input"
    assert slot.routine is r
    assert slot.handler is handler
    assert slot.merge_strategy == "append"
    assert r._slots == {"input": slot}
    assert r.get_slot("input") is slot


def test_define_slot_defaults():
    r = Routine()
    slot = r.define_slot("s")
    assert slot.handler is None
    assert slot.merge_strategy == "override"


def test_define_slot_duplicate_raises_value_error_naming_it():
    r = Empty()
    r.define_slot("input")
    with pytest.raises(ValueError) as info:
        r.define_slot("input")
    assert str(info.value) == f"Slot 'input' already exists in {r!r}"


def test_define_event_creates_and_stores_event():
    r = Routine()
    event = r.define_event("output", ["result", "count"])
    assert isinstance(event, Event)
    assert event.name == "output"
    assert event.routine is r
    assert event.output_params == ["result", "count"]
    assert r._events == {"output": event}
    assert r.get_event("output") is event


def test_define_event_default_output_params_is_empty_list():
    event = Routine().define_event("e")
    assert event.output_params == []


def test_define_event_duplicate_raises_value_error_naming_it():
    r = Empty()
    r.define_event("output")
    with pytest.raises(ValueError) as info:
        r.define_event("output")
    assert str(info.value) == f"Event 'output' already exists in {r!r}"


def test_slot_and_event_may_share_a_name():
    r = Routine()
    slot = r.define_slot("x")
    event = r.define_event("x")
    assert r.get_slot("x") is slot
    assert r.get_event("x") is event


def test_get_slot_and_get_event_unknown_return_none():
    r = Routine()
    r.define_slot("a")
    r.define_event("b")
    assert r.get_slot("b") is None
    assert r.get_event("a") is None
    assert r.get_slot("missing") is None
    assert r.get_event("missing") is None


# ---------------------------------------------------------------------------
# Routine: configuration


def test_set_config_updates_and_get_config_reads():
    r = Routine()
    r.set_config(a=1, b="two")
    r.set_config(b="three", c=None)
    assert r._config == {"a": 1, "b": "three", "c": None}
    assert r.get_config("a") == 1
    assert r.get_config("b") == "three"
    assert r.get_config("c", "dflt") is None  # stored None wins over the default


def test_get_config_default():
    r = Routine()
    assert r.get_config("missing") is None
    assert r.get_config("missing", 42) == 42


def test_config_returns_a_shallow_copy():
    r = Routine()
    nested = [1]
    r.set_config(a=1, items=nested)
    cfg = r.config()
    assert cfg == {"a": 1, "items": [1]}
    cfg["a"] = 99
    cfg["new"] = True
    assert r._config == {"a": 1, "items": [1]}
    assert r.config() is not r.config()
    assert cfg["items"] is nested  # shallow


# ---------------------------------------------------------------------------
# Routine: error handler


def test_set_and_get_error_handler():
    r = Routine()
    handler = ErrorHandler(strategy=ErrorStrategy.CONTINUE)
    r.set_error_handler(handler)
    assert r.get_error_handler() is handler
    assert r._error_handler is handler
    r.set_error_handler(None)
    assert r.get_error_handler() is None


def test_set_as_optional_installs_continue_handler():
    r = Routine()
    r.set_as_optional()
    h = r.get_error_handler()
    assert isinstance(h, ErrorHandler)
    assert h.strategy is ErrorStrategy.CONTINUE
    assert h.is_critical is False


def test_set_as_optional_with_strategy():
    r = Routine()
    r.set_as_optional(ErrorStrategy.SKIP)
    assert r.get_error_handler().strategy is ErrorStrategy.SKIP


def test_set_as_critical_installs_retry_handler():
    r = Routine()
    r.set_as_critical(max_retries=4, retry_delay=0.5, retry_backoff=3.0)
    h = r.get_error_handler()
    assert h.strategy is ErrorStrategy.RETRY
    assert (h.max_retries, h.retry_delay, h.retry_backoff) == (4, 0.5, 3.0)
    assert h.is_critical is True


def test_set_as_critical_defaults():
    r = Routine()
    r.set_as_critical()
    h = r.get_error_handler()
    assert (h.max_retries, h.retry_delay, h.retry_backoff) == (3, 1.0, 2.0)


# ---------------------------------------------------------------------------
# Routine: emit outside a job


def test_emit_unknown_event_raises_value_error():
    r = Emitter()
    with pytest.raises(ValueError) as info:
        r.emit("nope", value=1)
    assert str(info.value) == f"Event 'nope' does not exist in {r!r}"


def test_emit_without_flow_delivers_synchronously_in_connection_order():
    src = Emitter()
    order: list[str] = []
    first = Slot("first", None, lambda **kw: order.append(("first", kw)))
    second = Slot("second", None, lambda **kw: order.append(("second", kw)))
    src.get_event("out").connect(first)
    src.get_event("out").connect(second)
    assert src.emit("out", value=7) is None
    assert order == [("first", {"value": 7}), ("second", {"value": 7})]


def test_emit_without_connections_is_legal():
    r = Emitter()
    assert r.emit("out", value=1) is None


def test_emit_does_not_enforce_output_params():
    src = Emitter()  # declares only "value"
    sink = Sink()
    src.get_event("out").connect(sink.get_slot("in"))
    src.emit("out", other=1, more=2)
    assert sink.got == [{"other": 1, "more": 2}]


def test_emit_flow_is_reserved_not_a_data_key():
    src = Emitter()
    sink = Sink()
    src.get_event("out").connect(sink.get_slot("in"))
    src.emit("out", None, value=3)  # second positional argument is ``flow``
    src.emit("out", flow=None, value=4)
    assert sink.got == [{"value": 3}, {"value": 4}]


# ---------------------------------------------------------------------------
# Routine: context-only operations outside a job


def test_get_execution_context_is_none_for_a_bare_routine():
    assert Routine().get_execution_context() is None


def test_get_execution_context_is_none_in_a_flow_that_is_not_running():
    flow = Flow("idle")
    r = Sink()
    flow.add_routine(r, "r")
    assert r.get_execution_context() is None


def test_emit_deferred_event_outside_context_raises_runtime_error():
    r = Emitter()
    with pytest.raises(RuntimeError) as info:
        r.emit_deferred_event("out", value=1)
    assert str(info.value).startswith("Cannot emit deferred event: not in execution context")


def test_send_output_outside_context_raises_runtime_error():
    r = Routine()
    with pytest.raises(RuntimeError) as info:
        r.send_output("log", message="hi")
    assert str(info.value).startswith("Cannot send output: not in execution context")


def test_execution_context_is_a_named_tuple():
    flow = Flow("f")
    ctx = ExecutionContext(flow, None, "rid")
    f, js, rid = ctx
    assert (f, js, rid) == (flow, None, "rid")
    assert ctx._fields == ("flow", "job_state", "routine_id")
    assert ctx.routine_id == "rid"


# ---------------------------------------------------------------------------
# Routine._extract_input_data


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        (("payload",), {}, "payload"),
        ((0,), {}, 0),  # falsy but not None
        ((False,), {}, False),
        (("x",), {"other": 1}, "x"),  # data wins over kwargs
        (({"a": 1},), {}, {"a": 1}),
        ((), {"value": 5}, 5),  # exactly one kwarg: its value
        ((None,), {"value": 5}, 5),
        ((), {"a": 1, "b": 2}, {"a": 1, "b": 2}),  # several kwargs: the dict
        ((), {}, {}),
        ((None,), {}, {}),
    ],
)
def test_extract_input_data_rules(args, kwargs, expected):
    assert Routine()._extract_input_data(*args, **kwargs) == expected


def test_extract_input_data_data_keyword():
    r = Routine()
    assert r._extract_input_data(data="d") == "d"
    assert r._extract_input_data(data="d", x=1, y=2) == "d"
    assert r._extract_input_data(data=None, x=1, y=2) == {"x": 1, "y": 2}


# ---------------------------------------------------------------------------
# Slot: construction, repr


def test_slot_positional_construction_without_routine():
    got = []
    slot = Slot("capture", None, lambda **kw: got.append(kw))
    assert slot.name == "capture"
    assert slot.routine is None
    assert slot.merge_strategy == "override"
    assert slot.connected_events == []
    assert slot._data == {}
    slot.receive({"a": 1})
    assert got == [{"a": 1}]


def test_slot_defaults():
    slot = Slot()
    assert slot.name == ""
    assert slot.routine is None
    assert slot.handler is None
    assert slot.merge_strategy == "override"


def test_slot_repr():
    r = Routine()
    assert repr(Slot("in", r)) == f"Slot[{r._id}.in]"
    assert repr(Slot("in")) == "Slot[in]"


def test_slot_without_handler_only_merges():
    slot = Slot("s", None, None, "append")
    slot.receive({"v": 1})
    slot.call_handler({"v": 2}, propagate_exceptions=True)
    assert slot._data == {"v": [1, 2]}


# ---------------------------------------------------------------------------
# Slot: merge strategies (spec 10 §3.2)


def test_override_replaces_buffer_and_passes_only_new_data():
    rec = Recorder()
    slot = Slot("s", None, rec)  # Recorder has *args/**kwargs: kwargs dispatch
    slot.receive({"a": 1})
    slot.receive({"b": 2})
    assert [kw for _, kw in rec.calls] == [{"a": 1}, {"b": 2}]
    assert slot._data == {"b": 2}


def test_override_stores_a_copy_of_the_delivery():
    slot = Slot("s", None, None)
    payload = {"a": 1}
    merged = slot._merge_data(payload)
    payload["a"] = 2
    payload["z"] = 0
    assert slot._data == {"a": 1}
    assert merged == {"a": 1}
    assert merged is slot._data  # "returns that stored dict"


def test_unknown_strategy_behaves_as_override():
    seen = []
    slot = Slot("s", None, lambda data: seen.append(dict(data)), "invalid_strategy")
    slot.receive({"a": 1})
    slot.receive({"b": 2})
    assert seen == [{"a": 1}, {"b": 2}]
    assert slot._data == {"b": 2}


def test_append_example_from_spec():
    seen = []
    slot = Slot(
        "s", None, lambda data: seen.append({k: list(v) for k, v in data.items()}), "append"
    )
    slot.receive({"value": 1})
    slot.receive({"value": 2})
    assert seen == [{"value": [1]}, {"value": [1, 2]}]
    assert slot._data == {"value": [1, 2]}


def test_append_handler_sees_live_lists():
    captured = []
    slot = Slot("s", None, lambda data: captured.append(data), "append")
    slot.receive({"value": 1})
    first = captured[0]["value"]
    assert first == [1]
    slot.receive({"value": 2})
    slot.receive({"value": 3})
    # The list the first call received is the live accumulated list.
    assert first == [1, 2, 3]
    assert first is slot._data["value"]
    assert captured[2]["value"] is first


def test_append_passes_only_keys_of_this_delivery():
    seen = []
    slot = Slot(
        "s", None, lambda data: seen.append({k: list(v) for k, v in data.items()}), "append"
    )
    slot.receive({"a": 1})
    slot.receive({"b": 2})
    slot.receive({"a": 3, "b": 4})
    assert seen == [{"a": [1]}, {"b": [2]}, {"a": [1, 3], "b": [2, 4]}]
    assert slot._data == {"a": [1, 3], "b": [2, 4]}


def test_append_empty_delivery_returns_empty_dict():
    slot = Slot("s", None, None, "append")
    slot.receive({"a": 1})
    assert slot._merge_data({}) == {}
    assert slot._data == {"a": [1]}


def test_append_wraps_existing_non_list_value():
    slot = Slot("s", None, None, "append")
    slot._data = {"v": 5}
    merged = slot._merge_data({"v": 6})
    assert merged == {"v": [5, 6]}
    assert slot._data == {"v": [5, 6]}


def test_append_buffer_can_be_reset_by_user():
    seen = []
    slot = Slot("s", None, lambda data: seen.append(list(data["v"])), "append")
    slot.receive({"v": 1})
    slot._data = {}
    slot.receive({"v": 2})
    assert seen == [[1], [2]]


def test_callable_strategy_gets_buffer_and_new_data():
    calls = []

    def merge(old, new):
        calls.append((dict(old), dict(new)))
        return {"total": old.get("total", 0) + new["n"]}

    seen = []
    slot = Slot("s", None, lambda total: seen.append(total), merge)
    slot.receive({"n": 2})
    slot.receive({"n": 5})
    assert calls == [({}, {"n": 2}), ({"total": 2}, {"n": 5})]
    assert seen == [2, 7]
    assert slot._data == {"total": 7}


def test_callable_strategy_dict_result_is_stored_as_copy_and_returned():
    result = {"k": 1}
    slot = Slot("s", None, None, lambda old, new: result)
    merged = slot._merge_data({"x": 0})
    assert merged is result
    assert slot._data == {"k": 1}
    assert slot._data is not result


def test_callable_strategy_non_dict_result_is_stored_and_passed():
    seen = []
    slot = Slot("s", None, lambda data: seen.append(data), lambda old, new: [old, new["v"]])
    slot.receive({"v": 1})
    slot.receive({"v": 2})
    assert seen == [[{}, 1], [[{}, 1], 2]]
    assert slot._data == [[{}, 1], 2]


# ---------------------------------------------------------------------------
# Slot: handler dispatch rule (spec 10 §3.3)


class DispatchProbe(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list = []
        self.define_slot("kw", handler=self.process)
        self.define_slot("single", handler=self.single)

    def process(self, data=None, **kw):
        self.calls.append(("process", data, kw))

    def single(self, value):
        self.calls.append(("single", value))


def test_dispatch_kwargs_handler_gets_every_key_as_kwargs():
    r = DispatchProbe()
    r.get_slot("kw").receive({"data": 1, "x": 2})
    r.get_slot("kw").receive({"x": 3})
    assert r.calls == [("process", 1, {"x": 2}), ("process", None, {"x": 3})]


def test_dispatch_single_data_parameter_gets_whole_dict():
    seen = []
    slot = Slot("s", None, lambda data: seen.append(data))
    slot.receive({"data": 1, "other": 2})
    assert seen == [{"data": 1, "other": 2}]


def test_dispatch_single_named_parameter_gets_inner_value():
    r = DispatchProbe()  # bound method: ``self`` is not a parameter
    r.get_slot("single").receive({"value": {"nested": True}, "ignored": 1})
    assert r.calls == [("single", {"nested": True})]


def test_dispatch_single_named_parameter_missing_gets_whole_dict():
    seen = []
    slot = Slot("s", None, lambda value: seen.append(value))
    slot.receive({"other": 1})
    assert seen == [{"other": 1}]


def test_dispatch_several_parameters_get_matching_keys():
    seen = []

    def h(x, y=None):
        seen.append((x, y))

    slot = Slot("s", None, h)
    slot.receive({"x": 1, "y": 2, "z": 3})
    slot.receive({"x": 4})
    assert seen == [(1, 2), (4, None)]


def test_dispatch_several_parameters_none_matching_passes_dict_positionally():
    seen = []

    def h(x, y=None):
        seen.append((x, y))

    slot = Slot("s", None, h)
    slot.receive({"a": 1})
    assert seen == [({"a": 1}, None)]


def test_dispatch_type_error_from_unmatched_handler_is_swallowed_by_receive():
    called = []

    def h(x, y):
        called.append((x, y))

    slot = Slot("s", None, h)
    slot.receive({"a": 1})  # h({"a": 1}) -> TypeError, swallowed
    assert called == []
    with pytest.raises(TypeError):
        slot.call_handler({"a": 1}, propagate_exceptions=True)


def test_is_kwargs_handler():
    def with_kwargs(a, **kw):
        pass

    def without(a, b):
        pass

    assert Slot._is_kwargs_handler(with_kwargs) is True
    assert Slot._is_kwargs_handler(without) is False
    assert Slot._is_kwargs_handler(DispatchProbe().process) is True


# ---------------------------------------------------------------------------
# Slot: error handling outside a job


def test_receive_swallows_handler_errors():
    def boom(**kw):
        raise RuntimeError("boom")

    slot = Slot("s", None, boom)
    assert slot.receive({"a": 1}) is None
    assert slot.call_handler({"a": 1}) is None


def test_call_handler_propagates_when_asked():
    def boom(**kw):
        raise KeyError("k")

    slot = Slot("s", None, boom)
    with pytest.raises(KeyError):
        slot.call_handler({"a": 1}, propagate_exceptions=True)


# ---------------------------------------------------------------------------
# Slot / Event wiring


def test_slot_connect_links_both_sides_and_is_idempotent():
    event = Event("e")
    slot = Slot("s")
    slot.connect(event)
    slot.connect(event, param_mapping={"a": "b"})
    event.connect(slot)
    assert slot.connected_events == [event]
    assert event.connected_slots == [slot]


def test_slot_disconnect_unlinks_both_sides_and_tolerates_absent():
    event = Event("e")
    slot = Slot("s")
    slot.disconnect(event)  # nothing to do, no error
    slot.connect(event)
    slot.disconnect(event)
    assert slot.connected_events == []
    assert event.connected_slots == []
    slot.disconnect(event)


def test_event_connect_and_disconnect_mirror_slot():
    event = Event("e")
    s1, s2 = Slot("a"), Slot("b")
    event.connect(s1)
    event.connect(s2)
    event.connect(s1)
    assert event.connected_slots == [s1, s2]
    assert s1.connected_events == [event]
    event.disconnect(s1)
    assert event.connected_slots == [s2]
    assert s1.connected_events == []
    event.disconnect(s1)  # absent: no error


def test_event_construction_and_repr():
    r = Routine()
    event = Event("out", r, ["a"])
    assert (event.name, event.routine, event.output_params) == ("out", r, ["a"])
    assert event.connected_slots == []
    assert repr(event) == f"Event[{r._id}.out]"
    assert repr(Event("out")) == "Event[out]"
    bare = Event()
    assert (bare.name, bare.routine, bare.output_params) == ("", None, [])


def test_event_emit_standalone_delivers_in_connection_order_without_mapping():
    order = []
    event = Event("e")
    s1 = Slot("one", None, lambda **kw: order.append(("one", kw)))
    s2 = Slot("two", None, lambda **kw: order.append(("two", kw)))
    event.connect(s2)
    event.connect(s1)
    assert event.emit(x=1) is None
    assert order == [("two", {"x": 1}), ("one", {"x": 1})]


# ---------------------------------------------------------------------------
# Connection (spec 10 §5)


def test_connection_links_event_and_slot():
    event, slot = Event("e"), Slot("s")
    conn = Connection(event, slot)
    assert conn.source_event is event
    assert conn.target_slot is slot
    assert conn.param_mapping == {}
    assert event.connected_slots == [slot]
    assert slot.connected_events == [event]
    assert repr(conn) == f"Connection[{event!r} -> {slot!r}]"


def test_connection_without_ends_is_valid():
    conn = Connection()
    assert conn.source_event is None
    assert conn.target_slot is None
    assert conn.param_mapping == {}


def test_apply_mapping_empty_returns_data_unchanged():
    data = {"a": 1, "b": 2}
    assert Connection(Event("e"), Slot("s"))._apply_mapping(data) == {"a": 1, "b": 2}


def test_apply_mapping_spec_example():
    conn = Connection(Event("e"), Slot("s"), {"a": "x", "b": "y"})
    assert conn._apply_mapping({"a": 1, "b": 2, "c": 3}) == {"x": 1, "y": 2, "c": 3}


def test_apply_mapping_renames_only():
    # upstream forwarded the source key too (90 D17); we rename only
    conn = Connection(Event("e"), Slot("s"), {"i": "j"})
    assert conn._apply_mapping({"i": 1}) == {"j": 1}


def test_apply_mapping_mapped_value_wins_a_collision():
    conn = Connection(Event("e"), Slot("s"), {"a": "b"})
    assert conn._apply_mapping({"a": 1, "b": 2}) == {"b": 1}


def test_apply_mapping_missing_source_key_is_simply_missing():
    conn = Connection(Event("e"), Slot("s"), {"a": "x"})
    assert conn._apply_mapping({"c": 3}) == {"c": 3}


def test_apply_mapping_does_not_modify_input():
    conn = Connection(Event("e"), Slot("s"), {"a": "x"})
    data = {"a": 1, "c": 2}
    conn._apply_mapping(data)
    assert data == {"a": 1, "c": 2}


def test_connection_activate_delivers_mapped_data_synchronously():
    seen = []
    slot = Slot("s", None, lambda **kw: seen.append(kw))
    conn = Connection(Event("e"), slot, {"a": "x"})
    conn.activate({"a": 1, "c": 2})
    assert seen == [{"x": 1, "c": 2}]


def test_connection_disconnect_unlinks():
    event, slot = Event("e"), Slot("s")
    conn = Connection(event, slot)
    conn.disconnect()
    assert event.connected_slots == []
    assert slot.connected_events == []

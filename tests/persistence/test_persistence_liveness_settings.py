"""Handler timeouts and max_deliveries survive a save and are range-checked on load."""

from __future__ import annotations

import json

import pytest

from routilux import Flow, Routine, SerializationError, register_serializable


@register_serializable
class TimedSink(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.on_trigger, timeout=2.5)
        self.define_slot("plain", handler=self.on_trigger)

    def on_trigger(self, **kwargs: object) -> None:
        pass


def _saved_flow() -> dict:
    flow = Flow(flow_id="timed", handler_timeout=7.0, max_deliveries=50)
    flow.add_routine(TimedSink(), "sink")
    return json.loads(json.dumps(flow.serialize()))


def test_timeouts_and_delivery_budget_round_trip() -> None:
    loaded = Flow().deserialize(_saved_flow())
    assert loaded.handler_timeout == 7.0
    assert loaded.max_deliveries == 50
    sink = loaded.routines["sink"]
    assert sink.get_slot("trigger").timeout == 2.5
    assert sink.get_slot("plain").timeout is None


def test_a_file_without_the_new_fields_loads_with_defaults() -> None:
    data = _saved_flow()
    del data["handler_timeout"], data["max_deliveries"]
    for slot in data["routines"]["sink"]["_slots"].values():
        slot.pop("timeout", None)
    loaded = Flow().deserialize(data)
    assert loaded.handler_timeout is None and loaded.max_deliveries is None
    assert loaded.routines["sink"].get_slot("trigger").timeout == 2.5  # from __init__


@pytest.mark.parametrize("value", [0, -1, float("inf"), 1e300, "5", True, [1]])
def test_a_bad_handler_timeout_names_its_field(value: object) -> None:
    data = _saved_flow()
    data["handler_timeout"] = value
    with pytest.raises(SerializationError, match="handler_timeout"):
        Flow().deserialize(data)


@pytest.mark.parametrize("value", [0, -1, 1e300, "5", True])
def test_a_bad_slot_timeout_names_its_field(value: object) -> None:
    data = _saved_flow()
    data["routines"]["sink"]["_slots"]["plain"]["timeout"] = value
    with pytest.raises(SerializationError, match=r"_slots\['plain'\]\.timeout"):
        Flow().deserialize(data)


@pytest.mark.parametrize("value", [0, -3, 2.5, "10", True])
def test_a_bad_max_deliveries_names_its_field(value: object) -> None:
    data = _saved_flow()
    data["max_deliveries"] = value
    with pytest.raises(SerializationError, match="max_deliveries"):
        Flow().deserialize(data)

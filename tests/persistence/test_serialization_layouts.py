"""One serialization convention: every class's ``serialize``/``deserialize`` (and
JobState's ``save``/``load``) reach the layout ``routilux.persistence`` registered for it
through ``routilux.serialization.layout_of``; no class imports persistence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from routilux import (
    Connection,
    ErrorHandler,
    Event,
    ExecutionRecord,
    ExecutionTracker,
    Flow,
    JobState,
    Routine,
    SerializationError,
    Slot,
)
from routilux import persistence as layouts
from routilux.serialization import layout_of, register_layout

LIBRARY_LAYOUTS = {
    Slot: (layouts.serialize_slot, layouts.deserialize_slot),
    Event: (layouts.serialize_event, layouts.deserialize_event),
    Connection: (layouts.serialize_connection, layouts.deserialize_connection),
    Routine: (layouts.serialize_routine, layouts.deserialize_routine),
    Flow: (layouts.serialize_flow, layouts.deserialize_flow),
    ErrorHandler: (layouts.serialize_error_handler, layouts.deserialize_error_handler),
    ExecutionRecord: (
        layouts.serialize_execution_record,
        layouts.deserialize_execution_record,
    ),
    JobState: (layouts.serialize_job_state, layouts.deserialize_job_state),
    ExecutionTracker: (
        layouts.serialize_execution_tracker,
        layouts.deserialize_execution_tracker,
    ),
}


@pytest.mark.parametrize("cls", list(LIBRARY_LAYOUTS), ids=lambda cls: cls.__name__)
def test_every_library_class_has_its_layout_in_persistence(cls: type) -> None:
    serialize, deserialize = LIBRARY_LAYOUTS[cls]
    layout = layout_of(cls)
    assert (layout.serialize, layout.deserialize) == (serialize, deserialize)


def test_subclasses_use_the_layout_of_their_nearest_registered_base() -> None:
    class Mine(Routine):
        pass

    class Strict(ErrorHandler):
        pass

    assert layout_of(Mine) is layout_of(Routine)
    assert layout_of(Strict) is layout_of(ErrorHandler)
    assert Mine().serialize()["_type"] == "Mine"


def test_a_layout_registered_for_a_subclass_wins_over_its_base() -> None:
    class Tagged(Event):
        pass

    def dump(event: Any) -> dict[str, Any]:
        return {"_type": "Tagged", "name": event.name}

    def restore(event: Any, data: Any) -> None:
        event.name = data["name"]

    register_layout(Tagged, dump, restore)
    assert Tagged("e").serialize() == {"_type": "Tagged", "name": "e"}
    assert Tagged().deserialize({"name": "f"}).name == "f"
    assert Event("e").serialize()["_type"] == "Event"  # the base keeps its own


def test_a_class_without_a_layout_names_itself() -> None:
    class Stranger:
        pass

    with pytest.raises(SerializationError, match="no serialization layout .*Stranger"):
        layout_of(Stranger)


def test_only_job_states_have_a_file_form(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    job = JobState(flow_id="f")
    job.save(path)
    assert JobState.load(path).flow_id == "f"
    with pytest.raises(SerializationError, match="Slot objects are not saved as files"):
        layout_of(Slot).save(Slot("s"), path)
    with pytest.raises(SerializationError, match="Flow objects are not loaded from files"):
        layout_of(Flow).load(path, Flow)


def test_register_layout_wants_a_class() -> None:
    with pytest.raises(TypeError, match="expects a class"):
        register_layout("Slot", layouts.serialize_slot, layouts.deserialize_slot)  # type: ignore[arg-type]

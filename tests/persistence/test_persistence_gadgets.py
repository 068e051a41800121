"""A saved flow runs no code (issue 9, item 1; DESIGN invariant 8).

Two gadgets that worked while any function of an already-imported module could be
named in a file: a slot handler that is ``routilux.serialization.write_json`` (a data
mapping turns the emitted ``route`` into its ``path``, so running the flow overwrites a
file) and a Mapper whose function is ``yaml.unsafe_load`` (which runs a shell command
given as input). Both must now fail at load time with a SerializationError naming the
key path, the callable and how to register it; the sentinel files stay absent and
nothing new is imported.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import routilux.builtin_routines  # noqa: F401 - imported up front: not a "new" module
import routilux.persistence  # noqa: F401 - idem
from helpers import Sink
from routilux import Flow, Routine, SerializationError, register_serializable
from routilux.builtin_routines import Mapper

try:  # a dev dependency; the gadget needs PyYAML imported, as in a program that uses it
    import yaml
except ImportError:  # pragma: no cover - without PyYAML only that gadget is skipped
    yaml = None


@register_serializable
class GadgetSource(Routine):
    """Emits whatever the job was started with, as ``route`` and ``data``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("output", ["route", "data"])

    def start(self, route: str = "", data: Any = None, **_: Any) -> None:
        self.emit("output", route=route, data=data)


@pytest.fixture(autouse=True)
def nothing_new_imported(tmp_path: Path) -> Iterator[None]:
    before = set(sys.modules)
    yield
    new = set(sys.modules) - before
    assert not new, f"loading imported {sorted(new)}"


def _round_trip(data: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(data))
    return loaded


def test_write_json_handler_gadget_is_refused_at_load(tmp_path: Path) -> None:
    sentinel = tmp_path / "overwritten.json"
    flow = Flow("gadget-a")
    flow.add_routine(GadgetSource(), "src")
    flow.add_routine(Sink(), "r")
    flow.connect("src", "output", "r", "input", param_mapping={"route": "path"})
    data = _round_trip(flow.serialize())
    data["routines"]["r"]["_slots"]["input"]["handler"] = {
        "_type": "callable",
        "callable_type": "function",
        "module": "routilux.serialization",
        "name": "write_json",
    }
    error: SerializationError | None = None
    try:
        loaded = Flow().deserialize(data)
    except SerializationError as exc:
        error = exc
    else:  # what the gadget did before: the run overwrites the file
        loaded.execute("src", {"route": str(sentinel), "data": {"pwned": True}})
    assert not sentinel.exists()
    assert error is not None, "the flow loaded with write_json as a slot handler"
    message = str(error)
    assert 'routines["r"]' in message and "_slots" in message and "handler" in message
    assert "routilux.serialization.write_json" in message
    assert "register_function" in message


def test_yaml_unsafe_load_mapper_gadget_is_refused_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if yaml is None:  # pragma: no cover
        pytest.skip("PyYAML is not installed")
    assert callable(yaml.unsafe_load)  # importable, so only registration stops it
    monkeypatch.chdir(tmp_path)
    mapper = Mapper()
    mapper.set_config(function=None)
    flow = Flow("gadget-b")
    flow.add_routine(GadgetSource(), "src")
    flow.add_routine(mapper, "m")
    flow.connect("src", "output", "m", "input")
    data = _round_trip(flow.serialize())
    data["routines"]["m"]["_config"]["function"] = {
        "_type": "callable",
        "callable_type": "function",
        "module": "yaml",
        "name": "unsafe_load",
        "qualname": "unsafe_load",
    }
    error: SerializationError | None = None
    try:
        loaded = Flow().deserialize(data)
    except SerializationError as exc:
        error = exc
    else:  # what the gadget did before: the input runs a shell command
        loaded.execute("src", {"data": '!!python/object/apply:os.system ["touch pwned"]'})
    assert not (tmp_path / "pwned").exists()
    assert error is not None, "the flow loaded with yaml.unsafe_load as the Mapper function"
    message = str(error)
    assert 'routines["m"]' in message and "_config" in message
    assert "yaml.unsafe_load" in message and "register_function" in message
    assert os.listdir(tmp_path) == []

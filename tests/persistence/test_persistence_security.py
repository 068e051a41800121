"""Loading saved data never imports a module or runs code it names (DESIGN invariant 8;
issue 5, item 4).

Each test loads a file that names ``os.system`` or a function of a module the program
never imported (``antigravity`` opens a web browser on import, ``this`` prints) as a
slot handler, a merge strategy, a routine class or an exception class, and checks that
``sys.modules`` did not change and that nothing was called.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import routilux.builtin_routines  # noqa: F401 - loaded up front: not a "new" module
import routilux.persistence  # noqa: F401 - idem (the classes import it lazily)
from routilux import Flow, JobState, Routine, SerializationError, register_serializable

UNIMPORTED = ("antigravity", "this")

OS_SYSTEM = {
    "_type": "callable",
    "callable_type": "function",
    "module": "os",
    "name": "system",
    "qualname": "system",
}
BUILTIN_OS_SYSTEM = {
    "_type": "callable",
    "callable_type": "builtin",
    "name": "system",
    "module": "os",
}
BUILTIN_EVAL = {"_type": "callable", "callable_type": "builtin", "name": "eval"}
BUILTIN_EXEC = {
    "_type": "callable",
    "callable_type": "builtin",
    "name": "exec",
    "module": "builtins",
}
ANTIGRAVITY = {
    "_type": "callable",
    "callable_type": "function",
    "module": "antigravity",
    "name": "geohash",
    "qualname": "geohash",
}
THIS = {"_type": "callable", "callable_type": "function", "module": "this", "name": "s"}
REGISTERED_NAME_IN_UNIMPORTED = {
    "_type": "callable",
    "callable_type": "function",
    "module": "antigravity",
    "name": "fly",
    "registered_name": "antigravity.fly",
}
DUNDER_METHOD = {
    "_type": "callable",
    "callable_type": "method",
    "class_name": "SecTarget",
    "method_name": "__init__",
    "object_id": "target-id",
}

HOSTILE_CALLABLES = [
    OS_SYSTEM,
    BUILTIN_OS_SYSTEM,
    BUILTIN_EVAL,
    BUILTIN_EXEC,
    ANTIGRAVITY,
    THIS,
    REGISTERED_NAME_IN_UNIMPORTED,
    DUNDER_METHOD,
]


@register_serializable
class SecTarget(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.run)
        self.define_slot("input", handler=self.on_input)
        self.define_event("output", ["value"])

    def run(self, **_: Any) -> None:
        self.emit("output", value="rm -rf /tmp/never")

    def on_input(self, value: str) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        ctx.job_state.update_shared_data("handled", value)


class Trap(Routine):
    """Not registered: loading data that names it must not build it."""

    built = 0

    def __init__(self) -> None:
        Trap.built += 1
        super().__init__()


@pytest.fixture(autouse=True)
def no_new_modules(tmp_path: Path) -> Iterator[None]:
    # Depends on tmp_path so that pytest's own imports for it happen before the snapshot.
    for name in UNIMPORTED:
        assert name not in sys.modules, f"{name} was imported before the test"
    before = set(sys.modules)
    yield
    new = set(sys.modules) - before
    assert not new, f"loading imported {sorted(new)}"
    for name in UNIMPORTED:
        assert name not in sys.modules


@pytest.fixture
def os_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records calls of os.system / os.popen instead of running them."""
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a, **k: calls.append(("system", a)))
    monkeypatch.setattr(os, "popen", lambda *a, **k: calls.append(("popen", a)))
    return calls


def saved_flow() -> dict[str, Any]:
    flow = Flow("sec")
    target = SecTarget()
    target._id = "target-id"
    flow.add_routine(target, "target")
    flow.add_routine(SecTarget(), "downstream")
    flow.connect("target", "output", "downstream", "input")
    data: dict[str, Any] = json.loads(json.dumps(flow.serialize()))
    return data


def load_file(tmp_path: Path, data: dict[str, Any]) -> Flow:
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with open(path, encoding="utf-8") as handle:
        return Flow().deserialize(json.load(handle))


@pytest.mark.parametrize(
    "spec",
    HOSTILE_CALLABLES,
    ids=lambda s: f"{s['module'] if 'module' in s else ''}.{s.get('name') or s.get('method_name')}",
)
def test_hostile_slot_handler_is_not_restored(
    tmp_path: Path, os_calls: list[Any], spec: dict[str, Any]
) -> None:
    # Issue 9: refused at load with an error naming the field (it used to become None).
    data = saved_flow()
    data["routines"]["downstream"]["_slots"]["input"]["handler"] = spec
    with pytest.raises(SerializationError, match="Cannot restore callable") as caught:
        load_file(tmp_path, data)
    assert "routines[\"downstream\"]._slots['input'].handler" in str(caught.value)
    assert os_calls == []


@pytest.mark.parametrize(
    "spec",
    HOSTILE_CALLABLES,
    ids=lambda s: f"{s['module'] if 'module' in s else ''}.{s.get('name') or s.get('method_name')}",
)
def test_hostile_merge_strategy_is_not_restored(
    tmp_path: Path, os_calls: list[Any], spec: dict[str, Any]
) -> None:
    data = saved_flow()
    data["routines"]["downstream"]["_slots"]["input"]["merge_strategy"] = spec
    with pytest.raises(SerializationError, match="Cannot restore callable") as caught:
        load_file(tmp_path, data)
    assert "_slots['input'].merge_strategy" in str(caught.value)
    assert os_calls == []


@pytest.mark.parametrize(
    "class_name",
    ["os.system", "system", "posix.system", "antigravity", "this", "antigravity.geohash", "Trap"],
)
def test_unregistered_routine_class_is_not_built(
    tmp_path: Path, os_calls: list[Any], class_name: str
) -> None:
    data = saved_flow()
    data["routines"]["target"]["_type"] = class_name
    with pytest.raises(SerializationError, match="class not found in registry"):
        load_file(tmp_path, data)
    assert Trap.built == 0
    assert os_calls == []


def test_registered_class_that_is_not_a_routine_is_refused(tmp_path: Path) -> None:
    data = saved_flow()
    data["routines"]["target"]["_type"] = "Flow"
    with pytest.raises(SerializationError, match="not a Routine"):
        load_file(tmp_path, data)


@pytest.mark.parametrize("name", ["antigravity.Liftoff", "this.Zen", "os.system", "os.error"])
def test_error_handler_naming_unimported_exception_classes(tmp_path: Path, name: str) -> None:
    # Issue 9: refused with the field named (unknown names used to be dropped silently).
    data = saved_flow()
    data["routines"]["target"]["_error_handler"] = {
        "_type": "ErrorHandler",
        "strategy": "retry",
        "retryable_exceptions": ["ValueError", name],
    }
    with pytest.raises(SerializationError, match="retryable_exceptions") as caught:
        load_file(tmp_path, data)
    assert name in str(caught.value) and "register" in str(caught.value)


def test_error_handler_subclass_must_be_registered(tmp_path: Path) -> None:
    data = saved_flow()
    data["routines"]["target"]["_error_handler"] = {"_type": "antigravity", "strategy": "stop"}
    with pytest.raises(SerializationError, match="class not found in registry"):
        load_file(tmp_path, data)


def test_job_state_file_naming_code_is_rejected(tmp_path: Path, os_calls: list[Any]) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"_type": "os.system", "flow_id": "sec"}), encoding="utf-8")
    with pytest.raises(ValueError, match="Invalid JobState file format"):
        JobState.load(path)
    assert os_calls == []


def test_job_state_fields_are_data_only(tmp_path: Path, os_calls: list[Any]) -> None:
    js = JobState("sec")
    js.status = "paused"
    js.update_shared_data("handler", OS_SYSTEM)
    js.pending_tasks.append(
        {"slot_routine_id": "antigravity", "slot_name": "system", "data": {"cmd": "ls"}}
    )
    js.deferred_events.append(
        {"routine_id": "this", "event_name": "os.system", "data": {}, "timestamp": None}
    )
    js.save(tmp_path / "job.json")
    loaded = JobState.load(tmp_path / "job.json")
    assert loaded.shared_data["handler"] == OS_SYSTEM  # stays a plain dict
    # Resuming against a flow that has no such routines drops them, with warnings.
    flow = Flow().deserialize(saved_flow())
    loaded.current_routine_id = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flow.resume(loaded)
    assert any("does not match" in str(w.message) for w in caught)
    assert loaded.status == "completed"
    assert os_calls == []

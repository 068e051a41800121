"""What registering allows a saved flow to name (issue 9, item 1): registered functions in
every spelling, methods of registered classes, exception classes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from helpers import Source
from routilux import (
    ErrorHandler,
    Flow,
    FlowError,
    Routine,
    SerializationError,
    register_function,
    register_serializable,
)


def trip(flow: Flow) -> Flow:
    return Flow().deserialize(json.loads(json.dumps(flow.serialize())))


@register_serializable
class RegSink(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.store)

    def store(self, value: Any = None, **_: Any) -> None:
        self._put("store", value)

    def other(self, value: Any = None, **_: Any) -> None:
        self._put("other", value)

    def _put(self, key: str, value: Any) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        ctx.job_state.update_shared_data(key, value)


class UnregisteredSink(RegSink):
    """A subclass nobody registered: its methods are not allowed by RegSink's registration."""


@register_function
def plain_handler(value: Any = None, **_: Any) -> None:
    RESULTS.append(("plain", value))


@register_function("tests.registration.named")
def named_handler(value: Any = None, **_: Any) -> None:
    RESULTS.append(("named", value))


@register_function(name="tests.registration.keyword")
def keyword_handler(value: Any = None, **_: Any) -> None:
    RESULTS.append(("keyword", value))


def called_handler(value: Any = None, **_: Any) -> None:
    RESULTS.append(("called", value))


register_function(called_handler, name="tests.registration.called")


def keep_max(current: Any, new: dict[str, Any]) -> dict[str, Any]:
    best = current.get("value") if isinstance(current, dict) else None
    value = new.get("value")
    return {"value": value if best is None or value > best else best}


register_function(keep_max)

RESULTS: list[tuple[str, Any]] = []


@pytest.mark.parametrize("handler", [plain_handler, named_handler, keyword_handler, called_handler])
def test_each_spelling_of_register_function_restores_a_handler(handler: Any) -> None:
    flow = Flow("reg")
    flow.add_routine(Source(), "src")
    sink = RegSink()
    sink.define_slot("fn", handler=handler, merge_strategy=keep_max)
    flow.add_routine(sink, "sink")
    flow.connect("src", "output", "sink", "fn")
    restored = trip(flow)
    slot = restored.routines["sink"].get_slot("fn")
    assert slot is not None and slot.handler is handler and slot.merge_strategy is keep_max
    RESULTS.clear()
    restored.execute("src", {"value": 7})
    assert len(RESULTS) == 1 and RESULTS[0][1] == 7


def test_a_method_of_a_registered_class_restores_on_the_new_object() -> None:
    flow = Flow("reg-method")
    flow.add_routine(Source(), "src")
    sink = RegSink()
    sink.define_slot("alt", handler=sink.other)  # not what __init__ installs
    flow.add_routine(sink, "sink")
    flow.connect("src", "output", "sink", "alt")
    restored = trip(flow)
    new_sink = restored.routines["sink"]
    slot = new_sink.get_slot("alt")
    assert slot is not None and getattr(slot.handler, "__self__", None) is new_sink
    job = restored.execute("src", {"value": 3})
    assert job.shared_data == {"other": 3}


def test_a_method_of_an_unregistered_class_is_refused() -> None:
    sink = UnregisteredSink()
    sink.define_slot("alt", handler=sink.other)
    data = json.loads(json.dumps(sink.serialize()))
    with pytest.raises(SerializationError, match="UnregisteredSink is not registered"):
        UnregisteredSink().deserialize(data)
    # What __init__ installed is kept without any lookup, registered or not.
    plain = json.loads(json.dumps(UnregisteredSink().serialize()))
    again = UnregisteredSink().deserialize(plain)
    slot = again.get_slot("input")
    assert slot is not None and getattr(slot.handler, "__self__", None) is again


@register_serializable
class RegisteredError(Exception):
    pass


class FunctionRegisteredError(Exception):
    pass


register_function(FunctionRegisteredError)


class UnknownError(Exception):
    pass


def test_allowed_exception_classes_round_trip() -> None:
    classes = (ConnectionError, FlowError, RegisteredError, FunctionRegisteredError)
    handler = ErrorHandler("retry", retryable_exceptions=classes)
    restored = ErrorHandler().deserialize(json.loads(json.dumps(handler.serialize())))
    assert restored.retryable_exceptions == classes
    # Bare builtin names (hand-written files) are accepted too.
    bare = ErrorHandler().deserialize({"strategy": "retry", "retryable_exceptions": ["OSError"]})
    assert bare.retryable_exceptions == (OSError,)


def test_unregistered_exception_class_is_refused_with_how_to_register() -> None:
    data = ErrorHandler("retry", retryable_exceptions=(KeyError, UnknownError)).serialize()
    with pytest.raises(SerializationError, match=r"retryable_exceptions\[1\].*UnknownError") as e:
        ErrorHandler().deserialize(data)
    assert "register_serializable" in str(e.value) and "register_function" in str(e.value)


def test_a_name_registered_for_something_else_is_not_an_exception_class() -> None:
    data = {"strategy": "retry", "retryable_exceptions": [f"{__name__}.plain_handler"]}
    with pytest.raises(SerializationError, match="plain_handler"):
        ErrorHandler().deserialize(data)

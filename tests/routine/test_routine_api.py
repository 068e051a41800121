"""Smaller Routine API things (issue 9 item 7): ``self.context``, reserved names,
routines named by their id in error messages, the connect-time signature check."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import pytest

from routilux import (
    ConfigError,
    DefinitionError,
    ExecutionContextError,
    Flow,
    FlowError,
    RoutiluxWarning,
    Routine,
)
from routilux.routine import ExecutionContext

# ---------------------------------------------------------------- self.context


class Recorder(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.go)

    def go(self, **_: object) -> None:
        ctx = self.context
        ctx.job_state.update_shared_data("seen", (type(ctx).__name__, ctx.routine_id))


def test_context_is_the_execution_context_inside_a_handler() -> None:
    flow = Flow("ctx")
    flow.add_routine(Recorder(), "rec")
    js = flow.execute("rec")
    assert js.status == "completed"
    assert js.shared_data["seen"] == ("ExecutionContext", "rec")


def test_context_outside_a_job_raises_execution_context_error() -> None:
    routine = Recorder()
    with pytest.raises(ExecutionContextError, match="not in execution context"):
        routine.context  # noqa: B018 - the property access is the test
    assert routine.get_execution_context() is None  # unchanged: Optional


def test_context_is_typed_as_never_none() -> None:
    import typing

    hints = typing.get_type_hints(Routine.context.fget)  # type: ignore[attr-defined]
    assert hints["return"] is ExecutionContext


# ---------------------------------------------------------------- connect checks signatures


class Sender(Routine):
    def __init__(self, params: list[str] | None = None) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.go)
        self.define_event("out", ["value"] if params is None else params)

    def go(self, **_: object) -> None:
        self.emit("out", value=0)


class Taker(Routine):
    """A routine whose ``input`` slot uses the handler it is given."""

    def __init__(self, handler: Callable[..., Any], merge_strategy: Any = "override") -> None:
        super().__init__()
        self.define_slot("input", handler=handler, merge_strategy=merge_strategy)


def wire(
    handler: Callable[..., Any],
    params: list[str] | None = None,
    mapping: dict[str, str] | None = None,
    strict: bool = False,
    merge_strategy: Any = "override",
) -> Flow:
    flow = Flow("sig", strict=strict)
    flow.add_routine(Sender(params), "sender")
    flow.add_routine(Taker(handler, merge_strategy), "taker")
    flow.connect("sender", "out", "taker", "input", mapping)
    return flow


def val_handler(val: Any) -> None:
    pass


MISMATCHES = {
    "a single parameter named after no key": (val_handler, None, None),
    "several parameters, none a key": (lambda a, b: None, None, None),
    "a required parameter that is not a key": (lambda value, other: None, None, None),
    "no parameter at all": (lambda: None, None, None),
    "keyword-only parameters, none a key": (lambda *, a: None, None, None),
    "a mapping that renames the key away": (lambda value: None, None, {"value": "v"}),
}

FINE = {
    "**kwargs": (lambda **kw: None, None, None),
    "a lone data parameter": (lambda data: None, None, None),
    "a data parameter with optional extras": (lambda data, extra=None: None, None, None),
    "*args": (lambda *args: None, None, None),
    "the key's name": (lambda value: None, None, None),
    "the key plus parameters with defaults": (lambda value, scale=2: None, None, None),
    "an event without declared parameters": (val_handler, [], None),
    "one of several declared keys": (lambda value: None, ["value", "meta"], None),
    "a mapping onto the parameter": (val_handler, None, {"value": "val"}),
    "a builtin without a signature": (vars, None, None),
    "a builtin taking *args": (print, None, None),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_connect_warns_once_when_the_handler_cannot_take_the_declared_params(case: str) -> None:
    handler, params, mapping = MISMATCHES[case]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wire(handler, params, mapping)
    relevant = [w for w in caught if issubclass(w.category, RoutiluxWarning)]
    assert len(relevant) == 1, [str(w.message) for w in caught]
    message = str(relevant[0].message)
    assert "'sender'" in message and "'taker'" in message and "'input'" in message, message
    assert relevant[0].filename == __file__  # points at the caller's connect()


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_a_strict_flow_refuses_the_mismatch(case: str) -> None:
    handler, params, mapping = MISMATCHES[case]
    with pytest.raises(FlowError, match="'taker'"):
        wire(handler, params, mapping, strict=True)


@pytest.mark.parametrize("case", sorted(FINE))
def test_connect_does_not_warn_for_handlers_that_fit(case: str) -> None:
    handler, params, mapping = FINE[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RoutiluxWarning)
        wire(handler, params, mapping, strict=True)


def test_a_custom_merge_function_is_not_checked() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RoutiluxWarning)
        wire(lambda total: None, merge_strategy=lambda buffer, new: {"total": 1}, strict=True)


def test_the_mismatched_handler_still_runs_by_the_dispatch_rule() -> None:
    """The check only warns: the spec's dispatch rule is unchanged."""
    got: list[Any] = []
    with pytest.warns(RoutiluxWarning):
        flow = wire(lambda val: got.append(val))
    js = flow.execute("sender")
    assert js.status == "completed"
    assert got == [{"value": 0}]


# ---------------------------------------------------------------- reserved names


class Emitter(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.go)
        self.define_event("out", ["value"])

    def go(self, **_: object) -> None:
        self.emit("out", value=1, flow="main")


def test_emit_with_a_flow_that_is_not_a_flow_is_a_definition_error() -> None:
    routine = Emitter()
    with pytest.raises(DefinitionError, match=r"emit\('out'\).*'flow' is reserved"):
        routine.emit("out", value=1, flow="main")
    event = routine.get_event("out")
    assert event is not None
    with pytest.raises(DefinitionError, match="'flow' is reserved"):
        event.emit(flow="main", value=1)


def test_emit_with_flow_as_data_inside_a_job_fails_the_job_naming_the_routine() -> None:
    flow = Flow("reserved")
    flow.add_routine(Emitter(), "emitter")
    js = flow.execute("emitter")
    assert js.status == "failed"
    (record,) = [r for r in js.execution_history if r.event_name == "error"]
    assert record.routine_id == "emitter"
    assert record.data["error_type"] == "DefinitionError"
    assert "'flow' is reserved" in record.data["error"]
    assert "Emitter[emitter]" in record.data["error"]


@pytest.mark.parametrize("name", ["flow", "event_name"])
def test_an_event_cannot_declare_a_reserved_parameter(name: str) -> None:
    routine = Routine()
    with pytest.raises(DefinitionError, match=f"'{name}'.*reserves") as info:
        routine.define_event("out", ["value", name])
    assert "Event 'out'" in str(info.value)
    assert routine.get_event("out") is None


# ---------------------------------------------------------------- routines named by id


class Validator(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.check)
        self.define_event("valid", ["value"])

    def check(self, value: Any = None) -> None:
        self.schedule(1.0, "nope", value=value)  # no such slot: fails naming the routine


def assert_named(message: str, name: str = "validator") -> None:
    assert f"[{name}]" in message, message
    assert "0x" not in message, message


def test_error_messages_name_a_routine_by_its_id_in_the_flow() -> None:
    flow = Flow("named")
    routine = Validator()
    flow.add_routine(routine, "validator")
    assert repr(routine) == "Validator[validator]"
    with pytest.raises(DefinitionError) as info:
        routine.define_slot("input")
    assert_named(str(info.value))
    with pytest.raises(DefinitionError) as info:
        routine.emit("missing")
    assert_named(str(info.value))
    slot, event = routine.get_slot("input"), routine.get_event("valid")
    assert (repr(slot), repr(event)) == ("Slot[validator.input]", "Event[validator.valid]")


def test_a_handler_failure_message_names_the_routine_by_its_id() -> None:
    flow = Flow("named-run")
    flow.add_routine(Sender(), "sender")
    flow.add_routine(Validator(), "validator")
    flow.connect("sender", "out", "validator", "input")
    js = flow.execute("sender")
    assert js.status == "failed"
    (record,) = [r for r in js.execution_history if r.event_name == "error"]
    assert "Slot 'nope' does not exist" in record.data["error"]
    assert_named(record.data["error"])


def test_a_builtin_config_error_names_the_routine_by_its_id() -> None:
    from routilux.builtin_routines import Filter

    flow = Flow("named-builtin")
    keep = Filter()
    flow.add_routine(keep, "keep")
    with pytest.raises(ConfigError) as info:
        keep.set_config(bogus=1)
    assert_named(str(info.value), "keep")


def test_a_routine_in_two_flows_is_named_by_its_first_id() -> None:
    routine = Validator()
    assert repr(routine) == f"Validator[{routine._id}]"  # in no flow yet
    Flow("one").add_routine(routine, "first")
    Flow("two").add_routine(routine, "second")
    assert repr(routine) == "Validator[first]"

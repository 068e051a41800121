"""Smaller Routine API things (issue 9 item 7): ``self.context``, reserved names,
routines named by their id in error messages, the connect-time signature check."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import pytest

from routilux import ExecutionContextError, Flow, FlowError, RoutiluxWarning, Routine
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

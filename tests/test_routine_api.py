"""Smaller Routine API things (issue 9 item 7): ``self.context``, reserved names,
routines named by their id in error messages, the connect-time signature check."""

from __future__ import annotations

import pytest

from routilux import ExecutionContextError, Flow, Routine
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

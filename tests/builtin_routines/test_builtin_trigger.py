"""Every built-in has a ``trigger`` slot taking the same data as its input slot, so any
built-in can be the entry routine of a flow (a flow file of built-ins only)."""

from __future__ import annotations

import inspect

import pytest

import routilux.builtin_routines as builtins
from routilux import Flow, Routine

ALL = [getattr(builtins, name) for name in builtins.__all__]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_trigger_shares_the_input_handler(cls: type[Routine]) -> None:
    routine = cls()
    trigger = routine.get_slot("trigger")
    assert trigger is not None, f"{cls.__name__} has no trigger slot"
    source = routine.get_slot("request" if cls.__name__ == "TimeProvider" else "input")
    assert source is not None
    assert trigger.handler == source.handler
    assert trigger.merge_strategy == source.merge_strategy


def test_a_builtin_starts_a_job() -> None:
    flow = Flow("entry-builtin")
    split = builtins.Splitter()
    double = builtins.Mapper()
    double.set_config(expression="data * 2")
    flow.add_routine(split, "split")
    flow.add_routine(double, "double")
    flow.connect("split", "output", "double", "input")
    job = flow.execute("split", {"data": [1, 2, 3]})
    assert job.status == "completed"
    assert [r.data["data"] for r in job.get_execution_history("double")] == [2, 4, 6]
    assert flow.validate().warnings == ()


def test_every_builtin_is_listed() -> None:
    members = {
        name
        for name, obj in inspect.getmembers(builtins, inspect.isclass)
        if issubclass(obj, Routine)
    }
    assert members == set(builtins.__all__)

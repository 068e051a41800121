"""Cycles: ``Flow(max_deliveries=N)`` stops a job that runs away, and
``flow.validate()`` reports cycles (and other dead wiring) before anything runs."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from helpers import Sink
from routilux import Flow, RoutiluxWarning, Routine
from routilux.exceptions import FlowError, InvalidArgumentError

STRATEGIES = ["sequential", "concurrent"]


class Node(Routine):
    """Passes every value on: ``trigger`` and ``input`` both emit ``output``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.forward)
        self.define_slot("input", handler=self.forward)
        self.define_event("output", ["value"])

    def forward(self, value: int = 0, **_: Any) -> None:
        self.emit("output", value=value + 1)


def cycle_flow(strategy: str, **options: Any) -> Flow:
    flow = Flow("loop", execution_strategy=strategy, **options)
    for rid in ("a", "b", "c"):
        flow.add_routine(Node(), rid)
    flow.connect("a", "output", "b", "input")
    flow.connect("b", "output", "c", "input")
    flow.connect("c", "output", "a", "input")
    return flow


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_cycle_fails_the_job_once_it_exceeds_max_deliveries(strategy: str) -> None:
    flow = cycle_flow(strategy, max_deliveries=100)
    job = flow.execute("a", {"value": 0}, timeout=60)
    assert job.wait_for_completion(60)
    assert job.status == "failed"
    (error,) = [r for r in job.get_execution_history() if r.event_name == "error"]
    assert error.data["error_type"] == "FlowError"
    assert "max_deliveries=100" in error.data["error"]
    assert "cycle" in error.data["error"]
    # 100 deliveries ran (the entry counts): 100 emissions, then the 101st was refused.
    emissions = [r for r in job.get_execution_history() if r.event_name == "output"]
    assert len(emissions) == 100
    assert job.get_routine_state(error.routine_id)["status"] == "failed"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_max_deliveries_counts_every_delivery_including_the_entry(strategy: str) -> None:
    def chain(limit: int) -> Flow:
        flow = Flow(execution_strategy=strategy, max_deliveries=limit)
        flow.add_routine(Node(), "head")
        flow.add_routine(Node(), "middle")
        flow.add_routine(Sink(), "tail")
        flow.connect("head", "output", "middle", "input")
        flow.connect("middle", "output", "tail", "input")
        return flow

    assert chain(3).execute("head", timeout=30).status == "completed"  # exactly 3 deliveries
    assert chain(2).execute("head", timeout=30).status == "failed"


def test_max_deliveries_is_per_job() -> None:
    flow = Flow(max_deliveries=2)
    flow.add_routine(Node(), "head")
    flow.add_routine(Sink(), "tail")
    flow.connect("head", "output", "tail", "input")
    assert [flow.execute("head").status for _ in range(3)] == ["completed"] * 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_max_deliveries_is_checked(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="Flow 'f'.*max_deliveries"):
        Flow("f", max_deliveries=bad)
    assert Flow().max_deliveries is None


def test_validate_reports_the_routines_on_a_cycle() -> None:
    flow = cycle_flow("sequential")
    flow.add_routine(Sink(), "sink")
    flow.connect("c", "output", "sink", "input")
    report = flow.validate()
    assert report.ok and report.errors == ()
    (finding,) = report.warnings
    assert "cycle 'a' -> 'b' -> 'c' -> 'a'" in finding
    assert "max_deliveries" in finding


def test_validate_finds_self_loops_and_several_cycles() -> None:
    flow = Flow()
    for rid in ("x", "y", "z", "w"):
        flow.add_routine(Node(), rid)
    flow.connect("x", "output", "x", "input")  # a routine feeding itself
    flow.connect("y", "output", "z", "input")
    flow.connect("z", "output", "y", "input")
    flow.connect("z", "output", "w", "input")
    cycles = [w for w in flow.validate().warnings if w.startswith("cycle")]
    assert len(cycles) == 2
    assert any("'x' -> 'x'" in w for w in cycles)
    assert any("'y' -> 'z' -> 'y'" in w for w in cycles)


def test_validate_is_quiet_for_a_plain_pipeline() -> None:
    flow = Flow()
    flow.add_routine(Node(), "head")
    flow.add_routine(Sink(), "tail")
    flow.connect("head", "output", "tail", "input")
    assert flow.validate().warnings == ()


def test_validate_reports_routines_that_can_never_run() -> None:
    flow = Flow()
    flow.add_routine(Node(), "head")
    flow.add_routine(Sink(), "tail")
    flow.add_routine(Sink(), "orphan")  # no trigger slot, nothing reaches it
    flow.connect("head", "output", "tail", "input")
    (finding,) = flow.validate().warnings
    assert "'orphan'" in finding and "never run" in finding


def test_validate_reports_a_connection_out_of_the_flow_as_an_error() -> None:
    flow = Flow("f")
    head = Node()
    flow.add_routine(head, "head")
    outsider = Sink()
    outsider.get_slot("input").connect(head.get_event("output"))  # bypasses flow.connect
    report = flow.validate()
    assert not report.ok
    (error,) = report.errors
    assert "'head'.'output'" in error and "not in flow 'f'" in error


def test_validate_can_issue_warnings() -> None:
    flow = cycle_flow("sequential")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flow.validate()
        assert caught == []
        flow.validate(warn=True)
    assert [w.category for w in caught] == [RoutiluxWarning]
    assert "flow 'loop'" in str(caught[0].message)


def test_validate_handles_a_long_chain_without_recursion() -> None:
    flow = Flow()
    previous = None
    for i in range(3000):
        flow.add_routine(Node(), f"n{i}")
        if previous is not None:
            flow.connect(previous, "output", f"n{i}", "input")
        previous = f"n{i}"
    assert flow.validate().warnings == ()
    flow.connect(previous, "output", "n0", "input")
    (finding,) = flow.validate().warnings
    assert finding.startswith("cycle 'n0' -> 'n1'") and "'n2999' -> 'n0'" in finding


def test_flow_error_is_the_documented_class() -> None:
    assert issubclass(FlowError, ValueError)

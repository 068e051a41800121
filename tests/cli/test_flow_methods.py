"""The thin Flow methods: from_file/to_file (through the codec's flow-file slot) and
to_mermaid/to_dot (routilux.flow.diagram)."""

from __future__ import annotations

from pathlib import Path

from routilux import Flow
from routilux.builtin_routines import Filter, Splitter
from routilux.flow import diagram
from routilux.flowfile import flow_to_dict


def _flow() -> Flow:
    flow = Flow("methods")
    keep = Filter()
    keep.set_config(condition="data > 1")
    flow.add_routine(Splitter(), "split")
    flow.add_routine(keep, "keep")
    flow.connect("split", "output", "keep", "input")
    return flow


def test_from_file_and_to_file(tmp_path: Path) -> None:
    flow = _flow()
    flow.to_file(tmp_path / "f.yaml")
    assert "class: Splitter" in (tmp_path / "f.yaml").read_text()
    again = Flow.from_file(tmp_path / "f.yaml")
    assert type(again) is Flow
    assert flow_to_dict(again) == flow_to_dict(flow)


def test_from_file_builds_the_subclass(tmp_path: Path) -> None:
    class MyFlow(Flow):
        pass

    _flow().to_file(tmp_path / "f.json")
    assert type(MyFlow.from_file(tmp_path / "f.json")) is MyFlow


def test_diagram_methods() -> None:
    flow = _flow()
    job = flow.execute("split", {"data": [1, 2]})
    assert flow.to_mermaid() == diagram.to_mermaid(flow)
    assert flow.to_dot(job) == diagram.to_dot(flow, job)

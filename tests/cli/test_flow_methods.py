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


def test_from_file_allow_imports(tmp_path: Path, monkeypatch) -> None:
    import sys

    import pytest

    from routilux.flowfile import FlowFileError

    name = f"rx_methods_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        "from routilux import Routine\n"
        "class Echo(Routine):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.define_slot('trigger')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "f.yaml"
    path.write_text(f"routines:\n  e: {{class: '{name}:Echo'}}\n")
    with pytest.raises(FlowFileError, match="not allowed"):
        Flow.from_file(path)
    assert name not in sys.modules
    flow = Flow.from_file(path, allow_imports=[name])
    assert type(flow.routines["e"]).__name__ == "Echo"
    sys.modules.pop(name, None)

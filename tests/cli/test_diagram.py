"""Diagrams: Mermaid (checked by a structural parser), DOT (rendered by Graphviz when
it is installed), and colours/counts from a JobState."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from routilux import ErrorHandler, Flow, JobState
from routilux.builtin_routines import Filter, Mapper, Splitter
from routilux.flow import diagram
from routilux.flow.diagram import DiagramError, activity, render, to_dot, to_mermaid

NODE = re.compile(r'^    (\w+)\["([^"]*)"\]$')
EDGE = re.compile(r'^    (\w+) -->\|"([^"]*)"\| (\w+)$')
CLASSDEF = re.compile(
    r"^    classDef (\w+) fill:#[0-9a-f]{6},stroke:#[0-9a-f]{6},stroke-width:2px$"
)
CLASS = re.compile(r"^    class (\w+) (\w+)$")


def parse_mermaid(text: str) -> dict:
    """A structural parse of the subset of Mermaid flowcharts we write: every line is a
    header, a node, an edge, a classDef or a class; edges and classes name declared
    nodes; classes name declared classDefs. Raises AssertionError otherwise."""
    lines = text.splitlines()
    assert lines[0] in ("flowchart LR", "flowchart TB"), lines[0]
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    classdefs: set[str] = set()
    classes: dict[str, str] = {}
    for line in lines[1:]:
        if m := NODE.match(line):
            assert m[1] not in nodes, f"node {m[1]} declared twice"
            nodes[m[1]] = m[2]
        elif m := EDGE.match(line):
            edges.append((m[1], m[2], m[3]))
        elif m := CLASSDEF.match(line):
            classdefs.add(m[1])
        elif m := CLASS.match(line):
            classes[m[1]] = m[2]
        else:
            raise AssertionError(f"not a Mermaid flowchart line: {line!r}")
    for source, _, target in edges:
        assert source in nodes and target in nodes, (source, target)
    for node, name in classes.items():
        assert node in nodes and name in classdefs, (node, name)
    return {"nodes": nodes, "edges": edges, "classes": classes}


def _flow(fail: bool = False, skip: bool = False) -> Flow:
    flow = Flow("pic")
    keep, price = Filter(), Mapper()
    keep.set_config(condition="data['qty'] > 0")
    price.set_config(expression="data['qty'] * data['price']" if fail else "data['qty'] * 2")
    if skip:
        price.set_error_handler(ErrorHandler(strategy="skip"))
    flow.add_routine(Splitter(), "split")
    flow.add_routine(keep, "keep")
    flow.add_routine(price, "price")
    flow.add_routine(Mapper(), "never")
    flow.connect("split", "output", "keep", "input")
    flow.connect("keep", "output", "price", "input", {"data": "data", "index": "position"})
    flow.connect("keep", "rejected", "never", "input")
    return flow


ORDERS = {"data": [{"qty": 1}, {"qty": 0}, {"qty": 3}]}


def test_mermaid_structure() -> None:
    parsed = parse_mermaid(to_mermaid(_flow()))
    assert set(parsed["nodes"]) == {"r_split", "r_keep", "r_price", "r_never"}
    assert "Splitter" in parsed["nodes"]["r_split"]
    assert "in: input, trigger" in parsed["nodes"]["r_keep"]
    assert "out: output, rejected" in parsed["nodes"]["r_keep"]
    labels = {(s, t): label for s, label, t in parsed["edges"]}
    assert labels[("r_split", "r_keep")] == "output → input"
    assert labels[("r_keep", "r_price")] == "output → input (data→data, index→position)"
    assert parsed["classes"] == {}


def test_mermaid_with_a_completed_job() -> None:
    flow = _flow()
    job = flow.execute("split", ORDERS)
    parsed = parse_mermaid(to_mermaid(flow, job))
    assert parsed["classes"] == {
        "r_split": "done",
        "r_keep": "done",
        "r_price": "done",
        "r_never": "done",
    }
    assert "done, 3 in, 3 out" in parsed["nodes"]["r_keep"]
    assert "done, 2 in, 2 out" in parsed["nodes"]["r_price"]
    assert "done, 1 in, 1 out" in parsed["nodes"]["r_never"]


def test_failed_and_not_run() -> None:
    flow = _flow(fail=True)
    job = flow.execute("split", ORDERS)
    assert job.status == "failed"
    found = activity(flow, job)
    assert found["price"].status == "failed" and found["price"].errors == 1
    assert found["split"].status == "done" and found["split"].delivered == 1
    parsed = parse_mermaid(to_mermaid(flow, job))
    assert parsed["classes"]["r_price"] == "failed"
    assert "1 errors" in parsed["nodes"]["r_price"]
    dot = to_dot(flow, job)
    assert 'fillcolor="#f8d7da"' in dot


def test_skipped() -> None:
    flow = _flow(fail=True, skip=True)
    job = flow.execute("split", ORDERS)
    assert job.status == "completed"
    assert activity(flow, job)["price"].status == "skipped"


def test_waiting_on_a_paused_job() -> None:
    flow = _flow()
    job = JobState(flow.flow_id)
    job.status = "paused"
    job.current_routine_id = "split"
    job.pending_tasks = [{"slot_routine_id": "keep", "slot_name": "input", "data": {}}] * 2
    found = activity(flow, job)
    assert found["keep"] == diagram.RoutineActivity("waiting", 0, 2, 0, 0)
    assert found["price"].status == "waiting"
    assert "2 waiting" in to_mermaid(flow, job)


def test_odd_ids_and_text_are_escaped() -> None:
    flow = Flow('odd "flow"')
    flow.add_routine(Splitter(), 'a"b')
    flow.add_routine(Splitter(), "a-b")
    flow.add_routine(Splitter(), "a|b")
    flow.connect('a"b', "output", "a-b", "input", {"data": "x<y>"})
    text = to_mermaid(flow)
    parsed = parse_mermaid(text)
    assert len(parsed["nodes"]) == 3  # three distinct ids, though all sanitise alike
    assert "&quot;" in text and "&lt;" in text
    assert '"odd \\"flow\\""' in to_dot(flow)


def test_dot_structure() -> None:
    dot = to_dot(_flow())
    assert dot.startswith('digraph "pic" {') and dot.rstrip().endswith("}")
    assert 'r_keep -> r_price [label="output → input (data→data, index→position)"];' in dot
    assert dot.count("->") == 3


def test_direction() -> None:
    assert to_mermaid(_flow(), direction="TB").startswith("flowchart TB\n")
    assert "rankdir=TB;" in to_dot(_flow(), direction="TB")
    with pytest.raises(DiagramError, match="unknown diagram direction 'up'"):
        to_dot(_flow(), direction="up")


def test_unknown_format() -> None:
    with pytest.raises(DiagramError, match="unknown diagram format 'gif'"):
        render(_flow(), "gif")
    assert render(_flow(), "mermaid").decode().startswith("flowchart LR")


def _require_dot() -> None:
    missing = []
    try:
        import graphviz  # noqa: F401
    except ImportError:
        missing.append("the graphviz Python package (pip install 'routilux[cli]')")
    if shutil.which("dot") is None:
        missing.append("Graphviz's dot program (apt-get install graphviz)")
    if missing:
        reason = "DOT rendering needs " + " and ".join(missing)
        if os.environ.get("ROUTILUX_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def test_dot_renders_to_svg_and_png() -> None:
    _require_dot()
    flow = _flow()
    job = flow.execute("split", ORDERS)
    svg = render(flow, "svg", job).decode("utf-8")
    assert "<svg" in svg and "Splitter" in svg
    assert svg.count('class="node"') == 4 and svg.count('class="edge"') == 3
    png = render(flow, "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_missing_dot_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("graphviz", reason="graphviz Python package (cli extra) not installed")
    monkeypatch.setattr(diagram.shutil, "which", lambda name: None)
    with pytest.raises(DiagramError, match="'dot' program"):
        render(_flow(), "svg")


def test_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = diagram.importlib.import_module

    def no_graphviz(name: str):
        if name == "graphviz":
            raise ImportError(name)
        return real(name)

    monkeypatch.setattr(diagram.importlib, "import_module", no_graphviz)
    with pytest.raises(DiagramError, match="'graphviz' Python package"):
        render(_flow(), "png")

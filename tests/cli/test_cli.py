"""The ``routilux`` command, through Typer's CliRunner: every command and exit code."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("typer", reason="the command line needs the cli extra (typer, rich)")

from typer.testing import CliRunner  # noqa: E402

from routilux.cli import app  # noqa: E402
from routilux.cli.app import parse_params, routine_catalogue  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ORDERS = ROOT / "examples" / "flows" / "orders.yaml"


def _runner() -> CliRunner:
    """A runner that keeps stderr apart from stdout (click < 8.2 needs asking)."""
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:  # click >= 8.2: always apart (and `output` has both)
        return CliRunner()


runner = _runner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def everything(result) -> str:
    """stdout and stderr of a run (``result.output`` is stdout only on click < 8.2)."""
    return result.stdout + result.stderr


def write(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


FAILING = """\
flow_id: failing
routines:
  split: {class: Splitter}
  boom: {class: Mapper, config: {expression: "data['missing']"}}
connections:
  - {from: split.output, to: boom.input}
"""


# ---------------------------------------------------------------------------
# top level
# ---------------------------------------------------------------------------


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("routilux ")


def test_help_lists_commands_and_examples() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "validate", "graph", "routines", "schema", "jobs"):
        assert command in result.stdout
    assert "routilux run examples/flows/orders.yaml -p n=100" in result.stdout
    for command in ("run", "validate", "graph", "routines", "schema"):
        sub = invoke(command, "--help")
        assert sub.exit_code == 0, command
        assert "Example" in sub.stdout, command


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert result.exit_code in (0, 2)  # click >= 8.2 exits 2 for a group without a command
    assert "Usage" in result.output


# ---------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------


def test_run_orders_plain() -> None:
    result = invoke("run", str(ORDERS), "-p", "n=100")
    assert result.exit_code == 0, result.output
    assert "completed" in result.stdout
    assert "running flow orders from 'make'" in result.stderr
    line = next(x for x in result.stdout.splitlines() if x.strip().startswith("price"))
    assert "done 60" in line and "failed 0" in line


def test_run_json_summary() -> None:
    result = invoke("run", str(ORDERS), "-p", "n=20", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "completed" and data["entry"] == "make"
    assert data["routines"]["number"]["done"] == 20
    kept = sum(1 for i in range(20) if i * 7 % 5 - 1 > 0)
    assert data["routines"]["price"]["done"] == kept
    assert all(r["queued"] == 0 and r["running"] == 0 for r in data["routines"].values())
    assert data["errors"] == []


def test_run_live_display_and_diagram() -> None:
    result = invoke("run", str(ORDERS), "-p", "n=10", "--live", "--diagram")
    assert result.exit_code == 0, result.output
    assert "flowchart LR" in result.stdout and "class r_pack done" in result.stdout


def test_run_failed_job_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, FAILING)
    result = invoke("run", str(path), "-p", "data=[1, 2]", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["status"] == "failed"
    assert data["errors"][0]["routine"] == "boom"
    plain = invoke("run", str(path), "-p", "data=[1]")
    assert plain.exit_code == 1 and "failed" in plain.stdout and "boom" in plain.stdout


def test_run_with_another_entry(tmp_path: Path) -> None:
    result = invoke("run", str(ORDERS), "--entry", "split", "-p", "data=[5, 5]", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["entry"] == "split" and data["routines"]["make"]["done"] == 0
    assert data["routines"]["number"]["done"] == 2


def test_run_timeout_cancels_and_exits_1(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "routines:\n  wait: {class: Debouncer, config: {wait: 30}}\n",
    )
    result = invoke("run", str(path), "-p", "data=1", "--timeout", "0.2", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["timed_out"] is True and data["status"] == "cancelled"


def test_run_ctrl_c_exits_130(tmp_path: Path) -> None:
    import routilux

    @routilux.register_serializable
    class CliCtrlC(routilux.Routine):
        """Its handler is interrupted as if the user pressed Ctrl-C."""

        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", self.take)

        def take(self, **kw: object) -> None:
            raise KeyboardInterrupt

    path = write(
        tmp_path,
        "entry: split\nroutines:\n  split: {class: Splitter}\n  stop: {class: CliCtrlC}\n"
        "connections:\n  - {from: split.output, to: stop.input}\n",
    )
    result = invoke("run", str(path), "-p", "data=[1, 2, 3]")
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.stderr and "paused" in result.stderr
    as_json = invoke("run", str(path), "-p", "data=[1, 2, 3]", "--json")
    assert as_json.exit_code == 130
    data = json.loads(as_json.stdout)
    assert data["interrupted"] is True and data["status"] == "paused"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-p", "n"], "expected key=value"),
        (["-p", "1x=2"], "expected key=value"),
        (["-p", "n=1", "-p", "n=2"], "given twice"),
        (["--entry", "nope"], "no such routine"),
        (["--timeout", "-1"], "positive number"),
        (["--store", "nosuch://x.db"], "cannot tell which store"),
    ],
)
def test_run_bad_usage_exits_2(args: list[str], needle: str) -> None:
    result = invoke("run", str(ORDERS), *args)
    assert result.exit_code == 2
    assert needle in everything(result)


def test_run_bad_file_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "routines:\n  a: {class: Spliter}\n")
    result = invoke("run", str(path))
    assert result.exit_code == 2
    assert "flow.yaml:2:" in result.stderr and "did you mean 'Splitter'" in result.stderr
    missing = invoke("run", str(tmp_path / "absent.yaml"))
    assert missing.exit_code == 2 and "no such file" in missing.stderr


def test_run_entry_without_trigger(tmp_path: Path) -> None:
    pytest.importorskip("routilux")
    import routilux

    @routilux.register_serializable
    class CliNoTrigger(routilux.Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", lambda **kw: None)

    path = write(tmp_path, "routines:\n  a: {class: CliNoTrigger}\n  b: {class: Splitter}\n")
    result = invoke("run", str(path), "--entry", "a")
    assert result.exit_code == 2 and "no 'trigger' slot" in result.stderr
    ambiguous = write(tmp_path, "routines:\n  a: {class: Splitter}\n  b: {class: Splitter}\n")
    result = invoke("run", str(ambiguous))
    assert result.exit_code == 2 and "add 'entry:" in result.stderr


def test_run_import_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"rx_cli_mod_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        "from routilux import Routine\n"
        "class Echo(Routine):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.define_slot('trigger', lambda **kw: self.emit('out', **kw))\n"
        "        self.define_event('out')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write(tmp_path, f"routines:\n  e: {{class: '{name}:Echo'}}\n")
    refused = invoke("run", str(path))
    assert refused.exit_code == 2 and f"--import {name}" in refused.stderr
    assert name not in sys.modules
    allowed = invoke("run", str(path), "--import", name, "-p", "x=1")
    assert allowed.exit_code == 0, allowed.output
    sys.modules.pop(name, None)


def test_parse_params_values() -> None:
    assert parse_params(["n=100", "s=hello", "l=[1, 2]", "b=true", 'q="7"', "e="]) == {
        "n": 100,
        "s": "hello",
        "l": [1, 2],
        "b": True,
        "q": "7",
        "e": "",
    }
    assert parse_params(["x=NaN"]) == {"x": "NaN"}  # not a number: kept as text


# ---------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------


def test_validate_ok() -> None:
    result = invoke("validate", str(ORDERS))
    assert result.exit_code == 0
    assert "ok:" in result.stdout and "6 routines, 5 connections" in result.stdout


def test_validate_warnings_exit_0(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "routines:\n  a: {class: Mapper}\n  b: {class: Mapper}\n  c: {class: Mapper}\n"
        "connections:\n  - {from: a.output, to: b.input}\n  - {from: b.output, to: a.input}\n",
    )
    result = invoke("validate", str(path))
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stdout and "cycle" in result.stdout
    assert "'c' is not connected" in result.stdout


def test_validate_errors_exit_1(tmp_path: Path) -> None:
    good = ORDERS
    bad = write(tmp_path, "routines:\n  a: {class: Splitter, confg: {}}\n")
    result = invoke("validate", str(good), str(bad))
    assert result.exit_code == 1
    assert "ok:" in result.stdout
    assert "flow.yaml:2:24" in result.stdout and "did you mean 'config'" in result.stdout


def test_validate_signature_warning(tmp_path: Path) -> None:
    import routilux

    @routilux.register_serializable
    class CliTwoArgs(routilux.Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", self.take)

        def take(self, a: int, b: int) -> None:
            pass

    path = write(
        tmp_path,
        "entry: s\nroutines:\n  s: {class: Splitter}\n  t: {class: CliTwoArgs}\n"
        "connections:\n  - {from: s.output, to: t.input}\n",
    )
    result = invoke("validate", str(path))
    assert result.exit_code == 0
    assert "warning:" in result.stdout and "connections[0]" in result.stdout


# ---------------------------------------------------------------------------
# graph
# ---------------------------------------------------------------------------


def test_graph_mermaid_and_dot(tmp_path: Path) -> None:
    result = invoke("graph", str(ORDERS))
    assert result.exit_code == 0
    assert result.stdout.startswith("flowchart LR")
    assert "(index→data)" in result.stdout
    down = invoke("graph", str(ORDERS), "--direction", "TB")
    assert down.exit_code == 0 and down.stdout.startswith("flowchart TB")
    dot = invoke("graph", str(ORDERS), "--format", "dot")
    assert dot.exit_code == 0 and dot.stdout.startswith('digraph "orders"')
    out = tmp_path / "o.mmd"
    written = invoke("graph", str(ORDERS), "-o", str(out))
    assert written.exit_code == 0 and out.read_text().startswith("flowchart LR")
    assert "wrote" in written.stderr


def test_graph_svg(tmp_path: Path) -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot program is not installed (apt-get install graphviz)")
    pytest.importorskip("graphviz", reason="the graphviz package (cli extra)")
    out = tmp_path / "orders.svg"
    result = invoke("graph", str(ORDERS), "--format", "svg", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "<svg" in out.read_text()
    piped = invoke("graph", str(ORDERS), "--format", "svg")
    assert piped.exit_code == 0 and "<svg" in piped.stdout


def test_graph_missing_renderer_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    from routilux.flow import diagram

    monkeypatch.setattr(diagram.shutil, "which", lambda name: None)
    pytest.importorskip("graphviz", reason="the graphviz package (cli extra)")
    result = invoke("graph", str(ORDERS), "--format", "png", "-o", "/dev/null")
    assert result.exit_code == 1 and "'dot' program" in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--format", "gif"], "choose one of"),
        (["--direction", "up"], "unknown diagram direction"),
        (["--job", "x"], "go together"),
        (["--job", "x", "--store", "nosuch://j.db"], "cannot tell which store"),
    ],
)
def test_graph_bad_usage(args: list[str], needle: str) -> None:
    result = invoke("graph", str(ORDERS), *args)
    assert result.exit_code == 2 and needle in everything(result)


# ---------------------------------------------------------------------------
# routines, schema, jobs
# ---------------------------------------------------------------------------


def test_routines_table_and_json() -> None:
    result = invoke("routines")
    assert result.exit_code == 0
    assert "Splitter" in result.stdout and "batch_size" in result.stdout
    data = json.loads(invoke("routines", "--json").stdout)
    by_name = {entry["class"]: entry for entry in data}
    assert by_name["Filter"]["slots"] == ["input", "trigger"]
    assert by_name["Filter"]["events"] == ["output", "rejected"]
    assert by_name["Filter"]["config"] == ["condition"]
    assert "Routine" not in by_name


def test_routines_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"rx_cli_reg_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        "from routilux import Routine, register_serializable\n"
        "@register_serializable\n"
        "class CliListed(Routine):\n"
        "    config_schema = {'level': int}\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.define_slot('trigger')\n"
        "        self.define_event('out', ['x'])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke("routines", "--import", name, "--json")
    assert result.exit_code == 0, result.output
    entry = next(e for e in json.loads(result.stdout) if e["class"] == "CliListed")
    assert entry == {
        "class": "CliListed",
        "module": name,
        "slots": ["trigger"],
        "events": ["out"],
        "config": ["level"],
    }
    sys.modules.pop(name, None)
    missing = invoke("routines", "--import", "rx_no_such_module_anywhere")
    assert missing.exit_code == 2 and "ModuleNotFoundError" in missing.stderr


def test_catalogue_reports_unbuildable_classes() -> None:
    import routilux

    @routilux.register_serializable
    class CliBroken(routilux.Routine):
        def __init__(self) -> None:
            raise RuntimeError("no")

    entry = next(e for e in routine_catalogue() if e["class"] == "CliBroken")
    assert "RuntimeError: no" in entry["problem"]


def test_schema(tmp_path: Path) -> None:
    result = invoke("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "Routilux flow file"
    out = tmp_path / "s.json"
    assert invoke("schema", "-o", str(out)).exit_code == 0
    assert json.loads(out.read_text()) == schema


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["show", "j1"],
        ["resume", "j1", "flow.yaml"],
        ["cancel", "j1"],
        ["input", "j1", "routine", "slot", "--data", "{}"],
    ],
)
def test_jobs_need_the_store(args: list[str]) -> None:
    assert invoke("jobs", *args).exit_code == 2  # --store is required


def test_jobs_input_refuses_data_that_is_not_a_json_object() -> None:
    result = invoke("jobs", "input", "j1", "r", "s", "--data", "[1]", "--store", "sqlite:///j.db")
    assert result.exit_code == 2
    assert "--data must be a JSON object" in result.stderr


def test_module_entry_point() -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "routilux.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith("routilux ")

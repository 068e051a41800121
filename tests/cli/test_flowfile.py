"""Flow files: reading, writing, round trips, errors with file/line/column, the import
allow-list, and the JSON Schema."""

from __future__ import annotations

import json
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import routilux
from routilux import ErrorStrategy, Flow, RoutiluxWarning, Routine
from routilux.builtin_routines import Filter, Mapper, Splitter
from routilux.flowfile import (
    FlowFileError,
    flow_file_schema,
    flow_from_dict,
    flow_to_dict,
    load_flow,
    project_imports,
    read_flow_file,
    save_flow,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "flows").glob("*.y*ml")) + sorted(
    (ROOT / "examples" / "flows").glob("*.json")
)

ISSUE_SHAPE = """\
flow_id: orders
execution: {strategy: concurrent, max_workers: 4, timeout: 60}
routines:
  split:  {class: Splitter}
  keep:   {class: Filter, config: {condition: "data['qty'] > 0"}}
  price:  {class: %(module)s:PriceLookup, error_handler: {strategy: retry, max_retries: 3}}
connections:
  - {from: split.output, to: keep.input}
  - {from: keep.output, to: price.input, param_mapping: {data: item}}
"""

PRICE_MODULE = """\
from routilux import Routine

IMPORTED = True

class PriceLookup(Routine):
    def __init__(self):
        super().__init__()
        self.define_slot("input", self.on_item)
        self.define_event("output", ["priced"])

    def on_item(self, item, **extra):
        self.emit("output", priced={**item, "price": item["qty"] * 2})
"""


def write(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def price_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A throwaway module (unique name) on sys.path, not imported yet."""
    name = f"rx_prices_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(PRICE_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def test_the_issue_shape_loads_and_runs(tmp_path: Path, price_module: str) -> None:
    path = write(tmp_path, ISSUE_SHAPE % {"module": price_module})
    file = read_flow_file(path, allow_imports=[price_module])
    flow = file.flow
    assert flow.flow_id == "orders"
    assert flow.execution_strategy == "concurrent" and flow.max_workers == 4
    assert file.timeout == 60.0
    assert isinstance(flow.routines["keep"], Filter)
    assert flow.routines["keep"].get_config("condition") == "data['qty'] > 0"
    handler = flow.routines["price"].get_error_handler()
    assert handler.strategy is ErrorStrategy.RETRY and handler.max_retries == 3
    assert [c.param_mapping for c in flow.connections] == [{}, {"data": "item"}]
    assert file.default_entry() == "split"
    job = flow.execute("split", {"data": [{"qty": 2}, {"qty": 0}, {"qty": 5}]}, timeout=10)
    assert job.status == "completed"
    prices = [r.data["priced"]["price"] for r in job.get_execution_history("price")]
    assert sorted(prices) == [4, 10]


def test_example_files_load_validate_and_run() -> None:
    assert EXAMPLES, "examples/flows has no flow file"
    for path in EXAMPLES:
        file = read_flow_file(path)
        assert file.flow.validate().ok, path
        entry = file.default_entry()
        job = file.flow.execute(entry, {"n": 10}, timeout=30)
        assert job.status == "completed", (path, job.status)


def test_orders_example_counts() -> None:
    file = read_flow_file(ROOT / "examples" / "flows" / "orders.yaml")
    job = file.flow.execute(file.default_entry(), {"n": 100}, timeout=30)
    assert job.status == "completed"
    batches = [r.data for r in job.get_execution_history("pack")]
    kept = sum(b["size"] for b in batches)
    # qty = i*7 % 5 - 1 is positive for three residues out of five.
    assert kept == sum(1 for i in range(100) if i * 7 % 5 - 1 > 0) == 60


def test_json_file(tmp_path: Path) -> None:
    data = {
        "flow_id": "j",
        "routines": {"split": {"class": "Splitter"}, "double": {"class": "Mapper"}},
        "connections": [{"from": "split.output", "to": "double.input"}],
    }
    data["routines"]["double"]["config"] = {"expression": "data * 2"}
    path = write(tmp_path, json.dumps(data), "flow.json")
    flow = load_flow(path)
    job = flow.execute("split", {"data": [1, 2]})
    assert [r.data["data"] for r in job.get_execution_history("double")] == [2, 4]


def test_flow_from_dict_defaults() -> None:
    file = flow_from_dict({"routines": {"only": {"class": "Splitter"}}})
    assert file.entry is None and file.timeout is None
    assert file.flow.execution_strategy == "sequential"
    assert file.default_entry() == "only"


def test_registered_user_class(tmp_path: Path) -> None:
    @routilux.register_serializable
    class FlowFileEcho(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", lambda **kw: self.emit("out", **kw))
            self.define_event("out")

    path = write(tmp_path, "routines:\n  echo: {class: FlowFileEcho, config: {x: [1, 2]}}\n")
    flow = load_flow(path)
    assert type(flow.routines["echo"]) is FlowFileEcho
    assert flow.routines["echo"].get_config("x") == [1, 2]


# ---------------------------------------------------------------------------
# Writing and round trips
# ---------------------------------------------------------------------------


def _built_flow() -> Flow:
    flow = Flow("trip", execution_strategy="concurrent", max_workers=3, max_deliveries=500)
    flow.set_error_handler(routilux.ErrorHandler(strategy="continue"))
    split, keep, double = Splitter(), Filter(), Mapper()
    keep.set_config(condition="data > 1")
    double.set_config(expression="data * 2")
    double.set_error_handler(
        routilux.ErrorHandler(strategy="retry", max_retries=2, retryable_exceptions=(KeyError,))
    )
    flow.add_routine(split, "split")
    flow.add_routine(keep, "keep")
    flow.add_routine(double, "double")
    flow.connect("split", "output", "keep", "input")
    flow.connect("keep", "output", "double", "input", {"data": "data"})
    return flow


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    flow = _built_flow()
    path = tmp_path / f"trip{suffix}"
    save_flow(flow, path, entry="split", timeout=5)
    file = read_flow_file(path)
    assert file.entry == "split" and file.timeout == 5.0
    again = file.flow
    assert flow_to_dict(again, entry="split", timeout=5) == flow_to_dict(
        flow, entry="split", timeout=5
    )
    handler = again.routines["double"].get_error_handler()
    assert handler.retryable_exceptions == (KeyError,) and handler.max_retries == 2
    job = again.execute("split", {"data": [1, 2, 3]})
    assert sorted(r.data["data"] for r in job.get_execution_history("double")) == [4, 6]


def test_only_changed_config_is_written() -> None:
    data = flow_to_dict(_built_flow())
    assert data["routines"]["split"] == {"class": "Splitter"}
    assert data["routines"]["keep"]["config"] == {"condition": "data > 1"}


def test_callable_config_cannot_be_written(tmp_path: Path) -> None:
    flow = Flow("c")
    keep = Filter()
    keep.set_config(condition=lambda item: item > 1)
    flow.add_routine(keep, "keep")
    with pytest.raises(FlowFileError, match=r"routines\.keep\.config\.condition.*data only"):
        save_flow(flow, tmp_path / "c.yaml")


def test_unknown_suffix_refused(tmp_path: Path) -> None:
    with pytest.raises(FlowFileError, match="use .yaml, .yml or .json"):
        save_flow(_built_flow(), tmp_path / "flow.txt")


# ---------------------------------------------------------------------------
# Errors name the file, line, column and key path
# ---------------------------------------------------------------------------


def test_unknown_key_did_you_mean_with_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        flow_id: x
        routines:
          keep:
            class: Filter
            confg: {condition: "data"}
        """,
    )
    with pytest.raises(FlowFileError) as info:
        load_flow(path)
    err = info.value
    assert (err.line, err.column) == (5, 5)
    assert err.key_path == "routines.keep.confg"
    assert str(err).startswith(f"{path}:5:5: routines.keep.confg: unknown key 'confg'")
    assert "did you mean 'config'?" in str(err)


@pytest.mark.parametrize(
    ("text", "where", "needle"),
    [
        ("routines: {a: {class: Spliter}}\n", "1:23: routines.a.class", "did you mean 'Splitter'"),
        ("executoin: {}\nroutines: {a: {class: Splitter}}\n", "1:1: executoin", "'execution'"),
        (
            "execution: {max_workers: 100000}\nroutines: {a: {class: Splitter}}\n",
            "1:26: execution.max_workers",
            "from 1 to 256",
        ),
        (
            "execution: {max_workers: true}\nroutines: {a: {class: Splitter}}\n",
            "execution.max_workers",
            "bool True",
        ),
        (
            "execution: {timeout: .nan}\nroutines: {a: {class: Splitter}}\n",
            "execution.timeout",
            "finite number",
        ),
        (
            "execution: {strategy: concurent}\nroutines: {a: {class: Splitter}}\n",
            "execution.strategy",
            "did you mean 'concurrent'",
        ),
        (
            "execution: {history_limit: 0}\nroutines: {a: {class: Splitter}}\n",
            "execution.history_limit",
            "from 1 to",
        ),
        (
            "routines:\n  a: {class: Batcher, config: {batch_size: 0}}\n",
            "2:44: routines.a.config.batch_size",
            "batch_size",
        ),
        (
            "routines:\n  a: {class: Batcher, config: {batch_sise: 5}}\n",
            "routines.a.config.batch_sise",
            "did you mean 'batch_size'",
        ),
        (
            "routines:\n  a: {class: Filter, config: {condition: 'data['}}\n",
            "routines.a.config.condition",
            "not a valid expression",
        ),
        (
            "routines:\n  a: {class: Filter, error_handler: {max_retries: 5000}}\n",
            "routines.a.error_handler.max_retries",
            "from 0 to 1,000",
        ),
        (
            "routines:\n  a: {class: Filter, error_handler: {retry_delay: -1}}\n",
            "routines.a.error_handler.retry_delay",
            "finite number",
        ),
        (
            "routines:\n  a: {class: Splitter}\nconnections:\n  - {from: a.outptu, to: a.input}\n",
            "4:12: connections[0].from",
            "did you mean 'output'",
        ),
        (
            "routines:\n  a: {class: Splitter}\nconnections:\n  - {from: a.output, to: b.input}\n",
            "connections[0].to",
            "no routine 'b'",
        ),
        (
            "routines:\n  a: {class: Splitter}\nconnections:\n  - {from: a.output}\n",
            "connections[0]",
            "needs 'to'",
        ),
        ("routines:\n  a: {class: Splitter}\nentry: b\n", "3:8: entry", "no routine 'b'"),
        ("routines:\n  a: {class: Splitter}\n  a: {class: Filter}\n", "3:3", "duplicate key"),
        ("routines:\n  a.b: {class: Splitter}\n", "routines.a.b", "routine id"),
        ("routines: {}\n", "routines", "at least one routine"),
        ("- 1\n", "", "must be a mapping"),
        ("routines: [\n", "", "not valid YAML"),
        ("routines:\n  a: {class: Mapper, config: {expression: 2020-01-01}}\n", "", "plain"),
    ],
)
def test_errors(tmp_path: Path, text: str, where: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(FlowFileError) as info:
        load_flow(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert where in message, message
    assert needle in message, message


def test_json_errors_name_the_key_path(tmp_path: Path) -> None:
    path = write(tmp_path, '{"routines": {"a": {"class": "Splitter", "cfg": {}}}}', "f.json")
    with pytest.raises(FlowFileError, match=r"f\.json: routines\.a\.cfg: unknown key"):
        load_flow(path)
    path = write(tmp_path, '{"routines": {"a": 1}, "routines": {}}', "g.json")
    with pytest.raises(FlowFileError, match="not valid JSON"):
        load_flow(path)


def test_missing_and_huge_files(tmp_path: Path) -> None:
    with pytest.raises(FlowFileError, match="no such file"):
        load_flow(tmp_path / "absent.yaml")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (11 * 1024 * 1024))
    with pytest.raises(FlowFileError, match="larger than 10 MiB"):
        load_flow(big)


def test_alias_bomb_is_bounded(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("routines: {a: {class: Mapper, config: {expression: 'data'}}}")
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(FlowFileError, match="expands to more than"):
        load_flow(path)


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    deep = "[" * 70 + "]" * 70
    path = write(tmp_path, f"routines:\n  a: {{class: Mapper, config: {{expression: {deep}}}}}\n")
    with pytest.raises(FlowFileError, match="nested more than 64 levels"):
        load_flow(path)
    deeper = "[" * 100_000
    path = write(tmp_path, f"routines: {deeper}\n")
    with pytest.raises(FlowFileError):
        load_flow(path)


def test_signature_warning_names_the_connection(tmp_path: Path) -> None:
    @routilux.register_serializable
    class FlowFileStrictTaker(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", self.take)

        def take(self, a: int, b: int) -> None:
            pass

    path = write(
        tmp_path,
        "routines:\n  s: {class: Splitter}\n  t: {class: FlowFileStrictTaker}\n"
        "connections:\n  - {from: s.output, to: t.input}\n",
    )
    with pytest.warns(RoutiluxWarning, match=r"flow\.yaml:5:5: connections\[0\]"):
        file = read_flow_file(path)
    assert len(file.warnings) == 1


# ---------------------------------------------------------------------------
# The import allow-list: a file never chooses what gets imported
# ---------------------------------------------------------------------------


def test_unlisted_module_is_not_imported(tmp_path: Path, price_module: str) -> None:
    path = write(tmp_path, ISSUE_SHAPE % {"module": price_module})
    assert price_module not in sys.modules
    with pytest.raises(FlowFileError) as info:
        load_flow(path)
    assert price_module not in sys.modules
    message = str(info.value)
    assert f"allow_imports=['{price_module}']" in message
    assert f"--import {price_module}" in message and "[tool.routilux]" in message
    assert "routines.price.class" in message and ":6:" in message
    # Allowing another module (even a prefix of the name) does not help.
    with pytest.raises(FlowFileError):
        load_flow(path, allow_imports=[price_module[:-1], "os"])
    assert price_module not in sys.modules


def test_os_system_imports_nothing(tmp_path: Path) -> None:
    load_flow(write(tmp_path, "routines: {a: {class: Splitter}}\n", "warm.yaml"))  # lazy imports
    before = set(sys.modules)
    path = write(tmp_path, "routines:\n  boom: {class: 'os:system'}\n")
    with pytest.raises(FlowFileError, match="module 'os' is not allowed"):
        load_flow(path)
    path = write(tmp_path, "routines:\n  boom: {class: 'ftplib:FTP'}\n")
    with pytest.raises(FlowFileError, match="module 'ftplib' is not allowed"):
        load_flow(path)
    assert set(sys.modules) == before
    # Even when allowed, a function is not a Routine class and is never called.
    path = write(tmp_path, "routines:\n  boom: {class: 'os:system'}\n")
    with pytest.raises(FlowFileError, match="is not a Routine class"):
        load_flow(path, allow_imports=["os"])


@pytest.mark.parametrize(
    "value",
    [
        "!!python/object/apply:os.system [echo owned]",
        "!!python/name:os.system",
        "!!python/object:os.PathLike {}",
        "!!set {a, b}",
        "!custom {a: 1}",
    ],
)
def test_yaml_tags_build_nothing(tmp_path: Path, value: str) -> None:
    text = f"routines:\n  a:\n    class: Mapper\n    config:\n      expression: {value}\n"
    path = write(tmp_path, text)
    with pytest.raises(
        FlowFileError, match=r"flow\.yaml:5:.*routines\.a\.config\.expression: .*tag"
    ):
        load_flow(path)


def test_dotted_name_without_colon_is_only_a_registry_name(
    tmp_path: Path, price_module: str
) -> None:
    path = write(tmp_path, f"routines:\n  p: {{class: {price_module}.PriceLookup}}\n")
    with pytest.raises(FlowFileError, match="is registered"):
        load_flow(path, allow_imports=[price_module])
    assert price_module not in sys.modules


def test_project_pyproject_allows_imports(
    tmp_path: Path, price_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "flows").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "x"\n\n[tool.routilux]\nimports = ["{price_module}"]\n'
    )
    path = write(project / "flows", ISSUE_SHAPE % {"module": price_module})
    monkeypatch.chdir(project / "flows")
    assert project_imports() == (price_module,)
    flow = load_flow(path)
    assert price_module in sys.modules
    assert type(flow.routines["price"]).__name__ == "PriceLookup"
    sys.modules.pop(price_module)
    with pytest.raises(FlowFileError, match="not allowed"):
        load_flow(path, use_project_imports=False)
    assert price_module not in sys.modules


def test_bad_pyproject_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.routilux]\nimport = ['x']\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FlowFileError, match="did you mean 'imports'"):
        project_imports()
    (tmp_path / "pyproject.toml").write_text("[tool.routilux]\nimports = ['os; rm']\n")
    with pytest.raises(FlowFileError, match="list of module names"):
        project_imports()


def test_bad_allow_imports_argument(tmp_path: Path) -> None:
    path = write(tmp_path, "routines: {a: {class: Splitter}}\n")
    with pytest.raises(FlowFileError, match="not a module name"):
        load_flow(path, allow_imports=["../evil"])


# ---------------------------------------------------------------------------
# JSON Schema
# ---------------------------------------------------------------------------


def test_schema_accepts_the_examples_and_refuses_bad_files() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the dev extra")
    import yaml

    schema = flow_file_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in EXAMPLES:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        errors = [e.message for e in validator.iter_errors(data)]
        assert errors == [], (path, errors)
    issue = yaml.safe_load(ISSUE_SHAPE % {"module": "myapp.routines"})
    assert not list(validator.iter_errors(issue))
    for bad in (
        {"routines": {"a": {"class": "Splitter", "confg": {}}}},
        {"routines": {"a": {"class": "Splitter"}}, "execution": {"max_workers": 0}},
        {"routines": {}},
        {"routines": {"a": {"class": "Splitter"}}, "connections": [{"from": "a"}]},
    ):
        assert list(validator.iter_errors(bad)), bad


def test_schema_and_reader_know_the_same_keys() -> None:
    from routilux import flowfile

    schema = flow_file_schema()
    assert tuple(schema["properties"]) == flowfile.TOP_KEYS
    assert tuple(schema["properties"]["execution"]["properties"]) == flowfile.EXECUTION_KEYS
    routine = schema["properties"]["routines"]["additionalProperties"]
    assert tuple(routine["properties"]) == flowfile.ROUTINE_KEYS
    assert tuple(routine["properties"]["error_handler"]["properties"]) == (
        flowfile.ERROR_HANDLER_KEYS
    )
    connection = schema["properties"]["connections"]["items"]
    assert tuple(connection["properties"]) == flowfile.CONNECTION_KEYS


def test_no_warning_for_a_clean_file(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_flow_file(ROOT / "examples" / "flows" / "orders.yaml")

"""The import graph of ``routilux`` runs one way: down the layers (docs/architecture.md).

Every module of ``src/routilux`` is read with :mod:`ast`, nothing is imported. An import
counts wherever it is written -- at module level, inside a function, a class or a ``try``
-- except under ``if TYPE_CHECKING:``, which never runs. Relative imports are resolved;
``from package import name`` counts as an import of the submodule ``package.name`` when
there is one. The implicit import of a parent package is not counted: Python runs a
package's ``__init__`` before its submodules, so counting it would turn every package
that re-exports its own submodules into a cycle.

Two rules (DESIGN.md, "Layers"): no import cycle, and no module imports a module of a
higher layer. Every module has to be placed in :data:`LAYERS`; the table in
``docs/architecture.md`` must say the same.

Imports under ``if TYPE_CHECKING:`` never run, but they still tie a module to what it
names: a lower module that names an upper class for an annotation says what it needs
of it with a small :class:`typing.Protocol` of its own instead. With them counted, the
same two rules hold but for the few imports in :data:`TYPE_ONLY_EXCEPTIONS`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "src" / "routilux"
ARCHITECTURE_DOC = ROOT / "docs" / "architecture.md"

# Highest layer first. A pattern is a module name, or ``name.*`` for a package and all
# of its submodules. Some layers are still empty: they say where new code goes.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("public API", ("routilux",)),
    (
        "integrations",
        (
            "routilux.cli.*",
            "routilux.flowfile.*",
            "routilux.otel",
            "routilux.celery",
            "routilux.ui.*",
        ),
    ),
    ("batteries", ("routilux.builtin_routines.*",)),
    ("layouts", ("routilux.persistence",)),
    (
        "definition",
        (
            "routilux.routine",
            "routilux.slot",
            "routilux.event",
            "routilux.connection",
            "routilux.flow.*",
        ),
    ),
    ("engine", ("routilux.engine.*",)),
    ("durability", ("routilux.store.*",)),
    (
        "plug-in points",
        (
            "routilux.hooks",
            "routilux.execution_tracker",
            "routilux.output_handler",
            "routilux.streaming",
            "routilux.logs",
        ),
    ),
    ("policies", ("routilux.error_handler",)),
    ("state", ("routilux.job_state", "routilux.changes", "routilux.inputs", "routilux._context")),
    ("codec", ("routilux.serialization", "routilux.jsontext", "routilux.exceptions")),
)

#: Type-only imports (under ``TYPE_CHECKING``) that still run up the layers or close a
#: loop, each with why it stays. The graph with every import counted but these has no
#: cycle and no upward import; an entry that is no longer needed fails the test too.
TYPE_ONLY_EXCEPTIONS: dict[tuple[str, str], str] = {
    # The engine reads the job a thread serves back as its own JobRun.
    ("routilux.engine.context", "routilux.engine.run"): "current_run gives the engine a JobRun",
    # A JobRun's parts are handed the run that owns them and call back into it.
    ("routilux.engine.scheduling", "routilux.engine.run"): "the timers belong to one run",
    ("routilux.engine.runner", "routilux.engine.journal"): "the runner keeps the journals",
    # A run is started by, and reports to, its flow.
    ("routilux.engine.run", "routilux.flow.flow"): "JobRun.flow is the flow that runs it",
    # The definition classes refer to each other in their annotations.
    ("routilux.slot", "routilux.event"): "a slot knows the events connected to it",
    ("routilux.slot", "routilux.routine"): "a slot belongs to a routine",
    ("routilux.event", "routilux.routine"): "an event belongs to a routine",
    ("routilux.routine", "routilux.flow.flow"): "a routine is told the flow it runs in",
    ("routilux.flow.recovery", "routilux.flow.flow"): "recovery acts for a Flow",
}


# ---------------------------------------------------------------------------
# Reading the graph
# ---------------------------------------------------------------------------


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``package_dir``."""
    base = package_dir.parent
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imports(node: ast.AST, type_checking: bool = False) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node`` that can run (not under TYPE_CHECKING), and
    with ``type_checking`` those under TYPE_CHECKING too."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test) and not type_checking:
        children: Iterable[ast.AST] = node.orelse
    else:
        children = ast.iter_child_nodes(node)
    for child in children:
        yield from _imports(child, type_checking)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts.pop()  # a module's relative imports start at its package
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    if node.module:
        parts.append(node.module)
    return ".".join(parts)


def import_graph(package_dir: Path, type_checking: bool = False) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports at run time (with
    ``type_checking``: also under ``if TYPE_CHECKING:``)."""
    files = module_files(package_dir)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in _imports(tree, type_checking):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = _resolve(module, is_package, node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in files else base)
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def layer_of(module: str, layers: Iterable[tuple[str, tuple[str, ...]]] = LAYERS) -> int | None:
    """Rank of ``module`` (0 = lowest layer), or None when no pattern places it."""
    table = list(layers)
    for position, (_, patterns) in enumerate(table):
        for pattern in patterns:
            if pattern.endswith(".*"):
                package = pattern[:-2]
                matches = module == package or module.startswith(package + ".")
            else:
                matches = module == pattern
            if matches:
                return len(table) - 1 - position
    return None


def upward_imports(
    graph: Mapping[str, Iterable[str]],
    layers: Iterable[tuple[str, tuple[str, ...]]] = LAYERS,
) -> list[str]:
    """``"a (layer) -> b (higher layer)"`` for every import that runs up the table."""
    table = list(layers)
    names = [name for name, _ in reversed(table)]
    problems = []
    for module in sorted(graph):
        own = layer_of(module, table)
        for target in sorted(graph[module]):
            theirs = layer_of(target, table)
            if own is not None and theirs is not None and theirs > own:
                problems.append(f"{module} ({names[own]}) -> {target} ({names[theirs]})")
    return problems


# ---------------------------------------------------------------------------
# The rules, on routilux itself
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE_DIR)


def test_every_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    unplaced = sorted(module for module in graph if layer_of(module) is None)
    assert not unplaced, (
        f"modules not placed in a layer: {unplaced}; add them to LAYERS here and to the "
        f"table in docs/architecture.md"
    )


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    found = cycles(graph)
    assert not found, "import cycles (function-level imports included):\n" + "\n".join(
        " <-> ".join(component) for component in found
    )


def test_no_module_imports_a_higher_layer(graph: dict[str, set[str]]) -> None:
    problems = upward_imports(graph)
    assert not problems, "imports running up the layers:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def whole_graph() -> dict[str, set[str]]:
    """Every import, type-only ones included, but the listed exceptions."""
    graph = import_graph(PACKAGE_DIR, type_checking=True)
    for module, target in TYPE_ONLY_EXCEPTIONS:
        graph.get(module, set()).discard(target)
    return graph


def test_type_only_imports_keep_the_rules_too(whole_graph: dict[str, set[str]]) -> None:
    found = cycles(whole_graph)
    problems = upward_imports(whole_graph)
    assert not found and not problems, (
        "counting TYPE_CHECKING imports, import cycles:\n"
        + "\n".join(" <-> ".join(component) for component in found)
        + "\nand imports running up the layers:\n"
        + "\n".join(problems)
        + "\n(a lower module names what it needs of an upper one with a Protocol of its own)"
    )


def test_every_type_only_exception_is_still_needed() -> None:
    everything = import_graph(PACKAGE_DIR, type_checking=True)
    at_run_time = import_graph(PACKAGE_DIR)
    stale = [
        f"{module} -> {target}"
        for module, target in TYPE_ONLY_EXCEPTIONS
        if target not in everything.get(module, set()) or target in at_run_time.get(module, set())
    ]
    assert not stale, f"exceptions that are no type-only import any more: {stale}"


def _documented_layers(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """The rows of the first table in ``text`` whose header has a ``layer`` column:
    (layer name, the backquoted module patterns of its ``modules`` column)."""
    rows: list[tuple[str, tuple[str, ...]]] = []
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            if rows:
                break
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = [cell.lower() for cell in cells]
            continue
        if "layer" not in header or "modules" not in header or set(line) <= set("|-: "):
            continue
        layer = cells[header.index("layer")]
        modules = tuple(re.findall(r"`([^`]+)`", cells[header.index("modules")]))
        rows.append((layer, modules))
    return rows


def test_architecture_doc_lists_the_same_layers() -> None:
    documented = _documented_layers(ARCHITECTURE_DOC.read_text(encoding="utf-8"))
    assert documented == list(LAYERS)


# ---------------------------------------------------------------------------
# The checker itself, on a small made-up package
# ---------------------------------------------------------------------------


def _write(root: Path, files: Mapping[str, str]) -> Path:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return root / "pkg"


def test_checker_sees_function_level_and_relative_imports_but_not_type_checking(
    tmp_path: Path,
) -> None:
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .low import thing\n",
            "pkg/low.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from .high import Never\n"
                "else:\n"
                "    import pkg.sub.deep\n"
                "def f():\n"
                "    from .high import x\n"
                "thing = 1\n"
            ),
            "pkg/high.py": "from . import low\nx = 1\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/deep.py": "from .. import high\nfrom ..sub import deep\n",
        },
    )
    graph = import_graph(package)
    assert graph == {
        "pkg": {"pkg.low"},
        "pkg.low": {"pkg.high", "pkg.sub.deep"},
        "pkg.high": {"pkg.low"},
        "pkg.sub": set(),
        "pkg.sub.deep": {"pkg.high"},
    }
    assert cycles(graph) == [["pkg.high", "pkg.low", "pkg.sub.deep"]]
    # Counting type-only imports too adds what TYPE_CHECKING names (``.high``) and
    # keeps what its ``else`` imports.
    package_tc = _write(
        tmp_path / "tc",
        {
            "pkg/__init__.py": "",
            "pkg/low.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from .high import Never\n"
                "else:\n"
                "    from . import other\n"
            ),
            "pkg/high.py": "from . import low\n",
            "pkg/other.py": "",
        },
    )
    assert import_graph(package_tc)["pkg.low"] == {"pkg.other"}
    whole = import_graph(package_tc, type_checking=True)
    assert whole["pkg.low"] == {"pkg.high", "pkg.other"}
    assert cycles(whole) == [["pkg.high", "pkg.low"]]
    layers = (("top", ("pkg",)), ("high", ("pkg.high", "pkg.sub.*")), ("low", ("pkg.low",)))
    assert upward_imports(graph, layers) == [
        "pkg.low (low) -> pkg.high (high)",
        "pkg.low (low) -> pkg.sub.deep (high)",
    ]
    assert layer_of("pkg.sub", layers) == 1
    assert layer_of("pkg.other", layers) is None


def test_doc_table_reader() -> None:
    text = (
        "intro\n\n| rank | layer | modules | knows |\n|---|---|---|---|\n"
        "| 2 | top | `a` | all |\n| 1 | low | `a.b`, `a.c.*` | none |\n\nafter\n"
    )
    assert _documented_layers(text) == [("top", ("a",)), ("low", ("a.b", "a.c.*"))]

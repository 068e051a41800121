"""The docs site: every page is in the nav, the new pages' Python examples run, the
front-page picture shows the example flow, and the CLI reference covers every command."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def _nav_pages(nav: list) -> list[str]:
    pages = []
    for item in nav:
        for value in item.values() if isinstance(item, dict) else [item]:
            pages.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return pages


def test_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["strict"] is True
    in_nav = set(_nav_pages(config["nav"]))
    pages = {p.name for p in DOCS.glob("*.md") if not p.name.startswith("_")}
    assert pages == in_nav, (pages - in_nav, in_nav - pages)
    assert config["theme"]["font"] is False  # no web fonts: readable offline


@pytest.mark.parametrize("page", ["getting-started.md", "flow-files.md"])
def test_page_examples_run(page: str, tmp_path: Path) -> None:
    code = "\n".join(textwrap.dedent(b) for b in BLOCK.findall((DOCS / page).read_text()))
    assert code, f"{page} has no python examples"
    (tmp_path / "examples" / "flows").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "flows" / "orders.yaml", tmp_path / "examples" / "flows")
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_front_page_picture_is_the_example_flow() -> None:
    index = (DOCS / "index.md").read_text()
    assert "](assets/orders.svg)" in index
    svg = (DOCS / "assets" / "orders.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    routines = yaml.safe_load((ROOT / "examples" / "flows" / "orders.yaml").read_text())
    for rid in routines["routines"]:
        assert f"<title>r_{rid}</title>" in svg, rid


def test_cli_reference_covers_every_command() -> None:
    pytest.importorskip("typer")
    from typer.main import get_command

    from routilux.cli import app

    text = (DOCS / "cli.md").read_text()
    group = get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert f"`routilux {name}`" in text, name
        for sub in getattr(command, "commands", {}):
            assert f"routilux {name} {sub}" in text, (name, sub)

"""The Python examples of the docs pages run as written.

Each page's blocks run in order as one program (later blocks build on earlier
ones).  docs/persistence.md is a two-process story: its first block is the
module ``approval.py``, the second runs in one process and the third in another.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def blocks(page: str) -> list[str]:
    return [textwrap.dedent(b) for b in BLOCK.findall((DOCS / page).read_text())]


def run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize(
    "page",
    ["concurrency.md", "error-handling.md", "builtin-routines.md", "hooks.md", "observability.md"],
)
def test_page_examples_run(page: str, tmp_path: Path) -> None:
    assert blocks(page), f"{page} has no python examples"
    code = "\n".join(blocks(page))
    result = run(code, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


def test_persistence_story_runs_in_two_processes(tmp_path: Path) -> None:
    module, first, second = blocks("persistence.md")[:3]  # the Security example: its own test
    (tmp_path / "approval.py").write_text(module)
    paused = run(first, tmp_path)
    assert paused.returncode == 0, paused.stderr[-2000:]
    assert (tmp_path / "orders-job.json").exists()
    resumed = run(second, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "['A-2', 'A-1', 'A-3'] 5140" in resumed.stdout

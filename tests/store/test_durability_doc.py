"""The first example of docs/durability.md runs as written, in a fresh process."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "durability.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def test_first_example_runs(tmp_path: Path) -> None:
    code = textwrap.dedent(BLOCK.findall(PAGE.read_text())[0])
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "running" in result.stdout
    assert (tmp_path / "jobs.db").exists()

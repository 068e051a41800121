"""The Security example of docs/persistence.md runs as written (issue 9, item 1).

The page's first three python blocks are the two-process story run by
``test_docs_examples.py``; the blocks after them show ``register_function`` and a
refused file, and run here as one program in a fresh interpreter.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "persistence.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)  # as test_docs_examples.py


def blocks() -> list[str]:
    return [textwrap.dedent(b) for b in BLOCK.findall(PAGE.read_text(encoding="utf-8"))]


def test_security_example_runs(tmp_path: Path) -> None:
    rest = blocks()[3:]
    assert rest, "docs/persistence.md has no Security example"
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(rest)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Dear Ada," in result.stdout
    assert "routilux.serialization.write_json: it is not registered" in result.stdout
    saved = json.loads((tmp_path / "greetings.json").read_text(encoding="utf-8"))
    handler = saved["routines"]["printer"]["_slots"]["input"]["handler"]
    assert handler["registered_name"] == "greetings.polite"

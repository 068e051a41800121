"""The examples of docs/builtin-routines.md run and their assertions hold."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "builtin-routines.md"


def python_blocks() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", text, re.DOTALL | re.MULTILINE)
    return [re.sub(rf"^{indent}", "", body, flags=re.MULTILINE) for indent, body in blocks]


def test_doc_has_examples_for_every_routine():
    text = DOC.read_text(encoding="utf-8")
    import routilux.builtin_routines as pkg

    for name in pkg.__all__:
        assert f"## {name}" in text, name
    assert len(python_blocks()) >= 12


def test_doc_examples_run():
    namespace: dict = {"__name__": "builtin_routines_doc"}
    for index, block in enumerate(python_blocks()):
        code = compile(block, f"{DOC.name}[block {index}]", "exec")
        exec(code, namespace)  # noqa: S102 - our own documentation examples

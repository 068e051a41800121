"""Fixtures of the journal's tests: a SQLite store URL in the test's folder, and the
store opened on it (closed after the test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from routilux.store import open_store


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def store(url: str) -> Any:
    opened = open_store(url)
    yield opened
    opened.close()

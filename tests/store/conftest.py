"""Fixtures of the store tests: every conformance test runs on SQLite and PostgreSQL.

``store_url`` names a fresh, empty store (a new SQLite file, or the PostgreSQL test
database with its tables emptied); ``store`` is that store opened, and closed after.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routilux.store import Store, open_store  # noqa: E402
from services import postgres_dsn, postgres_server  # noqa: E402,F401

_TABLES = (
    "routilux_job, routilux_snapshot, routilux_task, routilux_delta, routilux_runner,"
    " routilux_control, routilux_batch"
)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def postgres_url(postgres_dsn: str) -> str:  # noqa: F811 - the fixture, by name
    """The PostgreSQL test database, its tables emptied."""
    dsn = postgres_dsn
    # Open once so the tables exist, then empty them: every test starts from nothing.
    with open_store(dsn) as first:
        del first
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {_TABLES}")
        conn.execute("UPDATE routilux_meta SET value = '2' WHERE key = 'schema_version'")
    return dsn


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.close()

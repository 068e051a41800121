"""What only the PostgreSQL store does: JSONB columns, claims that pass over a locked
job instead of waiting, and messages that never show the password."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import routilux  # noqa: F401  (registers the JobState layout)
from routilux.job_state import JobState
from routilux.serialization import layout_of
from routilux.store import PostgresStore, StoreError

SNAPSHOT = layout_of(JobState).serialize(JobState("flow"))


@pytest.fixture
def store_url(postgres_url: str) -> str:
    return postgres_url


@pytest.fixture
def pg(store_url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(store_url)
    yield store
    store.close()


def test_json_columns_are_jsonb(pg: PostgresStore, store_url: str) -> None:
    import psycopg

    with psycopg.connect(store_url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE data_type = 'jsonb' AND table_name LIKE 'routilux_%'"
            " ORDER BY table_name, column_name"
        ).fetchall()
    assert rows == [
        ("routilux_delta", "record"),
        ("routilux_job", "waiting_for"),
        ("routilux_snapshot", "snapshot"),
        ("routilux_task", "data"),
        ("routilux_task", "extra"),
    ]


def test_claim_skips_a_job_locked_by_another_transaction(pg: PostgresStore, store_url: str) -> None:
    import psycopg

    pg.create_job("j1", "flow", "running", SNAPSHOT, [], owner="ghost")
    with psycopg.connect(store_url) as other:
        other.execute("SELECT 1 FROM routilux_job WHERE job_id = 'j1' FOR UPDATE")
        # The row is held: the claim passes over it at once instead of waiting.
        assert pg.claim("j1", "me", stale_after=60) is None
        other.rollback()
    assert pg.claim("j1", "me", stale_after=60) == 2


def test_messages_hide_the_password(store_url: str) -> None:
    bad = store_url.replace("postgres@", "postgres:s3cret@").replace("/routilux_test", "/nodb")
    with pytest.raises(StoreError) as caught:
        PostgresStore(bad)
    assert "s3cret" not in str(caught.value) and "nodb" in str(caught.value)


def test_open_store_dispatches_postgres_urls(store_url: str) -> None:
    from routilux.store import open_store

    with open_store(store_url.replace("postgresql://", "postgres://", 1)) as opened:
        assert isinstance(opened, PostgresStore)
    with open_store(store_url) as opened:
        assert isinstance(opened, PostgresStore)

"""Fixtures of the web UI tests: a store and a live server.

The live server is uvicorn in a thread, on a socket of 127.0.0.1 that the fixture
binds and listens on first (a request made before the server's loop runs waits in the
backlog: no start race). Every test module here skips, saying why, when Starlette,
Uvicorn or httpx is missing (they are in the ``dev`` extra, so CI runs them).
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ui_support import WAIT, Live  # noqa: E402

from services import postgres_dsn, postgres_server  # noqa: E402,F401

_TABLES = (
    "routilux_job, routilux_snapshot, routilux_task, routilux_delta, routilux_runner,"
    " routilux_control, routilux_batch"
)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def any_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store: a SQLite file, or the PostgreSQL test database emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    dsn: str = request.getfixturevalue("postgres_dsn")
    from routilux.store import open_store

    with open_store(dsn) as first:  # the tables exist
        del first
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {_TABLES}")
    return dsn


@pytest.fixture
def live_server() -> Iterator[Any]:
    """``start(store, flows, token=None)`` -> :class:`Live`; every server started is
    shut down (its streams ended) after the test."""
    started: list[tuple[Any, threading.Thread]] = []

    def start(store: Any, flows: Any = (), token: Optional[str] = None) -> Live:
        from routilux.ui import make_server

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        port = sock.getsockname()[1]
        server = make_server(store, flows, port=port, token=token, watch_interval=0.05)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        started.append((server, thread))
        return Live(f"http://127.0.0.1:{port}", server.config.app, server)

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=WAIT)
        assert not thread.is_alive(), "the UI server did not shut down"

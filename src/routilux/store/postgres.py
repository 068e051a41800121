"""The PostgreSQL job store (psycopg 3, the ``routilux[postgres]`` extra): many hosts.

JSON columns are JSONB. A write locks its job row (``SELECT ... FOR UPDATE``), so the
epoch check and the write are one step; :meth:`claim` uses ``FOR UPDATE SKIP LOCKED``,
so a job another process is claiming (or committing) right now is passed over instead
of waited for. Batches of rows go through ``executemany`` (pipelined by psycopg). The
tables are created on first use, under an advisory lock so two processes starting at
once do not race.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from routilux.exceptions import SchemaVersionError, StoreError

from ._base import SCHEMA_VERSION, dumps
from ._sql import _TASK_UPSERT, SQLStore, _TaskParams

_SCHEMA = """
CREATE TABLE routilux_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE routilux_job (
    job_id TEXT PRIMARY KEY,
    flow_id TEXT NOT NULL,
    status TEXT NOT NULL,
    owner TEXT,
    epoch BIGINT NOT NULL,
    snapshot_seq BIGINT NOT NULL,
    commit_seq BIGINT NOT NULL,
    input_seq BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    waiting_for JSONB,
    insert_order BIGSERIAL
);
CREATE INDEX routilux_job_by_flow ON routilux_job (flow_id, created_at);
CREATE INDEX routilux_job_by_status ON routilux_job (status, created_at);
CREATE TABLE routilux_snapshot (
    job_id TEXT PRIMARY KEY,
    snapshot JSONB NOT NULL
);
CREATE TABLE routilux_task (
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    routine TEXT NOT NULL,
    slot TEXT NOT NULL,
    data JSONB NOT NULL,
    retries INTEGER NOT NULL,
    due_at DOUBLE PRECISION,
    extra JSONB NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE routilux_delta (
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    consumed BIGINT,
    record JSONB NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE routilux_runner (
    runner_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    heartbeat DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION NOT NULL
);
"""

# Added after schema version 1 (no bump): created in every store that lacks them.
_CONTROL_SCHEMA = """
CREATE TABLE IF NOT EXISTS routilux_control (
    request_id BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS routilux_job_by_update ON routilux_job (updated_at)
"""

# Schema version 2: the journal's records, one row per commit (arrays since version 3;
# see routilux.store._sql and SCHEMA_VERSION); a version-1 store gets it when opened
# for writing.
_BATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS routilux_batch (
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    first_seq BIGINT NOT NULL,
    applied INTEGER NOT NULL,
    records TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
)
"""

# Many task rows in one statement of a few array parameters: psycopg converts (and
# caches) a statement of at most 50 parameters once, but parses a longer one (a
# VALUES list of 64 rows) again on every call.
_DELETE_TASKS = "DELETE FROM routilux_task WHERE job_id = %s AND seq = ANY(%s::bigint[])"
_UPSERT_TASKS = (
    "INSERT INTO routilux_task (job_id, seq, kind, routine, slot, data, retries, due_at, extra)"
    " SELECT %s, s, k, r, sl, d::jsonb, re, du, e::jsonb FROM unnest(%s::bigint[],"
    " %s::text[], %s::text[], %s::text[], %s::text[], %s::int[], %s::float8[], %s::text[])"
    " AS t(s, k, r, sl, d, re, du, e)" + _TASK_UPSERT
)

# pg_advisory_xact_lock key held while the schema is checked or created ("rtlx").
_SCHEMA_LOCK = 0x72746C78


def _as_is(text: Any) -> Any:
    """The "dumps" of a value that is already JSON text."""
    return text


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            "PostgresStore needs psycopg 3: pip install 'routilux[postgres]'"
        ) from None
    return psycopg


def _safe_dsn(psycopg: Any, dsn: str) -> str:
    """The DSN as messages may show it: without its password."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except Exception:
        return "<unparsable DSN>"
    parts.pop("password", None)
    return psycopg.conninfo.make_conninfo(**parts)


class PostgresStore(SQLStore):
    """A :class:`~routilux.store.Store` in a PostgreSQL database.

    ``dsn`` is a libpq connection string or ``postgresql://`` URL. One connection,
    used by one transaction at a time (a lock orders the store's callers).
    """

    _FOR_UPDATE = " FOR UPDATE"
    _FOR_SHARE = " FOR SHARE"
    _FOR_CLAIM = " FOR UPDATE SKIP LOCKED"
    _INSERT_ORDER = "insert_order"

    def __init__(self, dsn: str, *, connect_timeout: float = 10.0) -> None:
        super().__init__()
        psycopg = _import_psycopg()
        self._psycopg = psycopg
        from psycopg.types.json import Jsonb

        self._jsonb = Jsonb
        self._json_param = self._jsonb_text
        self.location = f"PostgreSQL {_safe_dsn(psycopg, dsn)}"
        try:
            self._conn = psycopg.connect(
                dsn, autocommit=True, connect_timeout=max(1, int(connect_timeout))
            )
        except psycopg.Error as exc:
            raise StoreError(f"store {self.location}: cannot connect: {exc}") from None
        self._statements: dict[str, str] = {}
        self._statements_lock = threading.Lock()
        try:
            self._prepare()
            self._look_for_deltas()
        except BaseException:
            self._conn.close()
            raise

    def _prepare(self) -> None:
        with self._transaction(write=True) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            cur.execute("SELECT to_regclass('routilux_meta')")
            row = cur.fetchone()
            if row is None or row[0] is None:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        cur.execute(statement)
                cur.execute(
                    "INSERT INTO routilux_meta (key, value) VALUES ('schema_version', %s)",
                    (str(SCHEMA_VERSION),),
                )
                self._create_control_schema(cur)
                cur.execute(_BATCH_SCHEMA)
                return
            cur.execute("SELECT value FROM routilux_meta WHERE key = 'schema_version'")
            found = cur.fetchone()
            try:
                version = int(found[0]) if found is not None else None
            except ValueError:
                version = None
            if version is None:
                raise StoreError(f"store {self.location}: its schema_version is missing or bad")
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"store {self.location} has schema version {version}; this Routilux "
                    f"reads version {SCHEMA_VERSION} and older"
                )
            cur.execute("SELECT to_regclass('routilux_control')")
            found = cur.fetchone()
            if found is None or found[0] is None:
                self._create_control_schema(cur)
            if version < SCHEMA_VERSION:
                # Version 1 had no routilux_batch, version 2 wrote its records as
                # objects (see SCHEMA_VERSION; both are read as they are): upgraded
                # here, under the schema lock, in this transaction.
                cur.execute(_BATCH_SCHEMA)
                cur.execute(
                    "UPDATE routilux_meta SET value = %s WHERE key = 'schema_version'",
                    (str(SCHEMA_VERSION),),
                )

    def _create_control_schema(self, cur: Any) -> None:
        for statement in _CONTROL_SCHEMA.split(";"):
            if statement.strip():
                cur.execute(statement)

    def _sql(self, statement: str) -> str:
        # Every statement's placeholders are '?', and no statement has a literal '?'.
        converted = self._statements.get(statement)
        if converted is None:
            converted = statement.replace("?", "%s")
            with self._statements_lock:
                self._statements[statement] = converted
        return converted

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Any]:
        psycopg = self._psycopg
        with self._lock:
            self._check_open()
            try:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield cur
            except psycopg.Error as exc:
                raise StoreError(f"store {self.location}: {exc}") from None

    def _jin(self, value: Any, where: str) -> Any:
        # Encoded once here (the check and the text the server gets are one pass);
        # Jsonb is handed the text with an identity "dumps".
        return self._jsonb(dumps(value, where), _as_is)

    def _jsonb_text(self, text: str) -> Any:
        """JSON text as a JSONB parameter, sent as it is."""
        return self._jsonb(text, _as_is)

    def _jout(self, raw: Any) -> Any:
        return raw

    def _delete_tasks(self, cur: Any, job_id: str, seqs: Sequence[int]) -> int:
        cur.execute(_DELETE_TASKS, (job_id, list(seqs)))
        return int(cur.rowcount)

    def _upsert_tasks(self, cur: Any, job_id: str, rows: Sequence[_TaskParams]) -> None:
        columns = [list(column) for column in zip(*rows)]
        # Binary parameters: a text array in text form is escaped element by element.
        cur.execute(_UPSERT_TASKS, (job_id, *columns), binary=True)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

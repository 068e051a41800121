"""The SQLite job store (standard library ``sqlite3``): one file, one host.

The database runs in WAL mode with ``synchronous=NORMAL`` by default — a committed
transaction survives the death of the process (kill -9); ``FULL`` also survives a
power cut. Writes take the database lock up front (``BEGIN IMMEDIATE``) so two
processes never deadlock upgrading a read lock, and wait up to ``busy_timeout``
seconds for each other. One connection per store, guarded by a lock, serves every
thread (the journal writer's and the user's).

A file that is not a database, is truncated, or is a database of something else is
refused with :class:`~routilux.exceptions.StoreError` before anything is written to it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

from routilux.exceptions import SchemaVersionError, StoreError

from ._base import SCHEMA_VERSION, dumps
from ._sql import SQLStore, _loads_many

_SCHEMA = """
CREATE TABLE routilux_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE routilux_job (
    job_id TEXT PRIMARY KEY,
    flow_id TEXT NOT NULL,
    status TEXT NOT NULL,
    owner TEXT,
    epoch INTEGER NOT NULL,
    snapshot_seq INTEGER NOT NULL,
    commit_seq INTEGER NOT NULL,
    input_seq INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    waiting_for TEXT
);
CREATE INDEX routilux_job_by_flow ON routilux_job (flow_id, created_at);
CREATE INDEX routilux_job_by_status ON routilux_job (status, created_at);
CREATE TABLE routilux_snapshot (
    job_id TEXT PRIMARY KEY,
    snapshot TEXT NOT NULL
);
CREATE TABLE routilux_task (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    routine TEXT NOT NULL,
    slot TEXT NOT NULL,
    data TEXT NOT NULL,
    retries INTEGER NOT NULL,
    due_at REAL,
    extra TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE routilux_delta (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    consumed INTEGER,
    record TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE routilux_runner (
    runner_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    heartbeat REAL NOT NULL,
    started_at REAL NOT NULL
);
"""

# Added after schema version 1 (no bump): created in every store that lacks them.
_CONTROL_SCHEMA = """
CREATE TABLE IF NOT EXISTS routilux_control (
    request_id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS routilux_job_by_update ON routilux_job (updated_at)
"""

# Schema version 2: the journal's records, one row per commit (arrays since version 3;
# see routilux.store._sql and SCHEMA_VERSION); a version-1 store gets it when opened
# for writing.
_BATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS routilux_batch (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    applied INTEGER NOT NULL,
    records TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID
"""


class _Transaction:
    """:meth:`SQLiteStore._transaction` (and the journal's :meth:`SQLStore._writing`):
    one transaction under the store's lock, as a plain context manager (not a
    generator one: a generator's frame, its wrapper and their exits cost a few
    microseconds each time). It keeps no state of its own -- the store's lock and
    connection are what a transaction holds -- so the store makes one for its reads
    and one for its writes and hands them out again and again. Once a transaction
    has committed, the batch rows it wrote join the store's known rows
    (``_new_nets``); one that fails or is rolled back leaves them out."""

    __slots__ = ("_store", "_begin")

    def __init__(self, store: SQLiteStore, begin: str) -> None:
        self._store = store
        self._begin = begin

    def __enter__(self) -> sqlite3.Cursor:
        store = self._store
        store._lock.acquire()
        try:
            if store._closed:
                store._check_open()  # raises, naming the store
            try:
                # The cursor BEGIN ran on serves the transaction.
                return store._conn.execute(self._begin)
            except sqlite3.Error as exc:
                raise store._error(exc) from None
        except BaseException:
            store._lock.release()
            raise

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        store = self._store
        try:
            if kind is None:
                try:
                    store._conn.execute("COMMIT")
                except BaseException as failed:
                    exc = failed
                else:
                    if store._new_nets:
                        store._keep_nets()
                    return
            store._new_nets.clear()
            try:
                store._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite may have rolled back already (e.g. disk full)
            if isinstance(exc, sqlite3.Error):
                raise store._error(exc) from None
            if kind is None:
                raise exc  # COMMIT was interrupted (not a driver error)
        finally:
            store._lock.release()


_SYNCHRONOUS = {"NORMAL": 1, "FULL": 2}

# A journal's transactions are few and large (a batch row of thousands of records, a
# snapshot of megabytes that replaces the last one, a job's pending tasks rewritten),
# and what they cost is mostly the pages they write (two writes to the WAL per page,
# and the checkpoint's read and write of it again):
# - a page cache of 16 MB (not SQLite's 2 MB) holds such a transaction's pages, so none
#   is spilled to the WAL mid-transaction or read back to free a chain;
# - a checkpoint every 4,000 pages (16 MB of WAL, not 4 MB) copies a page rewritten by
#   several commits once, and syncs the file a quarter as often;
# - ``secure_delete = FAST`` (many builds default to ON): deleted content is zeroed
#   only on pages written anyway, so freeing the pages of a folded batch row or of the
#   replaced snapshot writes no page of zeros to the WAL.
# None of them changes what a commit guarantees; all are settings of this connection.
_TUNING = (
    "PRAGMA cache_size = -16000",
    "PRAGMA wal_autocheckpoint = 4000",
    "PRAGMA secure_delete = FAST",
)
_MAGIC = b"SQLite format 3\x00"


def _check_header(path: Path) -> None:
    """Refuse a file that cannot be a whole SQLite database, reading only its header.

    SQLite opens a truncated database happily and fails later, mid-job; the header
    says how many pages the file has (when its "valid-for" counter matches the change
    counter), so a shorter file is caught here, before anything writes to it.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return  # a new store
    except OSError as exc:
        raise StoreError(f"SQLite store {path}: cannot read the file: {exc}") from None
    if size == 0:
        return  # SQLite treats an empty file as an empty database
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        raise StoreError(f"SQLite store {path}: cannot read the file: {exc}") from None
    if len(header) < 100 or not header.startswith(_MAGIC):
        raise StoreError(f"SQLite store {path}: the file is not a SQLite database")
    (page_size,) = struct.unpack(">H", header[16:18])
    page_size = 65536 if page_size == 1 else page_size
    change_counter, pages = struct.unpack(">II", header[24:32])
    (valid_for,) = struct.unpack(">I", header[92:96])
    if valid_for == change_counter and pages and size < pages * page_size:
        raise StoreError(
            f"SQLite store {path}: the file is truncated ({size} bytes, its header says "
            f"{pages} pages of {page_size} bytes)"
        )


class SQLiteStore(SQLStore):
    """A :class:`~routilux.store.Store` in one SQLite file.

    ``synchronous`` is ``"NORMAL"`` (default; durable against a process crash) or
    ``"FULL"`` (also against an OS crash or power cut). ``busy_timeout`` is how long
    (seconds) a write waits for another process's. ``read_only=True`` opens an
    existing store for reading only (every write raises StoreError).
    """

    def __init__(
        self,
        path: Union[str, os.PathLike[str]],
        synchronous: str = "NORMAL",
        busy_timeout: float = 5.0,
        *,
        read_only: bool = False,
    ) -> None:
        super().__init__()
        self._reading = _Transaction(self, "BEGIN")
        self._write = _Transaction(self, "BEGIN IMMEDIATE")
        self.path = Path(path)
        self.location = str(self.path)
        mode = str(synchronous).upper()
        if mode not in _SYNCHRONOUS:
            raise StoreError(
                f"SQLite store {self.path}: synchronous must be 'NORMAL' or 'FULL', "
                f"got {synchronous!r}"
            )
        if (
            isinstance(busy_timeout, bool)
            or not isinstance(busy_timeout, (int, float))
            or (busy_timeout < 0)
        ):
            raise StoreError(
                f"SQLite store {self.path}: busy_timeout must be seconds >= 0, got {busy_timeout!r}"
            )
        self.synchronous = mode
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise StoreError(f"SQLite store {self.path}: no such file (opened read-only)")
        _check_header(self.path)
        try:
            if read_only:
                target = f"{self.path.resolve().as_uri()}?mode=ro"
                self._conn = sqlite3.connect(
                    target, uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                self._conn = sqlite3.connect(
                    str(self.path), isolation_level=None, check_same_thread=False
                )
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: cannot open the file: {exc}") from None
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._prepare()
        except BaseException:
            self._conn.close()
            raise

    def _prepare(self) -> None:
        """Check (or create) the schema, then switch to WAL — in that order, so a file
        that is refused is never written to."""
        try:
            names = {
                row[0]
                for row in self._conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                ).fetchall()
            }
        except sqlite3.Error as exc:
            raise StoreError(
                f"SQLite store {self.path}: the file is not a readable SQLite database: {exc}"
            ) from None
        version = SCHEMA_VERSION
        if "routilux_meta" in names:
            version = self._check_version()
        elif names:
            raise StoreError(
                f"SQLite store {self.path}: the database holds other tables "
                f"({', '.join(sorted(names)[:5])}) and is not a Routilux store"
            )
        elif self.read_only:
            raise StoreError(f"SQLite store {self.path}: the file is not a Routilux store")
        if not self.read_only:
            try:
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite store {self.path}: cannot enable WAL: {exc}") from None
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"SQLite store {self.path}: WAL mode is not available (got {mode!r})"
                )
            if not names:
                self._create_schema()
            if "routilux_control" not in names:
                self._create_control_schema()
            if names and version < SCHEMA_VERSION:
                self._upgrade()
        elif "routilux_batch" not in names:
            self._has_batch = False  # an older file, read as it is
        self._conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        for pragma in _TUNING:
            self._conn.execute(pragma)
        self._look_for_deltas()

    def _create_schema(self) -> None:
        with self._transaction(write=True) as cur:
            # Another process may have created it since we looked.
            cur.execute("SELECT 1 FROM sqlite_master WHERE name = 'routilux_meta'")
            if cur.fetchone() is not None:
                return
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)
            cur.execute(_BATCH_SCHEMA)
            cur.execute(
                "INSERT INTO routilux_meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def _create_control_schema(self) -> None:
        with self._transaction(write=True) as cur:
            for statement in _CONTROL_SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)

    def _upgrade(self) -> None:
        """An older store made the current version in one transaction: version 1 gets
        ``routilux_batch``, and the version is set (rows written by version 2 keep
        their objects, read as they are; another process may have done it since we
        looked)."""
        with self._transaction(write=True) as cur:
            cur.execute(_BATCH_SCHEMA)
            cur.execute(
                "UPDATE routilux_meta SET value = ? WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION),),
            )

    def _check_version(self) -> int:
        try:
            row = self._conn.execute(
                "SELECT value FROM routilux_meta WHERE key = 'schema_version'"
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: cannot read its version: {exc}") from None
        try:
            version = int(row[0]) if row is not None else None
        except ValueError:
            version = None
        if version is None:
            raise StoreError(f"SQLite store {self.path}: its schema_version is missing or bad")
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"SQLite store {self.path} has schema version {version}; this Routilux "
                f"reads version {SCHEMA_VERSION} and older"
            )
        return version

    def _transaction(self, write: bool) -> _Transaction:
        """One transaction under the store's lock (``BEGIN IMMEDIATE`` for a write);
        ``with`` it gives a cursor. Driver errors become StoreError."""
        return self._write if write else self._reading

    def _writing(self) -> _Transaction:
        # _Transaction keeps the known rows itself: no wrapper around it.
        return self._write

    def _error(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"SQLite store {self.path}: {exc}")

    def _jin(self, value: Any, where: str) -> str:
        return dumps(value, where)

    def _jout(self, raw: Any) -> Any:
        return json.loads(raw)

    def _jout_many(self, raws: Sequence[Any]) -> list[Any]:
        """The columns decoded by one ``json.loads`` of them joined into an array (a
        job's tasks are decoded together, not one call each; see ``_loads_many``)."""
        if not all(type(raw) is str for raw in raws):
            return [json.loads(raw) for raw in raws]
        return _loads_many(raws)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

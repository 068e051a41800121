"""Durable job stores: where journaled jobs live between (and across) processes.

A journaled job is a row (id, flow, status, owner runner, epoch, snapshot of its
JobState and the commit seq the snapshot covers), its pending tasks, the deltas
committed since the snapshot, and the runners that own jobs. :class:`Store` is the
protocol; :class:`SQLiteStore` (standard library) and :class:`PostgresStore`
(``routilux[postgres]``) implement it, and :func:`open_store` picks one from a URL.
:class:`JournalWriter` group-commits records from a running job; :class:`Heartbeat`
keeps a runner's lease fresh. See
``docs/durability.md``.
"""

from __future__ import annotations

import os
from typing import Any, Union

from routilux.exceptions import (
    JobNotFoundError,
    SchemaVersionError,
    StaleEpochError,
    StoreError,
)

from ._base import (
    FINISHED_STATUSES,
    PARKED_STATUSES,
    SCHEMA_VERSION,
    UNCHANGED,
    ApplyOps,
    DeltaRecord,
    JobSummary,
    JournaledJob,
    Store,
    TaskRow,
)
from .lease import Heartbeat
from .postgres import PostgresStore
from .sqlite import SQLiteStore
from .writer import JournalWriter

__all__ = [
    "FINISHED_STATUSES",
    "PARKED_STATUSES",
    "SCHEMA_VERSION",
    "UNCHANGED",
    "ApplyOps",
    "DeltaRecord",
    "Heartbeat",
    "JobNotFoundError",
    "JobSummary",
    "JournalWriter",
    "JournaledJob",
    "PostgresStore",
    "SQLiteStore",
    "SchemaVersionError",
    "StaleEpochError",
    "Store",
    "StoreError",
    "TaskRow",
    "open_store",
]

_ACCEPTED = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, a file path ending in "
    ".db, .sqlite or .sqlite3, or postgresql://... / postgres://..."
)


def open_store(url: Union[str, os.PathLike[str]], **options: Any) -> Store:
    """The store ``url`` names; ``options`` go to the store's constructor.

    ``sqlite:///jobs.db`` (relative to the working directory), ``sqlite:////var/x.db``
    (absolute), a plain path ending in ``.db``/``.sqlite``/``.sqlite3`` -> a
    :class:`SQLiteStore`; ``postgresql://...`` or ``postgres://...`` -> a
    :class:`PostgresStore`. Anything else raises StoreError naming the URL.
    """
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str) or not url:
        raise StoreError(f"open_store: expected a store URL ({_ACCEPTED}), got {url!r}")
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        if not rest.startswith("/") or len(rest) < 2:
            raise StoreError(f"open_store: {url!r} has no file path; accepted: {_ACCEPTED}")
        return SQLiteStore(rest[1:], **options)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url, **options)
    if "://" not in url and url.lower().endswith((".db", ".sqlite", ".sqlite3")):
        return SQLiteStore(url, **options)
    raise StoreError(f"open_store: cannot tell which store {url!r} names; accepted: {_ACCEPTED}")

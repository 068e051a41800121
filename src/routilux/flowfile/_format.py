"""The flow-file format's vocabulary: its keys, its limits, its name patterns.

Shared by the reader (``_build``), the writer (``_write``) and the JSON Schema
(``_schema``), so the three cannot drift apart.
"""

from __future__ import annotations

import os
import re
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]
Path_ = tuple[Union[str, int], ...]

MAX_FILE_BYTES = 10 * 1024 * 1024
"""Largest flow file read (10 MiB)."""

MAX_NODES = 200_000
"""Most YAML nodes one file may expand to (aliases counted each time they are used),
so a file of nested aliases cannot make the reader walk billions of nodes."""

MAX_DEPTH = 64
"""Deepest nesting of a flow file's values."""

MAX_LIMIT = 1_000_000_000
"""Largest ``history_limit``, ``output_limit`` and ``max_deliveries`` in a file."""

MAX_TIMEOUT = 365 * 24 * 3600.0
"""Longest ``timeout`` and ``handler_timeout`` in a file (one year, in seconds)."""

# A routine id: what connections ("id.event") and diagrams can name without quoting.
ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
MODULE_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
# The Class part of "module:Class": public names only (no leading underscore).
ATTRIBUTE_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*\Z")

TOP_KEYS = ("flow_id", "description", "entry", "execution", "error_handler", "routines",
            "connections")  # fmt: skip
EXECUTION_KEYS = ("strategy", "max_workers", "timeout", "handler_timeout", "max_deliveries",
                  "history_limit", "output_limit", "strict")  # fmt: skip
ROUTINE_KEYS = ("class", "description", "config", "error_handler")
ERROR_HANDLER_KEYS = ("strategy", "max_retries", "retry_delay", "retry_backoff",
                      "retryable_exceptions", "is_critical", "is_optional")  # fmt: skip
CONNECTION_KEYS = ("from", "to", "param_mapping")
ERROR_STRATEGIES = ("stop", "continue", "retry", "skip")

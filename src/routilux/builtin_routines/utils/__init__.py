"""Built-in utility routines: the current time, flattening nested data."""

from __future__ import annotations

from .data_flattener import DataFlattener
from .time_provider import TimeProvider

__all__ = ["DataFlattener", "TimeProvider"]

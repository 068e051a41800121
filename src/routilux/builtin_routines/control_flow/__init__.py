"""Built-in routines that shape the flow of items: routing, splitting, filtering,
and the time-based ones (aggregating, batching, debouncing)."""

from __future__ import annotations

from .aggregator import Aggregator
from .batcher import Batcher
from .conditional_router import ConditionalRouter
from .debouncer import Debouncer
from .filter import Filter
from .splitter import Splitter

__all__ = ["Aggregator", "Batcher", "ConditionalRouter", "Debouncer", "Filter", "Splitter"]

"""The built-in routines of Routilux.

Each is a :class:`~routilux.routine.Routine` with a no-argument constructor, a
validated configuration that round-trips through serialization, and no per-run state
on the instance (it lives in the job's JobState), so one flow can run many jobs at
once. Subpackages group them: :mod:`.text_processing`, :mod:`.utils`,
:mod:`.data_processing` and :mod:`.control_flow`.
"""

from __future__ import annotations

from .control_flow import (
    Aggregator,
    Batcher,
    ConditionalRouter,
    Debouncer,
    Filter,
    Splitter,
)
from .data_processing import DataTransformer, DataValidator, Mapper
from .text_processing import ResultExtractor, TextClipper, TextRenderer
from .utils import DataFlattener, TimeProvider

__all__ = [
    "Aggregator",
    "Batcher",
    "ConditionalRouter",
    "DataFlattener",
    "DataTransformer",
    "DataValidator",
    "Debouncer",
    "Filter",
    "Mapper",
    "ResultExtractor",
    "Splitter",
    "TextClipper",
    "TextRenderer",
    "TimeProvider",
]

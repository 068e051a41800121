"""Routilux: event-driven workflow orchestration.

A :class:`Routine` declares input slots (each with a handler) and output
events; a :class:`Flow` connects events to slots; ``flow.execute(entry_id,
entry_params=...)`` runs a job whose every change lives in its
:class:`JobState`, reachable from handlers through
``self.get_execution_context()``.
"""

from __future__ import annotations

from typing import Any

from .connection import Connection
from .error_handler import ErrorHandler, ErrorStrategy
from .event import Event
from .exceptions import (
    ConfigError,
    DefinitionError,
    EngineError,
    ExecutionContextError,
    FlowError,
    JobStateError,
    RoutiluxError,
    SerializationError,
)
from .execution_tracker import ExecutionTracker
from .flow import Flow
from .job_state import ExecutionRecord, JobState
from .output_handler import (
    CallbackOutputHandler,
    NullOutputHandler,
    OutputHandler,
    QueueOutputHandler,
)
from .routine import ExecutionContext, Routine
from .serialization import register_serializable
from .slot import Slot

__version__ = "0.9.0"

_BUILTINS = (
    "TextClipper",
    "TextRenderer",
    "ResultExtractor",
    "TimeProvider",
    "DataFlattener",
    "DataTransformer",
    "DataValidator",
    "ConditionalRouter",
)

__all__ = [
    "Routine",
    "ExecutionContext",
    "Slot",
    "Event",
    "Connection",
    "Flow",
    "JobState",
    "ExecutionRecord",
    "ExecutionTracker",
    "ErrorHandler",
    "ErrorStrategy",
    "OutputHandler",
    "QueueOutputHandler",
    "CallbackOutputHandler",
    "NullOutputHandler",
    *_BUILTINS,
    "register_serializable",
    "RoutiluxError",
    "DefinitionError",
    "FlowError",
    "ConfigError",
    "ExecutionContextError",
    "JobStateError",
    "SerializationError",
    "EngineError",
]


def __getattr__(name: str) -> Any:
    # Built-in routines load on first use, keeping ``import routilux`` light.
    if name in _BUILTINS:
        from . import builtin_routines

        return getattr(builtin_routines, name)
    raise AttributeError(f"module 'routilux' has no attribute '{name}'")

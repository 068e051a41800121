"""Routilux: event-driven workflow orchestration.

A :class:`Routine` declares input slots (each with a handler) and output
events; a :class:`Flow` connects events to slots; ``flow.execute(entry_id,
entry_params=...)`` runs a job whose every change lives in its
:class:`JobState`, reachable from handlers through
``self.get_execution_context()``.
"""

from __future__ import annotations

import logging

# Registers the serialization layout of every class (Routine, Flow, JobState, ...): their
# serialize/deserialize/save/load methods find it through the codec's registry, so none
# of them imports persistence. Importing any routilux module runs this file first.
from . import persistence  # noqa: F401
from .builtin_routines import (
    Aggregator,
    Batcher,
    ConditionalRouter,
    DataFlattener,
    DataTransformer,
    DataValidator,
    Debouncer,
    Filter,
    Mapper,
    ResultExtractor,
    Splitter,
    TextClipper,
    TextRenderer,
    TimeProvider,
)
from .connection import Connection
from .error_handler import ErrorHandler, ErrorStrategy
from .event import Event
from .exceptions import (
    ConfigError,
    DefinitionError,
    EngineError,
    ExecutionContextError,
    ExpressionBudgetError,
    ExpressionError,
    FlowError,
    HandlerTimeoutError,
    InvalidArgumentError,
    InvalidInputError,
    JobInterrupted,
    JobStateError,
    NotConstructableError,
    RoutiluxError,
    RoutiluxWarning,
    SerializationError,
)
from .execution_tracker import ExecutionTracker
from .flow import Flow
from .flow.flow import ValidationReport

# Registers the flow-file codec, so Flow.from_file/to_file reach routilux.flowfile
# without the definition layer importing an integration.
from .flowfile import FlowFileError, load_flow, save_flow
from .hooks import Delivery, JobHooks
from .job_state import ExecutionRecord, JobState
from .output_handler import (
    CallbackOutputHandler,
    NullOutputHandler,
    OutputHandler,
    QueueOutputHandler,
)
from .routine import ExecutionContext, Routine
from .serialization import register_function, register_serializable
from .slot import Slot

__version__ = "0.9.0"

# The library never prints: its log records go wherever the application sends them.
logging.getLogger("routilux").addHandler(logging.NullHandler())

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
    "TextClipper",
    "TextRenderer",
    "ResultExtractor",
    "TimeProvider",
    "DataFlattener",
    "DataTransformer",
    "DataValidator",
    "ConditionalRouter",
    "Splitter",
    "Filter",
    "Mapper",
    "Aggregator",
    "Batcher",
    "Debouncer",
    "register_function",
    "register_serializable",
    "RoutiluxError",
    "DefinitionError",
    "FlowError",
    "ConfigError",
    "InvalidArgumentError",
    "ExecutionContextError",
    "JobStateError",
    "InvalidInputError",
    "SerializationError",
    "NotConstructableError",
    "EngineError",
    "ExpressionError",
    "ExpressionBudgetError",
    "JobInterrupted",
    "ValidationReport",
    "HandlerTimeoutError",
    "RoutiluxWarning",
    "JobHooks",
    "Delivery",
    "FlowFileError",
    "load_flow",
    "save_flow",
]

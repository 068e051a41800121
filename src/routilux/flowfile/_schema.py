"""The JSON Schema of the flow-file format (``routilux schema``)."""

from __future__ import annotations

from typing import Any

from routilux.error_handler import MAX_RETRIES, MAX_RETRY_BACKOFF, MAX_RETRY_DELAY
from routilux.flow.flow import MAX_WORKERS, STRATEGIES

from ._format import ERROR_STRATEGIES, MAX_LIMIT, MAX_TIMEOUT


def flow_file_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of the flow-file format, for editors and checks.

    It describes the shape and ranges; what it cannot know (which classes are
    registered, which events and slots they have, their configuration) is checked
    when the file is loaded.
    """
    identifier = {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_-]*$"}
    error_handler = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "strategy": {"enum": list(ERROR_STRATEGIES)},
            "max_retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES},
            "retry_delay": {"type": "number", "minimum": 0, "maximum": MAX_RETRY_DELAY},
            "retry_backoff": {"type": "number", "minimum": 0, "maximum": MAX_RETRY_BACKOFF},
            "retryable_exceptions": {"type": "array", "items": {"type": "string"}},
            "is_critical": {"type": "boolean"},
            "is_optional": {"type": "boolean"},
        },
    }
    limit = {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_LIMIT}
    seconds = {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT}
    endpoint = {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_-]*\.[^.]+$"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "routilux-flow-file",
        "title": "Routilux flow file",
        "type": "object",
        "additionalProperties": False,
        "required": ["routines"],
        "properties": {
            "flow_id": {"type": "string", "minLength": 1},
            "description": {"type": "string"},
            "entry": identifier,
            "execution": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "strategy": {"enum": list(STRATEGIES)},
                    "max_workers": {"type": "integer", "minimum": 1, "maximum": MAX_WORKERS},
                    "timeout": seconds,
                    "handler_timeout": seconds,
                    "max_deliveries": limit,
                    "history_limit": limit,
                    "output_limit": limit,
                    "strict": {"type": "boolean"},
                },
            },
            "error_handler": error_handler,
            "routines": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": identifier,
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["class"],
                    "properties": {
                        "class": {
                            "type": "string",
                            "description": "a registered class name, or module:Class "
                            "(imported only when the module is allowed)",
                            "minLength": 1,
                        },
                        "description": {"type": "string"},
                        "config": {"type": "object"},
                        "error_handler": error_handler,
                    },
                },
            },
            "connections": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["from", "to"],
                    "properties": {
                        "from": {**endpoint, "description": "routine.event"},
                        "to": {**endpoint, "description": "routine.slot"},
                        "param_mapping": {
                            "type": "object",
                            "additionalProperties": {"type": "string", "minLength": 1},
                        },
                    },
                },
            },
        },
    }

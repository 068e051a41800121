"""Which error handler applies to a routine."""

from __future__ import annotations

from typing import Any

from ..error_handler import ErrorHandler


def get_error_handler_for_routine(routine: Any, routine_id: str, flow: Any) -> ErrorHandler | None:
    """The routine's own handler, else the flow's, else None (meaning STOP)."""
    handler: ErrorHandler | None = routine.get_error_handler()
    return handler if handler is not None else flow.error_handler

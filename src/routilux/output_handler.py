"""Output handlers: where ``Routine.send_output`` data goes besides the job's output log.

This module owns the ``OutputHandler`` interface and its three stock implementations
(spec 70 §1). ``JobState.send_output`` calls ``handler.handle(...)`` with keyword
arguments and turns any exception from it into a warning, so a handler never fails a job.
Handlers are runtime wiring, not state: they are never serialized.

In a job run by a flow, outputs reach the handler through a lifecycle hook
(:data:`OUTPUT_HANDLER_HOOKS`, installed by the flow for every run), so the
handler takes its turn among the job's other hooks.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from .hooks import JobHooks

if TYPE_CHECKING:
    from .job_state import JobState

__all__ = [
    "CallbackOutputHandler",
    "NullOutputHandler",
    "OutputHandler",
    "QueueOutputHandler",
]

logger = logging.getLogger("routilux.output_handler")


class SupportsPut(Protocol):
    """Anything with a ``put(item)`` method: ``queue.Queue``, ``asyncio.Queue``, ..."""

    def put(self, item: Any) -> Any: ...


class OutputHandler(ABC):
    """Receives every output a routine sends with ``send_output`` during a job."""

    @abstractmethod
    def handle(
        self,
        job_id: str,
        routine_id: str,
        output_type: str,
        data: Any,
        timestamp: datetime | None = None,
    ) -> None:
        """Deliver one output. ``timestamp`` defaults to now when not given."""


class QueueOutputHandler(OutputHandler):
    """Puts each output on ``queue`` as a dict with an ISO timestamp.

    The item is ``{"job_id", "routine_id", "output_type", "data", "timestamp"}``.
    """

    def __init__(self, queue: SupportsPut) -> None:
        if not callable(getattr(queue, "put", None)):
            raise TypeError(
                f"QueueOutputHandler needs an object with a put() method, got {queue!r}"
            )
        self.queue = queue

    def handle(
        self,
        job_id: str,
        routine_id: str,
        output_type: str,
        data: Any,
        timestamp: datetime | None = None,
    ) -> None:
        self.queue.put(
            {
                "job_id": job_id,
                "routine_id": routine_id,
                "output_type": output_type,
                "data": data,
                "timestamp": (timestamp or datetime.now()).isoformat(),
            }
        )

    def __repr__(self) -> str:
        return f"QueueOutputHandler(queue={self.queue!r})"


class CallbackOutputHandler(OutputHandler):
    """Calls ``callback(job_id, routine_id, output_type, data, timestamp)`` positionally.

    ``timestamp`` is a ``datetime`` (now when the caller gave none).
    """

    def __init__(self, callback: Callable[[str, str, str, Any, datetime], Any]) -> None:
        if not callable(callback):
            raise TypeError(f"CallbackOutputHandler needs a callable, got {callback!r}")
        self.callback = callback

    def handle(
        self,
        job_id: str,
        routine_id: str,
        output_type: str,
        data: Any,
        timestamp: datetime | None = None,
    ) -> None:
        self.callback(job_id, routine_id, output_type, data, timestamp or datetime.now())

    def __repr__(self) -> str:
        return f"CallbackOutputHandler(callback={self.callback!r})"


class NullOutputHandler(OutputHandler):
    """Discards every output (the output log in the JobState still records it)."""

    def handle(
        self,
        job_id: str,
        routine_id: str,
        output_type: str,
        data: Any,
        timestamp: datetime | None = None,
    ) -> None:
        return None

    def __repr__(self) -> str:
        return "NullOutputHandler()"


class OutputHandlerHooks(JobHooks):
    """The lifecycle hook that hands a job's outputs to ``job_state.output_handler``
    (whichever is set when the output is sent; see ``JobState.set_output_handler``)."""

    # Called directly (see hooks.py): it never raises -- a failing handler
    # becomes a RuntimeWarning, as spec 70 §1 says.
    _routilux_trusted = True

    def on_output(
        self,
        job_state: JobState,
        routine_id: str,
        output_type: str,
        data: Any,
        timestamp: datetime,
    ) -> None:
        # stacklevel: the warning points at the routine's send_output call.
        job_state._hand_to_output_handler(routine_id, output_type, data, timestamp, stacklevel=4)

    def __repr__(self) -> str:
        return "OutputHandlerHooks()"


#: The one instance every run uses (it keeps no state).
OUTPUT_HANDLER_HOOKS = OutputHandlerHooks()

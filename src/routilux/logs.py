"""Logs that carry the job: a context filter, a JSON formatter, a delivery hook.

This module owns what makes a log record written while a job runs say which job,
routine, slot and delivery it comes from:

* :class:`LogContext`, a lifecycle hook that binds the current delivery in a
  context variable for the handler's duration (hooks run on the thread or asyncio
  task of the delivery, so the binding is exactly the handler's);
* :class:`JobContextFilter`, a :class:`logging.Filter` that copies ``job_id``,
  ``flow_id``, ``routine_id``, ``slot``, ``attempt`` and ``delivery_id`` onto every
  record (None outside a job; a value given through ``extra=`` is kept);
* :class:`JsonFormatter`, one JSON object per record, those fields included.

The job comes from the engine's own binding (``routilux._context``), so the
filter knows the job even without the hook; the routine, slot and attempt need
the hook.  ``delivery_id`` is the delivery's stable id where the engine gives
one (``Delivery.delivery_id``), else None.  Nothing here runs unless installed.
"""

from __future__ import annotations

import json
import logging
import traceback
from contextvars import ContextVar, Token
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Optional

from ._context import current_run
from .hooks import Delivery, JobHooks

if TYPE_CHECKING:
    from .job_state import JobState

__all__ = ["CONTEXT_FIELDS", "JobContextFilter", "JsonFormatter", "LogContext", "current_delivery"]

#: The attributes :class:`JobContextFilter` sets on a record.
CONTEXT_FIELDS: tuple[str, ...] = (
    "job_id",
    "flow_id",
    "routine_id",
    "slot",
    "attempt",
    "delivery_id",
)

_delivery: ContextVar[Optional[Delivery]] = ContextVar("routilux_log_delivery", default=None)

failure_logger = logging.getLogger("routilux.delivery")


def current_delivery() -> Delivery | None:
    """The delivery the current thread or asyncio task is running (when a
    :class:`LogContext` hook watches its job), else None."""
    return _delivery.get()


class LogContext(JobHooks):
    """Binds each delivery of the jobs it watches for :class:`JobContextFilter`.

    Install it like any hook: ``Flow(hooks=[LogContext()])``,
    ``flow.add_hooks(LogContext())`` or ``execute(..., hooks=[LogContext()])``.
    ``log_failures=True`` also logs one WARNING, with the traceback, per failed
    delivery on the ``routilux.delivery`` logger.
    """

    def __init__(self, *, log_failures: bool = False) -> None:
        self.log_failures = log_failures
        # id(delivery) -> the token of its binding (the same Delivery object is
        # given to the start and the end; dict set/pop are atomic).
        self._tokens: dict[int, Token[Optional[Delivery]]] = {}

    def on_delivery_start(self, job_state: JobState, delivery: Delivery) -> None:
        self._tokens[id(delivery)] = _delivery.set(delivery)

    def on_delivery_end(
        self,
        job_state: JobState,
        delivery: Delivery,
        duration: float,
        error: BaseException | None,
    ) -> None:
        token = self._tokens.pop(id(delivery), None)
        if token is not None:
            try:
                _delivery.reset(token)
            except ValueError:
                # Ended in another context (an async handler's task, a timeout
                # given up on elsewhere): the binding died with its context.
                pass
        if error is not None and self.log_failures:
            failure_logger.warning(
                "job %s: delivery to %s.%s (attempt %d) failed: %s: %s",
                job_state.job_id,
                delivery.routine_id,
                delivery.slot_name,
                delivery.attempt,
                type(error).__name__,
                error,
                exc_info=(type(error), error, error.__traceback__),
                extra={
                    "job_id": job_state.job_id,
                    "flow_id": job_state.flow_id,
                    "routine_id": delivery.routine_id,
                    "slot": delivery.slot_name,
                    "attempt": delivery.attempt,
                    "delivery_id": getattr(delivery, "delivery_id", None),
                },
            )


class JobContextFilter(logging.Filter):
    """Adds the job's context (:data:`CONTEXT_FIELDS`) to every record it sees.

    Attach it to a handler (so it sees the records of every logger, the
    library's and the handlers') or to a logger.  It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        if "job_id" not in fields or "flow_id" not in fields:
            run = current_run()
            job_state = run.job_state if run is not None else None
            if "job_id" not in fields:
                record.job_id = job_state.job_id if job_state is not None else None
            if "flow_id" not in fields:
                record.flow_id = job_state.flow_id if job_state is not None else None
        delivery = _delivery.get()
        if "routine_id" not in fields:
            record.routine_id = delivery.routine_id if delivery is not None else None
        if "slot" not in fields:
            record.slot = delivery.slot_name if delivery is not None else None
        if "attempt" not in fields:
            record.attempt = delivery.attempt if delivery is not None else None
        if "delivery_id" not in fields:
            record.delivery_id = getattr(delivery, "delivery_id", None)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, the context fields, ``exception`` (the formatted traceback)
    when there is one, and the record attributes named in ``extra_fields``.

    Values JSON cannot hold are written as their ``repr``.  Used with
    :class:`JobContextFilter`; without it the context fields are null.
    """

    def __init__(self, extra_fields: tuple[str, ...] | list[str] = ()) -> None:
        super().__init__()
        self.extra_fields = tuple(extra_fields)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in (*CONTEXT_FIELDS, *self.extra_fields):
            entry[name] = getattr(record, name, None)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info))
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=repr, ensure_ascii=False)

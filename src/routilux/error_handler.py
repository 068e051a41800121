"""Error policies: :class:`ErrorStrategy` and :class:`ErrorHandler`.

A handler only *decides*; the engine acts on the decision.  In particular a
retry delay is never slept here: :meth:`ErrorHandler.decide` returns the delay
and the engine schedules the re-delivery on its timer, so no worker waits.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Iterable
from enum import Enum
from typing import Any, NamedTuple

from ._context import current_run
from .exceptions import InvalidArgumentError
from .serialization import layout_of, register_serializable, short_repr

logger = logging.getLogger("routilux.error_handler")

MAX_RETRIES = 1000
"""Upper bound of ``max_retries`` (and of a saved ``retry_count``)."""

MAX_RETRY_DELAY = 86_400.0
"""Upper bound, in seconds (one day), of ``retry_delay`` and of any computed backoff
delay: an infinite or absurd delay would make a job that never ends."""

MAX_RETRY_BACKOFF = 100.0
"""Upper bound of the ``retry_backoff`` factor."""


class ErrorStrategy(Enum):
    """What a failing routine does to its job."""

    STOP = "stop"
    CONTINUE = "continue"
    RETRY = "retry"
    SKIP = "skip"


class Decision(NamedTuple):
    """The engine's instruction after a handler failure.

    ``action`` is one of ``"stop"``, ``"continue"``, ``"skip"``, ``"retry"``;
    ``delay`` is the seconds to wait before a retry (0 otherwise).
    """

    action: str
    delay: float = 0.0


def error_record(slot_name: str | None, error: BaseException, **extra: Any) -> dict[str, Any]:
    """The data of a job's history record for a failed delivery: ``slot`` (when
    known), ``error`` (the message), ``error_type`` (the exception's class name),
    ``traceback`` (the formatted traceback, so a saved or journaled job still says
    where it failed), then ``extra`` (``attempt``, ``action``, ...).  Every error
    record of a job is built here."""
    record: dict[str, Any] = {} if slot_name is None else {"slot": slot_name}
    record["error"] = str(error)
    record["error_type"] = type(error).__name__
    record["traceback"] = "".join(traceback.format_exception(error))
    record.update(extra)
    return record


@register_serializable
class ErrorHandler:
    """How failures of a routine (or of every routine of a flow) are handled.

    ``retry_delay * retry_backoff ** (n - 1)`` seconds (at most :data:`MAX_RETRY_DELAY`,
    one day) pass before the n-th retry; ``max_retries``, ``retry_delay`` and
    ``retry_backoff`` outside their bounds raise :class:`InvalidArgumentError`.
    Only exceptions that are instances of ``retryable_exceptions`` are retried
    (all exceptions when it is empty).  When retries are exhausted, or the error
    is not retryable, the failure stops the job, unless the routine is optional
    (``is_optional``), in which case the job continues.
    """

    def __init__(
        self,
        strategy: ErrorStrategy | str = "stop",
        max_retries: int = 3,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        retryable_exceptions: tuple[type[BaseException], ...] | None = None,
        is_critical: bool = False,
        is_optional: bool = False,
    ) -> None:
        self.strategy = _strategy(strategy)
        self.max_retries = _bounded_int("max_retries", max_retries, MAX_RETRIES)
        self.retry_delay = _bounded_number("retry_delay", retry_delay, MAX_RETRY_DELAY)
        self.retry_backoff = _bounded_number("retry_backoff", retry_backoff, MAX_RETRY_BACKOFF)
        self.retryable_exceptions: tuple[type[BaseException], ...] = _exception_classes(
            retryable_exceptions
        )
        self.is_critical = is_critical
        self.is_optional = is_optional
        # Informative only: the count of the most recent delivery.  The engine
        # keeps the real per-delivery counters in the job (DESIGN invariant 2).
        self.retry_count = 0

    def __repr__(self) -> str:
        return (
            f"ErrorHandler(strategy={self.strategy.value!r}, max_retries={self.max_retries}, "
            f"retry_delay={self.retry_delay}, retry_backoff={self.retry_backoff}, "
            f"is_critical={self.is_critical}, is_optional={self.is_optional})"
        )

    def reset(self) -> None:
        """Set the informative retry counter back to zero."""
        self.retry_count = 0

    def is_retryable(self, error: BaseException) -> bool:
        """True when ``error`` is one of the retryable exception classes."""
        return isinstance(error, self.retryable_exceptions)

    def retry_delay_for(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based), at most
        :data:`MAX_RETRY_DELAY`."""
        try:
            delay = float(self.retry_delay * self.retry_backoff ** (attempt - 1))
        except OverflowError:  # e.g. a backoff of 100 at the 200th retry
            return MAX_RETRY_DELAY
        return min(delay, MAX_RETRY_DELAY)

    def decide(self, error: BaseException, retries_done: int) -> Decision:
        """Decide what to do about ``error`` after ``retries_done`` retries of one delivery."""
        strategy = self.strategy
        if strategy is ErrorStrategy.CONTINUE:
            return Decision("continue")
        if strategy is ErrorStrategy.SKIP:
            return Decision("skip")
        if strategy is ErrorStrategy.RETRY:
            if self.is_retryable(error) and retries_done < self.max_retries:
                return Decision("retry", self.retry_delay_for(retries_done + 1))
            return Decision("continue" if self.is_optional else "stop")
        return Decision("stop")

    def handle_error(
        self,
        error: BaseException,
        routine: object,
        routine_id: str,
        flow: Any,
        context: Any = None,
    ) -> bool:
        """Spec-compatible single-step API: True when execution may go on.

        Records like the engine does when called inside a job, but never sleeps:
        a RETRY answer only counts the retry; the caller schedules it.  ``routine``
        (the failing Routine) is not read: the answer rests on the error and the policy.
        """
        run = current_run()
        js = run.job_state if run is not None else None
        strategy = self.strategy
        if strategy is ErrorStrategy.STOP:
            logger.error("routine %s failed: %s", routine_id, error)
            return False
        if strategy is ErrorStrategy.CONTINUE:
            logger.warning("routine %s failed, continuing: %s", routine_id, error)
            if js is not None:
                js.record_execution(routine_id, "error_continued", error_record(None, error))
            return True
        if strategy is ErrorStrategy.SKIP:
            logger.warning("routine %s failed, skipping: %s", routine_id, error)
            if js is not None:
                js.merge_routine_state(routine_id, {"status": "skipped", "error": str(error)})
            return True
        if not self.is_retryable(error):
            return False
        if self.retry_count < self.max_retries:
            self.retry_count += 1
            return True
        return not self.is_critical

    def serialize(self) -> dict[str, Any]:
        """A JSON-safe dict; retryable exception classes are written as dotted names
        (the layout: ``routilux.persistence``)."""
        return layout_of(type(self)).serialize(self)

    def deserialize(self, data: dict[str, Any]) -> ErrorHandler:
        """Restore from :meth:`serialize` output; returns ``self``.

        Every value is checked before anything changes (the ranges of the constructor;
        booleans must be booleans; exception classes only by allowed names, see
        :func:`routilux.serialization.lookup_exception_class`). A bad value raises
        :class:`SerializationError` naming its key, e.g. ``'retry_delay'``.
        """
        layout_of(type(self)).deserialize(self, data)
        return self


def _strategy(value: object) -> ErrorStrategy:
    if isinstance(value, ErrorStrategy):
        return value
    try:
        # Only strings reach the Enum: its own error message would repr anything else,
        # which for a deeply nested value from a file is a RecursionError.
        if isinstance(value, str):
            return ErrorStrategy(value)
        raise ValueError
    except ValueError:
        choices = ", ".join(repr(s.value) for s in ErrorStrategy)
        raise InvalidArgumentError(
            f"'strategy' must be an ErrorStrategy or one of {choices}, got {short_repr(value)}"
        ) from None


def _bounded_int(name: str, value: object, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidArgumentError(
            f"'{name}' must be an integer from 0 to {maximum}, got {short_repr(value)}"
        )
    return value


def _bounded_number(name: str, value: object, maximum: float) -> float:
    # isfinite only for floats: it cannot convert a 400-digit int (which the range
    # check refuses anyway).
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
        or not 0 <= value <= maximum
    ):
        raise InvalidArgumentError(
            f"'{name}' must be a finite number from 0 to {maximum:g}, got {short_repr(value)}"
        )
    return value


def _exception_classes(
    value: Iterable[type[BaseException]] | type[BaseException] | None,
) -> tuple[type[BaseException], ...]:
    if value is None:
        return (Exception,)
    if isinstance(value, type):
        value = (value,)
    try:
        classes = tuple(value)
    except TypeError:
        raise InvalidArgumentError(
            f"'retryable_exceptions' must be a tuple of exception classes, got {short_repr(value)}"
        ) from None
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise InvalidArgumentError(
                f"'retryable_exceptions' must hold exception classes, got {short_repr(cls)}"
            )
    return classes or (Exception,)

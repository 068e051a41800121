"""Error policies: :class:`ErrorStrategy` and :class:`ErrorHandler`.

A handler only *decides*; the engine acts on the decision.  In particular a
retry delay is never slept here: :meth:`ErrorHandler.decide` returns the delay
and the engine schedules the re-delivery on its timer, so no worker waits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple

from .serialization import register_serializable

if TYPE_CHECKING:
    from .routine import Routine

logger = logging.getLogger("routilux.error_handler")


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


@register_serializable
class ErrorHandler:
    """How failures of a routine (or of every routine of a flow) are handled.

    ``retry_delay * retry_backoff ** (n - 1)`` seconds pass before the n-th retry.
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
        self.strategy = strategy if isinstance(strategy, ErrorStrategy) else ErrorStrategy(strategy)
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if retry_delay < 0 or retry_backoff < 0:
            raise ValueError("retry_delay and retry_backoff must be >= 0")
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.retry_backoff = retry_backoff
        self.retryable_exceptions: tuple[type[BaseException], ...] = tuple(
            retryable_exceptions or (Exception,)
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
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return float(self.retry_delay * self.retry_backoff ** (attempt - 1))

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
        routine: Routine | None,
        routine_id: str,
        flow: Any,
        context: Any = None,
    ) -> bool:
        """Spec-compatible single-step API: True when execution may go on.

        Records like the engine does when called inside a job, but never sleeps:
        a RETRY answer only counts the retry; the caller schedules it.
        """
        from .engine.context import current_run

        run = current_run()
        js = run.job_state if run is not None else None
        strategy = self.strategy
        if strategy is ErrorStrategy.STOP:
            logger.error("routine %s failed: %s", routine_id, error)
            return False
        if strategy is ErrorStrategy.CONTINUE:
            logger.warning("routine %s failed, continuing: %s", routine_id, error)
            if js is not None:
                js.record_execution(
                    routine_id,
                    "error_continued",
                    {"error": str(error), "error_type": type(error).__name__},
                )
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
        """A JSON-safe dict; retryable exception classes are written as dotted names."""
        return {
            "_type": "ErrorHandler",
            "strategy": self.strategy.value,
            "max_retries": self.max_retries,
            "retry_delay": self.retry_delay,
            "retry_backoff": self.retry_backoff,
            "retry_count": self.retry_count,
            "is_critical": self.is_critical,
            "is_optional": self.is_optional,
            "retryable_exceptions": [
                f"{cls.__module__}.{cls.__qualname__}" for cls in self.retryable_exceptions
            ],
        }

    def deserialize(self, data: dict[str, Any]) -> ErrorHandler:
        """Restore from :meth:`serialize` output; returns ``self``."""
        self.strategy = ErrorStrategy(data.get("strategy", "stop"))
        self.max_retries = int(data.get("max_retries", 3))
        self.retry_delay = float(data.get("retry_delay", 1.0))
        self.retry_backoff = float(data.get("retry_backoff", 2.0))
        self.retry_count = int(data.get("retry_count", 0))
        self.is_critical = bool(data.get("is_critical", False))
        self.is_optional = bool(data.get("is_optional", False))
        names = data.get("retryable_exceptions") or []
        classes = tuple(c for c in (_exception_class(n) for n in names) if c is not None)
        self.retryable_exceptions = classes or (Exception,)
        return self


def _exception_class(dotted: str) -> type[BaseException] | None:
    """Resolve an exception class name without importing anything.

    Only modules already imported are searched (DESIGN invariant 8).
    """
    import builtins
    import sys

    parts = dotted.split(".")
    # The longest prefix naming an imported module; the rest is the class's qualname.
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        module = builtins if module_name == "builtins" else sys.modules.get(module_name)
        if module is None:
            continue
        obj: Any = module
        for part in parts[cut:]:
            # Plain attribute dicts only: a module's or class's __getattr__ never runs.
            namespace = getattr(obj, "__dict__", None)
            obj = namespace.get(part) if isinstance(namespace, Mapping) else None
        if isinstance(obj, type) and issubclass(obj, BaseException):
            return obj
    logger.warning("retryable exception %s is not available; ignored", dotted)
    return None

"""Input slots: :class:`Slot`, its merge strategies and its handler dispatch rule."""

from __future__ import annotations

import inspect
import logging
import math
import threading
from typing import TYPE_CHECKING, Any, Callable

from .engine.context import current_run
from .engine.plan import (
    KWARGS,
    MergeStrategy,
    call_kind,
    definition_changed,
    keeps_buffer,
    make_caller,
    merge,
)
from .error_handler import error_record
from .exceptions import InvalidArgumentError
from .serialization import layout_of, register_serializable

if TYPE_CHECKING:
    from .event import Event
    from .routine import Routine

logger = logging.getLogger("routilux.slot")

# The delivery rules live with the engine's plan (one copy for jobs and for
# deliveries outside a job); re-exported here where they were defined before.
__all__ = ["MergeStrategy", "Slot", "check_timeout", "merge"]


def check_timeout(value: object, what: str) -> float | None:
    """``value`` as a handler timeout in seconds: a positive finite number or None.

    ``what`` names the owner in the error (``"slot 'r.s'"``, ``"Flow 'f'"``).  The
    upper bound is what a thread can wait for (``threading.TIMEOUT_MAX``).
    """
    if value is None:
        return None
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value <= threading.TIMEOUT_MAX
    ):
        return float(value)
    raise InvalidArgumentError(
        f"{what}: timeout must be a positive finite number of seconds "
        f"(at most {threading.TIMEOUT_MAX:.0f}) or None, got {value!r}"
    )


@register_serializable
class Slot:
    """A named input of a routine: merges what arrives and calls its handler.

    ``timeout`` (seconds, or None for the flow's ``handler_timeout``) bounds one
    delivery's handler run; see "Timeouts" in docs/execution-model.md.
    """

    def __init__(
        self,
        name: str = "",
        routine: Routine | None = None,
        handler: Callable[..., Any] | None = None,
        merge_strategy: MergeStrategy = "override",
        timeout: float | None = None,
    ) -> None:
        self.name = name
        self.routine = routine
        self._timeout: float | None = None
        self.timeout = timeout
        self._keeps_buffer = False
        self.merge_strategy = merge_strategy
        self.connected_events: list[Event] = []
        #: Merge buffer for deliveries made outside a job (a job keeps its own).
        self._data: Any = {}
        self._lock = threading.Lock()
        self._handler: Callable[..., Any] | None = None
        self._call: Callable[[Any], Any] | None = None
        self._is_async = False
        self.handler = handler

    @property
    def merge_strategy(self) -> MergeStrategy:
        """``"override"`` (default), ``"append"``, or ``f(buffer, new) -> merged``."""
        return self._merge_strategy

    @merge_strategy.setter
    def merge_strategy(self, strategy: MergeStrategy) -> None:
        if not callable(strategy) and strategy not in ("override", "append"):
            # The spec keeps unknown names working (as override); say so once.
            logger.warning("%r: unknown merge strategy %r acts as 'override'", self, strategy)
        self._merge_strategy = strategy
        self._keeps_buffer = keeps_buffer(strategy)
        definition_changed()

    @property
    def timeout(self) -> float | None:
        """Seconds one delivery's handler may run (None: the flow's ``handler_timeout``)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        owner = f"{type(self.routine).__name__} " if self.routine is not None else ""
        self._timeout = check_timeout(value, f"{owner}slot '{self.name}'")
        definition_changed()

    @property
    def handler(self) -> Callable[..., Any] | None:
        """The function called with the merged data (None: merge only)."""
        return self._handler

    @handler.setter
    def handler(self, handler: Callable[..., Any] | None) -> None:
        if handler is not None and not callable(handler):
            raise TypeError(f"handler of {self!r} must be callable, got {type(handler).__name__}")
        self._handler = handler
        # ``async def`` handlers skip the worker pool and start on the engine's loop.
        self._is_async = inspect.iscoroutinefunction(handler)
        self._call = make_caller(handler) if handler is not None else None
        definition_changed()

    def __repr__(self) -> str:
        if self.routine is not None:
            return f"Slot[{self.routine._label}.{self.name}]"
        return f"Slot[{self.name}]"

    def serialize(self) -> dict[str, Any]:
        """This slot as JSON-safe data (its layout: ``routilux.persistence``)."""
        return layout_of(type(self)).serialize(self)

    def deserialize(self, data: dict[str, Any]) -> Slot:
        """Restore from :meth:`serialize` output in place; returns ``self``."""
        layout_of(type(self)).deserialize(self, data)
        return self

    @staticmethod
    def _is_kwargs_handler(fn: Callable[..., Any]) -> bool:
        return call_kind(fn)[0] == KWARGS

    # -- wiring ------------------------------------------------------------

    def connect(self, event: Event, param_mapping: dict[str, str] | None = None) -> None:
        """Link ``event`` to this slot (both sides); idempotent."""
        if event not in self.connected_events:
            self.connected_events.append(event)
        if self not in event.connected_slots:
            event.connected_slots.append(self)
        definition_changed()

    def disconnect(self, event: Event) -> None:
        """Remove the link with ``event`` (both sides); no error when absent."""
        if event in self.connected_events:
            self.connected_events.remove(event)
        if self in event.connected_slots:
            event.connected_slots.remove(self)
        definition_changed()

    # -- delivery ----------------------------------------------------------

    def _dispatch(self, merged: Any) -> Any:
        """Call the handler with ``merged`` by the dispatch rule of spec 10 §3.3."""
        call = self._call
        assert call is not None
        return call(merged)

    def _merge_data(self, new: dict[str, Any]) -> Any:
        """Merge into this slot's own buffer (deliveries outside a job)."""
        with self._lock:
            self._data, passed = merge(self.merge_strategy, self._data, new)
        return passed

    def receive(self, data: dict[str, Any]) -> None:
        """Merge ``data`` and call the handler now; handler errors are logged and recorded."""
        self.call_handler(data, propagate_exceptions=False)

    def call_handler(self, data: dict[str, Any], propagate_exceptions: bool = False) -> None:
        """Merge ``data`` and call the handler synchronously."""
        merged = self._merge_data(data)
        if self._handler is None:
            return
        try:
            result = self._dispatch(merged)
            if result is not None and inspect.isawaitable(result):
                from .engine import aio

                aio.submit(_awaited(result)).result()
        except Exception as exc:
            if propagate_exceptions:
                raise
            logger.exception("handler of %r failed", self)
            run = current_run()
            if run is not None and self.routine is not None:
                rid = run.routine_ids.get(id(self.routine))
                if rid is not None:
                    run.job_state.record_execution(rid, "error", error_record(self.name, exc))


async def _awaited(awaitable: Any) -> Any:
    return await awaitable

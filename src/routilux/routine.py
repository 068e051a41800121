"""Routines: :class:`Routine` (a node with input slots and output events) and
:class:`ExecutionContext` (what a handler learns about the job it serves)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, ClassVar, NamedTuple, Optional, Union

from .engine.context import current_run
from .engine.plan import definition_changed
from .error_handler import ErrorHandler, ErrorStrategy
from .event import Event, _is_flow
from .exceptions import ConfigError, DefinitionError, ExecutionContextError
from .inputs import new_request
from .serialization import layout_of, register_serializable
from .slot import MergeStrategy, Slot

if TYPE_CHECKING:
    from .engine.scheduling import Scheduled
    from .engine.tasks import Task
    from .flow.flow import Flow
    from .job_state import JobState

logger = logging.getLogger("routilux.routine")

ConfigType = Union[type, tuple[type, ...]]


class _ContextFields(NamedTuple):
    flow: Flow
    job_state: JobState
    routine_id: str


class ExecutionContext(_ContextFields):
    """The job a handler is running for: ``flow, job_state, routine_id = ctx``.

    ``delivery_id`` names the delivery being handled: a string unique within the
    job (``"<job_id>:<seq>"``), the same for every retry of that delivery and
    after the job is saved and resumed, so a handler can make an external write
    idempotent by keying it on ``delivery_id`` (docs/execution-model.md,
    "Delivery ids").  None when the context was not taken inside a delivery.
    """

    delivery_id: str | None = None


@register_serializable
class Routine:
    """A unit of work: named input slots (each with a handler) and output events.

    Keep per-run values in the job state (``self.get_execution_context()``), not
    on ``self``: one routine object serves every job of its flow.

    Subclasses may set :attr:`config_schema` (key -> type or tuple of types) to
    have :meth:`set_config` reject unknown keys and values of the wrong type.
    """

    config_schema: ClassVar[Optional[dict[str, ConfigType]]] = None

    def __init__(self) -> None:
        self._id = hex(id(self))
        #: The id this routine was first added to a flow under (``Flow.add_routine``).
        self._added_as: str | None = None
        self._slots: dict[str, Slot] = {}
        self._events: dict[str, Event] = {}
        self._config: dict[str, Any] = {}
        self._error_handler: ErrorHandler | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}[{self._label}]"

    @property
    def _label(self) -> str:
        """How messages name this routine: the id it was first added to a flow under
        (a routine may be in several flows), else its ``_id``."""
        # getattr: repr may run on a half-built object (a subclass's __init__ failing).
        return getattr(self, "_added_as", None) or self._id

    def __call__(self, **kwargs: Any) -> None:
        """Legacy no-op kept for compatibility; the framework never calls it."""
        return None

    def serialize(self) -> dict[str, Any]:
        """This routine as JSON-safe data (its layout: ``routilux.persistence``)."""
        return layout_of(type(self)).serialize(self)

    def deserialize(self, data: dict[str, Any]) -> Routine:
        """Restore from :meth:`serialize` output in place; returns ``self``."""
        layout_of(type(self)).deserialize(self, data)
        return self

    # -- definition ----------------------------------------------------------

    def define_slot(
        self,
        name: str,
        handler: Callable[..., Any] | None = None,
        merge_strategy: MergeStrategy = "override",
        timeout: float | None = None,
    ) -> Slot:
        """Create the input slot ``name`` whose ``handler`` receives merged data.

        ``timeout`` (seconds) bounds each delivery's handler run; a delivery over
        time fails with ``HandlerTimeoutError`` through the routine's error
        strategy.  None uses the flow's ``handler_timeout``.
        """
        if name in self._slots:
            raise DefinitionError(f"Slot '{name}' already exists in {self!r}")
        slot = Slot(name, self, handler, merge_strategy, timeout)
        self._slots[name] = slot
        definition_changed()
        return slot

    def define_event(self, name: str, output_params: list[str] | None = None) -> Event:
        """Create the output event ``name`` (``output_params`` documents its keys)."""
        if name in self._events:
            raise DefinitionError(f"Event '{name}' already exists in {self!r}")
        for param in output_params or ():
            if param in RESERVED_EMIT_NAMES:
                raise DefinitionError(
                    f"Event '{name}' of {self!r} declares the parameter {param!r}, a name "
                    f"emit() reserves ({RESERVED_EMIT_NAMES[param]}); rename the parameter"
                )
        event = Event(name, self, output_params or [])
        self._events[name] = event
        definition_changed()
        return event

    def get_slot(self, name: str) -> Slot | None:
        """The slot ``name``, or None."""
        return self._slots.get(name)

    def get_event(self, name: str) -> Event | None:
        """The event ``name``, or None."""
        return self._events.get(name)

    # -- configuration ---------------------------------------------------------

    def set_config(self, **kwargs: Any) -> None:
        """Update the routine's static configuration (validated by :attr:`config_schema`)."""
        schema = self.config_schema
        if schema is not None:
            for key, value in kwargs.items():
                if key not in schema:
                    raise ConfigError(
                        f"{self!r}: unknown config key '{key}' "
                        f"(known keys: {', '.join(sorted(schema))})"
                    )
                expected = schema[key]
                if not isinstance(value, expected) or (
                    isinstance(value, bool) and not _accepts_bool(expected)
                ):
                    raise ConfigError(
                        f"{self!r}: config key '{key}' must be {_type_names(expected)}, "
                        f"got {type(value).__name__}"
                    )
        self._config.update(kwargs)

    def get_config(self, key: str, default: Any = None) -> Any:
        """The configuration value ``key``, or ``default``."""
        return self._config.get(key, default)

    def config(self) -> dict[str, Any]:
        """A shallow copy of the configuration."""
        return dict(self._config)

    def _config_to_data(self) -> dict[str, Any]:
        """The configuration as JSON-safe data (override when it holds callables)."""
        return dict(self._config)

    def _config_from_data(self, data: dict[str, Any]) -> None:
        """Restore the configuration written by :meth:`_config_to_data`."""
        self._config = dict(data)

    # -- error policy -----------------------------------------------------------

    def set_error_handler(self, handler: ErrorHandler | None) -> None:
        """Install this routine's error handler (it wins over the flow's)."""
        self._error_handler = handler
        definition_changed()

    def get_error_handler(self) -> ErrorHandler | None:
        """This routine's own error handler, or None."""
        return self._error_handler

    def set_as_optional(self, strategy: ErrorStrategy | str | None = None) -> None:
        """Failures of this routine never stop the job (CONTINUE unless told otherwise)."""
        self.set_error_handler(
            ErrorHandler(
                strategy=strategy or ErrorStrategy.CONTINUE, is_critical=False, is_optional=True
            )
        )

    def set_as_critical(
        self, max_retries: int = 3, retry_delay: float = 1.0, retry_backoff: float = 2.0
    ) -> None:
        """Retry failures of this routine; once retries run out the job fails."""
        self.set_error_handler(
            ErrorHandler(
                strategy=ErrorStrategy.RETRY,
                max_retries=max_retries,
                retry_delay=retry_delay,
                retry_backoff=retry_backoff,
                is_critical=True,
            )
        )

    # -- running ---------------------------------------------------------------

    def get_execution_context(self) -> ExecutionContext | None:
        """The job this routine is handling right now, or None outside a job."""
        run = current_run()
        if run is None:
            return None
        rid = run.routine_ids.get(id(self))
        if rid is None:
            return None
        ctx = ExecutionContext(run.flow, run.job_state, rid)
        ctx.delivery_id = run.delivery_id()
        return ctx

    @property
    def context(self) -> ExecutionContext:
        """The job this routine is handling right now; never None.

        The typed alternative to :meth:`get_execution_context` for handlers: it
        raises :class:`~routilux.ExecutionContextError` outside a job instead of
        returning None, so handler code needs no ``assert ctx is not None``.
        """
        return self._require_context("use self.context")

    def emit(self, event_name: str, flow: Flow | None = None, **kwargs: Any) -> None:
        """Send ``kwargs`` on the event ``event_name``.

        Inside a job the emission is recorded in the job's history and one task
        per connected slot is queued; ``emit`` never waits for them.
        """
        event = self._events.get(event_name)
        if event is None:
            raise DefinitionError(f"Event '{event_name}' does not exist in {self!r}")
        run = current_run()
        if run is not None and (flow is None or flow is run.flow):
            run.emit(self, event, kwargs)
            return
        if flow is not None and not _is_flow(flow):
            raise DefinitionError(
                f"emit({event_name!r}) of {self!r}: 'flow' is reserved for the Flow to emit "
                f"in, got {type(flow).__name__} {flow!r}; send data under another key"
            )
        event.emit(flow=flow, **kwargs)

    def _require_context(self, what: str) -> ExecutionContext:
        ctx = self.get_execution_context()
        if ctx is None:
            raise ExecutionContextError(
                f"Cannot {what}: not in execution context ({self!r} is not running in a job)"
            )
        return ctx

    def emit_deferred_event(self, event_name: str, **kwargs: Any) -> None:
        """Store an emission in the job state; it happens when the job is resumed."""
        ctx = self._require_context("emit deferred event")
        ctx.job_state.add_deferred_event(ctx.routine_id, event_name, kwargs)

    def send_output(self, output_type: str, **data: Any) -> None:
        """Send ``data`` to the job's output handler and output log (not to slots)."""
        ctx = self._require_context("send output")
        ctx.job_state.send_output(ctx.routine_id, output_type, data)

    def schedule(self, delay: float, slot_name: str, /, **data: Any) -> Scheduled | None:
        """After ``delay`` seconds, deliver ``data`` to this routine's slot ``slot_name``.

        The pending timer keeps the job alive, occupies no worker and is
        dropped with the job (saved as a pending task when the job pauses).
        Returns a handle whose ``cancel()`` withdraws it, or None when the job
        is paused (the delivery is then saved and happens on resume) or stopped.
        """
        task = self._own_task("schedule a delivery", slot_name, data)
        run = current_run()
        assert run is not None
        return run.schedule(delay, task)

    def set_timer(self, timer_name: str, delay: float, slot_name: str, /, **data: Any) -> bool:
        """Like :meth:`schedule`, for a named timer of this routine in this job: a
        pending timer of the same name is cancelled first.  True when scheduled."""
        task = self._own_task("set a timer", slot_name, data)
        run = current_run()
        assert run is not None
        return run.schedule(delay, task, name=timer_name) is not None

    def cancel_timer(self, timer_name: str) -> bool:
        """Cancel this routine's named timer in the current job; True when it was
        pending (its delivery will not happen)."""
        ctx = self._require_context("cancel a timer")
        run = current_run()
        assert run is not None
        return run.cancel_named_timer(ctx.routine_id, timer_name)

    def schedule_at_job_end(self, slot_name: str, /, **data: Any) -> None:
        """Deliver ``data`` to ``slot_name`` once, when the job would otherwise finish."""
        task = self._own_task("schedule a delivery at job end", slot_name, data)
        run = current_run()
        assert run is not None
        run.at_job_end(task)

    def request_input(
        self,
        slot_name: str,
        *,
        prompt: str = "",
        schema: dict[str, Any] | None = None,
    ) -> str:
        """Ask a person (or any outside process) for input to this routine's slot
        ``slot_name``; returns the request's id.

        The request goes into ``job_state.waiting_for``; the job goes on with its
        other work and, when nothing else is left, becomes ``waiting`` (holding no
        thread) until ``flow.send_input(job, routine_id, slot_name, data)``
        delivers ``data`` to the slot.  ``schema`` maps field names to ``bool``,
        ``int``, ``float``, ``str``, ``list`` or ``dict``, or to ``(type, default)``
        for a field that may be left out; input that does not fit is refused with
        :class:`~routilux.InvalidInputError` (docs/human-input.md).  None accepts
        any dict.  Outside a job it raises ExecutionContextError; a slot this
        routine lacks, or a bad schema, raises naming the routine, slot and field.
        """
        ctx = self._require_context("request input")
        self._slot_named(slot_name)
        where = f"request_input({slot_name!r}) of routine '{ctx.routine_id}'"
        request = new_request(ctx.routine_id, slot_name, prompt, schema, where)
        ctx.job_state._open_request(request)
        return str(request["id"])

    def _own_task(self, what: str, slot_name: str, data: dict[str, Any]) -> Task:
        ctx = self._require_context(what)
        self._slot_named(slot_name)  # a clear error for a slot that does not exist
        run = current_run()
        assert run is not None
        return run.new_task(ctx.routine_id, slot_name, data)

    def _slot_named(self, name: str) -> Slot:
        slot = self._slots.get(name)
        if slot is None:
            raise DefinitionError(f"Slot '{name}' does not exist in {self!r}")
        return slot

    def _extract_input_data(self, data: Any = None, **kwargs: Any) -> Any:
        """The payload of a delivery: ``data`` if given, else the ``data`` key, else
        the single value, else all keyword arguments (``{}`` when there are none)."""
        if data is not None:
            return data
        if "data" in kwargs:
            return kwargs["data"]
        if len(kwargs) == 1:
            return next(iter(kwargs.values()))
        return kwargs or {}


#: Keyword names ``emit()`` keeps for itself, with what they mean; an event
#: cannot declare them as parameters.
RESERVED_EMIT_NAMES = {
    "flow": "emit(..., flow=...) names the Flow to emit in",
    "event_name": "emit's first argument",
}


def _accepts_bool(expected: ConfigType) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    return bool in types or object in types


def _type_names(expected: ConfigType) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(t.__name__ for t in types)

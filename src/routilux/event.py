"""Output events: :class:`Event`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .engine.context import current_run
from .engine.plan import apply_mapping
from .exceptions import DefinitionError
from .serialization import layout_of, register_serializable

if TYPE_CHECKING:
    from .routine import Routine
    from .slot import Slot


@register_serializable
class Event:
    """A named output of a routine, connected to any number of slots."""

    def __init__(
        self,
        name: str = "",
        routine: Routine | None = None,
        output_params: list[str] | None = None,
    ) -> None:
        self.name = name
        self.routine = routine
        self.output_params = list(output_params or [])
        self.connected_slots: list[Slot] = []

    def __repr__(self) -> str:
        if self.routine is not None:
            return f"Event[{self.routine._label}.{self.name}]"
        return f"Event[{self.name}]"

    def serialize(self) -> dict[str, Any]:
        """This event as JSON-safe data (its layout: ``routilux.persistence``)."""
        return layout_of(type(self)).serialize(self)

    def deserialize(self, data: dict[str, Any]) -> Event:
        """Restore from :meth:`serialize` output in place; returns ``self``."""
        layout_of(type(self)).deserialize(self, data)
        return self

    def connect(self, slot: Slot, param_mapping: dict[str, str] | None = None) -> None:
        """Link this event to ``slot`` (both sides); idempotent."""
        slot.connect(self, param_mapping)

    def disconnect(self, slot: Slot) -> None:
        """Remove the link with ``slot`` (both sides); no error when absent."""
        slot.disconnect(self)

    def emit(self, flow: Any = None, **kwargs: Any) -> None:
        """Send ``kwargs`` to the connected slots (no history record; see Routine.emit).

        Inside a job (of ``flow``, when given) one task per slot is queued on the
        job.  Without a running job the slots receive the data synchronously, in
        connection order, through ``flow``'s parameter mappings when it is given.
        """
        if flow is not None and not _is_flow(flow):
            raise DefinitionError(
                f"{self!r}.emit(): 'flow' is reserved for the Flow to emit in, got "
                f"{type(flow).__name__} {flow!r}; send data under another key"
            )
        run = current_run()
        if run is not None and (flow is None or flow is run.flow):
            # Inside a job of the flow: routed by the job's plan, like Routine.emit
            # (but without a history record).
            if run.route(self, kwargs):
                return
            flow = run.flow
        for slot in list(self.connected_slots):
            data = dict(kwargs)
            if flow is not None:
                conn = flow._find_connection(self, slot)
                if conn is not None:
                    data = apply_mapping(conn.param_mapping, data)
            slot.receive(data)


def _is_flow(value: object) -> bool:
    # A Flow (or a subclass) says so with a class attribute: the flow package sits above
    # this module and imports it, so importing Flow here would close an import cycle.
    return getattr(type(value), "_routilux_flow", False) is True

"""Connections from an event to a slot, with optional parameter renaming."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .engine.plan import apply_mapping, definition_changed
from .serialization import layout_of, register_serializable

if TYPE_CHECKING:
    from .event import Event
    from .slot import Slot


@register_serializable
class Connection:
    """Links ``source_event`` to ``target_slot``; ``param_mapping`` renames keys
    (``{event_key: slot_key}``) on the way."""

    def __init__(
        self,
        source_event: Event | None = None,
        target_slot: Slot | None = None,
        param_mapping: dict[str, str] | None = None,
    ) -> None:
        self.source_event = source_event
        self.target_slot = target_slot
        self.param_mapping: dict[str, str] = dict(param_mapping or {})
        # Flow routine ids of both ends, set by Flow.connect (used by serialization).
        self._source_routine_id: str | None = None
        self._target_routine_id: str | None = None
        if source_event is not None and target_slot is not None:
            source_event.connect(target_slot)

    @property
    def param_mapping(self) -> dict[str, str]:
        """How keys are renamed on the way: ``{event_key: slot_key}``."""
        return self._param_mapping

    @param_mapping.setter
    def param_mapping(self, mapping: dict[str, str]) -> None:
        self._param_mapping = mapping
        definition_changed()

    def __repr__(self) -> str:
        return f"Connection[{self.source_event!r} -> {self.target_slot!r}]"

    def serialize(self) -> dict[str, Any]:
        """This connection as JSON-safe data (its layout: ``routilux.persistence``)."""
        return layout_of(type(self)).serialize(self)

    def deserialize(self, data: dict[str, Any]) -> Connection:
        """Restore from :meth:`serialize` output; the ends stay None until a flow
        resolves them.  Returns ``self``."""
        layout_of(type(self)).deserialize(self, data)
        return self

    def _apply_mapping(self, data: dict[str, Any]) -> dict[str, Any]:
        """Rename keys by ``param_mapping``; keys that are neither a source nor a
        target of the mapping pass unchanged (the mapped value wins a collision)."""
        return apply_mapping(self.param_mapping, data)

    def activate(self, data: dict[str, Any]) -> None:
        """Deliver ``data`` to the target slot synchronously, through the mapping."""
        if self.target_slot is None:
            raise ValueError(f"{self!r} has no target slot")
        self.target_slot.receive(self._apply_mapping(data))

    def disconnect(self) -> None:
        """Unlink the event and the slot (does not remove it from a flow)."""
        if self.source_event is not None and self.target_slot is not None:
            self.source_event.disconnect(self.target_slot)

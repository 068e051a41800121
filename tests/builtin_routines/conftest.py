"""Fixtures for the built-in routine tests: capture what a routine emits."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from routilux import Slot


class Captured(list):  # type: ignore[type-arg]
    """Emissions of one event, as the dicts delivered to a connected slot."""

    def last(self) -> dict[str, Any]:
        assert self, "nothing was emitted"
        return self[-1]


@pytest.fixture
def capture() -> Callable[..., Captured]:
    """``capture(routine, "output")`` -> a list that fills as the event is emitted."""

    def attach(routine: Any, event_name: str = "output") -> Captured:
        out = Captured()
        slot = Slot(f"capture_{event_name}", None, lambda **kw: out.append(kw))
        event = routine.get_event(event_name)
        assert event is not None, f"{routine!r} has no event {event_name!r}"
        event.connect(slot)
        return out

    return attach

"""Debouncer: of a burst of inputs, emits only the last one, once the burst is over."""

from __future__ import annotations

from typing import Any

from routilux.serialization import register_serializable

from .._base import MAX_WAIT_SECONDS, BuiltinRoutine


@register_serializable
class Debouncer(BuiltinRoutine):
    """Emit the last input ``wait`` seconds after the last input of a burst.

    Every input restarts the wait. ``output`` carries ``data`` (the last item), the keys
    that came with it, and ``count`` (how many inputs the burst had). Delivering
    anything to the ``flush`` slot emits the pending item at once.

    The pending item is per job (in the JobState); the wait runs on the engine's
    timer, keeps the job alive and occupies no worker. Outside a job there is no
    timer: the last input waits for a delivery to ``flush``.
    """

    config_schema = {
        "wait": (int, float),
    }

    def __init__(self) -> None:
        super().__init__()
        self.input_slot = self._define_input(self._handle_input)
        self.flush_slot = self.define_slot("flush", self._handle_flush)
        self.output_event = self.define_event("output", ["data", "count"])
        self.set_config(wait=0.1)

    def _check_config_value(self, key: str, value: Any) -> None:
        if key == "wait":
            self._require_range(key, value, 0, MAX_WAIT_SECONDS)

    def _handle_input(self, **kwargs: Any) -> None:
        item, extras = self._split_input(kwargs)
        with self._state() as state:
            seq = int(state.get("seq", 0)) + 1
            state["seq"] = seq
            state["pending"] = {"data": item, "extras": extras}
            state["count"] = int(state.get("count", 0)) + 1
        self._start_timer("wait", seq, float(self.get_config("wait", 0.1)), "flush")

    def _handle_flush(self, seq: Any = None, **kwargs: Any) -> None:
        with self._state() as state:
            current = int(state.get("seq", 0))
            if seq is not None and seq != current:
                return  # a newer input restarted the wait
            pending = state.pop("pending", None)
            if pending is None:
                return
            count = int(state.pop("count", 1))
            state["seq"] = current + 1
        if seq is None:  # not the timer firing: it is no longer needed
            self._stop_timer("wait")
        self.emit("output", **{**pending["extras"], "data": pending["data"], "count": count})

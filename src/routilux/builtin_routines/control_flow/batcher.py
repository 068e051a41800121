"""Batcher: groups a stream of items into lists of ``batch_size``."""

from __future__ import annotations

from typing import Any

from routilux.serialization import register_serializable

from .._base import MAX_COUNT, MAX_WAIT_SECONDS, BuiltinRoutine, NoneType


@register_serializable
class Batcher(BuiltinRoutine):
    """Collect items into batches and emit each batch on ``output``.

    ``output`` carries ``batch`` (the items, in arrival order), ``size``,
    ``batch_index`` (0, 1, ... within the job) and ``reason``: ``"full"``,
    ``"max_wait"`` (the partial batch waited ``max_wait`` seconds since its first
    item), ``"job_end"`` (the job had nothing else to do) or ``"flush"`` (something
    was delivered to the ``flush`` slot).

    The buffer is per job (in the JobState). Waiting runs on the engine's timer: it
    keeps the job alive and occupies no worker. Outside a job only full batches and
    explicit flushes are emitted.
    """

    config_schema = {
        "batch_size": int,
        "max_wait": (int, float, NoneType),
        "flush_on_job_end": bool,
    }

    def __init__(self) -> None:
        super().__init__()
        self.input_slot = self._define_input(self._handle_input)
        self.flush_slot = self.define_slot("flush", self._handle_flush)
        self.output_event = self.define_event("output", ["batch", "size", "batch_index", "reason"])
        self.set_config(batch_size=10, max_wait=None, flush_on_job_end=True)

    def _check_config_value(self, key: str, value: Any) -> None:
        if key == "batch_size":
            self._require_range(key, value, 1, MAX_COUNT)
        elif key == "max_wait":
            self._require_range(key, value, 0, MAX_WAIT_SECONDS)

    def _handle_input(self, **kwargs: Any) -> None:
        item, _extras = self._split_input(kwargs)
        batch_size = int(self.get_config("batch_size", 10))
        max_wait = self.get_config("max_wait")
        in_job = self._in_job()
        full: list[Any] | None = None
        timer_seq: int | None = None
        with self._state() as state:
            buffer = [*state.get("buffer", []), item]
            started = len(buffer) == 1
            seq = int(state.get("seq", 0))
            if len(buffer) >= batch_size:
                full, index = buffer, int(state.get("batches", 0))
                state["buffer"] = []
                state["batches"] = index + 1
                seq += 1
            else:
                state["buffer"] = buffer
                if started and max_wait is not None and in_job:
                    seq += 1
                    timer_seq = seq
            state["seq"] = seq
        if full is not None:
            self._stop_timer("max_wait")
            self.emit("output", batch=full, size=len(full), batch_index=index, reason="full")
            return
        if timer_seq is not None:
            self._start_timer("max_wait", timer_seq, float(max_wait), "flush", reason="max_wait")
        if started and in_job and self.get_config("flush_on_job_end", True):
            self.schedule_at_job_end("flush", reason="job_end")

    def _handle_flush(self, seq: Any = None, reason: Any = None, **kwargs: Any) -> None:
        with self._state() as state:
            current = int(state.get("seq", 0))
            if seq is not None and seq != current:
                return  # a timer for a batch that was already emitted
            buffer = list(state.get("buffer", []))
            if not buffer:
                return
            index = int(state.get("batches", 0))
            state["buffer"] = []
            state["batches"] = index + 1
            state["seq"] = current + 1
        if seq is None:  # not the timer firing: it is no longer needed
            self._stop_timer("max_wait")
        self.emit(
            "output",
            batch=buffer,
            size=len(buffer),
            batch_index=index,
            reason=reason if isinstance(reason, str) else "flush",
        )

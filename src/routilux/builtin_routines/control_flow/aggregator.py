"""Aggregator: collects items per correlation key and emits each group once it is
complete, timed out, or the job ends."""

from __future__ import annotations

import json
from typing import Any

from routilux.serialization import register_serializable

from .._base import MAX_COUNT, MAX_WAIT_SECONDS, BuiltinRoutine, NoneType


@register_serializable
class Aggregator(BuiltinRoutine):
    """Collect items into groups and emit each group on ``output``.

    A group is the items sharing the value of ``correlation_key`` (a key delivered
    with the item, or a field of a dict item; without it every item joins one group).
    A group is complete when it holds N items, where N is the ``count_key`` value
    that came with its first item (a Splitter's ``total``) or else ``expected_count``.
    ``timeout`` seconds after a group's first item it is emitted as it is, even when
    no further input arrives; with ``flush_on_job_end`` incomplete groups are emitted
    when the job has nothing else to do. A delivery to the ``flush`` slot emits every
    group at once.

    ``output`` carries ``items`` (ordered by their ``index_key`` values when every
    item has one, else in arrival order), ``key``, ``count``, ``expected`` and
    ``reason`` (``"complete"``, ``"timeout"``, ``"job_end"`` or ``"flush"``).
    Groups live in the JobState, so concurrent jobs never mix their items.
    """

    config_schema = {
        "expected_count": (int, NoneType),
        "count_key": (str, NoneType),
        "correlation_key": (str, NoneType),
        "index_key": (str, NoneType),
        "timeout": (int, float, NoneType),
        "flush_on_job_end": bool,
    }

    def __init__(self) -> None:
        super().__init__()
        self.input_slot = self._define_input(self._handle_input)
        self.flush_slot = self.define_slot("flush", self._handle_flush)
        self.output_event = self.define_event(
            "output", ["items", "key", "count", "expected", "reason"]
        )
        self.set_config(
            expected_count=None,
            count_key="total",
            correlation_key=None,
            index_key="index",
            timeout=None,
            flush_on_job_end=True,
        )

    def _check_config_value(self, key: str, value: Any) -> None:
        if key == "expected_count":
            self._require_range(key, value, 1, MAX_COUNT)
        elif key == "timeout":
            self._require_range(key, value, 0, MAX_WAIT_SECONDS)

    # -- input -------------------------------------------------------------------------

    def _correlation(self, item: Any, extras: dict[str, Any]) -> Any:
        field = self.get_config("correlation_key")
        if field is None:
            return None
        if field in extras:
            return extras[field]
        if isinstance(item, dict):
            return item.get(field)
        return None

    def _meta_int(self, config_key: str, extras: dict[str, Any]) -> int | None:
        name = self.get_config(config_key)
        value = extras.get(name) if name is not None else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return None

    def _handle_input(self, **kwargs: Any) -> None:
        item, extras = self._split_input(kwargs)
        key = self._correlation(item, extras)
        token = json.dumps(key, sort_keys=True, default=repr)
        announced = self._meta_int("count_key", extras)
        index = self._meta_int("index_key", extras)
        in_job = self._in_job()
        complete: dict[str, Any] | None = None
        new_seq: int | None = None
        with self._state() as state:
            groups = dict(state.get("groups", {}))
            group = groups.get(token)
            if group is None:
                new_seq = int(state.get("seq", 0)) + 1
                state["seq"] = new_seq
                group = {"key": key, "entries": [], "expected": None, "seq": new_seq}
            group = dict(group)
            group["entries"] = [*group["entries"], [index, item]]
            if group["expected"] is None:
                group["expected"] = announced or self.get_config("expected_count")
            expected = group["expected"]
            if expected is not None and len(group["entries"]) >= expected:
                groups.pop(token, None)
                complete = group
            else:
                groups[token] = group
            state["groups"] = groups
        if complete is not None:
            self._stop_timer(f"group:{token}")
            self._emit_group(complete, "complete")
            return
        if new_seq is not None and in_job:
            timeout = self.get_config("timeout")
            if timeout is not None:
                self._start_timer(
                    f"group:{token}",
                    new_seq,
                    float(timeout),
                    "flush",
                    group=token,
                    reason="timeout",
                )
            if self.get_config("flush_on_job_end", True):
                self.schedule_at_job_end("flush", reason="job_end")

    # -- flushing ----------------------------------------------------------------------

    def _handle_flush(
        self, seq: Any = None, group: Any = None, reason: Any = None, **kwargs: Any
    ) -> None:
        with self._state() as state:
            groups = dict(state.get("groups", {}))
            if group is not None:
                found = groups.get(group)
                if found is None or (seq is not None and found["seq"] != seq):
                    return  # that group was already emitted
                flushed = [(str(group), groups.pop(group))]
            else:
                flushed = sorted(groups.items(), key=lambda pair: int(pair[1]["seq"]))
                groups = {}
            state["groups"] = groups
        why = reason if isinstance(reason, str) else "flush"
        for token, found in flushed:
            if group is None or seq is None:  # not the group's own timer firing
                self._stop_timer(f"group:{token}")
            self._emit_group(found, why)

    def _emit_group(self, group: dict[str, Any], reason: str) -> None:
        entries = group["entries"]
        if entries and all(isinstance(e[0], int) for e in entries):
            entries = sorted(entries, key=lambda e: int(e[0]))
        items = [e[1] for e in entries]
        self.emit(
            "output",
            items=items,
            key=group["key"],
            count=len(items),
            expected=group["expected"],
            reason=reason,
        )

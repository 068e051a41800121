"""Splitter: turns one list into one emission per item."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from routilux.serialization import register_serializable

from .._base import BuiltinRoutine


@register_serializable
class Splitter(BuiltinRoutine):
    """Emit each item of the input list on ``output`` as ``data`` with ``index`` and
    ``total``, then ``done`` with ``total``.

    Keys that came with the list (say a ``request_id``) travel with every item, so an
    Aggregator further on can group by them and knows how many items to expect. The
    input must be a list, a tuple or another iterable that is not a str, bytes or dict;
    anything else is an error of this routine (TypeError).
    """

    def __init__(self) -> None:
        super().__init__()
        self.input_slot = self._define_input(self._handle_input)
        self.output_event = self.define_event("output", ["data", "index", "total"])
        self.done_event = self.define_event("done", ["total"])

    def _handle_input(self, **kwargs: Any) -> None:
        items, extras = self._split_input(kwargs)
        if isinstance(items, (str, bytes, dict)) or not isinstance(items, Iterable):
            raise TypeError(
                f"{self!r} splits lists; got {type(items).__name__} (deliver a list as 'data')"
            )
        values = list(items)
        extras = {k: v for k, v in extras.items() if k not in ("index", "total")}
        total = len(values)
        for index, item in enumerate(values):
            self.emit("output", **extras, data=item, index=index, total=total)
        self.emit("done", **extras, total=total)

"""JSON texts written by hand, for the durable journal's hot paths.

A delivery of a durable job records its emission (a history op) and the task it
queues as JSON text.  The C encoder spends microseconds per call on values that
small, most of it in per-call set-up; an f-string of quoted parts costs a fraction
of that.  This module owns the pieces such texts are made of: :data:`quote` (a
string as the encoder quotes it), :func:`atoms_text` (a dict of atoms) and
:func:`record_text` (a history record's saved form; :func:`record_head`, its text up
to the data).  Each
text is byte for byte what the store's encoder writes for the same value
(``store._base._ENCODE``: compact separators, ASCII, no NaN), so records made either
way read back alike.
"""

from __future__ import annotations

import json.encoder
from typing import Any, Callable

__all__ = ["atoms_text", "quote", "record_head", "record_text"]

#: A string as JSON text, quoted and escaped as the encoder writes it (the C helper);
#: TypeError for anything but a string.
quote: Callable[[str], str] = json.encoder.encode_basestring_ascii


def atoms_text(data: dict[Any, Any]) -> str | None:
    """The JSON text of ``data``, as the store's encoder writes it, when its keys are
    strings and its values strings, ints, finite floats, bools or None (an emission's
    usual data); else None."""
    parts: list[str] = []
    for key, value in data.items():
        if type(key) is not str:
            return None
        kind = type(value)
        if kind is str:
            parts.append(f"{quote(key)}:{quote(value)}")
        elif kind is int:
            try:
                parts.append(f"{quote(key)}:{value!r}")
            except ValueError:  # too many digits for a text (sys.set_int_max_str_digits)
                return None
        elif kind is float:
            if value - value != 0.0:  # NaN or an infinity: JSON has neither
                return None
            parts.append(f"{quote(key)}:{value!r}")
        elif value is None:
            parts.append(f"{quote(key)}:null")
        elif kind is bool:
            parts.append(f"{quote(key)}:{'true' if value else 'false'}")
        else:
            return None
    return f"{{{','.join(parts)}}}"


def record_text(routine_text: str, event_text: str, data_text: str, stamp_text: str) -> str:
    """The saved form of one history record (an ``ExecutionRecord``, as the snapshot of
    a JobState writes it: ``routilux.persistence``) as JSON text, from the JSON texts of
    its routine id, event name, data and timestamp."""
    return f'{record_head(routine_text, event_text)}{data_text},"timestamp":{stamp_text}}}'


def record_head(routine_text: str, event_text: str) -> str:
    """The start of :func:`record_text`, up to (not including) the record's data: the
    same for every record of one routine's event, so it can be made once for them."""
    return (
        f'{{"_type":"ExecutionRecord","routine_id":{routine_text},"event_name":{event_text},"data":'
    )

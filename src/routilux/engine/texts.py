"""JSON texts of the serial lane's records, written by hand.

A delivery of the journal's serial lane (``engine/journal.py``) usually records one
emission -- a ``history`` op -- and queues one ready task whose data is a dict of
strings, ints, bools and Nones.  The C encoder spends microseconds on each call
for such a record, most of it in per-call set-up; the texts here are f-strings of
pre-quoted parts, a fraction of that.  The record then reaches the store already
encoded (``store._base.encoded_record``), as a tuple the garbage collector stops
tracking, instead of as nested lists that live until the writer thread commits
them.  Anything else returns None and takes the general way (the store encodes it,
and refuses what JSON cannot hold, naming the record).

Every text is what the store's encoder (``store._base._ENCODE``) would write for the
same value, so the two kinds of record read back alike.
"""

from __future__ import annotations

from ..changes import Op
from ..jsontext import atoms_text, quote
from ..store._base import _ENCODE

_NULL = "null"


def ops_text(ops: list[Op]) -> str | None:
    """The JSON text of a record's ``ops``: an op that is a text already as it is, its
    ``history`` ops (whose data is a dict of atoms, or None) and ``touch`` ops by
    hand, any other op by the encoder; None when some op is not JSON-safe (the store
    then names it)."""
    texts: list[str] = []
    for op in ops:
        if type(op) is str:  # written as text already (ChangeLog.history)
            texts.append(op)
            continue
        name = op[0]
        try:
            if name == "history" and len(op) == 5:
                data = op[3]
                if type(data) is dict:
                    data_text = atoms_text(data)
                    if data_text is None:
                        data_text = _ENCODE(data)
                else:
                    data_text = _NULL if data is None else _ENCODE(data)
                texts.append(
                    f'["history",{quote(op[1])},{quote(op[2])},{data_text},{quote(op[4])}]'
                )
            elif name == "touch" and len(op) == 2:
                texts.append(f'["touch",{quote(op[1])}]')
            else:
                texts.append(_ENCODE(op))
        except (TypeError, ValueError, RecursionError):
            return None
    return f"[{','.join(texts)}]"

"""The serial lane's hand-written JSON texts (engine/texts.py) are what the store's
encoder writes for the same values, and they refuse what they do not cover."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from routilux.changes import ChangeLog
from routilux.engine.texts import ops_text
from routilux.job_state import JobState
from routilux.serialization import layout_of
from routilux.store._base import _ENCODE, atoms_text, encoded_record, ready_task_text, value_text

ATOMS = st.one_of(
    st.text(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
ATOM_DICTS = st.dictionaries(st.text(), ATOMS, max_size=6)
JSON_VALUES = st.recursive(
    ATOMS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(ATOM_DICTS)
def test_a_dict_of_atoms_reads_as_the_encoder_writes_it(data: dict[str, Any]) -> None:
    assert atoms_text(data) == _ENCODE(data) == value_text(data)


@given(JSON_VALUES)
def test_any_value_reads_as_the_encoder_writes_it(value: Any) -> None:
    assert value_text(value) == _ENCODE(value)


def test_anything_but_a_dict_of_string_keys_and_atoms_is_left_to_the_encoder() -> None:
    for data in (
        {"x": math.nan},
        {"x": -math.inf},
        {"x": [1]},
        {"x": {"y": 1}},
        {1: 1},
        {"x": b"b"},
    ):
        assert atoms_text(data) is None


@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("history"), st.text(), st.text(), st.one_of(ATOM_DICTS, JSON_VALUES)
            ).map(lambda op: [*op, "2026-12-02T00:17:49.951035"]),
            st.text().map(lambda text: ["touch", text]),
            st.tuples(st.just("shared_set"), st.text(), JSON_VALUES).map(list),
        ),
        max_size=5,
    )
)
def test_ops_read_as_the_encoder_writes_them(ops: list[list[Any]]) -> None:
    text = ops_text(ops)
    assert text == _ENCODE(ops)
    assert json.loads(text) == ops


def test_an_op_json_cannot_hold_gives_no_text() -> None:
    for value in (math.nan, math.inf, object()):
        assert ops_text([["history", "r", "e", {"x": 1}, "t"], ["shared_set", "k", value]]) is None
    assert ops_text([["history", "r", "e", {"x": math.nan}, "t"]]) is None


@given(ATOM_DICTS, st.text(), st.text(), st.text(), st.text())
def test_an_encoded_record_reads_as_the_built_record(
    data: dict[str, Any], routine: str, slot: str, source: str, event: str
) -> None:
    extra = {"source": [source, event]}
    head, tail, extra_text = ready_task_text(routine, slot, extra)
    assert extra_text == _ENCODE(extra)
    ops = [["history", source, event, dict(data), "2026-12-02T00:17:49.951035"]]
    row = f"[7{head}{atoms_text(data)}{tail}"
    columns = (7, "ready", routine, slot, atoms_text(data) or "", 0, None, extra_text)
    record = encoded_record(3, 2, ops_text(ops) or "", ((7, row, columns),), {"set": [{"a": 1}]})
    built = [3, 2, ops, [[7, "ready", routine, slot, data, 0, None, extra]], [], None]
    assert json.loads(record[2]) == [*built, {"set": [{"a": 1}]}]
    assert record[2] == _ENCODE([*built, {"set": [{"a": 1}]}])
    assert record[:2] == (3, 2) and record[3:6] == (((7, row, columns),), (), None)
    assert json.loads(row) == built[3][0]


@given(
    st.lists(
        st.tuples(st.text(max_size=4), st.text(max_size=4), ATOM_DICTS, st.booleans()),
        min_size=1,
        max_size=12,
    )
)
def test_a_snapshot_writes_saved_record_texts_as_it_would_encode_them(
    emissions: list[tuple[str, str, dict[str, Any], bool]],
) -> None:
    """History records written by a serial delivery's change capture keep their
    saved form's text, and their ops are JSON texts the encoder would write for the
    ops as lists; a snapshot of them -- all, some or none kept -- is the text it
    writes when it encodes every record itself."""
    js = JobState("flow")
    log = ChangeLog(js)
    with js.lock:
        scope = log.open_serial((1, 0))
        for rid, event, data, serial in emissions:
            if not serial:
                log.ops_as_lists(scope)  # (a record that keeps no text)
            js.record_execution(rid, event, data)
            scope.text_ops = True
        log.close_serial(scope)
    # (Turning the ops back into lists turns every text op so far.)
    serials = [serial for *_, serial in emissions][::-1]
    last_serials = serials.index(False) if False in serials else len(serials)
    texts = [
        (op, ["history", r.routine_id, r.event_name, r.data, r.timestamp.isoformat()])
        for op, r in zip(scope.ops, js.execution_history)
        if type(op) is str
    ]
    assert len(texts) == last_serials
    assert all(op == _ENCODE(as_list) for op, as_list in texts)
    encode = layout_of(JobState).encode
    assert encode is not None
    kept = encode(js, 0)
    for record in js.execution_history:
        record.saved_text = None
    assert kept == encode(js, 0)
    assert json.loads(kept)["execution_history"] == [
        record.serialize() for record in js.execution_history
    ]

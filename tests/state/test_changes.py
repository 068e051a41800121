"""Capture and replay of JobState changes (``routilux.changes``), one delivery at a time.

The round trip is the core property: a JobState changed through every mutator and
through its tracked mappings, with a ChangeLog attached, equals (in saved form) a copy
of its starting snapshot onto which the released ops were replayed.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routilux.changes import ChangeLog, Record, TrackedDict, apply_ops, encode_value
from routilux.exceptions import JobStateError, SerializationError
from routilux.job_state import JobState


def replayed(start: dict[str, Any], records: list[Record]) -> JobState:
    """A fresh JobState from the snapshot ``start`` with the ops of ``records`` applied."""
    js = JobState().deserialize(start)
    for record in records:
        apply_ops(js, record.ops)
    return js


def new_job(**limits: Any) -> tuple[JobState, dict[str, Any], ChangeLog]:
    js = JobState("flow", **limits)
    js.shared_data["seed"] = [1, 2]
    js.routine_states["r"] = {"n": 0}
    start = js.serialize()
    return js, start, ChangeLog(js)


# ---------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------


def test_every_mutator_and_direct_write_replays_to_the_same_state() -> None:
    js, start, log = new_job(history_limit=3, output_limit=2)
    when = datetime(2020, 1, 2, 3, 4, 5, 678901)
    with log.delivery(1):
        js.record_execution("a", "out", {"x": 1})
        js.record_execution("a", "old", {"t": (1, 2)}, timestamp=when)
        js.merge_routine_state("a", {"n": 1, "m": [1]})
        js.update_routine_state("b", {"k": "v"})
        js.update_shared_data("total", 1)
        js.append_to_shared_log({"msg": "hi"})
        js.add_deferred_event("a", "later", {"d": 1})
        for i in range(3):
            js.send_output("a", "kind", {"i": i})
    with log.delivery(2):
        js.shared_data["direct"] = {"a": 1}
        js.shared_data.update({"u1": 1}, u2=2)
        js.shared_data |= {"u3": 3}
        js.shared_data.setdefault("made", []).append("x")
        js.shared_data.setdefault("made", []).append("y")
        del js.shared_data["u1"]
        js.shared_data.pop("u2")
        js.shared_data.popitem()  # u3... or whatever came last
        js.get_shared_data("seed").append(3)
        js.get_routine_state("a")["n"] = 5  # in place: part of this delivery
        js.routine_states["b"]["extra"] = True
        js.slot_buffers.setdefault("r", {})["in"] = {"v": [1]}
        for i in range(4):
            js.record_execution("b", "e", {"i": i})
    with log.delivery(3):
        js.slot_buffers["r"]["in"]["v"].append(2)
        js.routine_states["b"] = {"replaced": 1}
        del js.routine_states["r"]
        js.get_shared_data("direct")["a"] = 2
        js.shared_data["seed"] = "now a string"
    js.shared_data["job_level"] = 1  # outside any delivery
    records = log.take_ready(flush=True)
    assert js.history_dropped > 0 and js.output_dropped > 0
    assert replayed(start, records).serialize() == js.serialize()


def test_clear_and_deleted_taken_key_replay() -> None:
    js, start, log = new_job()
    with log.delivery("d"):
        js.get_shared_data("seed").append(9)
        js.shared_data.clear()
        js.routine_states.clear()
        js.shared_data["after"] = [1]
        js.shared_data["after"].append(2)
    assert replayed(start, log.take_ready(flush=True)).serialize() == js.serialize()


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=6,
)
_keys = st.sampled_from(["a", "b", "c"])
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("set"), _keys, _values),
        st.tuples(st.just("append"), _keys, _values),
        st.tuples(st.just("del"), _keys, st.none()),
        st.tuples(st.just("merge"), _keys, st.dictionaries(st.text(max_size=2), _values)),
        st.tuples(st.just("state_inplace"), _keys, _values),
        st.tuples(st.just("history"), _keys, _values),
        st.tuples(st.just("log"), _keys, _values),
        st.tuples(st.just("output"), _keys, _values),
        st.tuples(st.just("end"), _keys, st.none()),
    ),
    max_size=40,
)


@given(_steps, st.sampled_from([None, 1, 3]))
def test_random_sequential_mutations_round_trip(steps: list[Any], limit: int | None) -> None:
    js = JobState("flow", history_limit=limit)
    start = js.serialize()
    log = ChangeLog(js)
    delivery = 0
    scope = log.delivery(delivery)
    scope.__enter__()
    for action, key, value in steps:
        if action == "set":
            js.shared_data[key] = value
        elif action == "append":
            current = js.get_shared_data(key)
            if isinstance(current, list):
                current.append(value)
        elif action == "del":
            js.shared_data.pop(key, None)
        elif action == "merge":
            js.merge_routine_state(key, value)
        elif action == "state_inplace":
            state = js.get_routine_state(key)
            if state is not None:
                state["inplace"] = value
        elif action == "history":
            js.record_execution(key, "e", {"v": value})
        elif action == "log":
            js.append_to_shared_log({"v": value})
        elif action == "output":
            js.send_output(key, "o", value)
        else:
            scope.__exit__(None, None, None)
            delivery += 1
            scope = log.delivery(delivery)
            scope.__enter__()
    scope.__exit__(None, None, None)
    records = log.take_ready(flush=True)
    assert [r.key for r in records if r.key is not None] == list(range(delivery + 1))
    assert all(r.cut for r in records)  # one delivery at a time: every record a group
    assert replayed(start, records).serialize() == js.serialize()


# ---------------------------------------------------------------------------
# Values are encoded when written
# ---------------------------------------------------------------------------


def test_an_op_keeps_the_value_of_the_time_of_the_write() -> None:
    js, _, log = new_job()
    data = {"items": [1]}
    with log.delivery(1):
        js.record_execution("a", "out", data)
        js.update_shared_data("k", data)
    data["items"].append(2)  # after the delivery ended: not JobState business any more
    (record,) = log.take_ready()
    assert record.ops[0][3] == {"items": [1]}
    assert ["shared_set", "k", {"items": [1]}] in record.ops


def test_tuples_and_scalar_subclasses_are_written_as_a_save_writes_them() -> None:
    class Name(str):
        pass

    assert encode_value({"t": (1, (2,)), "n": Name("x"), "b": True}, "p") == {
        "t": [1, [2]],
        "n": "x",
        "b": True,
    }
    assert type(encode_value(Name("x"), "p")) is str


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"tags": {1, 2}}, "shared_data.k.tags"),
        ({"when": datetime(2020, 1, 1)}, "shared_data.k.when"),
        ({"x": float("nan")}, "shared_data.k.x"),
        ({1: "int key"}, "shared_data.k"),
    ],
)
def test_an_unencodable_value_raises_naming_its_path_and_changes_nothing(
    value: Any, path: str
) -> None:
    js, _, log = new_job()
    before = js.serialize()
    with log.delivery(1):
        with pytest.raises(SerializationError, match=f"'{path}'"):
            js.update_shared_data("k", value)
        with pytest.raises(SerializationError, match=f"'{path}'"):
            js.shared_data["k"] = value
        with pytest.raises(SerializationError, match=f"'{path}'"):
            js.shared_data.update(ok=1, k=value)
    assert "ok" not in js.shared_data and "k" not in js.shared_data
    after = js.serialize()
    after["updated_at"] = before["updated_at"]
    assert after == before
    assert log.take_ready()[0].ops == []


def test_unencodable_history_data_and_non_string_key_and_bad_routine_state() -> None:
    js, _, log = new_job()
    with log.delivery(1):
        with pytest.raises(SerializationError, match=r"execution_history\[-1\]\.data\.s"):
            js.record_execution("a", "out", {"s": {1}})
        with pytest.raises(SerializationError, match="key 5 is a int"):
            js.shared_data[5] = 1  # type: ignore[index]
        with pytest.raises(SerializationError, match="'routine_states.a' must be a dict"):
            js.routine_states["a"] = 3
        with pytest.raises(SerializationError, match=r"'slot_buffers.r.s' must be a dict"):
            js.slot_buffers["r"] = {"s": 1}
    assert js.execution_history == []


def test_an_in_place_change_that_cannot_be_encoded_fails_the_end_but_ends_it() -> None:
    js, _, log = new_job()
    with pytest.raises(SerializationError, match="shared_data.seed"):
        with log.delivery(1):
            js.get_shared_data("seed").append({1, 2})
    (record,) = log.take_ready()
    assert isinstance(record.error, SerializationError)
    assert log.open_deliveries == 0


# ---------------------------------------------------------------------------
# Scopes, tracked mappings, attach and detach
# ---------------------------------------------------------------------------


def test_attach_installs_tracked_mappings_and_detach_removes_them() -> None:
    js = JobState()
    js.shared_data["a"] = 1
    log = ChangeLog(js)
    assert js._changes is log
    assert type(js.shared_data) is TrackedDict and js.shared_data == {"a": 1}
    assert type(js.routine_states) is TrackedDict and type(js.slot_buffers) is TrackedDict
    with pytest.raises(JobStateError, match="already has a ChangeLog"):
        ChangeLog(js)
    log.detach()
    assert js._changes is None
    assert type(js.shared_data) is dict and js.shared_data == {"a": 1}
    js.shared_data["b"] = {1}  # not journaled any more: nothing refuses it
    assert log.take_ready(flush=True) == []


def test_reads_of_immutable_values_do_not_take_and_mutable_ones_do() -> None:
    js, _, log = new_job()
    js.shared_data["n"] = 1
    with log.delivery("reader"):
        assert js.shared_data["n"] == 1
        assert js.shared_data.get("missing", []) == []
    (record,) = log.take_ready()
    assert record.first_seq == record.end_seq  # no write, no take
    with log.delivery("taker"):
        js.shared_data.get("seed")
    (record,) = log.take_ready()
    assert record.first_seq < record.end_seq and record.ops == []  # taken, unchanged


def test_reading_scope_marks_nothing_taken() -> None:
    js, _, log = new_job()
    with log.reading():
        js.serialize()  # copies every value out through items()
    assert log._takers == {} and not log._job.taken
    js.serialize()
    assert log._job.taken  # outside reading(), the same copy takes the keys


def test_job_level_writes_travel_with_the_next_record_in_write_order() -> None:
    js, start, log = new_job()
    js.shared_data["x"] = 1  # job level
    with log.delivery(1):
        js.shared_data["x"] = js.shared_data["x"] + 1
    js.shared_data["y"] = 2  # job level, after the record: not in it
    (record,) = log.take_ready()
    assert record.ops[:2] == [["shared_set", "x", 1], ["shared_set", "x", 2]]
    assert log.take_ready() == []
    (flushed,) = log.take_ready(flush=True)
    assert flushed.key is None and flushed.ops[0] == ["shared_set", "y", 2]
    assert replayed(start, [record, flushed]).serialize() == js.serialize()


def test_a_flush_of_job_level_writes_alone_releases_them_once_as_one_record() -> None:
    """Nothing open or ended (a job's last touches as it settles): every job-level
    write, in write order with the touch of updated_at, in one record, once."""
    js, start, log = new_job()
    with log.delivery(1):
        js.shared_data["x"] = 1
    (record,) = log.take_ready()
    js.merge_routine_state("r", {"n": 2})
    js.shared_data["y"] = [1]
    js.shared_data["y"].append(2)  # taken at the job level: settled by the flush
    js.updated_at = js.updated_at + timedelta(seconds=1)
    (flushed,) = log.take_ready(flush=True)
    assert flushed.key is None and flushed.cut
    assert flushed.ops[:-1] == [
        ["state_merge", "r", {"n": 2}],
        ["shared_set", "y", [1]],
        ["shared_extend", "y", [2]],
    ]
    assert flushed.ops[-1] == ["touch", js.updated_at.isoformat()]
    assert log.take_ready(flush=True) == []
    assert replayed(start, [record, flushed]).serialize() == js.serialize()
    js.shared_data["z"] = 3
    (again,) = log.take_ready(flush=True)
    assert again.ops == [["shared_set", "z", 3]]


def test_writes_after_a_delivery_ended_are_job_level() -> None:
    js, _, log = new_job()
    log.begin("late")
    with log.bound("late"):
        js.shared_data["in"] = 1
        log.end("late")
        js.shared_data["after"] = 1
    (record,) = log.take_ready()
    assert ["shared_set", "after", 1] not in record.ops
    assert log.take_ready(flush=True)[0].ops[0] == ["shared_set", "after", 1]


def test_scope_misuse_raises() -> None:
    _, _, log = new_job()
    log.begin(1)
    with pytest.raises(JobStateError, match="delivery 1 .* already open"):
        log.begin(1)
    with pytest.raises(JobStateError, match="no open delivery 2"):
        log.end(2)
    with pytest.raises(JobStateError, match="no open delivery 3"):
        with log.bound(3):
            pass


def test_copies_of_tracked_mappings_are_plain_dicts() -> None:
    import copy
    import pickle

    js, _, _ = new_job()
    assert type(copy.deepcopy(js.shared_data)) is dict
    assert pickle.loads(pickle.dumps(js.shared_data)) == {"seed": [1, 2]}
    assert type(js.shared_data.copy()) is dict
    assert type(js.shared_data | {"z": 1}) is dict


# ---------------------------------------------------------------------------
# apply_ops refuses bad input, naming the op
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ([["nope", 1]], r"op 1: unknown op 'nope'"),
        ([["shared_set", "a", 1], "x"], r"op 2: must be a non-empty list"),
        ([[]], r"op 1: must be a non-empty list"),
        ([["shared_set", "a"]], r"op 1 \(shared_set\): takes 2 arguments, got 1"),
        ([["shared_del", 3]], r"op 1 \(shared_del\), argument 1: must be a str"),
        ([["state_set", "r", 1]], r"op 1 \(state_set\), argument 2: must be a dict"),
        ([["buffers_set", "r", {"s": 1}]], r"op 1 \(buffers_set\) value\.s' must be a dict"),
        ([["history", "a", "e", {}, "yesterday"]], r"op 1 \(history\), argument 4: invalid"),
        ([["touch", 5]], r"op 1 \(touch\), argument 1: must be an ISO time string"),
        ([["log", None]], r"op 1 \(log\), argument 1: must be a dict"),
        ([[7]], r"op 1: unknown op 7"),
    ],
)
def test_apply_ops_refuses_malformed_ops_before_applying_any(ops: list[Any], message: str) -> None:
    # op 0 is valid: it must not be applied when a later op is malformed.
    js = JobState()
    before = js.serialize()
    with pytest.raises(SerializationError, match=message):
        apply_ops(js, [["shared_set", "first", 1], *ops])
    assert js.serialize() == before


def test_apply_ops_extend_needs_a_list_and_names_the_op() -> None:
    js = JobState()
    with pytest.raises(SerializationError, match=r"op 1 \(shared_extend 'k'\).*not a list"):
        apply_ops(js, [["shared_set", "k", 1], ["shared_extend", "k", [2]]])


def test_apply_ops_copies_values_and_trims_like_a_live_run() -> None:
    js = JobState(history_limit=2)
    value = {"v": [1]}
    stamp = (datetime(2021, 5, 6) + timedelta(microseconds=7)).isoformat()
    ops = [["shared_set", "k", value]] + [["history", "r", "e", {"i": i}, stamp] for i in range(5)]
    apply_ops(js, ops)
    value["v"].append(2)
    assert js.shared_data["k"] == {"v": [1]}
    assert js.history_dropped == 3 and [r.data["i"] for r in js.execution_history] == [3, 4]
    assert js.execution_history[0].timestamp == datetime.fromisoformat(stamp)
    assert js.updated_at == datetime.fromisoformat(stamp)


def test_an_unencodable_output_reaches_no_output_handler() -> None:
    js, _, log = new_job()
    seen: list[Any] = []

    class Handler:
        def handle(self, **kwargs: Any) -> None:
            seen.append(kwargs)

    js.set_output_handler(Handler())
    with log.delivery(1):
        with pytest.raises(SerializationError, match=r"output_log\[-1\]\.data\.s"):
            js.send_output("a", "kind", {"s": {1}})
        js.send_output("a", "kind", {"ok": 1})
    assert [call["data"] for call in seen] == [{"ok": 1}]
    assert [e["data"] for e in js.output_log] == [{"ok": 1}]


def test_a_release_ending_in_a_history_op_needs_no_touch() -> None:
    """The history op sets updated_at to its own time on replay: a release that ends
    with it carries no ``touch``; one whose updated_at moved after it does."""
    js, start, log = new_job()
    with log.delivery(1):
        js.record_execution("a", "out", {"x": 1})
    first = log.take_ready()
    assert [op[0] for op in first[0].ops] == ["history"]
    assert replayed(start, first).updated_at == js.updated_at
    with log.delivery(2):
        js.record_execution("a", "out", {"x": 2})
        js.update_shared_data("after", 1)  # moves updated_at past the history time
    second = log.take_ready()
    assert [op[0] for op in second[0].ops] == ["history", "shared_set", "touch"]
    assert replayed(start, first + second).serialize() == js.serialize()


def test_history_times_are_written_as_isoformat_writes_them() -> None:
    """The history op's time text is kept per second and completed from a digit
    table: it must equal ``isoformat()`` within a second, across seconds, without
    microseconds, and for aware datetimes."""
    from datetime import timezone

    js, start, log = new_job()
    base = datetime(2026, 1, 5, 10, 0, 0, 999_998)
    stamps = [
        base,
        base + timedelta(microseconds=1),  # the same second
        base + timedelta(microseconds=2),  # the next second, microsecond 0
        base + timedelta(microseconds=3),
        base - timedelta(days=400),  # back in time: not the cached second
        datetime(2026, 1, 5, 10, 0, 1, 5, tzinfo=timezone.utc),
    ]
    with log.delivery(1):
        for stamp in stamps:
            js.record_execution("a", "out", {"i": 1}, stamp)
    (record,) = log.take_ready()
    assert [op[4] for op in record.ops if op[0] == "history"] == [s.isoformat() for s in stamps]
    assert replayed(start, [record]).serialize() == js.serialize()


def test_history_data_of_atoms_is_copied_and_other_data_encoded() -> None:
    js, _, log = new_job()
    data: dict[str, Any] = {"s": "x", "n": 1, "b": True, "z": None}
    nested: dict[str, Any] = {"t": (1, 2), "f": 1.5}
    with log.delivery(1):
        js.record_execution("a", "out", data)
        js.record_execution("a", "out", nested)
    data["s"] = "changed later"
    nested["t"] = ()
    (record,) = log.take_ready()
    assert record.ops[0][3] == {"s": "x", "n": 1, "b": True, "z": None}
    assert record.ops[1][3] == {"t": [1, 2], "f": 1.5}
    with log.delivery(2):
        with pytest.raises(SerializationError, match=r"execution_history\[-1\]\.data\.f"):
            js.record_execution("a", "out", {"f": float("nan")})
        with pytest.raises(SerializationError, match="execution_history"):
            js.record_execution("a", "out", {3: "non-string key"})  # type: ignore[dict-item]


def test_close_bound_releases_the_only_delivery_as_take_ready_would() -> None:
    """open_bound/close_bound (the journal's pair): the only delivery comes back
    released (a cut, touched as take_ready does); with another delivery open it
    waits for take_ready, in end order."""
    js, start, log = new_job()
    with js.lock:
        log.open_bound(1)
        js.update_shared_data("a", 1)
        js.record_execution("r", "out", {"v": 1})
        record = log.close_bound(1)
    assert record is not None and record.cut and record.ended
    assert [op[0] for op in record.ops] == ["shared_set", "history"]
    assert log.take_ready() == [] and log.pending == 0
    with js.lock:
        log.open_bound(2)
        js.update_shared_data("b", 2)  # updated_at moves: the release needs a touch
        record2 = log.close_bound(2)
    assert record2 is not None and [op[0] for op in record2.ops] == ["shared_set", "touch"]
    with js.lock:
        log.open_bound(3)
        log.begin(4)  # another delivery open: nothing is released at close
        js.update_shared_data("c", 3)
        assert log.close_bound(3) is None
    with log.bound(4):
        js.update_shared_data("d", 4)
    log.end(4)
    released = log.take_ready()
    assert [r.key for r in released] == [3, 4]
    assert replayed(start, [record, record2, *released]).serialize() == js.serialize()
    with js.lock, pytest.raises(JobStateError, match="no open delivery 9"):
        log.close_bound(9)


def test_a_serial_delivery_writes_its_history_ops_as_text() -> None:
    """open_serial's delivery: a history op whose data is a dict of atoms is written
    as its JSON text at once (and the record keeps its saved form's text); other data
    stays a list.  ops_as_lists turns the texts back into the same lists, and from
    then on the delivery's history ops are lists."""
    js, start, log = new_job()
    stamp = datetime(2026, 3, 1, 12, 0, 0, 250)
    with js.lock:
        scope = log.open_serial((1, 0))
        js.record_execution("r", "out", {"v": 1, "s": 'a "q"'}, stamp)
        js.record_execution("r", "out", {"v": [1, 2]}, stamp)
        texts = list(scope.ops)
        assert type(texts[0]) is str and type(texts[1]) is list
        assert json.loads(texts[0]) == [
            "history",
            "r",
            "out",
            {"v": 1, "s": 'a "q"'},
            stamp.isoformat(),
        ]
        assert log.emitted is not None and log.emitted[0] is js.execution_history[0].data
        assert js.execution_history[0].saved_text is not None
        assert js.execution_history[1].saved_text is None
        log.ops_as_lists(scope)
        js.record_execution("r", "out", {"v": 3}, stamp)
        record = log.close_serial(scope)
    assert record is not None
    assert all(type(op) is list for op in record.ops)
    assert record.ops[0] == json.loads(texts[0]) and record.ops[1] == texts[1]
    assert js.execution_history[2].saved_text is None
    assert replayed(start, [record]).serialize() == js.serialize()


def test_a_bound_delivery_writes_no_history_op_as_text() -> None:
    js, _, log = new_job()
    with log.delivery(1):
        js.record_execution("r", "out", {"v": 1})
    (record,) = log.take_ready()
    assert type(record.ops[0]) is list
    assert js.execution_history[0].saved_text is None


def test_detach_drops_the_saved_texts_of_history_records() -> None:
    js, _, log = new_job()
    with js.lock:
        scope = log.open_serial((1, 0))
        js.record_execution("r", "out", {"v": 1})
        log.close_serial(scope)
    assert js.execution_history[0].saved_text is not None
    log.detach()
    assert js.execution_history[0].saved_text is None

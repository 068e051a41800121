"""The journal's snapshot: ``layout_of(JobState).encode`` (``persistence.encode_job_state``)
writes the store's JSON text of the saved form at once, without copying the JobState.

It must be the very text the store writes for ``serialize_job_state`` (old files load
in new code and new files in old code), refuse what that refuses, naming the key, and
the stores must write an :class:`EncodedSnapshot` as the dict it stands for.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routilux import JobState, SerializationError
from routilux.persistence import encode_job_state, serialize_job_state
from routilux.serialization import iso_texts, layout_of
from routilux.store import SQLiteStore
from routilux.store._base import EncodedSnapshot, dumps

from .test_persistence_roundtrip import busy_job_state


def store_text(js: JobState) -> str:
    """What the store writes for the saved form as a dict (the way before)."""
    return dumps(serialize_job_state(js), "snapshot")


class Quoting(datetime):
    """A datetime whose isoformat needs JSON escapes."""

    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        return 'at "noon"\\ é\n'


class NoOffset(tzinfo):
    """A tzinfo that gives no offset: such a datetime compares and prints as naive."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None


def test_layout_of_job_state_encodes_with_encode_job_state() -> None:
    class MyJobState(JobState):
        pass

    assert layout_of(JobState).encode is encode_job_state
    assert layout_of(MyJobState).encode is encode_job_state


def test_the_text_is_the_stores_text_of_the_saved_form() -> None:
    js = busy_job_state()
    js.waiting_for.append({"id": "q1", "routine_id": "w", "slot": "input"})
    js.output_limit = 7
    for index in range(2500):  # several seconds of timestamps, some without micros
        js.record_execution(
            ("a", "b\u00e9", 'c"q')[index % 3],
            "output",
            {"i": index, "x": index * 0.5, "s": f"é-{index}", "t": (1, [2]), 3: None},
            datetime(2026, 3, 1, 12, 0, 0) + timedelta(microseconds=1700 * index),
        )
    assert encode_job_state(js) == store_text(js)
    assert json.loads(encode_job_state(js)) == json.loads(json.dumps(js.serialize()))


@pytest.mark.parametrize(
    "stamp",
    [
        datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=timezone.utc),
        datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=NoOffset()),
        Quoting(2026, 1, 1),
        datetime.max,
    ],
    ids=["aware", "no-offset", "subclass-needing-escapes", "max"],
)
def test_unusual_timestamps_and_names_give_the_same_text(stamp: datetime) -> None:
    js = JobState("f")
    js.record_execution("r", "e", {"v": 1}, datetime(2026, 1, 1, 0, 0, 0, 1))
    js.record_execution("r", "e", {"v": 2}, stamp)
    js.record_execution("r", "e", {"v": 3}, datetime(2026, 1, 1, 0, 0, 0, 2))
    assert encode_job_state(js) == store_text(js)
    js.execution_history[0].routine_id = None  # type: ignore[assignment]
    js.execution_history[1].event_name = 7  # type: ignore[assignment]
    assert encode_job_state(js) == store_text(js)
    js.execution_history[2].event_name = ["not", "hashable"]  # type: ignore[assignment]
    assert encode_job_state(js) == store_text(js)


# Few names and numbers, so that examples repeat them: the remembered texts (around
# the job id, after the timestamps) are reused, and must still be right.
NAMES = st.sampled_from(["f", "w1", "pending", "running", 'é"q', ""])
NUMBERS = st.integers(min_value=0, max_value=3)
STAMPS = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 1, 1, 0, 0, 3))


@given(
    flow_id=NAMES,
    job_id=NAMES,
    status=NAMES,
    current=st.none() | NAMES,
    limit=st.none() | st.integers(min_value=1, max_value=3),
    dropped=NUMBERS,
    task_seq=NUMBERS,
    floor=NUMBERS,
    created=STAMPS,
    updated=st.none() | STAMPS,
    state=st.none() | st.dictionaries(NAMES, NUMBERS, max_size=2),
    filled=st.sampled_from(["", "shared_data", "slot_buffers", "shared_log", "waiting_for"]),
)
def test_a_new_or_small_jobs_text_is_the_stores_text_whatever_its_names_and_numbers(
    flow_id: str,
    job_id: str,
    status: str,
    current: str | None,
    limit: int | None,
    dropped: int,
    task_seq: int,
    floor: int,
    created: datetime,
    updated: datetime | None,
    state: dict[str, int] | None,
    filled: str,
) -> None:
    # A brand-new JobState's text differs from another's only in names, numbers and
    # timestamps (its two timestamps one datetime): those texts are remembered.
    js = JobState(flow_id, history_limit=limit)
    js.job_id, js.status, js.current_routine_id = job_id, status, current
    js.history_dropped = dropped
    js.task_seq = max(task_seq, floor)  # (the text's counter: the floor if higher)
    js.created_at = created
    js.updated_at = created if updated is None else updated
    if state is not None:
        js.routine_states["r"] = state
    if filled == "waiting_for":
        js.waiting_for.append({"id": "q1", "routine_id": "w", "slot": "input"})
    elif filled in ("shared_data", "slot_buffers"):
        getattr(js, filled)["k"] = [1]
    elif filled:
        js.shared_log.append({"k": 1})
    expected = store_text(js)
    js.task_seq = task_seq
    # Jobs that share its names but not its numbers, or the other way round, first:
    # the texts they leave behind must not be taken for this job's.
    same_names = JobState(flow_id)
    same_names.job_id, same_names.status, same_names.current_routine_id = job_id, status, current
    same_numbers = JobState("f", history_limit=limit)
    same_numbers.history_dropped, same_numbers.task_seq = dropped, task_seq
    for other in (same_names, same_numbers):
        encode_job_state(other, floor)
    assert encode_job_state(js, floor) == expected


def test_an_empty_job_and_the_task_seq_floor() -> None:
    js = JobState("f")
    assert encode_job_state(js) == store_text(js)
    assert "task_seq" not in json.loads(encode_job_state(js))
    js.task_seq = 5
    assert json.loads(encode_job_state(js))["task_seq"] == 5
    assert json.loads(encode_job_state(js, 9))["task_seq"] == 9
    assert json.loads(encode_job_state(js, 2))["task_seq"] == 5


def _small_job_state(change: str) -> JobState:
    js = JobState("f")
    js.current_routine_id = "src"
    js.record_execution("src", "out", {"v": 1, "s": "é"})
    if change == "busy":
        js.routine_states["src"] = {"status": "completed", "n": [1, 2.5]}
        js.shared_data["k"] = {"nested": ["x"]}
        js.slot_buffers["sink.input"] = [{"v": 1}]
        js.pending_tasks.append({"seq": 4, "routine": "sink", "slot": "input"})
        js.pause_points.append({"routine": "src", "reason": "r"})
        js.waiting_for.append({"id": "q1", "routine_id": "w", "slot": "input"})
        js.history_limit = js.output_limit = 50
        js.history_dropped = 3
        js.task_seq = 2
    elif change == "aware":
        js.created_at = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-3)))
        js.updated_at = datetime(2026, 1, 1, 0, 0, 0, 7, tzinfo=timezone.utc)
    elif change == "no current routine":
        js.current_routine_id = None
    elif change == "name not a string":
        js.flow_id = 7  # type: ignore[assignment]
    elif change == "timestamp subclass":
        js.updated_at = Quoting(2026, 1, 1)
    elif change == "output limit":
        js.output_limit = 3
        js.output_dropped = 1
    elif change == "tuple log":
        js.shared_log = ()  # type: ignore[assignment]
    elif change == "nine records":
        for index in range(8):
            js.record_execution("src", "out", {"i": index})
    return js


@pytest.mark.parametrize(
    "change",
    [
        "plain",
        "busy",
        "aware",
        "no current routine",
        "name not a string",
        "timestamp subclass",
        "output limit",
        "tuple log",
        "nine records",
    ],
)
def test_a_small_jobs_text_is_the_stores_text_of_its_saved_form(change: str) -> None:
    # A small job's fields and few records are put together one by one (no dicts to
    # encode); whatever is unusual takes the plain way: the text is the same.
    js = _small_job_state(change)
    assert encode_job_state(js) == store_text(js)
    assert encode_job_state(js, 9) == dumps({**serialize_job_state(js), "task_seq": 9}, "s") or (
        json.loads(encode_job_state(js, 9))["task_seq"] >= 9
    )


@pytest.mark.parametrize(
    ("place", "value", "where"),
    [
        ("shared", {"tags": {1, 2}}, "shared_data.tags"),
        ("shared", {"n": math.nan}, "shared_data.n"),
        ("routine", {"when": datetime(2026, 1, 1)}, "routine_states.r.when"),
        ("history", {"x": [1, {"y": math.inf}]}, "execution_history[1].data.x[1].y"),
        ("history", {"o": object()}, "execution_history[1].data.o"),
    ],
)
def test_what_json_cannot_hold_is_refused_naming_the_key(
    place: str, value: dict[str, Any], where: str
) -> None:
    js = JobState("f")
    js.record_execution("r", "e", {"v": 1})
    if place == "shared":
        js.shared_data.update(value)
    elif place == "routine":
        js.routine_states["r"] = value
    else:
        js.record_execution("r", "e", value)
    with pytest.raises(SerializationError, match=re.escape(f"cannot save value at '{where}'")):
        encode_job_state(js)


def test_a_circular_value_is_refused_naming_it() -> None:
    js = JobState("f")
    loop: list[Any] = []
    loop.append(loop)
    js.record_execution("r", "e", {"loop": loop})
    with pytest.raises(SerializationError, match=r"execution_history\[0\].data.loop.*circular"):
        encode_job_state(js)


def test_the_history_is_not_copied_but_encoded_under_the_lock() -> None:
    js = JobState("f")
    js.record_execution("r", "e", {"v": 1})
    data = js.execution_history[0].data
    text = encode_job_state(js)
    data["v"] = 2  # after the encoding: the text keeps what was there
    assert json.loads(text)["execution_history"][0]["data"] == {"v": 1}


def test_iso_texts_of_a_generator_and_of_aware_datetimes() -> None:
    base = datetime(2026, 5, 5, 5, 5, 5, 500)
    values = [base + timedelta(microseconds=999 * i) for i in range(3000)]
    values.insert(1500, datetime(2026, 5, 5, tzinfo=timezone(timedelta(hours=2))))
    values.append(datetime(2026, 5, 5, 1, tzinfo=NoOffset()))
    assert iso_texts(iter(values)) == [value.isoformat() for value in values]
    assert iso_texts(values[:1500]) == [value.isoformat() for value in values[:1500]]


def test_an_encoded_snapshot_is_a_mapping_and_the_store_writes_its_text(
    tmp_path: Path,
) -> None:
    js = busy_job_state()
    snapshot = EncodedSnapshot(encode_job_state(js))
    assert dumps(snapshot, "snapshot") is snapshot.text
    assert dict(snapshot) == json.loads(store_text(js))
    assert snapshot["flow_id"] == "flow-1" and len(snapshot) == len(dict(snapshot))
    with SQLiteStore(tmp_path / "s.db") as store:
        store.create_job(js.job_id, "flow-1", "running", serialize_job_state(js), owner="me")
        js.update_shared_data("after", [1, 2])
        store.write_snapshot(js.job_id, 1, EncodedSnapshot(encode_job_state(js)), 0)
        loaded = store.load(js.job_id).snapshot
        assert loaded == json.loads(store_text(js))
        assert loaded["shared_data"]["after"] == [1, 2]


@contextmanager
def _encoding_by(encode: Any) -> Iterator[None]:
    """JobState's layout with ``encode`` as its snapshot encoder, restored after."""
    from routilux.persistence import deserialize_job_state
    from routilux.serialization import register_layout

    original = layout_of(JobState)
    register_layout(
        JobState,
        original.serialize,
        deserialize_job_state,
        save=original.save,
        load=original.load,
        deserialize_owned=original.deserialize_owned,
        encode=encode,
    )
    try:
        yield
    finally:
        register_layout(
            JobState,
            original.serialize,
            original.deserialize,
            save=original.save,
            load=original.load,
            deserialize_owned=original.deserialize_owned,
            encode=original.encode,
        )
    assert layout_of(JobState) == original


def test_a_snapshot_the_journal_cannot_encode_fails_the_job(tmp_path: Path) -> None:
    # The change capture refuses such values as they are written, so the snapshot's
    # own check is the last line: a layout whose encode refuses stands in for it.
    from helpers import Numbers
    from routilux import Flow
    from routilux.engine.runner import Durable
    from routilux.store import open_store

    original = layout_of(JobState)

    def refuse(js: JobState, task_seq: int) -> str:
        if js.status == "running" and not js.execution_history:
            assert original.encode is not None
            return original.encode(js, task_seq)  # the new job's snapshot: stored
        raise SerializationError("cannot save value at 'shared_data.x': of type set")

    with _encoding_by(refuse):
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        flow = Flow(flow_id="f", store=url)
        flow.add_routine(Numbers(), "source")
        job = flow.execute("source", {"n": 2})
        # Whatever the journal queued is written now (not by chance before the
        # shutdown): the completion must not be among it.
        assert flow.store is not None
        Durable.of(flow.store).flush()
        flow.shutdown()
    assert job.status == "failed"
    (error,) = [r.data for r in job.execution_history if r.data.get("journal")]
    assert error["error_type"] == "StoreError"
    assert "snapshot is not JSON-safe" in error["error"] and "'shared_data.x'" in error["error"]
    with open_store(url) as store:  # the store never saw the job complete
        assert store.load_job(job.job_id).status != "completed"


def test_a_new_job_whose_snapshot_cannot_be_encoded_is_refused(tmp_path: Path) -> None:
    # The new job's snapshot is encoded by the layout as the later ones are: one it
    # cannot encode is refused as the store refuses it, naming the job, and nothing
    # is stored.
    from helpers import Numbers
    from routilux import Flow
    from routilux.exceptions import StoreError
    from routilux.store import open_store

    def refuse(js: JobState, task_seq: int) -> str:
        raise SerializationError("cannot save value at 'shared_data.x': of type set")

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    flow = Flow(flow_id="f", store=url)
    flow.add_routine(Numbers(), "source")
    try:
        with _encoding_by(refuse):
            with pytest.raises(
                StoreError, match=r"job '.+' snapshot is not JSON-safe.*shared_data\.x"
            ):
                flow.execute("source", {"n": 2})
    finally:
        flow.shutdown()
    with open_store(url) as store:
        assert store.list_jobs() == []


def test_iso_text_is_isoformat() -> None:
    from routilux.serialization import iso_text

    base = datetime(2026, 3, 1, 12, 0, 0)
    values = [base + timedelta(microseconds=700_001 * i) for i in range(40)]
    values += [
        datetime.max,
        datetime.min,
        datetime.max.replace(microsecond=0),
        base,  # back to an earlier second
        base.replace(microsecond=5),
        datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=NoOffset()),
        base.replace(microsecond=999_999),
        Quoting(2026, 3, 1, 12, 0, 0, 5),  # a subclass: its own isoformat
    ]
    assert [iso_text(value) for value in values] == [value.isoformat() for value in values]

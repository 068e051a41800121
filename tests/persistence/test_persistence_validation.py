"""Loading validates every value (issue 9, item 6).

Each loader -- ``Flow.deserialize``, ``JobState.load``/``deserialize``, the
``deserialize`` of Routine, Slot, Event, Connection and ErrorHandler, ``read_json`` --
raises a SerializationError naming the key path (or another RoutiluxError) for a bad
value: never a RecursionError, TypeError, OverflowError, AttributeError or KeyError, and
numbers are range-checked, so a file cannot ask for a million threads or an infinite
retry delay.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from helpers import Source, Store
from routilux import (
    ErrorHandler,
    Flow,
    InvalidArgumentError,
    JobState,
    SerializationError,
)
from routilux.error_handler import MAX_RETRIES, MAX_RETRY_BACKOFF, MAX_RETRY_DELAY
from routilux.flow.flow import MAX_WORKERS
from routilux.serialization import short_repr


def saved_flow() -> dict[str, Any]:
    flow = Flow("val", execution_strategy="concurrent", max_workers=4, history_limit=50)
    flow.add_routine(Source(), "src")
    sink = Store()
    sink.set_error_handler(ErrorHandler("retry", max_retries=2, retry_delay=0.5))
    flow.add_routine(sink, "sink")
    flow.connect("src", "output", "sink", "input")
    data: dict[str, Any] = json.loads(json.dumps(flow.serialize()))
    return data


def saved_job() -> dict[str, Any]:
    js = JobState("val")
    js.status = "paused"
    js.record_execution("src", "output", {"value": 1})
    js.pending_tasks.append(
        {
            "slot_routine_id": "sink",
            "slot_name": "input",
            "data": {"value": 1},
            "connection_source_routine_id": "src",
            "connection_source_event_name": "output",
            "connection_target_routine_id": "sink",
            "connection_target_slot_name": "input",
            "param_mapping": {},
            "priority": 2,
            "retry_count": 0,
            "max_retries": 0,
            "created_at": None,
            "premerged": False,
            "entry": False,
            "at_job_end": False,
        }
    )
    js.deferred_events.append(
        {"routine_id": "src", "event_name": "output", "data": {"value": 2}, "timestamp": None}
    )
    data: dict[str, Any] = json.loads(json.dumps(js.serialize()))
    return data


def short_id(value: Any) -> str:
    """Test ids that stay short for 400-digit numbers and 990-deep lists."""
    return short_repr(value)[:40]


def deep_list(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"k": value}
    return value


# ---------------------------------------------------------------- the examples


def test_config_nested_980_deep_is_a_serialization_error() -> None:
    data = saved_flow()
    data["routines"]["sink"]["_config"] = {"deep": nested(980)}
    with pytest.raises(SerializationError, match=r'routines\["sink"\]._config'):
        Flow().deserialize(data)


def test_config_nested_980_deep_in_a_file_is_a_serialization_error(tmp_path: Path) -> None:
    data = saved_flow()
    text = json.dumps(data).replace(
        '"_config": {}', '"_config": {"d": ' + "[" * 980 + "]" * 980 + "}"
    )
    assert "[[[[" in text
    path = tmp_path / "flow.json"
    path.write_text(text, encoding="utf-8")
    from routilux.serialization import read_json

    with pytest.raises(SerializationError):
        Flow().deserialize(read_json(path, "Flow"))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("retry_delay", None),
        ("retry_delay", "1"),
        ("retry_delay", math.inf),
        ("retry_delay", math.nan),
        ("retry_delay", -1),
        ("retry_delay", MAX_RETRY_DELAY * 2),
        ("retry_backoff", math.inf),
        ("retry_backoff", MAX_RETRY_BACKOFF + 1),
        ("retry_delay", 10**400),  # math.isfinite cannot even convert it
        ("max_retries", math.inf),
        ("max_retries", -1),
        ("max_retries", 2.5),
        ("max_retries", True),
        ("max_retries", MAX_RETRIES + 1),
        ("max_retries", 10**400),
        ("retry_count", -3),
        ("retry_count", "2"),
        ("strategy", "explode"),
        ("strategy", ["retry"]),
        ("strategy", deep_list(990)),  # Enum's own message would repr it: RecursionError
        ("retryable_exceptions", [deep_list(990)]),
        ("is_critical", "false"),
        ("is_optional", 1),
        ("retryable_exceptions", [[]]),
        ("retryable_exceptions", [None]),
        ("retryable_exceptions", "ValueError"),
        ("retryable_exceptions", ["no.such.Error"]),
    ],
    ids=short_id,
)
def test_error_handler_deserialize_refuses_bad_values(key: str, value: Any) -> None:
    data = ErrorHandler("retry").serialize()
    data[key] = value
    handler = ErrorHandler("continue", max_retries=5)
    with pytest.raises(SerializationError, match=key):
        handler.deserialize(data)
    # Nothing changed: values are checked before any is set.
    assert (handler.strategy.value, handler.max_retries) == ("continue", 5)


def test_error_handler_deserialize_refuses_non_dict() -> None:
    with pytest.raises(SerializationError, match="JSON object"):
        ErrorHandler().deserialize([])  # type: ignore[arg-type]


def test_error_handler_in_a_flow_names_the_routine() -> None:
    data = saved_flow()
    data["routines"]["sink"]["_error_handler"]["retry_delay"] = math.inf
    with pytest.raises(SerializationError, match=r'routines\["sink"\]._error_handler.*retry_delay'):
        Flow().deserialize(data)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": MAX_RETRIES + 1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"retry_delay": math.inf}, "retry_delay"),
        ({"retry_delay": math.nan}, "retry_delay"),
        ({"retry_delay": -0.5}, "retry_delay"),
        ({"retry_delay": None}, "retry_delay"),
        ({"retry_delay": MAX_RETRY_DELAY + 1}, "retry_delay"),
        ({"retry_backoff": math.inf}, "retry_backoff"),
        ({"retry_backoff": -2}, "retry_backoff"),
        ({"strategy": "explode"}, "strategy"),
        ({"retryable_exceptions": ([],)}, "retryable_exceptions"),
        ({"retryable_exceptions": (int,)}, "retryable_exceptions"),
    ],
)
def test_error_handler_constructor_refuses_bad_values(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(InvalidArgumentError, match=name) as caught:
        ErrorHandler(**kwargs)
    assert isinstance(caught.value, ValueError)  # old callers caught ValueError


def test_error_handler_constructor_accepts_the_bounds() -> None:
    handler = ErrorHandler(
        "retry",
        max_retries=MAX_RETRIES,
        retry_delay=MAX_RETRY_DELAY,
        retry_backoff=MAX_RETRY_BACKOFF,
    )
    assert handler.max_retries == MAX_RETRIES
    assert ErrorHandler(retry_delay=0, retry_backoff=0, max_retries=0).retry_delay == 0


def test_computed_retry_delay_is_capped() -> None:
    handler = ErrorHandler("retry", max_retries=MAX_RETRIES, retry_delay=1.0, retry_backoff=100)
    assert handler.retry_delay_for(MAX_RETRIES) == MAX_RETRY_DELAY  # 100**999 overflows
    assert handler.retry_delay_for(4) == MAX_RETRY_DELAY  # 1e6 s, more than a day
    assert handler.retry_delay_for(3) == 10_000.0


# ---------------------------------------------------------------- Flow numbers


@pytest.mark.parametrize("value", [0, -1, MAX_WORKERS + 1, 1_000_000, 2.0, True, "4", math.inf])
def test_flow_file_max_workers_is_range_checked(value: Any) -> None:
    data = saved_flow()
    data["max_workers"] = value
    flow = Flow("untouched")
    with pytest.raises(SerializationError, match="max_workers"):
        flow.deserialize(data)
    assert flow.flow_id == "untouched" and not flow.routines


@pytest.mark.parametrize(
    "version", [-(10**5000), 10**5000, "1", 1.0], ids=["-huge", "huge", "str", "float"]
)
def test_format_version_of_any_size_is_a_serialization_error(version: Any) -> None:
    # str() of a 5,000-digit int raises ValueError: the message must not need it.
    flow_data = saved_flow()
    flow_data["format_version"] = version
    with pytest.raises(SerializationError, match="format_version"):
        Flow().deserialize(flow_data)
    job_data = saved_job()
    job_data["format_version"] = version
    with pytest.raises(SerializationError, match="format_version"):
        JobState().deserialize(job_data)


def test_flow_file_max_workers_at_the_bound_loads() -> None:
    data = saved_flow()
    data["max_workers"] = MAX_WORKERS
    assert Flow().deserialize(data).max_workers == MAX_WORKERS


@pytest.mark.parametrize("value", [0, -1, MAX_WORKERS + 1, 10**6])
def test_flow_constructor_max_workers_is_range_checked(value: int) -> None:
    with pytest.raises(InvalidArgumentError, match=f"1 to {MAX_WORKERS}"):
        Flow("f", execution_strategy="concurrent", max_workers=value)
    with pytest.raises(InvalidArgumentError, match="max_workers"):
        Flow("g").set_execution_strategy("concurrent", value)


@pytest.mark.parametrize("value", [0, -5, 1.5, True, "10", math.nan])
def test_flow_file_history_limit_is_checked(value: Any) -> None:
    data = saved_flow()
    data["history_limit"] = value
    with pytest.raises(SerializationError, match="history_limit"):
        Flow().deserialize(data)


# ---------------------------------------------------------------- Routine, Slot, Event, Connection


@pytest.mark.parametrize(
    ("where", "value", "match"),
    [
        (("_slots", "input", "_data"), [1, 2], "_data"),
        (("_slots", "input", "_data"), nested(980), "too deeply"),
        (("_slots", "input", "name"), 7, "name"),
        (("_slots", "input", "handler"), "os.system", "handler"),
        (("_slots", "input", "merge_strategy"), {"_type": "callable"}, "merge_strategy"),
        (("_events",), [], "_events"),
        (("_slots",), "input", "_slots"),
        (("_id",), ["x"], "_id"),
        (("_config",), [], "_config"),
        (("_error_handler",), "stop", "_error_handler"),
    ],
)
def test_routine_deserialize_names_the_bad_field(
    where: tuple[str, ...], value: Any, match: str
) -> None:
    data = json.loads(json.dumps(Store().serialize()))
    target = data
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    with pytest.raises(SerializationError, match=match):
        Store().deserialize(data)


def test_slot_event_connection_deserialize_raise_serialization_errors() -> None:
    from routilux import Connection, Event, Slot

    with pytest.raises(SerializationError, match="_data"):
        Slot().deserialize({"_type": "Slot", "name": "s", "_data": "x"})
    with pytest.raises(SerializationError, match="output_params"):
        Event().deserialize({"_type": "Event", "name": "e", "output_params": [[]]})
    with pytest.raises(SerializationError, match="param_mapping"):
        Connection().deserialize({"_type": "Connection", "param_mapping": {"a": 1}})
    with pytest.raises(SerializationError):
        Connection().deserialize([])  # type: ignore[arg-type]


# ---------------------------------------------------------------- JobState


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (("history_limit",), 0, "history_limit"),
        (("history_limit",), math.inf, "history_limit"),
        (("history_dropped",), -1, "history_dropped"),
        (("history_dropped",), 1.5, "history_dropped"),
        (("created_at",), 12, "created_at"),
        (("updated_at",), "yesterday", "updated_at"),
        (("execution_history", 0, "timestamp"), "99999-01-01T00:00:00", r"execution_history\[0\]"),
        (("execution_history", 0, "timestamp"), 1.5, r"execution_history\[0\].timestamp"),
        (("execution_history", 0, "data"), [1], r"execution_history\[0\].data"),
        (("pending_tasks", 0, "retry_count"), -1, r"pending_tasks\[0\].retry_count"),
        (("pending_tasks", 0, "retry_count"), math.inf, r"pending_tasks\[0\].retry_count"),
        (("pending_tasks", 0, "retry_count"), "3", r"pending_tasks\[0\].retry_count"),
        (("pending_tasks", 0, "retry_count"), MAX_RETRIES + 1, r"pending_tasks\[0\].retry_count"),
        (("pending_tasks", 0, "slot_routine_id"), ["sink"], r"pending_tasks\[0\].slot_routine_id"),
        (("pending_tasks", 0, "slot_name"), {}, r"pending_tasks\[0\].slot_name"),
        (("pending_tasks", 0, "data"), [1], r"pending_tasks\[0\].data"),
        (("pending_tasks", 0, "premerged"), "no", r"pending_tasks\[0\].premerged"),
        (("pending_tasks", 0, "param_mapping"), {"a": 1}, r"pending_tasks\[0\].param_mapping"),
        (("pending_tasks", 0, "created_at"), "soon", r"pending_tasks\[0\].created_at"),
        (("deferred_events", 0, "routine_id"), [], r"deferred_events\[0\].routine_id"),
        (("deferred_events", 0, "data"), "x", r"deferred_events\[0\].data"),
        (("deferred_events", 0, "timestamp"), 5, r"deferred_events\[0\].timestamp"),
        (("slot_buffers",), {"sink": {"input": [1, 2]}}, r"slot_buffers\['sink'\]\['input'\]"),
        (("slot_buffers",), {"sink": "input"}, r"slot_buffers\['sink'\]"),
        (("shared_data",), nested(980), "shared_data.*too deeply"),
        (("routine_states",), {"r": nested(980)}, "routine_states.*too deeply"),
    ],
)
def test_job_state_values_are_checked(
    tmp_path: Path, path: tuple[Any, ...], value: Any, match: str
) -> None:
    data = saved_job()
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    js = JobState("before")
    with pytest.raises(SerializationError, match=match):
        js.deserialize(data)
    assert js.flow_id == "before"  # nothing changed
    # The same file fails the same way (NaN cannot be written to a strict file, and a
    # file's deep data is not copied on load, so those two are for deserialize only).
    if "too deeply" not in match and not (isinstance(value, float) and not math.isfinite(value)):
        file = tmp_path / "job.json"
        file.write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(SerializationError, match=match):
            JobState.load(file)


def test_valid_job_state_with_pending_work_resumes() -> None:
    flow = Flow().deserialize(saved_flow())
    js = JobState("val")
    js.deserialize(saved_job())
    flow.resume(js)
    assert js.status == "completed"
    assert js.shared_data["got"] in (1, 2)


def test_bad_pending_task_in_memory_is_a_clear_error() -> None:
    from routilux.engine.tasks import task_from_dict

    flow = Flow().deserialize(saved_flow())
    entry = saved_job()["pending_tasks"][0]
    assert task_from_dict(flow, entry) is not None
    entry["retry_count"] = math.inf
    with pytest.raises(SerializationError, match="retry_count"):
        task_from_dict(flow, entry)


def test_loaders_do_not_change_the_data_they_are_given() -> None:
    import copy

    flow_data = saved_flow()
    job_data = saved_job()
    flow_before, job_before = copy.deepcopy(flow_data), copy.deepcopy(job_data)
    Flow().deserialize(flow_data)
    JobState().deserialize(job_data)
    assert flow_data == flow_before and job_data == job_before
    flow_data["routines"]["sink"]["_error_handler"]["max_retries"] = -1
    with pytest.raises(SerializationError):
        Flow().deserialize(flow_data)
    flow_before["routines"]["sink"]["_error_handler"]["max_retries"] = -1
    assert flow_data == flow_before

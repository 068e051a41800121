"""``Routine.request_input``: where it may be called, the schemas it takes, and the
request it leaves in ``job_state.waiting_for``; the schema checks of ``routilux.inputs``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable

import pytest

from routilux import (
    DefinitionError,
    ExecutionContextError,
    Flow,
    InvalidArgumentError,
    InvalidInputError,
    JobState,
    RoutiluxError,
    Routine,
)
from routilux.inputs import check_input, check_request, compile_schema, new_request


class Asker(Routine):
    """Calls ``ask(self)`` from its trigger; its ``answer`` slot records what arrives."""

    def __init__(self, ask: Callable[[Routine], Any]) -> None:
        super().__init__()
        self._ask = ask
        self.define_slot("trigger", handler=self.start)
        self.define_slot("answer", handler=self.got)

    def start(self, **kwargs: Any) -> None:
        self.context.job_state.update_shared_data("returned", self._ask(self))

    def got(self, **data: Any) -> None:
        self.context.job_state.update_shared_data("answer", data)


def run(ask: Callable[[Routine], Any]) -> JobState:
    flow = Flow("ask")
    flow.add_routine(Asker(ask), "asker")
    return flow.execute("asker")


def test_request_is_recorded_in_waiting_for_as_json_safe_data() -> None:
    job = run(
        lambda r: r.request_input(
            "answer", prompt="Publish?", schema={"approved": bool, "note": (str, "")}
        )
    )
    assert job.status == "waiting"
    (request,) = job.waiting_for
    assert request["routine_id"] == "asker"
    assert request["slot"] == "answer"
    assert request["prompt"] == "Publish?"
    assert request["schema"] == {"approved": "bool", "note": "str"}
    assert request["defaults"] == {"note": ""}
    assert request["id"] == job.shared_data["returned"]
    datetime.fromisoformat(request["requested_at"])
    assert json.loads(json.dumps(request)) == request


def test_request_without_schema_accepts_any_dict() -> None:
    job = run(lambda r: r.request_input("answer"))
    (request,) = job.waiting_for
    assert request["schema"] is None and request["prompt"] == ""
    assert check_input(request, {"anything": [1, 2]}, "here") == {"anything": [1, 2]}


def test_request_outside_a_job_raises() -> None:
    routine = Asker(lambda r: None)
    with pytest.raises(ExecutionContextError, match="request input"):
        routine.request_input("answer")


def test_unknown_slot_names_routine_and_slot() -> None:
    job = run(lambda r: r.request_input("nope"))
    # The handler's error fails the job (default STOP), with the message recorded.
    assert job.status == "failed"
    assert job.waiting_for == []
    errors = [r.data for r in job.execution_history if r.event_name == "error"]
    assert any("nope" in str(e) and "asker" in str(e) for e in errors), errors


def test_unknown_slot_raises_definition_error_in_the_handler() -> None:
    caught: list[BaseException] = []

    def ask(routine: Routine) -> None:
        try:
            routine.request_input("nope")
        except DefinitionError as exc:
            caught.append(exc)

    job = run(ask)
    assert job.status == "completed"
    assert "'nope'" in str(caught[0]) and "asker" in str(caught[0])


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ({"when": datetime}, "when"),
        ({"n": "int"}, "n"),
        ({"n": (int,)}, "n"),
        ({"n": (int, "zero")}, "n"),
        ({"flag": (bool, 1)}, "flag"),
    ],
)
def test_bad_schema_names_the_field(schema: dict[str, Any], field: str) -> None:
    caught: list[BaseException] = []

    def ask(routine: Routine) -> None:
        try:
            routine.request_input("answer", schema=schema)
        except InvalidArgumentError as exc:
            caught.append(exc)

    job = run(ask)
    assert job.waiting_for == [] and job.status == "completed"
    message = str(caught[0])
    assert repr(field) in message and "request_input('answer')" in message
    assert "asker" in message


def test_schema_must_be_a_dict_and_prompt_a_string() -> None:
    with pytest.raises(InvalidArgumentError, match="schema must be a dict"):
        compile_schema([("a", int)], "here")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="field names"):
        compile_schema({1: int}, "here")  # type: ignore[dict-item]
    with pytest.raises(InvalidArgumentError, match="prompt must be a string"):
        new_request("r", "s", 3, None, "here")  # type: ignore[arg-type]


def test_several_requests_stay_open_in_order() -> None:
    def ask(routine: Routine) -> None:
        routine.request_input("answer", prompt="first")
        routine.request_input("answer", prompt="second")

    job = run(ask)
    assert [r["prompt"] for r in job.waiting_for] == ["first", "second"]
    assert len({r["id"] for r in job.waiting_for}) == 2


SCHEMA = {
    "approved": bool,
    "count": int,
    "ratio": float,
    "name": str,
    "tags": list,
    "meta": dict,
    "note": (str, "none"),
    "maybe": (int, None),
}
GOOD = {
    "approved": False,
    "count": 3,
    "ratio": 0.5,
    "name": "x",
    "tags": [],
    "meta": {},
}


def request() -> dict[str, Any]:
    return new_request("r", "s", "", SCHEMA, "here")


def test_input_fitting_the_schema_gets_defaults_filled_in() -> None:
    payload = check_input(request(), GOOD, "here")
    assert payload == {**GOOD, "note": "none", "maybe": None}
    # An int is a float (JSON has one number type); None may be sent for a None default.
    assert check_input(request(), {**GOOD, "ratio": 2, "maybe": None}, "here")["ratio"] == 2


def test_defaults_are_copies() -> None:
    req = new_request("r", "s", "", {"items": (list, [])}, "here")
    first = check_input(req, {}, "here")
    first["items"].append(1)
    assert check_input(req, {}, "here") == {"items": []}


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        ({"approved": 1}, "approved", "bool"),
        ({"count": True}, "count", "int"),
        ({"count": 1.5}, "count", "int"),
        ({"ratio": "0.5"}, "ratio", "float"),
        ({"ratio": float("nan")}, "ratio", "float"),
        ({"name": None}, "name", "str"),
        ({"tags": (1,)}, "tags", "list"),
        ({"meta": []}, "meta", "dict"),
        ({"note": 3}, "note", "str"),
    ],
)
def test_wrong_type_names_field_and_type(change: dict[str, Any], field: str, expected: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_input(request(), {**GOOD, **change}, "job j: input for 'r'.'s'")
    message = str(info.value)
    assert f"field {field!r} must be a {expected}" in message
    assert "job j: input for 'r'.'s'" in message


def test_missing_and_unknown_fields_are_named() -> None:
    missing = dict(GOOD)
    del missing["count"]
    with pytest.raises(InvalidInputError, match=r"field 'count' \(int\) is missing"):
        check_input(request(), missing, "here")
    with pytest.raises(InvalidInputError, match="field 'colour' is not in the request's schema"):
        check_input(request(), {**GOOD, "colour": "red"}, "here")
    with pytest.raises(InvalidInputError, match="input must be a dict"):
        check_input(request(), ["approved"], "here")


def test_invalid_input_error_is_a_value_error() -> None:
    assert issubclass(InvalidInputError, RoutiluxError)
    assert issubclass(InvalidInputError, ValueError)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"id": ""}, "id"),
        ({"routine_id": 3}, "routine_id"),
        ({"slot": None}, "slot"),
        ({"prompt": 1}, "prompt"),
        ({"requested_at": "yesterday"}, "requested_at"),
        ({"schema": {"a": "datetime"}}, "schema.a"),
        ({"schema": ["a"]}, "schema"),
        ({"defaults": {"zzz": 1}}, "defaults.zzz"),
        ({"defaults": {"note": 1}}, "defaults.note"),
        ({"handler": "os.system"}, "unknown key"),
    ],
)
def test_saved_request_is_range_checked(change: dict[str, Any], key: str) -> None:
    from routilux import SerializationError

    saved = {**request(), **change}
    with pytest.raises(SerializationError, match=key.replace(".", r"\.")):
        check_request(saved, "waiting_for[0]")


def test_saved_request_round_trips() -> None:
    saved = request()
    assert check_request(json.loads(json.dumps(saved)), "w") == saved

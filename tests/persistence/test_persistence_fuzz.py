"""Fuzzing the loaders (issue 9, item 6): crafted files raise RoutiluxErrors only.

A mutation corpus is built here from valid saved flows (one of user routines, one of
every kind of built-in routine) and job states (history, pending tasks, deferred
events): values replaced by hostile ones (NaN, infinities, huge and negative numbers,
wrong types, deep nesting, callables nobody registered), keys deleted, containers
wrapped, keys duplicated in the JSON text. Every loader must either succeed or raise a
:class:`RoutiluxError` -- and one its own checks anticipated, not the backstop that
turns an unexpected exception into a SerializationError. Nothing may be imported.
The corpus is seeded, so a failure is reproducible by its case number.
"""

from __future__ import annotations

import copy
import json
import math
import random
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import routilux.persistence  # noqa: F401 - imported up front: not a "new" module
from routilux import (
    Connection,
    ErrorHandler,
    Event,
    Flow,
    JobState,
    RoutiluxError,
    Routine,
    Slot,
    register_function,
    register_serializable,
)
from routilux.builtin_routines import (
    Aggregator,
    Batcher,
    ConditionalRouter,
    DataFlattener,
    DataTransformer,
    DataValidator,
    Debouncer,
    Filter,
    Mapper,
    ResultExtractor,
    Splitter,
    TextClipper,
    TextRenderer,
    TimeProvider,
)
from routilux.engine.tasks import task_from_dict
from routilux.serialization import lookup_class, read_json

CASES_PER_DOCUMENT = 500
SEED = 20261201


@register_serializable
class FuzzSource(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("output", ["value", "route"])

    def start(self, **kw: Any) -> None:
        self.emit("output", **kw)


@register_serializable
class FuzzSink(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.store, merge_strategy="append")
        self.set_config(limit=3, names=["a", "b"], nested={"x": [1, 2.5, None]})

    def store(self, **kw: Any) -> None:
        pass


@register_function("tests.fuzz.double")
def double(value: Any) -> Any:
    return value


def user_flow() -> Flow:
    flow = Flow("fuzz-user", execution_strategy="concurrent", max_workers=3, history_limit=20)
    flow.error_handler = ErrorHandler("continue")
    flow.add_routine(FuzzSource(), "src")
    sink = FuzzSink()
    sink.set_error_handler(
        ErrorHandler("retry", max_retries=2, retry_delay=0.1, retryable_exceptions=(KeyError,))
    )
    flow.add_routine(sink, "sink")
    flow.add_routine(FuzzSink(), "other")
    flow.connect("src", "output", "sink", "input", param_mapping={"route": "value"})
    flow.connect("src", "output", "other", "input")
    return flow


def builtin_flow() -> Flow:
    flow = Flow("fuzz-builtins")
    filt = Filter()
    filt.set_config(condition="data['score'] > 0")
    mapper = Mapper()
    mapper.set_config(function=double, field_map={"name": "name"})
    router = ConditionalRouter()
    router.add_route("many", "len(data) >= 2")
    router.add_route("few", lambda items: len(items) < 2)
    validator = DataValidator()
    validator.set_config(rules={"score": "is_positive"})
    transformer = DataTransformer()
    transformer.set_config(transformations=["to_string"])
    batcher = Batcher()
    batcher.set_config(batch_size=2)
    clipper = TextClipper()
    clipper.set_config(max_length=40)
    debouncer = Debouncer()
    debouncer.set_config(wait=0.01)
    routines: list[tuple[str, Routine]] = [
        ("split", Splitter()), ("filter", filt), ("map", mapper), ("agg", Aggregator()),
        ("router", router), ("flatten", DataFlattener()), ("validate", validator),
        ("render", TextRenderer()), ("clip", clipper), ("extract", ResultExtractor()),
        ("batch", batcher), ("transform", transformer), ("debounce", debouncer),
        ("clock", TimeProvider()),
    ]  # fmt: skip
    for rid, routine in routines:
        flow.add_routine(routine, rid)
    flow.connect("split", "output", "filter", "input")
    flow.connect("filter", "output", "map", "input")
    flow.connect("map", "output", "agg", "input")
    flow.connect("agg", "output", "router", "input", param_mapping={"items": "data"})
    flow.connect("router", "many", "flatten", "input")
    flow.connect("batch", "output", "transform", "input", {"batch": "data"})
    return flow


def saved_job_state() -> dict[str, Any]:
    js = JobState("fuzz-user")
    js.status = "paused"
    js.current_routine_id = "src"
    js.history_limit = 10
    for i in range(3):
        js.record_execution("src", "output", {"value": i, "route": f"r{i}"})
    js.update_routine_state("sink", {"status": "completed", "count": 2})
    js.update_shared_data("totals", {"n": 3, "items": [1, 2, 3]})
    js.append_to_shared_log({"event": "checkpoint", "n": 1})
    js.pending_tasks.append(
        {
            "slot_routine_id": "sink",
            "slot_name": "input",
            "data": {"value": 5},
            "connection_source_routine_id": "src",
            "connection_source_event_name": "output",
            "connection_target_routine_id": "sink",
            "connection_target_slot_name": "input",
            "param_mapping": {"route": "value"},
            "priority": 2,
            "retry_count": 1,
            "max_retries": 0,
            "created_at": None,
            "premerged": False,
            "entry": False,
            "at_job_end": False,
        }
    )
    js.deferred_events.append(
        {"routine_id": "src", "event_name": "output", "data": {"value": 9}, "timestamp": None}
    )
    js.slot_buffers = {"sink": {"input": {"value": [1, 2]}}}
    data: dict[str, Any] = json.loads(json.dumps(js.serialize()))
    return data


def deep(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


HOSTILE: list[Any] = [
    "format_version", 2, "JobState", "Flow", "ErrorHandler", "Mapper", "retry", "paused",
    None, True, False, 0, -1, -(10**9), 10**30, 10**400, -(10**5000), 2.5, -0.0, 1e308,
    math.inf, -math.inf, math.nan, "", "x", "os.system", "../../etc/passwd", "\ud800",
    [], {}, [[]], [{}], {"": None}, {"_type": "Flow"}, {"_type": "callable"},
    {"_type": "callable", "callable_type": "function", "module": "routilux.serialization",
     "name": "write_json"},
    {"_type": "callable", "callable_type": "builtin", "name": "eval"},
    {"_type": "callable", "callable_type": "method", "class_name": "FuzzSink",
     "method_name": "__init__", "object_id": "x"},
    {"_type": "lambda_expression", "expression": "__import__('os')"},
    {"_type": "lambda_expression", "expression": 7},
    "x" * 10_000, deep(400), deep(990), [None] * 50,
]  # fmt: skip


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if len(prefix) > 12:
        return  # not into the deep values inserted by an earlier mutation
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def get_at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


# id -> (document, its paths); the document is kept so that its id is not reused.
_PATHS: dict[int, tuple[dict[str, Any], list[tuple[Any, ...]]]] = {}


def mutate(doc: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], str | None]:
    """A mutated deep copy of ``doc``, and (sometimes) JSON text with a duplicate key."""
    cached = _PATHS.get(id(doc))
    if cached is None or cached[0] is not doc:  # the copy has the original's paths
        cached = _PATHS[id(doc)] = (doc, [p for p in paths(doc) if p])
    all_paths = cached[1]
    doc = copy.deepcopy(doc)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        path = rng.choice(all_paths)
        try:
            parent = get_at(doc, path[:-1])
            key = path[-1]
            current = parent[key]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed it
        if not isinstance(parent, (dict, list)):
            continue  # an earlier mutation replaced the container (e.g. by a string)
        kind = rng.random()
        if kind < 0.6:
            # Shared, not copied (deepcopy itself cannot copy the deepest of them):
            # loaders never change the data they are given.
            parent[key] = rng.choice(HOSTILE)
        elif kind < 0.65 and isinstance(parent, dict):
            del parent[key]
        elif kind < 0.7 and isinstance(parent, dict):
            del parent[key]  # renamed: e.g. a routine id, a slot name, a field name
            parent[rng.choice(["", "_type", "__class__", "trigger", "input", "x" * 300])] = current
        elif kind < 0.8:
            parent[key] = [current]
        elif kind < 0.9:
            parent[key] = {"_type": "Slot", "v": current}
        elif isinstance(current, (str, float)) or (
            isinstance(current, int) and abs(current) < 10**100  # str() refuses 4,300 digits
        ):
            parent[key] = str(current)[:50]
        else:
            parent[key] = type(current).__name__
    text = None
    objects = (
        [p for p in paths(doc) if isinstance(get_at(doc, p), dict) and get_at(doc, p)]
        if rng.random() < 0.15
        else []
    )
    if objects:
        target = rng.choice(objects)
        marker = "\u0000DUPLICATE\u0000"
        obj = get_at(doc, target)
        first = next(iter(obj))
        replacement = dict(obj)
        if target:
            get_at(doc, target[:-1])[target[-1]] = marker
            try:
                inner = json.dumps(replacement)[:-1] + f", {json.dumps(first)}: 1}}"
                text = json.dumps(doc).replace(json.dumps(marker), inner, 1)
            except (ValueError, RecursionError):
                text = None  # too deep for json here: no duplicate-key variant
            get_at(doc, target[:-1])[target[-1]] = replacement
    return doc, text


def expect_library_error(case: str, load: Callable[..., Any], *args: Any) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load(*args)
    except RoutiluxError as exc:
        assert "unexpected" not in str(exc), f"{case}: only the backstop caught it: {exc!r}"
    except Exception as exc:  # noqa: BLE001 - the point of the test
        raise AssertionError(f"{case}: {type(exc).__name__}: {exc}") from exc


def write(path: Path, doc: dict[str, Any], text: str | None) -> Path:
    try:
        body = text if text is not None else json.dumps(doc)
    except (ValueError, RecursionError):
        body = "{" * 5  # not encodable here: a corrupt file is a fine case too
    path.write_text(body, encoding="utf-8", errors="surrogatepass")
    return path


def load_flow_file(path: Path) -> Flow:
    return Flow().deserialize(read_json(path, "Flow"))


def new_flow_from(data: Any) -> Flow:
    return Flow().deserialize(data)


@pytest.fixture
def nothing_imported(tmp_path: Path) -> Iterator[None]:
    # Depends on tmp_path so that pytest's own imports for it happen before the snapshot.
    before = set(sys.modules)
    yield
    assert set(sys.modules) - before == set()


@pytest.mark.parametrize("make", [user_flow, builtin_flow], ids=["user", "builtins"])
def test_mutated_flows_load_or_raise_library_errors(
    tmp_path: Path, nothing_imported: None, make: Callable[[], Flow]
) -> None:
    original: dict[str, Any] = json.loads(json.dumps(make().serialize()))
    Flow().deserialize(original)  # the unmutated document loads
    rng = random.Random(f"{SEED}-{make.__name__}")
    for case in range(CASES_PER_DOCUMENT):
        doc, text = mutate(original, rng)
        name = f"{make.__name__} case {case}"
        expect_library_error(name, new_flow_from, doc)
        file = write(tmp_path / f"flow-{case % 8}.json", doc, text)
        expect_library_error(f"{name} file", load_flow_file, file)
        routines = doc.get("routines")
        for rid, routine_data in routines.items() if isinstance(routines, dict) else ():
            saved = original["routines"].get(rid)
            if saved is None:
                continue
            routine = lookup_class(saved["_type"])()
            expect_library_error(f"{name} {rid}", routine.deserialize, routine_data)
            if isinstance(routine_data, dict):
                _fuzz_parts(routine_data, f"{name} {rid}")
        connections = doc.get("connections")
        for index, conn in enumerate(connections if isinstance(connections, list) else ()):
            expect_library_error(f"{name} connection {index}", Connection().deserialize, conn)
        if doc.get("error_handler") is not None:
            handler = ErrorHandler()
            expect_library_error(f"{name} handler", handler.deserialize, doc["error_handler"])


def _fuzz_parts(routine_data: dict[str, Any], name: str) -> None:
    slots = routine_data.get("_slots")
    for slot_name, slot_data in slots.items() if isinstance(slots, dict) else ():
        expect_library_error(f"{name} {slot_name}", Slot().deserialize, slot_data)
    events = routine_data.get("_events")
    for event_name, event_data in events.items() if isinstance(events, dict) else ():
        expect_library_error(f"{name} {event_name}", Event().deserialize, event_data)
    handler = routine_data.get("_error_handler")
    if handler is not None:
        expect_library_error(f"{name} handler", ErrorHandler().deserialize, handler)


def test_mutated_job_states_load_or_raise_library_errors(
    tmp_path: Path, nothing_imported: None
) -> None:
    original = saved_job_state()
    JobState().deserialize(original)
    flow = Flow().deserialize(json.loads(json.dumps(user_flow().serialize())))
    rng = random.Random(f"{SEED}-job")
    for case in range(CASES_PER_DOCUMENT):
        doc, text = mutate(original, rng)
        name = f"job case {case}"
        expect_library_error(name, JobState().deserialize, doc)
        file = write(tmp_path / f"job-{case % 8}.json", doc, text)
        expect_library_error(f"{name} file", JobState.load, file)
        pending = doc.get("pending_tasks")
        for index, entry in enumerate(pending if isinstance(pending, list) else ()):
            expect_library_error(f"{name} pending task {index}", task_from_dict, flow, entry)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=5)
    | st.sampled_from(["stop", "retry", "ValueError", "builtins.KeyError", "os.system"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)
handler_keys = st.sampled_from(
    ["strategy", "max_retries", "retry_delay", "retry_backoff", "retry_count", "is_critical",
     "is_optional", "retryable_exceptions", "_type"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(handler_keys, json_values, max_size=5))
def test_error_handler_deserialize_of_anything(data: dict[str, Any]) -> None:
    expect_library_error(repr(data), ErrorHandler().deserialize, data)

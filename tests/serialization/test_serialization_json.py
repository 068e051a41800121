"""JSON files are compact, streamed and strict (issue 9, item 5 second bullet; item 6).

Writing: no indent (which forces json's slow pure-Python encoder), long top-level lists
written in slices, NaN and Infinity refused with the key path named before the target
file is touched. Reading: NaN/Infinity literals and duplicate keys refused, old indented
files still read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from routilux import JobState, SerializationError
from routilux import serialization as ser
from routilux.serialization import find_unserializable, loads_json, read_json, write_json


def compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n"


def test_write_json_is_compact(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    data = {"a": [1, 2.5, None, True], "b": {"c": "é"}}
    write_json(path, data)
    assert path.read_text(encoding="utf-8") == compact(data)


def test_write_json_can_indent_for_people(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    data = {"a": [1, 2], "b": "é"}
    write_json(path, data, indent=2)
    assert path.read_text(encoding="utf-8") == json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    assert read_json(path, "data") == data
    with pytest.raises(SerializationError, match="a.*NaN"):
        write_json(path, {"a": math.nan}, indent=2)
    assert read_json(path, "data") == data


def test_long_top_level_lists_are_streamed_in_slices(tmp_path: Path) -> None:
    items = [{"n": i, "s": f"item-{i}"} for i in range(ser._STREAM_CHUNK * 3 + 7)]
    data = {"before": 1, "history": items, "empty": [], "after": {"x": [1, 2]}}
    pieces = list(ser._iter_json(data))
    # One piece per slice, not one giant string.
    assert len(pieces) >= 4 + 3
    assert max(len(p) for p in pieces) < len(compact(items)) / 2
    assert "".join(pieces) + "\n" == compact(data)
    path = tmp_path / "big.json"
    write_json(path, data)
    assert path.read_text(encoding="utf-8") == compact(data)
    assert read_json(path, "data") == data


@pytest.mark.parametrize("length", [0, 1, ser._STREAM_CHUNK, ser._STREAM_CHUNK + 1])
def test_stream_boundaries(length: int) -> None:
    data = {"xs": list(range(length))}
    assert "".join(ser._iter_json(data)) + "\n" == compact(data)


@pytest.mark.parametrize("data", [[1, 2], "text", 3, None, {1: "int key"}])
def test_non_object_documents_are_written_in_one_piece(data: Any) -> None:
    assert "".join(ser._iter_json(data)) == json.dumps(
        data, separators=(",", ":"), ensure_ascii=False
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_naming_the_path(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "f.json"
    path.write_text("old contents", encoding="utf-8")
    with pytest.raises(SerializationError, match=r"shared_data.x.*NaN or Infinity"):
        write_json(path, {"shared_data": {"x": bad}})
    assert path.read_text(encoding="utf-8") == "old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary file left


def test_nan_inside_a_streamed_list_names_its_index(tmp_path: Path) -> None:
    items: list[Any] = [{"v": i} for i in range(ser._STREAM_CHUNK * 2)]
    items[1500]["v"] = math.nan
    with pytest.raises(SerializationError, match=r"history\[1500\].v"):
        write_json(tmp_path / "f.json", {"history": items})
    assert list(tmp_path.iterdir()) == []


def test_find_unserializable_reports_nan() -> None:
    assert find_unserializable({"a": [1, {"b": math.inf}]}) == (
        "a[1].b",
        "is inf: JSON has no NaN or Infinity (store None or a string instead)",
    )
    assert find_unserializable({"a": 1.5}) is None


def test_circular_list_is_refused(tmp_path: Path) -> None:
    items: list[Any] = list(range(ser._STREAM_CHUNK + 5))
    items.append(items)
    with pytest.raises(SerializationError, match="circular"):
        write_json(tmp_path / "f.json", {"xs": items})


def test_job_state_save_refuses_nan_before_touching_the_file(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    js = JobState("f")
    js.save(path)
    before = path.read_bytes()
    js.update_shared_data("ratio", math.nan)
    with pytest.raises(SerializationError, match="shared_data.ratio"):
        js.save(path)
    assert path.read_bytes() == before
    for i in range(ser._STREAM_CHUNK + 10):
        js.record_execution("r", "output", {"i": i})
    js.update_shared_data("ratio", 0.5)
    js.save(path)
    loaded = JobState.load(path)
    assert len(loaded.execution_history) == ser._STREAM_CHUNK + 10
    assert path.read_text(encoding="utf-8").startswith('{"_type":"JobState",')


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_reading_refuses_nan_literals(tmp_path: Path, literal: str) -> None:
    path = tmp_path / "job.json"
    path.write_text(f'{{"_type": "JobState", "history_limit": {literal}}}', encoding="utf-8")
    with pytest.raises(SerializationError, match=f"{literal}.*refused"):
        read_json(path, "JobState")
    with pytest.raises(SerializationError, match=str(path)):
        JobState.load(path)


@pytest.mark.parametrize(
    "text",
    [
        '{"_type": "JobState", "status": "paused", "status": "completed"}',
        '{"_type": "JobState", "shared_data": {"a": 1, "b": 2, "a": 3}}',
        '{"_type": "JobState", "pending_tasks": [{"slot_name": "x", "slot_name": "y"}]}',
    ],
)
def test_reading_refuses_duplicate_keys(tmp_path: Path, text: str) -> None:
    path = tmp_path / "job.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SerializationError, match="duplicate key '(status|a|slot_name)'"):
        JobState.load(path)


def test_old_indented_files_still_load(tmp_path: Path) -> None:
    js = JobState("f")
    js.record_execution("r", "output", {"v": 1})
    js.update_shared_data("k", [1, 2])
    path = tmp_path / "old.json"
    path.write_text(json.dumps(js.serialize(), indent=2), encoding="utf-8")
    loaded = JobState.load(path)
    assert loaded.shared_data == {"k": [1, 2]}
    assert loaded.execution_history[0].data == {"v": 1}


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, "1" * 5000, '{"a": "\\ud800"', b'{"a": "\xff"}', "", "{} {}"],
)
def test_loads_json_raises_only_serialization_errors(text: str | bytes) -> None:
    with pytest.raises(SerializationError, match="the thing"):
        loads_json(text, "the thing")

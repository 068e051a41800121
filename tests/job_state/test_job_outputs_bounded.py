"""Bounded output logs (issue 9 item 5): ``output_limit`` keeps the newest N entries
of ``job_state.output_log`` (default: the history limit), counts what it dropped in
``output_dropped``, and both round-trip through serialize/deserialize and save/load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from routilux import Flow, InvalidArgumentError, JobState, Routine, register_serializable


@register_serializable
class Talker(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.go)

    def go(self, n: int = 0) -> None:
        for i in range(n):
            self.send_output("progress", i=i)


class Sink:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def handle(self, **kwargs: Any) -> None:
        self.seen.append(kwargs["data"]["i"])


def outputs(js: JobState) -> list[int]:
    return [entry["data"]["i"] for entry in js.output_log]


def test_output_limit_keeps_the_newest_and_counts_the_dropped() -> None:
    js = JobState("f", output_limit=2)
    for i in range(5):
        js.send_output("r", "progress", {"i": i})
    assert outputs(js) == [3, 4]
    assert js.output_dropped == 3
    assert js.output_limit == 2


def test_output_limit_defaults_to_the_history_limit() -> None:
    js = JobState("f", history_limit=3)
    assert js.output_limit == 3
    for i in range(10):
        js.send_output("r", "progress", {"i": i})
    assert outputs(js) == [7, 8, 9]
    assert js.output_dropped == 7
    unbounded = JobState("f")
    assert unbounded.output_limit is None
    for i in range(10):
        unbounded.send_output("r", "progress", {"i": i})
    assert len(unbounded.output_log) == 10 and unbounded.output_dropped == 0


@pytest.mark.parametrize(
    ("kwargs", "limit"),
    [
        ({"output_limit": 4}, 4),
        ({"history_limit": 5}, 5),
        ({"history_limit": 5, "output_limit": 2}, 2),
    ],
)
def test_flow_output_limit_bounds_every_job(kwargs: dict[str, int], limit: int) -> None:
    flow = Flow("talk", **kwargs)
    flow.add_routine(Talker(), "t")
    sink = Sink()
    js = flow.execute("t", {"n": 20}, output_handler=sink)
    assert js.status == "completed"
    assert outputs(js) == list(range(20 - limit, 20))
    assert js.output_dropped == 20 - limit
    assert sink.seen == list(range(20))  # the output handler still sees everything


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_bad_output_limits_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="output_limit"):
        Flow("bad", output_limit=bad)
    with pytest.raises(ValueError, match="output_limit"):
        JobState("f", output_limit=bad)


def test_output_limit_and_dropped_round_trip(tmp_path: Path) -> None:
    js = JobState("f", history_limit=50, output_limit=3)
    for i in range(7):
        js.send_output("r", "progress", {"i": i})
    restored = JobState().deserialize(json.loads(json.dumps(js.serialize())))
    assert (restored.output_limit, restored.output_dropped) == (3, 4)
    assert outputs(restored) == [4, 5, 6]
    restored.send_output("r", "progress", {"i": 7})
    assert outputs(restored) == [5, 6, 7] and restored.output_dropped == 5

    path = tmp_path / "job.json"
    js.save(path)
    loaded = JobState.load(path)
    assert (loaded.output_limit, loaded.output_dropped, outputs(loaded)) == (3, 4, [4, 5, 6])


def test_an_output_limit_equal_to_the_history_limit_round_trips() -> None:
    js = JobState("f", history_limit=2)
    for i in range(3):
        js.send_output("r", "progress", {"i": i})
    restored = JobState().deserialize(json.loads(json.dumps(js.serialize())))
    assert (restored.output_limit, restored.output_dropped, outputs(restored)) == (2, 1, [1, 2])


def test_an_unbounded_output_log_beside_a_bounded_history_round_trips() -> None:
    js = JobState("f", history_limit=2)
    js.output_limit = None  # explicitly unbounded
    for i in range(4):
        js.send_output("r", "progress", {"i": i})
    restored = JobState().deserialize(json.loads(json.dumps(js.serialize())))
    assert restored.output_limit is None
    assert outputs(restored) == [0, 1, 2, 3]


def test_loading_with_more_outputs_than_the_limit_keeps_the_newest() -> None:
    js = JobState("f")
    for i in range(6):
        js.send_output("r", "progress", {"i": i})
    data = json.loads(json.dumps(js.serialize()))
    data["output_limit"] = 2
    restored = JobState().deserialize(data)
    assert outputs(restored) == [4, 5]
    assert restored.output_dropped == 4


@pytest.mark.parametrize("bad", [0, -3, "x", 1.5, True])
def test_a_bad_saved_output_limit_is_a_serialization_error(bad: Any) -> None:
    from routilux import SerializationError

    data = json.loads(json.dumps(JobState("f").serialize()))
    data["output_limit"] = bad
    with pytest.raises(SerializationError, match="output_limit"):
        JobState().deserialize(data)


def test_a_flow_output_limit_round_trips() -> None:
    flow = Flow("talk-saved", output_limit=3)
    flow.add_routine(Talker(), "t")
    data = json.loads(json.dumps(flow.serialize()))
    assert data["output_limit"] == 3
    restored = Flow().deserialize(data)
    assert restored.output_limit == 3
    js = restored.execute("t", {"n": 5})
    assert outputs(js) == [2, 3, 4] and js.output_dropped == 2
    # Not written when unset, so files of flows without it are unchanged.
    assert "output_limit" not in Flow("plain").serialize()


def test_outputs_sent_from_many_threads_are_kept_or_counted() -> None:
    import threading

    js = JobState("f", output_limit=50)
    start = threading.Barrier(8, timeout=30)

    def send(worker: int) -> None:
        start.wait()
        for i in range(500):
            js.send_output(f"w{worker}", "progress", {"i": i})

    threads = [threading.Thread(target=send, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(js.output_log) == 50
    assert js.output_dropped + len(js.output_log) == 8 * 500

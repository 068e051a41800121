"""Output handlers (spec 70 §1): what each handler does with one output."""

from __future__ import annotations

import queue
from datetime import datetime, timedelta
from typing import Any

import pytest

from routilux.output_handler import (
    CallbackOutputHandler,
    NullOutputHandler,
    OutputHandler,
    QueueOutputHandler,
)

WHEN = datetime(2024, 1, 2, 3, 4, 5, 678901)


def test_output_handler_is_abstract() -> None:
    with pytest.raises(TypeError):
        OutputHandler()  # type: ignore[abstract]


def test_subclass_without_handle_cannot_be_instantiated() -> None:
    class Incomplete(OutputHandler):
        pass

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]


def test_subclass_with_handle_works() -> None:
    seen: list[tuple[Any, ...]] = []

    class Recorder(OutputHandler):
        def handle(
            self,
            job_id: str,
            routine_id: str,
            output_type: str,
            data: Any,
            timestamp: datetime | None = None,
        ) -> None:
            seen.append((job_id, routine_id, output_type, data, timestamp))

    Recorder().handle(job_id="j", routine_id="r", output_type="t", data={"a": 1})
    assert seen == [("j", "r", "t", {"a": 1}, None)]


def test_queue_handler_puts_dict_with_iso_timestamp() -> None:
    q: queue.Queue[dict[str, Any]] = queue.Queue()
    handler = QueueOutputHandler(q)
    assert handler.queue is q
    handler.handle(
        job_id="job-1", routine_id="r1", output_type="progress", data={"p": 50}, timestamp=WHEN
    )
    item = q.get_nowait()
    assert item == {
        "job_id": "job-1",
        "routine_id": "r1",
        "output_type": "progress",
        "data": {"p": 50},
        "timestamp": WHEN.isoformat(),
    }
    assert q.empty()


def test_queue_handler_defaults_timestamp_to_now() -> None:
    q: queue.Queue[dict[str, Any]] = queue.Queue()
    before = datetime.now()
    QueueOutputHandler(q).handle("j", "r", "t", {})
    after = datetime.now()
    stamp = datetime.fromisoformat(q.get_nowait()["timestamp"])
    assert before <= stamp <= after


def test_queue_handler_accepts_any_object_with_put() -> None:
    class Sink:
        def __init__(self) -> None:
            self.items: list[Any] = []

        def put(self, item: Any) -> None:
            self.items.append(item)

    sink = Sink()
    QueueOutputHandler(sink).handle("j", "r", "t", {"x": 1}, WHEN)
    assert [i["data"] for i in sink.items] == [{"x": 1}]


def test_queue_handler_requires_a_queue() -> None:
    with pytest.raises(TypeError):
        QueueOutputHandler()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="put"):
        QueueOutputHandler(object())  # type: ignore[arg-type]


def test_callback_handler_calls_positionally_with_datetime() -> None:
    calls: list[tuple[Any, ...]] = []

    def callback(*args: Any, **kwargs: Any) -> None:
        assert kwargs == {}
        calls.append(args)

    handler = CallbackOutputHandler(callback)
    assert handler.callback is callback
    handler.handle(job_id="j", routine_id="r", output_type="t", data={"d": 1}, timestamp=WHEN)
    assert calls == [("j", "r", "t", {"d": 1}, WHEN)]


def test_callback_handler_defaults_timestamp_to_now_datetime() -> None:
    calls: list[tuple[Any, ...]] = []
    CallbackOutputHandler(lambda *a: calls.append(a)).handle("j", "r", "t", {})
    (stamp,) = [c[4] for c in calls]
    assert isinstance(stamp, datetime)
    assert abs(datetime.now() - stamp) < timedelta(seconds=5)


def test_callback_handler_lets_callback_errors_propagate() -> None:
    # JobState.send_output turns them into warnings; the handler itself must not hide them.
    def boom(*args: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        CallbackOutputHandler(boom).handle("j", "r", "t", {})


def test_callback_handler_requires_callable() -> None:
    with pytest.raises(TypeError):
        CallbackOutputHandler()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="callable"):
        CallbackOutputHandler("not callable")  # type: ignore[arg-type]


def test_null_handler_does_nothing() -> None:
    handler = NullOutputHandler()
    assert isinstance(handler, OutputHandler)
    handler.handle(job_id="j", routine_id="r", output_type="t", data={})
    handler.handle("j", "r", "t", {"x": 1}, WHEN)

"""The engine's shortcuts read the same as the long way round."""

from __future__ import annotations

import uuid
from typing import Any

from routilux import ErrorHandler, Flow, Routine


class Source(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.go)
        self.define_event("output", ["value"])

    def go(self, **_: Any) -> None:
        self.emit("output", value=7)


class One(Routine):
    """A handler of one named parameter that fails its first ``failures`` calls."""

    def __init__(self, failures: int = 0, slot: str = "input") -> None:
        super().__init__()
        self.failures = failures
        self.seen: list[Any] = []
        self.define_slot(slot, handler=self.on_value)

    def on_value(self, value: Any) -> None:
        self.seen.append(value)
        if len(self.seen) <= self.failures:
            raise ValueError("not yet")


class Whole(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []
        self.define_slot("input", handler=self.on_data)

    def on_data(self, data: Any) -> None:
        self.seen.append(data)
        data["mutated"] = True  # its own copy: nobody else sees this


def test_a_job_id_is_uuid4_text() -> None:
    flow = Flow(flow_id="ids")
    flow.add_routine(One(slot="trigger"), "one")
    jobs = [flow.execute("one", {"value": 1}) for _ in range(50)]
    assert {js.status for js in jobs} == {"completed"}
    ids = {js.job_id for js in jobs}
    assert len(ids) == 50
    for job_id in ids:
        parsed = uuid.UUID(job_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == job_id


def test_a_single_value_handler_and_a_whole_data_handler_share_an_emission() -> None:
    flow = Flow(flow_id="shared")
    one, whole = One(failures=1), Whole()
    one.set_error_handler(ErrorHandler("retry", max_retries=2, retry_delay=0.001))
    flow.add_routine(Source(), "source")
    flow.add_routine(one, "one")
    flow.add_routine(whole, "whole")
    flow.connect("source", "output", "one", "input")
    flow.connect("source", "output", "whole", "input")
    js = flow.execute("source", {})
    assert js.status == "completed"
    assert one.seen == [7, 7]
    assert whole.seen == [{"value": 7, "mutated": True}]
    assert js.get_execution_history()[0].data == {"value": 7}


def test_a_single_value_handler_without_its_key_gets_a_copy_of_the_data() -> None:
    flow = Flow(flow_id="absent")
    one = One(slot="trigger")
    flow.add_routine(one, "one")
    entry = {"other": 1}
    assert flow.execute("one", entry).status == "completed"
    assert one.seen == [{"other": 1}] and one.seen[0] is not entry

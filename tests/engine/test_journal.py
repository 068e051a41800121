"""The automatic journal (engine/journal.py): what a journaled job leaves in its store.

Every test runs a job in this process with ``Flow(store=...)`` and reads the store
back: the JobState rebuilt from snapshot + deltas must equal the live one, the task
rows must be the job's pending work, and statuses must be durable when ``execute`` /
``pause`` return.  (Crashes are tested with real processes elsewhere.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from helpers import Collector, Numbers
from routilux import ErrorHandler, Flow, JobState, Routine
from routilux.store import Store, open_store

# Fields that say when, not what: they may differ between the live JobState and the
# one rebuilt from the journal (the journal keeps updated_at as of the last commit).
VOLATILE = ("updated_at",)


class Adder(Routine):
    """``input(value)``: adds ``value`` to shared ``total`` (read-modify-write under
    the job's lock) and to its own routine state, then emits ``out(value)``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.add)
        self.define_event("out", ["value"])

    def add(self, value: int = 0, **_: Any) -> None:
        js = self.context.job_state
        with js.lock:
            js.shared_data["total"] = js.shared_data.get("total", 0) + value
            rid = "adder"
            state = dict(js.get_routine_state(rid) or {})
            state["seen"] = [*state.get("seen", []), value]
            js.update_routine_state(rid, state)
        self.emit("out", value=value)


class AsyncAdder(Adder):
    """:class:`Adder` as an ``async def`` handler."""

    def __init__(self) -> None:
        super().__init__()
        self.get_slot("input").handler = self.add_async  # type: ignore[union-attr]

    async def add_async(self, value: int = 0, **_: Any) -> None:
        await asyncio.sleep(0)
        self.add(value)


def build(
    store: Any, strategy: str = "sequential", adder: Routine | None = None, **kw: Any
) -> Flow:
    flow = Flow(flow_id="journal-test", execution_strategy=strategy, store=store, **kw)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(adder or Adder(), "adder")
    flow.add_routine(Collector(), "sink")
    flow.connect("source", "output", "adder", "input")
    flow.connect("adder", "out", "sink", "input")
    return flow


def comparable(job: JobState) -> dict[str, Any]:
    data = job.serialize()
    for key in VOLATILE:
        data.pop(key, None)
    return data


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def store(url: str) -> Any:
    opened = open_store(url)
    yield opened
    opened.close()


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_a_finished_job_is_rebuilt_from_its_journal_exactly(
    url: str, store: Store, strategy: str
) -> None:
    flow = build(url, strategy)
    job = flow.execute("source", entry_params={"n": 40})
    assert job.status == "completed"
    assert job.shared_data["total"] == sum(range(40))
    summary = store.list_jobs(flow_id="journal-test")[0]
    assert (summary.job_id, summary.status) == (job.job_id, "completed")
    assert store.load(job.job_id).tasks == []
    assert comparable(store.load_job(job.job_id)) == comparable(job)


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_async_handlers_are_journaled(url: str, store: Store, strategy: str) -> None:
    flow = build(url, strategy, AsyncAdder())
    job = flow.execute("source", entry_params={"n": 15})
    assert job.status == "completed"
    assert job.shared_data["total"] == sum(range(15))
    assert comparable(store.load_job(job.job_id)) == comparable(job)


def test_execute_async_flushes_without_blocking(url: str, store: Store) -> None:
    flow = build(url, "concurrent", AsyncAdder())

    async def main() -> JobState:
        return await flow.execute_async("source", entry_params={"n": 10})

    job = asyncio.run(main())
    assert store.load(job.job_id).status == "completed"
    assert comparable(store.load_job(job.job_id)) == comparable(job)


def test_the_journal_of_a_running_job_is_its_state_so_far(url: str, store: Store) -> None:
    """Mid-job (a handler looks at the store after a flush): the rows are the work
    still pending and the rebuilt state holds every finished delivery once."""
    seen: dict[str, Any] = {}

    class Probe(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", handler=self.look)

        def look(self, value: int = 0, **_: Any) -> None:
            if value == 5:
                js = self.context.job_state
                from routilux.engine.journal import Durable

                Durable.of(flow.store).flush()  # type: ignore[arg-type]
                seen["job"] = store.load(js.job_id)
                seen["state"] = store.load_job(js.job_id)

    flow = Flow(flow_id="journal-test", store=url)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(Probe(), "probe")
    flow.connect("source", "output", "probe", "input")
    job = flow.execute("source", entry_params={"n": 8})
    assert job.status == "completed"
    mid = seen["job"]
    assert mid.status == "running"
    # The entry (seq 0) and the deliveries of values 0..4 (seqs 1..5) are consumed;
    # the delivery of value 5 is running (its row stays), 6 and 7 wait.
    assert [row["seq"] for row in mid.tasks] == [6, 7, 8]
    assert [row["data"] for row in mid.tasks] == [{"value": 5}, {"value": 6}, {"value": 7}]
    assert all(row["kind"] == "ready" and row["routine"] == "probe" for row in mid.tasks)
    assert [r.data for r in seen["state"].execution_history] == [{"value": v} for v in range(8)]


def test_pause_is_durable_when_pause_returns_and_rows_are_the_pending_tasks(
    url: str, store: Store
) -> None:
    class Pauser(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", handler=self.take)

        def take(self, value: int = 0, **_: Any) -> None:
            if value == 2:
                flow.pause(self.context.job_state, reason="look")
                assert store.load(self.context.job_state.job_id).status == "paused"

    flow = Flow(flow_id="journal-test", store=url)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(Pauser(), "p")
    flow.connect("source", "output", "p", "input")
    job = flow.execute("source", entry_params={"n": 6})
    assert job.status == "paused"
    stored = store.load(job.job_id)
    assert stored.status == "paused"
    assert sorted(row["seq"] for row in stored.tasks) == sorted(t["seq"] for t in job.pending_tasks)
    assert [row["data"]["value"] for row in stored.tasks] == [3, 4, 5]
    flow.resume(job)
    assert job.status == "completed"
    assert store.load(job.job_id).status == "completed"
    assert store.load(job.job_id).tasks == []
    assert comparable(store.load_job(job.job_id)) == comparable(job)


def test_a_retry_with_delay_has_a_row_with_its_due_time(url: str, store: Store) -> None:
    rows: list[Any] = []

    class Flaky(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", handler=self.take)
            self.calls = 0

        def take(self, value: int = 0, **_: Any) -> None:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("first attempt fails")
            from routilux.engine.journal import Durable

            Durable.of(flow.store).flush()  # type: ignore[arg-type]
            rows.extend(store.load(self.context.job_state.job_id).tasks)

    flow = Flow(flow_id="journal-test", store=url)
    flow.add_routine(Numbers(), "source")
    flaky = Flaky()
    flaky.set_error_handler(ErrorHandler("retry", max_retries=2, retry_delay=0.2))
    flow.add_routine(flaky, "flaky")
    flow.connect("source", "output", "flaky", "input")
    import time

    before = time.time()
    job = flow.execute("source", entry_params={"n": 1})
    assert job.status == "completed"
    # While the retry ran, its row (same seq, one retry more, due ~0.2 s after the
    # failure) was what the store had pending.
    (row,) = rows
    assert (row["seq"], row["kind"], row["retries"], row["routine"]) == (1, "timer", 1, "flaky")
    assert before + 0.15 < row["due_at"] < time.time() + 0.1
    assert store.load(job.job_id).tasks == []
    assert comparable(store.load_job(job.job_id)) == comparable(job)

"""The automatic journal (engine/journal.py): what a journaled job leaves in its store.

Every test runs a job in this process with ``Flow(store=...)`` and reads the store
back: the JobState rebuilt from snapshot + deltas must equal the live one, the task
rows must be the job's pending work, and statuses must be durable when ``execute`` /
``pause`` return.  (Crashes are tested with real processes elsewhere.)
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from helpers import Collector, Numbers, comparable
from routilux import ErrorHandler, Flow, JobState, Routine
from routilux.store import Store, open_store


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


@pytest.mark.parametrize("wait", [True, False])
def test_execute_async_stores_the_new_job_off_the_loop(tmp_path: Path, wait: bool) -> None:
    """The new job's row is written by a transaction: never on the caller's event
    loop, yet the job is in the store once execute_async has returned."""
    import threading

    from routilux.store import SQLiteStore

    threads: list[threading.Thread] = []

    class Watched(SQLiteStore):
        def create_job(self, *args: Any, **kwargs: Any) -> int:
            threads.append(threading.current_thread())
            return super().create_job(*args, **kwargs)

    path = tmp_path / "watched.db"
    flow = Flow(flow_id="journal-test", store=Watched(path), execution_strategy="concurrent")
    flow.add_routine(Numbers(), "source")
    flow.add_routine(Collector(), "sink")
    flow.connect("source", "output", "sink", "input")

    async def main() -> tuple[JobState, threading.Thread]:
        job = await flow.execute_async("source", entry_params={"n": 3}, wait=wait)
        with open_store(f"sqlite:///{path}") as other:
            assert other.load(job.job_id).flow_id == "journal-test"
        return job, threading.current_thread()

    job, loop_thread = asyncio.run(main())
    job.wait_for_completion(30)
    assert job.status == "completed"
    assert len(threads) == 1 and threads[0] is not loop_thread
    flow.shutdown()


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


def _run_pausing_at_two(
    url: str, during: Callable[[JobState], None] | None = None
) -> tuple[Flow, JobState]:
    """A journaled job of six values whose delivery of value 2 pauses it
    (``during(job_state)`` runs right after the pause, inside that delivery)."""

    class PauseAtTwo(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", handler=self.take)

        def take(self, value: int = 0, **_: Any) -> None:
            if value == 2:
                flow.pause(self.context.job_state, reason="look")
                if during is not None:
                    during(self.context.job_state)

    flow = Flow(flow_id="journal-test", store=url)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(PauseAtTwo(), "p")
    flow.connect("source", "output", "p", "input")
    return flow, flow.execute("source", entry_params={"n": 6})


def test_pause_is_durable_when_pause_returns_and_rows_are_the_pending_tasks(
    url: str, store: Store
) -> None:
    def paused_in_the_store(job_state: JobState) -> None:
        assert store.load(job_state.job_id).status == "paused"

    flow, job = _run_pausing_at_two(url, paused_in_the_store)
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


def test_the_periodic_snapshots_of_a_paused_job_count_from_its_pauses_snapshot(
    url: str, store: Store
) -> None:
    # A paused job's journal goes on (a finished job's ends with its last snapshot,
    # which sets up no next one): the rule for the next periodic snapshot starts
    # from the snapshot the pause wrote.
    from routilux.engine.journal import SNAPSHOT_EVERY
    from routilux.flow.recovery import journal_of

    flow, job = _run_pausing_at_two(url)
    assert job.status == "paused"
    journal = journal_of(flow, job)
    assert journal is not None
    assert journal._snapshot_seq == journal._commit_seq == store.load(job.job_id).snapshot_seq
    assert journal._next_snapshot == journal._commit_seq + SNAPSHOT_EVERY
    assert journal._writes_at_snapshot == journal.log._seq > 0
    assert journal._snapshot_entries == journal._entries() > 0


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


# -- the same round trip on PostgreSQL --------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services import postgres_dsn, postgres_server  # noqa: E402,F401


@pytest.fixture
def pg_url(postgres_dsn: str) -> str:  # noqa: F811 - the fixture, by name
    """The PostgreSQL test database with its journal tables emptied."""
    with open_store(postgres_dsn) as first:
        del first
    import psycopg

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE routilux_job, routilux_task, routilux_delta, routilux_runner, routilux_batch"
        )
    return postgres_dsn


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_the_round_trip_on_postgres(pg_url: str, strategy: str) -> None:
    flow = build(pg_url, strategy)
    job = flow.execute("source", entry_params={"n": 30})
    assert job.status == "completed"
    store = flow.store
    assert store is not None
    assert store.load(job.job_id).status == "completed"
    assert comparable(store.load_job(job.job_id)) == comparable(job)
    assert store.load(job.job_id).tasks == []


class Probe(Routine):
    """``input(value)``: sets shared ``v<value>``; at ``value == at`` it flushes the
    journal and keeps what the store holds then (in ``seen``)."""

    def __init__(self, store: Store, at: int, key: str | None = None) -> None:
        super().__init__()
        self.define_slot("input", handler=self.look)
        self.store, self.at, self.key, self.seen = store, at, key, []  # type: list[Any]

    def look(self, value: int = 0, **_: Any) -> None:
        from routilux.engine import journal

        js = self.context.job_state
        js.shared_data[self.key or f"v{value}"] = value
        if value == self.at:
            journal.Durable.of(self.store).flush()
            self.seen.append(self.store.load(js.job_id))


def test_periodic_snapshots_bound_the_writes_to_replay(
    url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot after SNAPSHOT_EVERY commits; the next once the deltas since hold
    SNAPSHOT_RATIO times its entries in writes (ops and delivery ends)."""
    from routilux.engine import journal

    monkeypatch.setattr(journal, "SNAPSHOT_EVERY", 10)
    probe = Probe(store, at=150)
    flow = Flow(flow_id="journal-test", store=store)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(probe, "probe")
    flow.connect("source", "output", "probe", "input")
    job = flow.execute("source", entry_params={"n": 200})
    (mid,) = probe.seen
    # The first snapshot after 10 commits (the entry's and 9 probes'): 200 history
    # records, 9 shared keys, 191 pending rows -- 400 entries, so the next is due
    # after SNAPSHOT_RATIO x 400 writes, 2 per probe delivery (its op and its end):
    # after the job.
    assert mid.snapshot_seq == 10
    assert [d["seq"] for d in mid.deltas] == list(range(11, mid.commit_seq + 1))
    final = store.load(job.job_id)
    assert final.snapshot_seq == final.commit_seq and final.deltas == []
    assert comparable(store.load_job(job.job_id)) == comparable(job)


def test_a_job_of_a_steady_size_is_snapshotted_every_few_commits(
    url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JobState that does not grow (a trimmed history, one key rewritten): its
    snapshots stay small, so they come every SNAPSHOT_EVERY commits or so -- the deltas
    to replay stay few however long the job runs (a gap that doubles with the commits
    would leave half the job)."""
    from routilux.engine import journal

    monkeypatch.setattr(journal, "SNAPSHOT_EVERY", 10)
    monkeypatch.setattr(journal, "SNAPSHOT_RATIO", 4)  # the bound below is for 4

    class Loop(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", handler=self.step)
            self.define_event("out", ["value"])

        def step(self, value: int = 0, **_: Any) -> None:
            if value < 300:
                self.emit("out", value=value + 1)

    probe = Probe(store, at=250, key="last")
    flow = Flow(flow_id="journal-test", store=store, history_limit=4)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(Loop(), "loop")
    flow.add_routine(probe, "probe")
    flow.connect("source", "output", "loop", "input")
    flow.connect("loop", "out", "loop", "input")
    flow.connect("loop", "out", "probe", "input")
    job = flow.execute("source", entry_params={"n": 1})
    (mid,) = probe.seen
    assert mid.commit_seq > 400
    # Entries: 4 history records, 1 shared key, 1 or 2 rows: 4 x 7 writes are due
    # after about 10 commits.
    assert mid.commit_seq - mid.snapshot_seq <= 10
    assert [d["seq"] for d in mid.deltas] == list(range(mid.snapshot_seq + 1, mid.commit_seq + 1))
    assert comparable(store.load_job(job.job_id)) == comparable(job)


def test_an_unencodable_task_fails_the_job_and_says_why(url: str, store: Store) -> None:
    class Odd(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.go)
            self.define_event("out", ["value"])

        def go(self, **_: Any) -> None:
            # Event.emit in a job routes without a history record: only the task's
            # row has to hold the set, which JSON cannot.
            event = self.get_event("out")
            assert event is not None
            event.emit(value={1, 2})

    flow = Flow(flow_id="journal-test", store=url)
    flow.add_routine(Odd(), "odd")
    flow.add_routine(Collector(), "sink")
    flow.connect("odd", "out", "sink", "input")
    job = flow.execute("odd")
    assert job.status == "failed"
    (error,) = [r.data for r in job.execution_history if r.data.get("journal")]
    assert error["error_type"] == "SerializationError"
    assert "sink.input" in error["error"] and "set" in error["error"]
    assert store.load(job.job_id).status == "failed"
    assert comparable(store.load_job(job.job_id)) == comparable(job)


def test_a_retry_saved_by_a_pause_runs_once_after_resume(url: str, store: Store) -> None:
    class PauseThenFail(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", handler=self.take)
            self.calls = 0

        def take(self, value: int = 0, **_: Any) -> None:
            self.calls += 1
            js = self.context.job_state
            if self.calls == 1:
                flow.pause(js, reason="mid-failure")
                raise RuntimeError("fails while the job pauses")
            with js.lock:
                js.shared_data["done"] = js.shared_data.get("done", 0) + 1

    flow = Flow(flow_id="journal-test", store=url)
    flow.add_routine(Numbers(), "source")
    step = PauseThenFail()
    step.set_error_handler(ErrorHandler("retry", max_retries=2, retry_delay=0.05))
    flow.add_routine(step, "step")
    flow.connect("source", "output", "step", "input")
    job = flow.execute("source", entry_params={"n": 1})
    assert job.status == "paused"
    (row,) = store.load(job.job_id).tasks  # the retry, saved by the pause
    assert (row["routine"], row["retries"]) == ("step", 1)
    flow.resume(job)
    assert job.status == "completed"
    assert job.shared_data["done"] == 1
    assert store.load(job.job_id).status == "completed"
    assert comparable(store.load_job(job.job_id)) == comparable(job)


class FlakyAdder(Adder):
    """:class:`Adder` whose first attempt at every third value fails (retried at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: set[int] = set()

    def add(self, value: int = 0, **_: Any) -> None:
        if value % 3 == 0 and value not in self.failed:
            self.failed.add(value)
            raise RuntimeError(f"first attempt at {value}")
        super().add(value)


def test_many_concurrent_deliveries_with_retries_rebuild_exactly(url: str, store: Store) -> None:
    """The hazard of shared in-memory state: concurrent read-modify-writes of one
    counter under the job's lock, retries overtaking their failed attempts; the journal
    must still replay to exactly the live state."""
    adder = FlakyAdder()
    adder.set_error_handler(ErrorHandler("retry", max_retries=1, retry_delay=0.0))
    flow = build(url, "concurrent", adder, max_workers=8)
    job = flow.execute("source", entry_params={"n": 300})
    assert job.status == "completed"
    assert job.shared_data["total"] == sum(range(300))
    stored = store.load(job.job_id)
    assert (stored.status, stored.tasks) == ("completed", [])
    assert comparable(store.load_job(job.job_id)) == comparable(job)


def test_bad_store_and_durability_arguments_are_refused_naming_the_flow(url: str) -> None:
    from routilux.exceptions import InvalidArgumentError, StoreError

    with pytest.raises(InvalidArgumentError, match="'f1'.*store must be"):
        Flow(flow_id="f1", store=42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="'f2'.*durability must be one of"):
        Flow(flow_id="f2", store=url, durability="always")
    with pytest.raises(StoreError, match="nosuch://x"):
        Flow(flow_id="f3", store="nosuch://x")
    assert Flow(flow_id="f4").store is None
    flow = Flow(flow_id="f5")
    flow.use_store(url)
    assert flow.store is not None and flow.durability == "batch"


def test_a_task_row_holds_its_data_as_a_save_writes_it() -> None:
    """task_row copies a dict of atoms as it is and encodes anything else; data JSON
    cannot hold raises naming the task's routine and slot."""
    from types import SimpleNamespace

    from routilux.engine.rows import task_row
    from routilux.exceptions import SerializationError

    def task(data: Any) -> Any:
        return SimpleNamespace(
            seq=3,
            rid="sink",
            target=SimpleNamespace(name="input"),
            data=data,
            route=None,
            premerged=False,
            entry=False,
            timer=None,
            answers=None,
            retries=0,
        )

    atoms = {"s": "x", "n": 1, "b": False, "z": None}
    row = task_row(task(atoms), "ready")
    assert row["data"] == atoms and row["data"] is not atoms
    assert task_row(task({"t": (1, {"f": 1.5})}), "ready")["data"] == {"t": [1, {"f": 1.5}]}
    with pytest.raises(SerializationError, match=r"task sink\.input data\.f"):
        task_row(task({"f": float("nan")}), "ready")
    with pytest.raises(SerializationError, match=r"task sink\.input data"):
        task_row(task({1: "non-string key"}), "ready")


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_a_timer_withdrawn_before_or_after_its_row_is_written_leaves_no_row(
    url: str, store: Store, strategy: str
) -> None:
    """A named timer cancelled in the delivery that set it never gets a row; one set
    in the entry and cancelled by a later delivery loses the row the entry wrote."""
    from routilux.engine import journal

    seen: list[Any] = []

    class Timers(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.start)
            self.define_slot("ring", handler=self.ring)
            self.define_slot("check", handler=self.check)
            self.define_event("output", ["value"])

        def start(self, **_: Any) -> None:
            assert self.set_timer("brief", 60.0, "ring")
            assert self.cancel_timer("brief")  # in the delivery that set it
            assert self.set_timer("later", 60.0, "ring")
            self.emit("output", value=1)

        def ring(self, **_: Any) -> None:
            raise AssertionError("a cancelled timer fired")

        def check(self, value: int = 0, **_: Any) -> None:
            js = self.context.job_state
            journal.Durable.of(store).flush()
            seen.append([row["kind"] for row in store.load(js.job_id).tasks])
            assert self.cancel_timer("later")  # its row was written by the entry's record

    flow = Flow(flow_id="journal-test", execution_strategy=strategy, store=store)
    flow.add_routine(Timers(), "source")
    flow.connect("source", "output", "source", "check")
    job = flow.execute("source", entry_params={})
    assert job.status == "completed"
    # While the check ran: its own row and the one timer still set.
    assert sorted(seen[0]) == ["ready", "timer"]
    final = store.load(job.job_id)
    assert final.tasks == [] and final.status == "completed"
    assert comparable(store.load_job(job.job_id)) == comparable(job)

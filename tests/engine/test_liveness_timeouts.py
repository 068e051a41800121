"""Handler timeouts: a stuck handler no longer hangs its job, its flow or the process.

A "stuck" handler here blocks on a ``threading.Event`` that the test sets when it
ends, so no thread outlives the test by more than that.  Timeouts are short
(0.2 s); nothing asserts how fast anything runs.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import Numbers
from routilux import ErrorHandler, ErrorStrategy, Flow, Routine
from routilux.exceptions import HandlerTimeoutError, InvalidArgumentError

STRATEGIES = ["sequential", "concurrent"]
SHORT = 0.2


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of the test: frees every handler still blocked on it."""
    event = threading.Event()
    yield event
    event.set()


class Stuck(Routine):
    """Blocks on ``release`` for the values in ``stuck`` (each attempt listed in
    ``stuck`` once), records the others in the job's shared log."""

    def __init__(
        self, release: threading.Event, stuck: list[int], timeout: float | None = SHORT
    ) -> None:
        super().__init__()
        self.release = release
        self.stuck = stuck
        self.lock = threading.Lock()
        self.late = threading.Event()  # an abandoned handler got past its block
        self.define_slot("input", handler=self.work, timeout=timeout)
        self.define_event("done", ["value"])

    def work(self, value: int) -> None:
        with self.lock:
            block = value in self.stuck
            if block:
                self.stuck.remove(value)
        if block:
            self.release.wait()
            self.emit("done", value=-1)  # late: must be discarded
            self.late.set()
            return
        ctx = self.get_execution_context()
        assert ctx is not None
        ctx.job_state.append_to_shared_log({"value": value})
        self.emit("done", value=value)


class Sink(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.take)

    def take(self, value: int) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        ctx.job_state.append_to_shared_log({"sink": value})


def build(strategy: str, stuck: Stuck, **options: Any) -> Flow:
    flow = Flow(execution_strategy=strategy, max_workers=2, **options)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(stuck, "worker")
    flow.add_routine(Sink(), "sink")
    flow.connect("source", "output", "worker", "input")
    flow.connect("worker", "done", "sink", "input")
    return flow


def log(job: Any) -> list[dict[str, Any]]:
    """The job's shared log without timestamps."""
    return [{k: v for k, v in e.items() if k != "timestamp"} for e in job.get_shared_log()]


def errors(job: Any) -> list[dict[str, Any]]:
    return [
        r.data for r in job.get_execution_history() if r.event_name in ("error", "error_continued")
    ]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_stuck_handler_fails_the_job_with_a_timeout_under_stop(
    strategy: str, release: threading.Event
) -> None:
    stuck = Stuck(release, [0])
    flow = build(strategy, stuck)
    job = flow.execute("source", {"n": 1}, timeout=30)
    assert job.wait_for_completion(30)
    assert job.status == "failed"
    (error,) = errors(job)
    assert error["error_type"] == "HandlerTimeoutError"
    assert error["slot"] == "input"
    assert "'worker'" in error["error"] and "'input'" in error["error"]
    assert "0.2 s" in error["error"]
    assert job.get_routine_state("worker")["status"] == "failed"
    assert flow.wait_for_completion(5)
    # The abandoned handler returns late: its emission touches nothing.
    history = len(job.get_execution_history())
    release.set()
    assert stuck.late.wait(10)
    assert len(job.get_execution_history()) == history
    assert job.get_shared_log() == []
    assert job.status == "failed"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_timed_out_delivery_is_retried_under_retry(
    strategy: str, release: threading.Event
) -> None:
    stuck = Stuck(release, [0, 0])  # the first two attempts hang, the third works
    stuck.set_error_handler(
        ErrorHandler(strategy=ErrorStrategy.RETRY, max_retries=3, retry_delay=0.0)
    )
    flow = build(strategy, stuck)
    job = flow.execute("source", {"n": 1}, timeout=30)
    assert job.wait_for_completion(30)
    assert job.status == "completed"
    assert [e["action"] for e in errors(job)] == ["retry", "retry"]
    assert {e["error_type"] for e in errors(job)} == {"HandlerTimeoutError"}
    assert log(job) == [{"value": 0}, {"sink": 0}]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_timed_out_delivery_is_recorded_and_skipped_over_under_continue(
    strategy: str, release: threading.Event
) -> None:
    stuck = Stuck(release, [1])
    stuck.set_error_handler(ErrorHandler(strategy=ErrorStrategy.CONTINUE))
    flow = build(strategy, stuck)
    job = flow.execute("source", {"n": 3}, timeout=30)
    assert job.wait_for_completion(30)
    assert job.status == "completed"
    (error,) = errors(job)
    assert error["action"] == "continue" and error["error_type"] == "HandlerTimeoutError"
    values = sorted(e["value"] for e in log(job) if "value" in e)
    assert values == [0, 2]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_flow_default_applies_and_the_slot_timeout_wins(
    strategy: str, release: threading.Event
) -> None:
    stuck = Stuck(release, [0], timeout=None)
    flow = build(strategy, stuck, handler_timeout=SHORT)
    job = flow.execute("source", {"n": 1}, timeout=30)
    assert job.wait_for_completion(30)
    (error,) = errors(job)
    assert "handler_timeout" in error["error"]

    # The slot's own (short) timeout wins over a generous flow default.
    own = Stuck(release, [0], timeout=SHORT)
    flow = build(strategy, own, handler_timeout=600)
    job = flow.execute("source", {"n": 1}, timeout=30)
    assert job.wait_for_completion(30)
    (error,) = errors(job)
    assert "its slot's timeout" in error["error"] and "0.2 s" in error["error"]

    fast = Stuck(release, [], timeout=30.0)  # never hit: the job completes
    flow = build(strategy, fast, handler_timeout=SHORT)
    job = flow.execute("source", {"n": 2}, timeout=30)
    assert job.wait_for_completion(30)
    assert job.status == "completed"


def test_the_next_job_gets_a_worker_after_a_stuck_one(release: threading.Event) -> None:
    stuck = Stuck(release, [0])
    flow = Flow(execution_strategy="concurrent", max_workers=1)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(stuck, "worker")
    flow.connect("source", "output", "worker", "input")
    first = flow.execute("source", {"n": 1}, timeout=30)
    assert first.wait_for_completion(30) and first.status == "failed"
    # The only worker is still blocked; the pool replaced it.
    second = flow.execute("source", {"n": 3}, timeout=30)
    assert second.wait_for_completion(30)
    assert second.status == "completed"
    assert sorted(e["value"] for e in log(second)) == [0, 1, 2]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cancel_settles_a_job_whose_timed_sync_handler_hangs(
    strategy: str, release: threading.Event
) -> None:
    started = threading.Event()

    class Hang(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", handler=self.work, timeout=600)

        def work(self, value: int) -> None:
            started.set()
            release.wait()

    flow = Flow(execution_strategy=strategy)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(Hang(), "hang")
    flow.connect("source", "output", "hang", "input")
    job = flow.execute("source", {"n": 1}, wait=False)
    assert started.wait(10)
    flow.cancel(job)
    assert job.wait_for_completion(10)
    assert job.status == "cancelled"
    assert errors(job) == []


class Sleeper(Routine):
    """An async handler that awaits for ever; records its cancellation."""

    def __init__(self, timeout: float | None) -> None:
        super().__init__()
        self.started = threading.Event()
        self.cancelled = threading.Event()
        options = {} if timeout is None else {"timeout": timeout}
        self.define_slot("input", handler=self.work, **options)

    async def work(self, value: int) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_async_handler_over_time_is_cancelled(strategy: str) -> None:
    sleeper = Sleeper(SHORT)
    flow = Flow(execution_strategy=strategy)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(sleeper, "sleeper")
    flow.connect("source", "output", "sleeper", "input")
    job = flow.execute("source", {"n": 1}, timeout=30)
    assert job.wait_for_completion(30)
    assert sleeper.cancelled.is_set()
    assert job.status == "failed"
    (error,) = errors(job)
    assert error["error_type"] == "HandlerTimeoutError"
    assert "'sleeper'" in error["error"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cancel_cancels_a_stuck_async_handler(strategy: str) -> None:
    sleeper = Sleeper(None)
    flow = Flow(execution_strategy=strategy)
    flow.add_routine(Numbers(), "source")
    flow.add_routine(sleeper, "sleeper")
    flow.connect("source", "output", "sleeper", "input")
    job = flow.execute("source", {"n": 1}, wait=False)
    assert sleeper.started.wait(10)
    flow.cancel(job)
    assert job.wait_for_completion(10)
    assert sleeper.cancelled.is_set()
    assert job.status == "cancelled"
    assert errors(job) == []


SCRIPT = """
import threading
from routilux import Flow, Routine

started = threading.Event()

class Source(Routine):
    def __init__(self):
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("output", ["value"])

    def start(self, **kw):
        self.emit("output", value=1)

class Forever(Routine):
    def __init__(self):
        super().__init__()
        self.define_slot("input", handler=self.work)

    def work(self, value):
        started.set()
        threading.Event().wait()   # never returns

flow = Flow(execution_strategy={strategy!r}, **{options})
flow.add_routine(Source(), "source")
flow.add_routine(Forever(), "forever")
flow.connect("source", "output", "forever", "input")
job = flow.execute("source", wait={wait})
assert started.wait(30)
print("end of script", job.status if {wait} else "", flush=True)
"""


@pytest.mark.parametrize(
    ("strategy", "options", "wait"),
    [
        ("concurrent", {}, False),  # no timeout: the stuck pool thread is a daemon
        ("concurrent", {"handler_timeout": SHORT}, True),
        ("sequential", {"handler_timeout": SHORT}, True),  # the abandoned helper thread
    ],
)
def test_a_process_with_a_stuck_handler_exits_at_the_end_of_its_script(
    strategy: str, options: dict[str, Any], wait: bool
) -> None:
    code = textwrap.dedent(SCRIPT).format(strategy=strategy, options=options, wait=wait)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "end of script" in done.stdout
    if wait:
        assert "failed" in done.stdout


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, True, "1", 1e300])
def test_timeouts_are_checked(bad: Any) -> None:
    routine = Routine()
    with pytest.raises(InvalidArgumentError, match="slot 'input'.*timeout"):
        routine.define_slot("input", handler=lambda **kw: None, timeout=bad)
    with pytest.raises(InvalidArgumentError, match="Flow 'f'.*timeout"):
        Flow("f", handler_timeout=bad)


def test_timeout_attributes() -> None:
    routine = Routine()
    slot = routine.define_slot("input", timeout=2)
    assert slot.timeout == 2.0
    assert routine.define_slot("other").timeout is None
    assert Flow(handler_timeout=1.5).handler_timeout == 1.5
    assert Flow().handler_timeout is None
    assert issubclass(HandlerTimeoutError, TimeoutError)


def test_many_jobs_with_timed_out_and_retried_deliveries_all_settle_exactly(
    release: threading.Event,
) -> None:
    """20 concurrent jobs of 5 items on 4 workers; the first attempt at every
    item 0 and 3 hangs, the retry works.  Every job completes with each item
    delivered downstream once, and the abandoned attempts leave no trace."""
    hang_first: dict[tuple[str, int], bool] = {}
    lock = threading.Lock()
    late = threading.Condition(lock)
    late_done = [0]

    class Flaky(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("input", handler=self.work, timeout=0.1)
            self.define_event("done", ["value"])

        def work(self, value: int) -> None:
            ctx = self.get_execution_context()
            assert ctx is not None
            key = (ctx.job_state.job_id, value)
            with lock:
                first = key not in hang_first
                hang_first[key] = True
            if first and value in (0, 3):
                release.wait()
                self.emit("done", value=-1)  # late: discarded
                with late:
                    late_done[0] += 1
                    late.notify_all()
                return
            self.emit("done", value=value)

    flow = Flow(execution_strategy="concurrent", max_workers=4)
    flow.add_routine(Numbers(), "source")
    flaky = Flaky()
    flaky.set_error_handler(
        ErrorHandler(strategy=ErrorStrategy.RETRY, max_retries=2, retry_delay=0.0)
    )
    flow.add_routine(flaky, "flaky")
    flow.add_routine(Sink(), "sink")
    flow.connect("source", "output", "flaky", "input")
    flow.connect("flaky", "done", "sink", "input")
    jobs = [flow.execute("source", {"n": 5}, wait=False) for _ in range(20)]
    assert flow.wait_for_completion(60)
    release.set()
    with late:
        assert late.wait_for(lambda: late_done[0] == 40, timeout=30)
    assert flow.wait_for_completion(0)
    for job in jobs:
        assert job.status == "completed"
        assert sorted(e["sink"] for e in log(job)) == [0, 1, 2, 3, 4]
        assert [e["action"] for e in errors(job)] == ["retry", "retry"]

"""The concurrency API: strategies, the shared bounded pool, waiting, shutdown.

Issue 4 and spec 20 §1, §3, §7 and 60.  Nothing here sleeps to order events:
handlers block on ``threading.Event`` / ``threading.Barrier`` with timeouts, so
a broken engine makes a test fail (or xfail) instead of hanging it.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Callable

import pytest

from helpers import TaggedSource
from routilux import ErrorHandler, ErrorStrategy, Flow, Routine

#: Upper bound for every wait in this file; reached only when something is broken.
TIMEOUT = 10.0

INVALID = "Invalid execution strategy: {}. Must be 'sequential' or 'concurrent'"


class Call(Routine):
    """Calls ``fn(routine, data)`` for each delivery; emits the data on ``out`` when asked."""

    def __init__(self, fn: Callable[[Routine, dict[str, Any]], Any], emits: bool = False) -> None:
        super().__init__()
        self.fn = fn
        self.emits = emits
        self.define_slot("in", handler=self.on)
        self.define_event("out", ["tag", "i"])

    def on(self, **data: Any) -> None:
        self.fn(self, data)
        if self.emits:
            self.emit("out", **data)


def fan_flow(fn: Callable[[Routine, dict[str, Any]], Any], **flow_kwargs: Any) -> Flow:
    """source --out--> worker(fn) --out--> sink."""
    flow = Flow(**flow_kwargs)
    flow.add_routine(TaggedSource(), "source")
    flow.add_routine(Call(fn, emits=True), "worker")
    flow.add_routine(Call(lambda r, d: None), "sink")
    flow.connect("source", "out", "worker", "in")
    flow.connect("worker", "out", "sink", "in")
    return flow


def history(job_state: Any) -> Counter:
    return Counter(
        (r.routine_id, r.event_name, tuple(sorted(r.data.items())))
        for r in job_state.get_execution_history()
    )


def expected_history(tag: str, n: int) -> Counter:
    expected: Counter = Counter()
    for i in range(n):
        expected[("source", "out", (("i", i), ("tag", tag)))] += 1
        expected[("worker", "out", (("i", i), ("tag", tag)))] += 1
    return expected


class Gate:
    """Handlers block in :meth:`hold` until the test calls :meth:`release`.

    ``entered`` counts handlers that reached the gate; :meth:`wait_entered`
    lets the test wait for a number of them without polling.
    """

    def __init__(self) -> None:
        self._open = threading.Event()
        self._cond = threading.Condition()
        self.entered = 0
        self.active = 0
        self.max_active = 0
        self.threads: set[int] = set()
        self.timed_out = 0

    def hold(self, routine: Routine = None, data: Any = None) -> None:  # type: ignore[assignment]
        with self._cond:
            self.entered += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.threads.add(threading.get_ident())
            self._cond.notify_all()
        if not self._open.wait(TIMEOUT):
            self.timed_out += 1
        with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def wait_entered(self, count: int, timeout: float = TIMEOUT) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.entered >= count, timeout=timeout)

    def wait_active_above(self, count: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.active > count, timeout=timeout)

    def release(self) -> None:
        self._open.set()


@pytest.fixture
def gate() -> Any:
    g = Gate()
    yield g
    g.release()  # never leave a worker blocked for TIMEOUT after a failed assertion


# -- configuration -------------------------------------------------------------


class TestConfiguration:
    def test_constructor_sets_strategy_and_workers(self):
        flow = Flow(execution_strategy="concurrent", max_workers=3)
        assert (flow.execution_strategy, flow.max_workers) == ("concurrent", 3)
        flow = Flow(execution_strategy="sequential", max_workers=7)
        assert (flow.execution_strategy, flow.max_workers) == ("sequential", 1)
        assert (Flow().execution_strategy, Flow().max_workers) == ("sequential", 1)

    def test_set_execution_strategy(self):
        flow = Flow()
        flow.set_execution_strategy("concurrent", max_workers=7)
        assert (flow.execution_strategy, flow.max_workers) == ("concurrent", 7)
        flow.set_execution_strategy("concurrent")
        assert flow.max_workers == 5
        flow.set_execution_strategy("sequential", max_workers=9)
        assert (flow.execution_strategy, flow.max_workers) == ("sequential", 1)

    @pytest.mark.parametrize("bad", ["parallel", "", "Concurrent"])
    def test_invalid_strategy_raises_value_error(self, bad):
        flow = Flow(execution_strategy="concurrent", max_workers=3)
        with pytest.raises(ValueError) as info:
            flow.set_execution_strategy(bad)
        assert str(info.value) == INVALID.format(bad)
        assert (flow.execution_strategy, flow.max_workers) == ("concurrent", 3)

    def test_invalid_per_call_strategy_raises_before_any_work(self):
        calls = []
        flow = fan_flow(lambda r, d: calls.append(d))
        with pytest.raises(ValueError) as info:
            flow.execute("source", {"tag": "x"}, execution_strategy="threads")
        assert str(info.value) == INVALID.format("threads")
        assert calls == []
        assert flow.wait_for_completion(timeout=TIMEOUT)

    def test_unknown_strategy_in_constructor_runs_sequentially(self):
        caller = threading.get_ident()
        threads = []
        flow = fan_flow(lambda r, d: threads.append(threading.get_ident()), execution_strategy="x")
        assert flow.max_workers == 1
        js = flow.execute("source", {"tag": "t", "n": 3})
        assert js.status == "completed"
        assert threads == [caller] * 3


# -- the pool -------------------------------------------------------------------


class TestPool:
    def test_tasks_run_on_pool_threads_in_parallel(self):
        caller = threading.get_ident()
        barrier = threading.Barrier(4, timeout=TIMEOUT)
        threads = set()

        def meet(routine, data):
            threads.add(threading.get_ident())
            barrier.wait()  # breaks (and fails the job) unless 4 tasks run at once

        flow = fan_flow(meet, execution_strategy="concurrent", max_workers=4)
        js = flow.execute("source", {"tag": "t", "n": 4})
        assert js.status == "completed", js.get_execution_history()
        assert len(threads) == 4 and caller not in threads
        assert history(js) == expected_history("t", 4)

    def test_pool_is_bounded_and_shared_by_all_jobs(self, gate):
        flow = fan_flow(gate.hold, execution_strategy="concurrent", max_workers=3)
        jobs = [flow.execute("source", {"tag": t, "n": 3}, wait=False) for t in "ab"]
        assert gate.wait_entered(3), "three tasks should run at once"
        # Six tasks are ready; a pool per job, or an unbounded one, would start a fourth.
        assert not gate.wait_active_above(3, timeout=0.2)
        assert all(js.status == "running" for js in jobs)
        gate.release()
        assert flow.wait_for_completion(timeout=TIMEOUT)
        assert [js.status for js in jobs] == ["completed", "completed"]
        assert gate.entered == 6 and gate.max_active == 3
        assert len(gate.threads) <= 3
        assert gate.timed_out == 0
        for js, tag in zip(jobs, "ab"):
            assert history(js) == expected_history(tag, 3)

    def test_one_worker_serves_two_jobs_without_mixing_them(self):
        threads = set()

        def note(routine, data):
            threads.add(threading.get_ident())
            ctx = routine.get_execution_context()
            assert ctx is not None
            with ctx.job_state.lock:
                seen = ctx.job_state.get_shared_data("seen", [])
                ctx.job_state.update_shared_data("seen", seen + [data["tag"]])

        flow = fan_flow(note, execution_strategy="concurrent", max_workers=1)
        jobs = {t: flow.execute("source", {"tag": t, "n": 5}, wait=False) for t in "ab"}
        assert flow.wait_for_completion(timeout=TIMEOUT)
        assert len(threads) == 1
        for tag, js in jobs.items():
            assert js.status == "completed"
            assert js.get_shared_data("seen") == [tag] * 5
            assert history(js) == expected_history(tag, 5)


# -- waiting ----------------------------------------------------------------------


class TestWaiting:
    @pytest.mark.parametrize("strategy", ["concurrent", "sequential"])
    def test_execute_wait_false_returns_the_running_job_at_once(self, gate, strategy):
        flow = fan_flow(gate.hold, execution_strategy=strategy, max_workers=2)
        js = flow.execute("source", {"tag": "t", "n": 1}, wait=False)
        assert js.status == "running"
        assert gate.wait_entered(1)
        assert not js.wait_for_completion(timeout=0.05)
        gate.release()
        assert js.wait_for_completion(timeout=TIMEOUT)
        assert js.status == "completed"
        assert history(js) == expected_history("t", 1)

    def test_each_job_waits_only_for_its_own_tasks(self, gate):
        def maybe_hold(routine, data):
            if data["tag"] == "slow":
                gate.hold()

        flow = fan_flow(maybe_hold, execution_strategy="concurrent", max_workers=2)
        slow = flow.execute("source", {"tag": "slow"}, wait=False)
        assert gate.wait_entered(1)
        fast = flow.execute("source", {"tag": "fast", "n": 3})  # blocks for its own job only
        assert fast.status == "completed"
        assert history(fast) == expected_history("fast", 3)
        assert slow.status == "running"
        assert not flow.wait_for_completion(timeout=0.05)
        gate.release()
        assert flow.wait_for_completion(timeout=TIMEOUT)
        assert slow.status == "completed"

    def test_blocking_execute_from_threads_does_not_wait_for_other_jobs(self, gate):
        """A thread's execute() returns while another thread's job is still blocked."""

        def maybe_hold(routine, data):
            if data["tag"] == "slow":
                gate.hold()

        flow = fan_flow(maybe_hold, execution_strategy="concurrent", max_workers=2)
        results: dict[str, Any] = {}
        slow = threading.Thread(
            target=lambda: results.update(slow=flow.execute("source", {"tag": "slow"}))
        )
        slow.start()
        assert gate.wait_entered(1)
        fast = threading.Thread(
            target=lambda: results.update(fast=flow.execute("source", {"tag": "fast"}))
        )
        fast.start()
        fast.join(TIMEOUT)
        assert not fast.is_alive() and results["fast"].status == "completed"
        assert slow.is_alive()
        gate.release()
        slow.join(TIMEOUT)
        assert results["slow"].status == "completed"

    def test_flow_wait_for_completion_waits_for_every_job(self):
        gates = {t: threading.Event() for t in "abc"}

        def hold(routine, data):
            assert gates[data["tag"]].wait(TIMEOUT)

        flow = fan_flow(hold, execution_strategy="concurrent", max_workers=3)
        try:
            jobs = {t: flow.execute("source", {"tag": t}, wait=False) for t in "abc"}
            assert not flow.wait_for_completion(timeout=0.05)
            gates["a"].set()
            gates["b"].set()
            assert jobs["a"].wait_for_completion(TIMEOUT)
            assert jobs["b"].wait_for_completion(TIMEOUT)
            assert not flow.wait_for_completion(timeout=0.05)
            assert jobs["c"].status == "running"
            gates["c"].set()
            assert flow.wait_for_completion(timeout=TIMEOUT)
            assert {t: js.status for t, js in jobs.items()} == dict.fromkeys("abc", "completed")
        finally:
            for event in gates.values():
                event.set()

    def test_wait_for_completion_on_a_fresh_flow_is_immediate(self):
        flow = fan_flow(lambda r, d: None, execution_strategy="concurrent")
        assert flow.wait_for_completion(timeout=0) is True


# -- shutdown ---------------------------------------------------------------------


class TestShutdown:
    def test_shutdown_then_execute_again(self):
        caller = threading.get_ident()
        threads = []
        barrier = threading.Barrier(2, timeout=TIMEOUT)

        def meet(routine, data):
            threads.append(threading.get_ident())
            barrier.wait()

        flow = fan_flow(meet, execution_strategy="concurrent", max_workers=2)
        for round_ in range(3):
            barrier.reset()
            js = flow.execute("source", {"tag": f"r{round_}", "n": 2})
            assert js.status == "completed"
            assert history(js) == expected_history(f"r{round_}", 2)
            flow.shutdown(wait=True)
        flow.shutdown()  # a second shutdown is harmless
        assert flow.execution_strategy == "concurrent" and flow.max_workers == 2
        assert len(threads) == 6 and caller not in threads

    def test_shutdown_waits_for_running_jobs(self, gate):
        flow = fan_flow(gate.hold, execution_strategy="concurrent", max_workers=2)
        js = flow.execute("source", {"tag": "t", "n": 2}, wait=False)
        assert gate.wait_entered(2)
        closer = threading.Thread(target=flow.shutdown, kwargs={"wait": True})
        closer.start()
        closer.join(0.1)
        assert closer.is_alive(), "shutdown(wait=True) returned while the job still ran"
        gate.release()
        closer.join(TIMEOUT)
        assert not closer.is_alive()
        # The job's downstream tasks (worker -> sink) still ran on the pool.
        assert js.status == "completed"
        assert history(js) == expected_history("t", 2)

    def test_shutdown_timeout_is_honoured_and_the_job_keeps_its_pool(self, gate):
        flow = fan_flow(gate.hold, execution_strategy="concurrent", max_workers=2)
        js = flow.execute("source", {"tag": "t"}, wait=False)
        assert gate.wait_entered(1)
        closer = threading.Thread(target=flow.shutdown, kwargs={"wait": True, "timeout": 0.05})
        closer.start()
        closer.join(TIMEOUT)
        returned = not closer.is_alive()
        gate.release()
        assert returned, "shutdown(timeout=0.05) blocked until the job's handler ended"
        assert js.wait_for_completion(TIMEOUT), "the job never settled"
        assert js.status == "completed"
        assert history(js) == expected_history("t", 1)

    def test_job_running_during_shutdown_without_wait_completes(self, gate):
        flow = fan_flow(gate.hold, execution_strategy="concurrent", max_workers=2)
        js = flow.execute("source", {"tag": "t", "n": 2}, wait=False)
        assert gate.wait_entered(2)
        flow.shutdown(wait=False)
        gate.release()
        assert js.wait_for_completion(TIMEOUT), "the job never settled"
        assert flow.wait_for_completion(TIMEOUT)
        assert js.status == "completed", js.get_execution_history()
        assert history(js) == expected_history("t", 2)
        # And the flow still runs jobs afterwards, on a new pool.
        js = flow.execute("source", {"tag": "after", "n": 2})
        assert js.status == "completed"
        assert history(js) == expected_history("after", 2)

    def test_set_execution_strategy_while_a_job_runs(self, gate):
        """The running job finishes on its pool; a new job gets the new, larger one."""
        barrier = threading.Barrier(4, timeout=TIMEOUT)

        def work(routine, data):
            if data["tag"] == "old":
                gate.hold()
            else:
                barrier.wait()  # four at once: only the new pool has that many workers

        flow = fan_flow(work, execution_strategy="concurrent", max_workers=2)
        old = flow.execute("source", {"tag": "old"}, wait=False)
        assert gate.wait_entered(1)
        flow.set_execution_strategy("concurrent", max_workers=4)
        new = flow.execute("source", {"tag": "new", "n": 4})
        assert new.status == "completed", new.get_execution_history()
        assert history(new) == expected_history("new", 4)
        assert old.status == "running"
        gate.release()
        assert old.wait_for_completion(TIMEOUT), "the job never settled"
        assert old.status == "completed"
        assert history(old) == expected_history("old", 1)

    @pytest.mark.parametrize("action", ["shutdown", "set_execution_strategy"])
    def test_pool_replaced_while_execute_starts_a_job(self, action):
        """Deterministic form of a race between execute() and another thread replacing
        the pool: the replacement runs at the moment the new job registers."""

        class RacingFlow(Flow):
            raced = False

            def _register(self, run, strategy):
                if not self.raced:
                    self.raced = True
                    if action == "shutdown":
                        self.shutdown(wait=False)
                    else:
                        self.set_execution_strategy("concurrent", max_workers=2)
                super()._register(run, strategy)

        flow = RacingFlow(execution_strategy="concurrent", max_workers=2)
        flow.add_routine(TaggedSource(), "source")
        flow.add_routine(Call(lambda r, d: None), "sink")
        flow.connect("source", "out", "sink", "in")
        js = flow.execute("source", {"tag": "t", "n": 2}, timeout=TIMEOUT)
        assert flow.raced
        assert js.status == "completed", js.get_execution_history()


# -- per-call override ---------------------------------------------------------------


class TestPerCallOverride:
    def test_concurrent_override_on_a_sequential_flow(self):
        caller = threading.get_ident()
        threads = []
        barrier = threading.Barrier(5, timeout=TIMEOUT)

        def meet(routine, data):
            threads.append(threading.get_ident())
            if data["tag"] == "pool":
                barrier.wait()  # needs 5 workers: the override's default

        flow = fan_flow(meet)
        js = flow.execute("source", {"tag": "pool", "n": 5}, execution_strategy="concurrent")
        assert js.status == "completed", js.get_execution_history()
        assert history(js) == expected_history("pool", 5)
        assert len(set(threads)) == 5 and caller not in threads
        assert (flow.execution_strategy, flow.max_workers) == ("sequential", 1)
        # The next job without an override runs on the calling thread again.
        threads.clear()
        js = flow.execute("source", {"tag": "inline", "n": 3})
        assert js.status == "completed"
        assert threads == [caller] * 3

    def test_sequential_override_on_a_concurrent_flow(self):
        caller = threading.get_ident()
        threads = []
        flow = fan_flow(
            lambda r, d: threads.append(threading.get_ident()),
            execution_strategy="concurrent",
            max_workers=3,
        )
        js = flow.execute("source", {"tag": "t", "n": 3}, execution_strategy="sequential")
        assert js.status == "completed"
        assert threads == [caller] * 3
        assert (flow.execution_strategy, flow.max_workers) == ("concurrent", 3)


# -- simultaneous executes and shared routines ----------------------------------------


class TestSimultaneousJobs:
    @pytest.mark.parametrize("strategy", ["concurrent", "sequential"])
    def test_five_parallel_executes(self, strategy):
        flow = fan_flow(lambda r, d: None, execution_strategy=strategy, max_workers=3)
        start = threading.Barrier(5, timeout=TIMEOUT)
        results: dict[int, Any] = {}

        def run(k: int) -> None:
            start.wait()
            results[k] = flow.execute("source", {"tag": f"job{k}", "n": k + 1})

        threads = [threading.Thread(target=run, args=(k,)) for k in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert sorted(results) == list(range(5))
        assert len({js.job_id for js in results.values()}) == 5
        for k, js in results.items():
            assert js.status == "completed"
            assert js.get_shared_data("tag") == f"job{k}"
            assert history(js) == expected_history(f"job{k}", k + 1)

    def test_routine_shared_by_two_jobs_sees_each_jobs_context(self):
        both_inside = threading.Barrier(2, timeout=TIMEOUT)
        problems: list[str] = []

        def check(routine, data):
            ctx = routine.get_execution_context()
            before = (ctx.job_state.get_shared_data("tag"), ctx.routine_id)
            both_inside.wait()  # the other job's handler is running on the same object now
            ctx = routine.get_execution_context()
            after = (ctx.job_state.get_shared_data("tag"), ctx.routine_id, ctx.flow)
            if before != (data["tag"], "worker") or after != (data["tag"], "worker", flow):
                problems.append(f"{data['tag']}: {before} / {after}")
            ctx.job_state.update_routine_state(ctx.routine_id, {"tag": data["tag"]})

        flow = fan_flow(check, execution_strategy="concurrent", max_workers=2)
        jobs = {t: flow.execute("source", {"tag": t}, wait=False) for t in "ab"}
        assert flow.wait_for_completion(timeout=TIMEOUT)
        assert problems == []
        for tag, js in jobs.items():
            assert js.status == "completed"
            assert js.get_routine_state("worker") == {"tag": tag}

    def test_routine_shared_by_two_flows_sees_the_right_flow(self):
        both_inside = threading.Barrier(2, timeout=TIMEOUT)
        seen: dict[str, tuple] = {}

        def check(routine, data):
            both_inside.wait()
            ctx = routine.get_execution_context()
            seen[data["tag"]] = (ctx.flow, ctx.routine_id, ctx.job_state)

        shared = Call(check)
        flows = {}
        for tag in "ab":
            flow = Flow(flow_id=f"flow-{tag}", execution_strategy="concurrent", max_workers=2)
            flow.add_routine(TaggedSource(), "source")
            flow.add_routine(shared, f"sink-{tag}")
            flow.connect("source", "out", f"sink-{tag}", "in")
            flows[tag] = flow
        jobs = {t: flows[t].execute("source", {"tag": t}, wait=False) for t in "ab"}
        for tag in "ab":
            assert flows[tag].wait_for_completion(timeout=TIMEOUT)
            assert jobs[tag].status == "completed"
            assert seen[tag] == (flows[tag], f"sink-{tag}", jobs[tag])

    def test_no_context_outside_handlers(self):
        contexts = []
        flow = fan_flow(
            lambda r, d: contexts.append(r.get_execution_context()),
            execution_strategy="concurrent",
            max_workers=2,
        )
        worker = flow.routines["worker"]
        js = flow.execute("source", {"tag": "t"})
        assert contexts[0].job_state is js
        assert worker.get_execution_context() is None
        found = []
        t = threading.Thread(target=lambda: found.append(worker.get_execution_context()))
        t.start()
        t.join(TIMEOUT)
        assert found == [None]


# -- more isolation and waiting rules ---------------------------------------------------


class TestFailuresAndTimers:
    def test_a_failing_job_does_not_disturb_the_others(self):
        def fail_odd(routine, data):
            if int(data["tag"][3:]) % 2:
                raise RuntimeError(f"boom {data['tag']}")

        flow = fan_flow(fail_odd, execution_strategy="concurrent", max_workers=4)
        start = threading.Barrier(4, timeout=TIMEOUT)
        results: dict[int, Any] = {}

        def run(offset: int) -> None:
            start.wait()
            for k in range(offset, 40, 4):
                results[k] = flow.execute("source", {"tag": f"job{k}", "n": 3})

        threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert sorted(results) == list(range(40))
        for k, js in results.items():
            tag = f"job{k}"
            if k % 2:
                assert js.status == "failed"
                errors = [r for r in js.execution_history if r.event_name == "error"]
                assert len(errors) >= 1
                assert {r.data["error"] for r in errors} == {f"boom {tag}"}
                assert all(r.data.get("tag", tag) == tag for r in js.execution_history)
            else:
                assert js.status == "completed"
                assert history(js) == expected_history(tag, 3)

    def test_a_retry_delay_does_not_occupy_the_only_worker(self):
        other_ran = threading.Event()
        attempts: list[bool] = []

        def flaky(routine, data):
            attempts.append(other_ran.is_set())
            if len(attempts) == 1:
                raise RuntimeError("first attempt fails")

        flow = Flow(execution_strategy="concurrent", max_workers=1)
        flow.add_routine(TaggedSource(), "source")
        flaky_routine = Call(flaky)
        flaky_routine.set_error_handler(
            ErrorHandler(strategy=ErrorStrategy.RETRY, max_retries=1, retry_delay=0.5)
        )
        flow.add_routine(flaky_routine, "flaky")
        flow.add_routine(Call(lambda r, d: other_ran.set()), "other")
        flow.connect("source", "out", "flaky", "in")  # queued before "other"
        flow.connect("source", "out", "other", "in")
        js = flow.execute("source", {"tag": "t"})
        assert js.status == "completed", js.get_execution_history()
        # The second attempt saw "other" done: the worker ran it during the retry delay.
        assert attempts == [False, True]

    def test_execute_timeout_returns_the_running_job(self, gate):
        flow = fan_flow(gate.hold, execution_strategy="concurrent", max_workers=2)
        js = flow.execute("source", {"tag": "t"}, timeout=0.05)
        assert js.status == "running"
        gate.release()
        assert js.wait_for_completion(TIMEOUT)
        assert js.status == "completed"
        assert history(js) == expected_history("t", 1)

    def test_a_job_started_inside_a_handler_keeps_the_outer_context(self):
        inner_flow = fan_flow(lambda r, d: None)
        seen: list[Any] = []

        def nested(routine, data):
            outer = routine.get_execution_context()
            inner = inner_flow.execute("source", {"tag": "inner", "n": 2})
            seen.append((inner.status, history(inner) == expected_history("inner", 2)))
            seen.append(routine.get_execution_context() == outer)

        flow = fan_flow(nested, execution_strategy="concurrent", max_workers=2)
        js = flow.execute("source", {"tag": "outer"})
        assert js.status == "completed"
        assert seen == [("completed", True), True]
        assert history(js) == expected_history("outer", 1)

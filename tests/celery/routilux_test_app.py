"""The Celery app of the Celery tests: imported by the test process (the submitter)
and by every worker process (``celery -A routilux_test_app worker``).

A worker's configuration comes from the environment the tests set:
``ROUTILUX_TEST_BROKER`` (the private Redis server), ``ROUTILUX_TEST_STORE`` (the job
store URL) and ``ROUTILUX_TEST_ORPHAN_AFTER``; the test process calls :func:`make`.

The routines report what they do outside the JobState into Redis (lists and counters
keyed by job id): that is how a test sees at-least-once effects and which worker ran a
delivery, and where a handler blocks until the test lets it go.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Mapping
from typing import Any

import redis
from celery import Celery

from routilux import Flow, Routine
from routilux.celery import RoutiluxCelery

#: The trace id a submitter's propagator sends, as the worker sees it while a job runs.
TRACE: contextvars.ContextVar[str] = contextvars.ContextVar("trace", default="")


class Propagator:
    """A stand-in for an OpenTelemetry propagator: one value in a context variable."""

    def inject(self, carrier: dict[str, str]) -> None:
        if TRACE.get():
            carrier["trace"] = TRACE.get()

    @contextlib.contextmanager
    def attach(self, carrier: Mapping[str, str]) -> Iterator[None]:
        token = TRACE.set(carrier.get("trace", ""))
        try:
            yield
        finally:
            TRACE.reset(token)


def make(broker: str, store: str, orphan_after: float = 60.0) -> RoutiluxCelery:
    """The app and its RoutiluxCelery, every test flow registered (workers and
    submitters build the same one)."""
    app = Celery("routilux_test", broker=broker)
    app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
    rc = RoutiluxCelery(
        app,
        store=store,
        # Killed workers run on this host, so their jobs are claimable at once (the PID
        # is gone); the heartbeat bound only guards live workers starved by a loaded
        # machine, which must never look dead to the others.
        stale_after=15.0,
        heartbeat_interval=0.5,
        sweep_interval=0.3,
        orphan_after=orphan_after,
        propagator=Propagator(),
    )
    rc.register(build_chain())
    rc.register(build_gated())
    rc.register(build_review())
    rc.register(build_gated(flow_id="journaled", store=store))
    rc.register(build_review(flow_id="review-journaled", store=store))
    rc.register(build_review_gated(store=store))
    return rc


def outside() -> redis.Redis:
    """This process's connection to the test Redis (for effects outside the JobState)."""
    global _outside
    if _outside is None:
        _outside = redis.Redis.from_url(os.environ["ROUTILUX_TEST_BROKER"])
    return _outside


_outside: redis.Redis | None = None


def job_id(routine: Routine) -> str:
    ctx = routine.get_execution_context()
    assert ctx is not None
    return str(ctx.job_state.job_id)


class Start(Routine):
    """Entry: ``trigger(n)`` emits ``out(n=n)``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("out", ["n"])

    def start(self, n: int = 0, **_: Any) -> None:
        self.emit("out", n=n)


class Double(Routine):
    """``input(n)`` emits ``out(n=2 * n)``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.double)
        self.define_event("out", ["n"])

    def double(self, n: int) -> None:
        self.emit("out", n=2 * n)


class Keep(Routine):
    """``input(n)`` keeps ``n`` in shared data, the worker's PID and the trace id seen."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.keep)

    def keep(self, n: int, **_: Any) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        ctx.job_state.shared_data["result"] = n
        ctx.job_state.shared_data["pid"] = os.getpid()
        ctx.job_state.shared_data["trace"] = TRACE.get()
        ctx.job_state.append_to_shared_log({"kept": n})


class Count(Routine):
    """``input(n)`` counts its runs outside the JobState (``count:<job>``), emits ``out(n)``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.count)
        self.define_event("out", ["n"])

    def count(self, n: int) -> None:
        outside().incr(f"count:{job_id(self)}")
        self.emit("out", n=n)


class Gate(Routine):
    """``input(n)``: announces itself (``started:<job>`` gets this PID), counts its
    attempts (``attempts:<job>``), then blocks until the test pushes to ``go:<job>``;
    counts its passes in the JobState and emits ``out(n)``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.wait_for_go)
        self.define_event("out", ["n"])

    def wait_for_go(self, n: int) -> None:
        job = job_id(self)
        outside().incr(f"attempts:{job}")
        outside().rpush(f"started:{job}", os.getpid())
        outside().blpop([f"go:{job}"], timeout=30)
        ctx = self.get_execution_context()
        assert ctx is not None
        with ctx.job_state.lock:
            passes = ctx.job_state.shared_data.get("gate_passes", 0)
            ctx.job_state.shared_data["gate_passes"] = passes + 1
        self.emit("out", n=n)


class Reviewer(Routine):
    """``trigger(n)`` asks for a decision; ``decision(approved)`` emits ``out(n)``
    when approved (``n`` is kept in the routine's job state meanwhile)."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.ask)
        self.define_slot("decision", handler=self.decide)
        self.define_event("out", ["n"])

    def ask(self, n: int = 0, **_: Any) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        ctx.job_state.update_routine_state("reviewer", {"n": n})
        self.request_input("decision", prompt="Keep it?", schema={"approved": bool})

    def decide(self, approved: bool) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        if approved:
            self.emit("out", n=ctx.job_state.get_routine_state("reviewer")["n"])


class AskThenGate(Reviewer):
    """A :class:`Reviewer` whose ``trigger`` also emits ``asked(n)`` once it has asked:
    the gate behind it keeps the job running (its worker holding it) with the request
    already open in the store."""

    def __init__(self) -> None:
        super().__init__()
        self.define_event("asked", ["n"])

    def ask(self, n: int = 0, **_: Any) -> None:
        super().ask(n)
        self.emit("asked", n=n)


def build_chain() -> Flow:
    """start -> double -> keep: a job's result is 2 * n."""
    flow = Flow(flow_id="chain")
    flow.add_routine(Start(), "start")
    flow.add_routine(Double(), "double")
    flow.add_routine(Keep(), "keep")
    flow.connect("start", "out", "double", "input")
    flow.connect("double", "out", "keep", "input")
    return flow


def build_gated(flow_id: str = "gated", store: str | None = None) -> Flow:
    """start -> count -> gate (blocks until let go) -> double -> keep.

    With ``store``, the flow journals its jobs itself, every delivery committed
    before the next starts (``durability="sync"``)."""
    if store is None:
        flow = Flow(flow_id=flow_id)
    else:
        flow = Flow(flow_id=flow_id, store=store, durability="sync")
    flow.add_routine(Start(), "start")
    flow.add_routine(Count(), "count")
    flow.add_routine(Gate(), "gate")
    flow.add_routine(Double(), "double")
    flow.add_routine(Keep(), "keep")
    flow.connect("start", "out", "count", "input")
    flow.connect("count", "out", "gate", "input")
    flow.connect("gate", "out", "double", "input")
    flow.connect("double", "out", "keep", "input")
    return flow


def build_review(flow_id: str = "review", store: str | None = None) -> Flow:
    """reviewer (asks for a decision) -> keep; journaled with ``store``."""
    flow = Flow(flow_id=flow_id) if store is None else Flow(flow_id=flow_id, store=store)
    flow.add_routine(Reviewer(), "reviewer")
    flow.add_routine(Keep(), "keep")
    flow.connect("reviewer", "out", "keep", "input")
    return flow


def build_review_gated(store: str) -> Flow:
    """reviewer (asks for a decision, then emits to) -> gate (blocks until let go);
    reviewer's decision -> keep. Journaled, every delivery committed before the next
    starts, so the request is in the store while the gate blocks."""
    flow = Flow(flow_id="review-gated", store=store, durability="sync")
    flow.add_routine(AskThenGate(), "reviewer")
    flow.add_routine(Gate(), "gate")
    flow.add_routine(Keep(), "keep")
    flow.connect("reviewer", "asked", "gate", "input")
    flow.connect("reviewer", "out", "keep", "input")
    return flow


# What `celery -A routilux_test_app worker` finds: built from the environment the
# tests give the worker processes (the test process itself calls make()).
if "ROUTILUX_TEST_BROKER" in os.environ:
    rc = make(
        os.environ["ROUTILUX_TEST_BROKER"],
        os.environ["ROUTILUX_TEST_STORE"],
        float(os.environ.get("ROUTILUX_TEST_ORPHAN_AFTER", "60")),
    )
    app = rc.app

"""The Celery app of the W8 Celery benchmark (``w8_celery.py``).

Imported by the benchmark process (the submitter, which calls :func:`make`) and by
every worker it starts (``celery -A _celery_bench_app worker -P solo``). A worker
builds its app from the environment the benchmark sets: ``ROUTILUX_BENCH_BROKER``
(the benchmark's private Redis server) and ``ROUTILUX_BENCH_STORE`` (the job store
URL).

The flow is ``source -> double -> sink``: one message per job, the result kept in the
job's shared data. :func:`build_flow` also builds the in-process copies the benchmark
compares against.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from celery import Celery

from routilux import Flow, Routine
from routilux.celery import RoutiluxCelery

FLOW_ID = "w8-celery"


class Source(Routine):
    """Entry: ``trigger(n)`` emits ``out(value=n)``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("out", ["value"])

    def start(self, n: int = 1, **_: Any) -> None:
        self.emit("out", value=n)


class Double(Routine):
    """``input(value)`` emits ``out(value=2 * value)``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.double)
        self.define_event("out", ["value"])

    def double(self, value: int) -> None:
        self.emit("out", value=2 * value)


class Sink(Routine):
    """``input(value)`` keeps ``value`` in the job's shared data (``result``)."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.keep)

    def keep(self, value: int) -> None:
        ctx = self.get_execution_context()
        assert ctx is not None
        ctx.job_state.shared_data["result"] = value


def build_flow(store: Optional[str] = None, flow_id: str = FLOW_ID) -> Flow:
    """source -> double -> sink; journaled to ``store`` when one is given."""
    flow = Flow(flow_id=flow_id) if store is None else Flow(flow_id=flow_id, store=store)
    flow.add_routine(Source(), "source")
    flow.add_routine(Double(), "double")
    flow.add_routine(Sink(), "sink")
    flow.connect("source", "out", "double", "input")
    flow.connect("double", "out", "sink", "input")
    return flow


def make(broker: str, store: str) -> RoutiluxCelery:
    """The app and its RoutiluxCelery with the benchmark flow registered (the workers
    and the submitter build the same one)."""
    app = Celery("routilux_bench", broker=broker)
    app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
    rc = RoutiluxCelery(app, store=store)
    rc.register(build_flow())
    return rc


# What `celery -A _celery_bench_app worker` finds: built from the environment the
# benchmark gives its workers (the benchmark process itself calls make()).
if "ROUTILUX_BENCH_BROKER" in os.environ:
    rc = make(os.environ["ROUTILUX_BENCH_BROKER"], os.environ["ROUTILUX_BENCH_STORE"])
    app = rc.app

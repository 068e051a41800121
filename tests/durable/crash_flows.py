"""The flows of the crash tests, and the two processes that run them.

A crash test runs a journaled job in a child process that kills itself with SIGKILL
around its N-th store commit (:func:`crash_child`), then recovers the job in a second,
fresh process (:func:`recover_child`) and compares the recovered JobState with an
uninterrupted run of the same flow (:func:`reference_digest`).

Three templates:

- ``"chain"``: a sequential chain ``source -> stage0 -> ... -> sink``; every stage
  keeps a count and a sum in its routine state and appends to the shared log, the sink
  adds to shared data and sends an output;
- ``"fan"``: a concurrent fan-out/fan-in; ``source`` emits items to two worker
  routines whose deliveries run on several threads and read-modify-write shared data
  and their routine state under ``job_state.lock``, then a ``merge`` routine counts
  them all;
- ``"async"``: ``async def`` handlers, a handler that fails its first attempt on
  every other item (the first attempt is told apart by durable state, a shared-data
  flag, so a re-run after a crash decides the same way) and is retried after a delay,
  and a timer (:meth:`Routine.schedule`) that delivers each item again later.

Every handler records an external effect keyed by ``ctx.delivery_id`` in an
append-only file, to show that deliveries are at least once outside the JobState and
that a re-run reuses its delivery id.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any, Optional

from routilux import ErrorHandler, Flow, JobState, Routine
from routilux.store import SQLiteStore, open_store

FLOW_ID = "crash"

# The file effects are appended to, in the process that runs the handlers, and which
# process that is ("crash", "recover" or "reference").
_effects_path: Optional[str] = None
_phase = "reference"


def _effect(routine: Routine, what: Any) -> None:
    """Append ``delivery_id routine what phase`` to the effects file (an external
    write).

    One ``os.write`` of a short line on an O_APPEND descriptor: the line is whole in
    the file once the call returns, whatever kills the process afterwards.
    """
    if _effects_path is None:
        return
    ctx = routine.context
    line = f"{ctx.delivery_id}\t{ctx.routine_id}\t{json.dumps(what)}\t{_phase}\n".encode()
    fd = os.open(_effects_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


# -- template "chain" -------------------------------------------------------------------


class ChainSource(Routine):
    """``trigger(n)`` emits ``out(value=i)`` for ``i < n``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("out", ["value"])

    def start(self, n: int = 1, **_: Any) -> None:
        _effect(self, ["start", n])
        for i in range(n):
            self.emit("out", value=i)


class ChainStage(Routine):
    """Counts and sums what it gets (routine state), logs it, passes ``value + 1`` on."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("in", handler=self.step)
        self.define_event("out", ["value"])

    def step(self, value: int, **_: Any) -> None:
        ctx = self.context
        js = ctx.job_state
        state = js.get_routine_state(ctx.routine_id) or {}
        js.update_routine_state(
            ctx.routine_id,
            {"count": state.get("count", 0) + 1, "sum": state.get("sum", 0) + value},
        )
        js.append_to_shared_log({"stage": ctx.routine_id, "value": value})
        _effect(self, value)
        self.emit("out", value=value + 1)


class ChainSink(Routine):
    """Adds what it gets to shared data ``total`` and sends it as an output."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("in", handler=self.take)

    def take(self, value: int, **_: Any) -> None:
        js = self.context.job_state
        # Under the job's lock: in the "async" template sink deliveries run
        # concurrently (after a recovery, timers due together end at the same
        # moment), and an unlocked read-modify-write would lose an update.
        with js.lock:
            js.update_shared_data("total", js.get_shared_data("total", 0) + value)
            js.update_shared_data("seen", sorted([*js.get_shared_data("seen", []), value]))
        _effect(self, value)
        self.send_output("result", value=value)


def chain_flow(stages: int, **options: Any) -> Flow:
    flow = Flow(flow_id=FLOW_ID, **options)
    flow.add_routine(ChainSource(), "source")
    previous = "source"
    for index in range(stages):
        flow.add_routine(ChainStage(), f"stage{index}")
        flow.connect(previous, "out", f"stage{index}", "in")
        previous = f"stage{index}"
    flow.add_routine(ChainSink(), "sink")
    flow.connect(previous, "out", "sink", "in")
    return flow


# -- template "fan" ---------------------------------------------------------------------


class FanWorker(Routine):
    """Read-modify-write of shared data and of its own routine state under the job
    lock, from several threads at once; emits ``done(value)``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("in", handler=self.work)
        self.define_event("done", ["value", "by"])

    def work(self, value: int, **_: Any) -> None:
        ctx = self.context
        js = ctx.job_state
        with js.lock:
            # Each write here is computed from what other deliveries wrote before.
            total = js.get_shared_data("total", 0)
            js.update_shared_data("total", total + value)
            js.update_shared_data("count", js.get_shared_data("count", 0) + 1)
            state = js.get_routine_state(ctx.routine_id) or {}
            js.update_routine_state(
                ctx.routine_id,
                {"count": state.get("count", 0) + 1, "sum": state.get("sum", 0) + value},
            )
        js.append_to_shared_log({"worker": ctx.routine_id, "value": value})
        _effect(self, value)
        self.emit("done", value=value, by=ctx.routine_id)


class FanMerge(Routine):
    """Fan-in: counts every worker's result under the job lock."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("in", handler=self.take)

    def take(self, value: int, by: str, **_: Any) -> None:
        ctx = self.context
        js = ctx.job_state
        with js.lock:
            merged = js.get_shared_data("merged", 0)
            js.update_shared_data("merged", merged + 1)
            state = js.get_routine_state(ctx.routine_id) or {}
            js.update_routine_state(ctx.routine_id, {"sum": state.get("sum", 0) + value})
        _effect(self, [by, value])
        self.send_output("merged", by=by, value=value)


def fan_flow(**options: Any) -> Flow:
    flow = Flow(flow_id=FLOW_ID, execution_strategy="concurrent", max_workers=4, **options)
    flow.add_routine(ChainSource(), "source")
    flow.add_routine(FanMerge(), "merge")
    for name in ("left", "right"):
        flow.add_routine(FanWorker(), name)
        flow.connect("source", "out", name, "in")
        flow.connect(name, "done", "merge", "in")
    return flow


# -- template "async" -------------------------------------------------------------------


class Flaky(Routine):
    """``async def`` handler: the first attempt on an even item fails (once per item,
    decided from the shared-data flag ``tried:<item>``), the retry succeeds."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("in", handler=self.fetch)
        self.define_event("out", ["value"])

    async def fetch(self, value: int, **_: Any) -> None:
        await asyncio.sleep(0)
        ctx = self.context
        js = ctx.job_state
        key = f"tried:{value}"
        with js.lock:
            first = value % 2 == 0 and not js.get_shared_data(key, False)
            if first:
                js.update_shared_data(key, True)
        if first:
            raise ConnectionError(f"item {value} unreachable (first attempt)")
        _effect(self, value)
        self.emit("out", value=value * 10)


class Delayer(Routine):
    """``async def`` handler that sets a timer: ``fire`` gets the value later."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("in", handler=self.wait)
        self.define_slot("fire", handler=self.fire)
        self.define_event("out", ["value"])

    async def wait(self, value: int, **_: Any) -> None:
        await asyncio.sleep(0)
        _effect(self, ["wait", value])
        self.schedule(0.01, "fire", value=value)

    def fire(self, value: int, **_: Any) -> None:
        js = self.context.job_state
        with js.lock:
            js.update_shared_data("fired", js.get_shared_data("fired", 0) + 1)
        _effect(self, ["fire", value])
        self.emit("out", value=value + 1)


def async_flow(strategy: str, **options: Any) -> Flow:
    flow = Flow(flow_id=FLOW_ID, execution_strategy=strategy, max_workers=3, **options)
    flow.add_routine(ChainSource(), "source")
    flaky = Flaky()
    flaky.set_error_handler(ErrorHandler(strategy="retry", max_retries=2, retry_delay=0.01))
    flow.add_routine(flaky, "flaky")
    flow.add_routine(Delayer(), "delayer")
    flow.add_routine(ChainSink(), "sink")
    flow.connect("source", "out", "flaky", "in")
    flow.connect("flaky", "out", "delayer", "in")
    flow.connect("delayer", "out", "sink", "in")
    return flow


def build(template: str, shape: dict[str, Any], **options: Any) -> Flow:
    """The flow of ``template`` (``shape``: its parameters), with Flow ``options``."""
    if template == "chain":
        return chain_flow(shape["stages"], **options)
    if template == "fan":
        return fan_flow(**options)
    if template == "async":
        return async_flow(shape["strategy"], **options)
    raise ValueError(f"unknown template {template!r}")


# -- what is compared -------------------------------------------------------------------


# Routine-state keys the engine fills with clock readings.
_CLOCK_KEYS = frozenset({"start_time", "end_time", "execution_time", "error_time"})


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def digest(js: JobState, *, unordered: bool) -> dict[str, Any]:
    """What must match between a recovered job and an uninterrupted run, JSON-safe.

    Timestamps are left out (they differ between runs); with ``unordered`` the logs
    and the history are compared as multisets (concurrent deliveries interleave
    differently from run to run).
    """

    def arrange(items: list[str]) -> list[str]:
        return sorted(items) if unordered else items

    log = [_canon({k: v for k, v in e.items() if k != "timestamp"}) for e in js.shared_log]
    history = [_canon([r.routine_id, r.event_name, r.data]) for r in js.execution_history]
    outputs = [_canon([e["routine_id"], e["output_type"], e["data"]]) for e in js.output_log]
    return {
        "status": js.status,
        "routine_states": {
            rid: json.loads(_canon({k: v for k, v in state.items() if k not in _CLOCK_KEYS}))
            for rid, state in js.routine_states.items()
        },
        "shared_data": json.loads(_canon(js.shared_data)),
        "shared_log": arrange(log),
        "history": arrange(history),
        "outputs": arrange(outputs),
    }


def reference_digest(template: str, shape: dict[str, Any], n: int) -> dict[str, Any]:
    """The digest of an uninterrupted run without a store (the ground truth)."""
    flow = build(template, shape)
    try:
        job = flow.execute("source", entry_params={"n": n}, timeout=30)
        job.wait_for_completion(30)
        return digest(job, unordered=template != "chain")
    finally:
        flow.shutdown()


# -- the crashing process ----------------------------------------------------------------


class KillingStore(SQLiteStore):
    """A SQLite store whose process SIGKILLs itself around its ``kill_at``-th commit.

    ``side="before"``: the kill comes as commit number ``kill_at`` is called, so it
    never reaches the database; ``"after"``: once it has returned (it is durable).
    ``commit`` and ``commit_many`` count alike: each is one transaction.
    """

    def __init__(self, path: str, kill_at: int, side: str) -> None:
        super().__init__(path)
        self.kill_at = kill_at
        self.side = side
        self.calls = 0

    def _counted(self) -> bool:
        self.calls += 1
        return self.calls == self.kill_at

    def commit(self, job_id: str, epoch: int, records: Sequence[Any]) -> None:
        due = self._counted()
        if due and self.side == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        super().commit_many([(job_id, epoch, records)])
        if due:
            os.kill(os.getpid(), signal.SIGKILL)

    def commit_many(self, batches: Sequence[tuple[str, int, Sequence[Any]]]) -> None:
        due = self._counted()
        if due and self.side == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        super().commit_many(batches)
        if due:
            os.kill(os.getpid(), signal.SIGKILL)


def crash_child(
    template: str,
    shape: dict[str, Any],
    n: int,
    db: str,
    durability: str,
    kill_at: int,
    side: str,
    effects: str,
) -> None:
    """Run a journaled job; the process dies at commit ``kill_at`` unless the job
    needs fewer commits (then it exits normally, the job completed)."""
    global _effects_path, _phase
    _effects_path, _phase = effects, "crash"
    store = KillingStore(db, kill_at, side)
    flow = build(template, shape, store=store, durability=durability)
    job = flow.execute("source", entry_params={"n": n}, timeout=30)
    job.wait_for_completion(30)
    flow.shutdown()
    os._exit(0)  # no interpreter teardown: the job is already in the store


def recover_child(
    template: str, shape: dict[str, Any], db: str, durability: str, effects: str, out: str
) -> None:
    """In a fresh process: recover every unfinished job, then write the digests of the
    recovered JobState (as ``recover()`` returned it) and of the stored one to ``out``,
    with the delivery ids of the tasks that were pending in the store after the crash
    (each must run again under that id)."""
    global _effects_path, _phase
    _effects_path, _phase = effects, "recover"
    unordered = template != "chain"
    with SQLiteStore(db) as before:
        pending = [
            f"{summary.job_id}:{task['seq']}"
            for summary in before.list_jobs(flow_id=FLOW_ID)
            if summary.status not in ("completed", "failed", "cancelled")
            for task in before.load(summary.job_id).tasks
        ]
    flow = build(template, shape, store=SQLiteStore(db), durability=durability)
    recovered = []
    for job in flow.recover():
        job.wait_for_completion(30)
        recovered.append(digest(job, unordered=unordered))
    flow.shutdown()
    store = open_store(f"sqlite:///{db}")  # an absolute path: four slashes
    try:
        summaries = store.list_jobs(flow_id=FLOW_ID)
        stored = [digest(store.load_job(s.job_id), unordered=unordered) for s in summaries]
    finally:
        store.close()
    with open(out, "w", encoding="utf-8") as handle:
        json.dump({"recovered": recovered, "stored": stored, "pending": pending}, handle)
    os._exit(0)


def count_child(
    template: str, shape: dict[str, Any], n: int, db: str, durability: str, out: str
) -> None:
    """Run the job journaled and uninterrupted; write how many commits it made."""
    store = KillingStore(db, 0, "after")  # kill_at 0: never
    flow = build(template, shape, store=store, durability=durability)
    job = flow.execute("source", entry_params={"n": n}, timeout=30)
    job.wait_for_completion(30)
    flow.shutdown()
    with open(out, "w", encoding="utf-8") as handle:
        handle.write(str(store.calls))
    os._exit(0)


# -- a delivery id must never name two deliveries ------------------------------------------


class Router(Routine):
    """Emits ``x`` then ``y`` -- or ``y`` then ``x`` once a marker file exists, which
    the first run creates: a handler whose behaviour depends on the outside world,
    which a crashed run may have changed."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.route)
        self.define_event("out", ["value"])

    def route(self, **_: Any) -> None:
        assert _effects_path is not None
        marker = _effects_path + ".marker"
        order = ["y", "x"] if os.path.exists(marker) else ["x", "y"]
        with open(marker, "a", encoding="utf-8"):
            pass
        for value in order:
            self.emit("out", value=value)


class Effector(Routine):
    """Writes its value as an effect; in the crashing process the second delivery
    kills the process after its effect."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("in", handler=self.take)
        self.runs = 0

    def take(self, value: str, **_: Any) -> None:
        _effect(self, value)
        self.runs += 1
        if _phase == "crash" and self.runs == 2:
            os.kill(os.getpid(), signal.SIGKILL)


def branch_flow(**options: Any) -> Flow:
    flow = Flow(flow_id=FLOW_ID, **options)
    flow.add_routine(Router(), "source")
    flow.add_routine(Effector(), "effector")
    flow.connect("source", "out", "effector", "in")
    return flow


class StalledStore(SQLiteStore):
    """A store whose commits never return: nothing after ``create_job`` reaches the
    database, as when a process dies before its first group commit."""

    def commit_many(self, batches: Sequence[tuple[str, int, Sequence[Any]]]) -> None:
        threading.Event().wait()

    def commit(self, job_id: str, epoch: int, records: Sequence[Any]) -> None:
        threading.Event().wait()


def branch_crash_child(db: str, effects: str) -> None:
    """Run the branch job in batch mode on a stalled store; dies in its last handler."""
    global _effects_path, _phase
    _effects_path, _phase = effects, "crash"
    flow = branch_flow(store=StalledStore(db), durability="batch")
    flow.execute("source", entry_params={}, timeout=30)
    os._exit(3)  # not reached: the effector kills the process


def branch_recover_child(db: str, effects: str) -> None:
    """Recover the branch job (every commit works now) and let it finish."""
    global _effects_path, _phase
    _effects_path, _phase = effects, "recover"
    flow = branch_flow(store=SQLiteStore(db), durability="batch")
    for job in flow.recover():
        job.wait_for_completion(30)
    flow.shutdown()
    os._exit(0)

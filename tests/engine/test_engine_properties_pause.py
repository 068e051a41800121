"""Property tests of pause, resume and cancel (hypothesis).

Execution model "Pause, resume, cancel" and persistence "Resuming, here or in
another process": a paused job, saved through JSON and resumed, ends exactly as
an uninterrupted run of the same flow would; a cancelled job starts nothing more
and leaves no work behind.

Every flow is a random DAG.  ``r0`` is the entry: it emits the items it is given.
Every other routine forwards a transformed value to its successors, through an
``override`` slot or an ``append`` one.  One routine pauses, cancels or blocks on
its k-th delivery.  "Ends the same" means the same *multiset* of history records,
the same routine states (minus the framework's timing keys) and the same values
at every sink.  Orders are never compared: a pause moves the work that had not
started to the front of the resumed job, and the concurrent strategy has no fixed
order at all.

Routine objects are shared by the jobs of a flow, so everything a run counts is
kept in its job state, and what a run is told to do (who pauses, on which
delivery) travels in the entry params and is kept in ``shared_data["control"]``:
it survives the JSON round trip, and a reference run simply has none.

Threads are ordered with Events and Barriers that have timeouts, never by
sleeping; a timeout is only reached when something is broken, and fails the test.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from helpers import json_trip
from routilux import ErrorHandler, Flow, JobState, Routine, register_serializable
from routilux.serialization import register_function

LONG = 10.0  # seconds; only reached when something is broken
MOD = 10007  # a prime: every transform below is a bijection of the values used
TIMING_KEYS = frozenset({"execution_time", "start_time", "end_time"})
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
STRATEGIES = pytest.mark.parametrize("strategy", ["sequential", "concurrent"])


# ---------------------------------------------------------------- gates


class Gate:
    """Holds one handler: ``entered`` when it waits, ``release`` lets it go on,
    ``done`` once it has emitted everything."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.done = threading.Event()


#: Gates by token; the token travels (JSON-safe) in the job's control data.
GATES: dict[str, Gate] = {}


class SignalOnAppend(list):  # type: ignore[type-arg]
    """A list that sets ``event`` when something is appended to it.

    Put in place of ``job_state.pause_points`` to learn that a pause has begun
    (the execution model: "One pause point is appended").
    """

    def __init__(self, items: list[Any], event: threading.Event) -> None:
        super().__init__(items)
        self.event = event

    def append(self, item: Any) -> None:
        super().append(item)
        self.event.set()


# ---------------------------------------------------------------- bookkeeping


def _context(routine: Routine) -> Any:
    ctx = routine.get_execution_context()
    assert ctx is not None, "handler ran outside a job"
    return ctx


def _note_start(js: JobState) -> None:
    """Record a handler start, and whether ``cancel()`` had already returned (lock held)."""
    starts = js.get_shared_data("starts") or []
    starts.append(bool(js.get_shared_data("cancel_returned")))
    js.update_shared_data("starts", starts)


def _act(ctx: Any, n: int) -> tuple[bool, Gate | None]:
    """Do what the control data asks of this routine on its n-th delivery.

    Returns (emit this delivery's outputs as deferred events, the gate held).
    """
    js = ctx.job_state
    rid = ctx.routine_id
    control = js.get_shared_data("control") or {}
    if control.get("pause", {}).get(rid) == n:
        ctx.flow.pause(js, reason="property", checkpoint={"routine": rid, "k": n})
        return bool(control.get("defer")), None
    if control.get("cancel", {}).get(rid) == n:
        ctx.flow.cancel(js, reason="property")
        with js.lock:
            js.update_shared_data("cancel_returned", True)
        return False, None
    if control.get("block", {}).get(rid) == n:
        gate = GATES[control["gate"]]
        gate.entered.set()
        if not gate.release.wait(LONG):
            raise RuntimeError("gate never released")
        return False, gate
    return False, None


# ---------------------------------------------------------------- routines


@register_serializable
class PpSource(Routine):
    """The entry: keeps the run's control data, then emits every item."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("output", ["value"])

    def start(self, values: Any = (), control: Any = None) -> None:
        ctx = _context(self)
        js = ctx.job_state
        with js.lock:
            js.update_shared_data("control", dict(control or {}))
            _note_start(js)
            js.update_routine_state(ctx.routine_id, {"count": 1, "emitted": 0})
        for index, value in enumerate(values, 1):
            self.emit("output", value=value)
            with js.lock:
                js.merge_routine_state(ctx.routine_id, {"emitted": index})
            _act(ctx, index)


class _Stage(Routine):
    """Forwards ``(item * a + b) % MOD`` for every new item it received.

    Its state counts deliveries (``count``) and keeps the sorted items received
    (``received``): both are independent of the order of deliveries.
    """

    merge_strategy: Any = "override"

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_input, merge_strategy=self.merge_strategy)
        self.define_event("output", ["value"])
        self.set_config(a=1, b=0)

    def _take(self, state: dict[str, Any], value: Any) -> list[Any]:
        raise NotImplementedError

    def on_input(self, value: Any) -> None:
        ctx = _context(self)
        js = ctx.job_state
        rid = ctx.routine_id
        with js.lock:
            _note_start(js)
            state = dict(js.get_routine_state(rid) or {})
            new = self._take(state, value)
            count = state.get("count", 0) + 1
            state["count"] = count
            state["received"] = sorted([*state.get("received", []), *new])
            js.update_routine_state(rid, state)
        defer, gate = _act(ctx, count)
        a, b = self.get_config("a"), self.get_config("b")
        for item in new:
            out = (item * a + b) % MOD
            if defer:
                self.emit_deferred_event("output", value=out)
            else:
                self.emit("output", value=out)
        if gate is not None:
            gate.done.set()


@register_serializable
class PpStage(_Stage):
    """An ``override`` slot: each delivery carries one item."""

    def _take(self, state: dict[str, Any], value: Any) -> list[Any]:
        return [value]


@register_serializable
class PpAppendStage(_Stage):
    """An ``append`` slot: the handler sees the job's whole buffer.

    In the concurrent strategy several deliveries may be merged before one of
    their handlers reads the buffer, so a call takes every item no call has taken
    yet (under the job lock): each item is forwarded exactly once, whatever the
    order.  A buffer lost or merged twice at resume changes what is forwarded.
    """

    merge_strategy = "append"

    def _take(self, state: dict[str, Any], value: Any) -> list[Any]:
        consumed = state.get("consumed", 0)
        state["consumed"] = max(consumed, len(value))
        return list(value[consumed:])


def pp_snapshot_merge(buffer: Any, new: dict[str, Any]) -> dict[str, Any]:
    """Merge strategy: keep every value seen; pass the handler its own value and
    its position in the buffer (a snapshot, so other merges never show through)."""
    before = buffer.get("seen", []) if isinstance(buffer, dict) else []
    seen = [*before, new["value"]]
    return {"seen": seen, "value": new["value"], "pos": len(seen)}


register_function(pp_snapshot_merge, name="tests.engine_properties_pause.pp_snapshot_merge")


@register_serializable
class PpFlaky(Routine):
    """Fails the first attempt of every delivery (values are distinct per delivery).

    ``calls`` counts the calls per value; ``positions`` keeps the merge position
    of each delivery: ``1..n`` exactly when no delivery was merged twice.
    """

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_input, merge_strategy=pp_snapshot_merge)
        self.define_event("output", ["value"])

    def on_input(self, value: int, pos: int) -> None:
        ctx = _context(self)
        js = ctx.job_state
        rid = ctx.routine_id
        with js.lock:
            _note_start(js)
            state = dict(js.get_routine_state(rid) or {})
            count = state.get("count", 0) + 1
            state["count"] = count
            calls = dict(state.get("calls", {}))
            calls[str(value)] = calls.get(str(value), 0) + 1
            state["calls"] = calls
            first = calls[str(value)] == 1
            if not first:
                state["positions"] = sorted([*state.get("positions", []), pos])
                state["received"] = sorted([*state.get("received", []), value])
            js.update_routine_state(rid, state)
        defer, _ = _act(ctx, count)
        if first:
            raise RuntimeError(f"first attempt at {value}")
        out = (value * 3 + 1) % MOD
        if defer:
            self.emit_deferred_event("output", value=out)
        else:
            self.emit("output", value=out)


# ---------------------------------------------------------------- flows


@dataclass(frozen=True)
class Node:
    preds: tuple[int, ...]
    kind: str  # "override" or "append"
    a: int
    b: int


@dataclass(frozen=True)
class Spec:
    """A DAG flow: ``r0`` is the source, ``nodes[i]`` is routine ``r{i + 1}``."""

    nodes: tuple[Node, ...]
    items: tuple[int, ...]
    strategy: str
    workers: int

    @property
    def rids(self) -> list[str]:
        return [f"r{i}" for i in range(len(self.nodes) + 1)]

    @property
    def sinks(self) -> list[str]:
        fed = {p for node in self.nodes for p in node.preds}
        return [f"r{i}" for i in range(1, len(self.nodes) + 1) if i not in fed]


def build_flow(spec: Spec, flow_id: str) -> Flow:
    flow = Flow(flow_id, execution_strategy=spec.strategy, max_workers=spec.workers)
    flow.add_routine(PpSource(), "r0")
    for index, node in enumerate(spec.nodes, 1):
        routine = PpAppendStage() if node.kind == "append" else PpStage()
        routine.set_config(a=node.a, b=node.b)
        flow.add_routine(routine, f"r{index}")
    for index, node in enumerate(spec.nodes, 1):
        for pred in node.preds:
            flow.connect(f"r{pred}", "output", f"r{index}", "input")
    return flow


@st.composite
def specs(
    draw: Any,
    max_nodes: int = 6,
    max_items: int = 15,
    strategy: str = "sequential",
) -> Spec:
    """3 to ``max_nodes + 1`` routines; every routine but the source has one or two
    predecessors among the routines before it, so every routine is reached."""
    nodes = []
    for index in range(1, draw(st.integers(2, max_nodes)) + 1):
        preds = draw(st.lists(st.integers(0, index - 1), min_size=1, max_size=2, unique=True))
        nodes.append(
            Node(
                tuple(preds),
                draw(st.sampled_from(["override", "append"])),
                draw(st.integers(1, 5)),
                draw(st.integers(0, 9)),
            )
        )
    items = draw(st.lists(st.integers(0, 999), min_size=1, max_size=max_items))
    workers = draw(st.integers(1, 4)) if strategy == "concurrent" else 1
    return Spec(tuple(nodes), tuple(items), strategy, workers)


def new_flow_id() -> str:
    return f"pp-{uuid.uuid4().hex[:12]}"


def params(values: Any, **control: Any) -> dict[str, Any]:
    return {"values": list(values), "control": control}


def reload(js: JobState) -> JobState:
    """The job as another process would load it: serialized, through JSON, restored."""
    return JobState().deserialize(json_trip(js.serialize()))


def deliveries(ref: JobState, rid: str) -> int:
    """How often ``rid`` can act in a run: emissions of the source, calls of the others."""
    state = ref.routine_states[rid]
    return int(state["emitted"] if rid == "r0" else state["count"])


# ---------------------------------------------------------------- comparing runs


def history(js: JobState) -> Counter[tuple[str, str, str]]:
    return Counter(
        (r.routine_id, r.event_name, json.dumps(r.data, sort_keys=True))
        for r in js.execution_history
    )


def states(js: JobState) -> dict[str, dict[str, Any]]:
    return {
        rid: {k: v for k, v in state.items() if k not in TIMING_KEYS}
        for rid, state in js.routine_states.items()
    }


def run_reference(flow: Flow, values: Any) -> JobState:
    ref = flow.execute("r0", params(values))
    assert ref.status == "completed", ref.execution_history[-3:]
    return ref


def assert_same_end(got: JobState, ref: JobState, sinks: list[str]) -> None:
    """``got`` ended as the uninterrupted ``ref``: multisets, states and sinks."""
    assert got.status == "completed", (got.status, got.execution_history[-3:])
    assert got.pending_tasks == []
    assert got.deferred_events == []
    got_history, ref_history = history(got), history(ref)
    assert got_history == ref_history, (
        f"extra: {got_history - ref_history}, missing: {ref_history - got_history}"
    )
    assert states(got) == states(ref)
    for sink in sinks:
        assert got.routine_states[sink]["received"] == ref.routine_states[sink]["received"]


def assert_paused_part_of(js: JobState, ref: JobState, pauses: int = 1) -> None:
    """A paused job's history is part of the uninterrupted one."""
    assert js.status == "paused", (js.status, js.execution_history[-3:])
    assert len(js.pause_points) == pauses
    assert not history(js) - history(ref)


# ---------------------------------------------------------------- 1. pause in a handler

RESUME_ON = ("same flow", "rebuilt flow", "deserialized flow")


def resume_target(how: str, flow: Flow, spec: Spec, others: list[Flow]) -> Flow:
    if how == "same flow":
        return flow
    if how == "rebuilt flow":
        target = build_flow(spec, flow.flow_id)
    else:
        target = Flow().deserialize(json_trip(flow.serialize()))
    others.append(target)
    return target


def reload_through_file(js: JobState) -> JobState:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "job.json")
        js.save(path)
        return JobState.load(path)


def resume_steps() -> Any:
    """(through a file, pause again, resume on, resume waits, pick routine, pick k)."""
    return st.tuples(
        st.booleans(),
        st.booleans(),
        st.sampled_from(RESUME_ON),
        st.booleans(),
        st.integers(0, 1000),
        st.integers(0, 1000),
    )


@STRATEGIES
@SETTINGS
@given(data=st.data())
def test_paused_and_resumed_job_ends_as_an_uninterrupted_one(strategy: str, data: Any) -> None:
    spec = data.draw(specs(strategy=strategy), label="flow")
    flow = build_flow(spec, new_flow_id())
    others: list[Flow] = []
    try:
        ref = run_reference(flow, spec.items)
        pauser = data.draw(st.sampled_from(spec.rids), label="pauser")
        k = data.draw(st.integers(1, deliveries(ref, pauser)), label="k")
        defer = data.draw(st.booleans(), label="defer the pausing delivery's outputs")

        js = flow.execute("r0", params(spec.items, pause={pauser: k}, defer=defer))
        assert_paused_part_of(js, ref)
        event(f"pending at pause: {bool(js.pending_tasks)}")
        assert js.pause_points[-1]["checkpoint"] == {"routine": pauser, "k": k}
        assert js.pause_points[-1]["pending_tasks_count"] <= len(js.pending_tasks)
        assert flow.wait_for_completion(LONG)

        # What happens at each resume is drawn up front: in the concurrent strategy
        # which deliveries are still to come differs from run to run, and hypothesis
        # needs the same draws for the same example.
        plan = data.draw(st.lists(resume_steps(), min_size=3, max_size=3), label="resumes")
        pauses = 1
        for through_file, again, target_name, waits, pick, pick_k in plan:
            loaded = reload_through_file(js) if through_file else reload(js)
            assert loaded.status == "paused"
            # Pause again in the resumed run: some routine on a delivery still to come.
            later = [
                rid
                for rid in spec.rids[1:]
                if loaded.routine_states.get(rid, {}).get("count", 0) < deliveries(ref, rid)
            ]
            again = again and bool(later) and pauses < len(plan)
            if again:
                rid = later[pick % len(later)]
                done = loaded.routine_states.get(rid, {}).get("count", 0)
                k = done + 1 + pick_k % (deliveries(ref, rid) - done)
                loaded.shared_data["control"]["pause"] = {rid: k}
            target = resume_target(target_name, flow, spec, others)
            if waits:
                assert target.resume(loaded) is loaded
            else:
                assert target.resume(loaded, wait=False) is loaded
                assert loaded.wait_for_completion(LONG)
            assert target.wait_for_completion(LONG)
            if not again:
                break
            pauses += 1
            assert_paused_part_of(loaded, ref, pauses)
            js = loaded
        event(f"pauses: {pauses}")
        assert_same_end(loaded, ref, spec.sinks)
        assert len(loaded.pause_points) == pauses
    finally:
        for f in (flow, *others):
            f.shutdown(wait=False)


# ---------------------------------------------------------------- 2. pause from another thread

PAUSE_MODES = (
    # pause() waits for the blocked handler, which a second thread releases once
    # the pause has begun; what the handler emits afterwards goes to pending_tasks
    "pause waits",
    # pause(wait_timeout=0) returns at once; the handler is released afterwards
    "pause returns at once",
    # the same, and the very same JobState is resumed at once, while a second
    # thread releases the handler: resume must wait for the paused run to settle
    "resume at once",
)


@STRATEGIES
@SETTINGS
@given(data=st.data())
def test_pause_from_another_thread_while_a_handler_runs(strategy: str, data: Any) -> None:
    spec = data.draw(specs(strategy=strategy), label="flow")
    flow = build_flow(spec, new_flow_id())
    token = uuid.uuid4().hex
    gate = GATES[token] = Gate()
    helpers: list[threading.Thread] = []
    try:
        ref = run_reference(flow, spec.items)
        blocker = data.draw(st.sampled_from(spec.rids[1:]), label="blocked routine")
        k = data.draw(st.integers(1, deliveries(ref, blocker)), label="k")
        mode = data.draw(st.sampled_from(PAUSE_MODES), label="mode")

        js = flow.execute("r0", params(spec.items, block={blocker: k}, gate=token), wait=False)
        assert gate.entered.wait(LONG), "the blocking delivery never started"
        if mode == "pause waits":
            began = threading.Event()
            js.pause_points = SignalOnAppend(js.pause_points, began)
            saw_pause: list[bool] = []

            def release_when_paused() -> None:
                saw_pause.append(began.wait(LONG))
                gate.release.set()

            helpers.append(threading.Thread(target=release_when_paused, daemon=True))
            helpers[-1].start()
            flow.pause(js, reason="from outside")
            assert gate.done.is_set(), "pause() returned before the running handler ended"
            helpers[-1].join(LONG)
            assert saw_pause == [True]
            js.pause_points = list(js.pause_points)
        else:
            flow.pause(js, reason="from outside", wait_timeout=0)
            assert not gate.done.is_set()
            assert not js.wait_for_completion(0), "settled while a handler still runs"
            if mode == "resume at once":
                both = threading.Barrier(2, timeout=LONG)

                def release_soon() -> None:
                    both.wait()
                    gate.release.set()

                helpers.append(threading.Thread(target=release_soon, daemon=True))
                helpers[-1].start()
                both.wait()
                assert flow.resume(js) is js
                assert gate.done.is_set()
                assert_same_end(js, ref, spec.sinks)
                assert len(js.pause_points) == 1
                return
            gate.release.set()
        assert js.wait_for_completion(LONG)
        assert gate.done.is_set()
        assert flow.wait_for_completion(LONG)
        assert_paused_part_of(js, ref)
        event(f"pending at pause: {bool(js.pending_tasks)}")

        loaded = reload(js)
        flow.resume(loaded)
        assert_same_end(loaded, ref, spec.sinks)
    finally:
        gate.release.set()
        for helper in helpers:
            helper.join(LONG)
        GATES.pop(token, None)
        flow.shutdown(wait=False)


# ---------------------------------------------------------------- 3. cancel

CANCEL_MODES = ("from a handler", "from another thread", "while paused")


def assert_resume_starts_nothing(flow: Flow, js: JobState) -> None:
    """Resuming a cancelled job (refused or not) runs no handler and records nothing."""
    before = (len(js.get_shared_data("starts")), len(js.execution_history))
    try:
        flow.resume(js)
    except ValueError:
        pass  # refusing to resume a cancelled job is fine too
    assert js.wait_for_completion(LONG)
    assert js.status == "cancelled"
    assert (len(js.get_shared_data("starts")), len(js.execution_history)) == before


@STRATEGIES
@SETTINGS
@given(data=st.data())
def test_cancelled_job_starts_nothing_more_and_settles(strategy: str, data: Any) -> None:
    spec = data.draw(specs(strategy=strategy), label="flow")
    flow = build_flow(spec, new_flow_id())
    token = uuid.uuid4().hex
    gate = GATES[token] = Gate()
    try:
        ref = run_reference(flow, spec.items)
        mode = data.draw(st.sampled_from(CANCEL_MODES), label="mode")
        candidates = spec.rids[1:] if mode == "from another thread" else spec.rids
        canceller = data.draw(st.sampled_from(candidates), label="routine")
        k = data.draw(st.integers(1, deliveries(ref, canceller)), label="k")

        if mode == "from a handler":
            js = flow.execute("r0", params(spec.items, cancel={canceller: k}))
        elif mode == "from another thread":
            js = flow.execute(
                "r0", params(spec.items, block={canceller: k}, gate=token), wait=False
            )
            assert gate.entered.wait(LONG), "the blocking delivery never started"
            flow.cancel(js, reason="from outside")
            with js.lock:
                js.update_shared_data("cancel_returned", True)
            gate.release.set()
            assert js.wait_for_completion(LONG)
        else:
            js = flow.execute("r0", params(spec.items, pause={canceller: k}))
            assert_paused_part_of(js, ref)
            flow.cancel(js, reason="while paused")
            with js.lock:
                js.update_shared_data("cancel_returned", True)

        assert js.status == "cancelled", (js.status, js.execution_history[-3:])
        assert js.wait_for_completion(5)
        assert flow.wait_for_completion(5)
        assert js.pending_tasks == []
        assert js.get_shared_data("cancel_returned") is True
        late = sum(js.get_shared_data("starts"))
        event(f"late starts: {late}")
        # A handler whose task a pool thread had already taken when cancel() ran
        # may reach its first line afterwards: at most one per other worker (and
        # one more when the source, which runs beside the pool, cancels).
        if spec.strategy == "sequential" or mode == "while paused":
            allowed = 0
        else:
            allowed = spec.workers - (0 if canceller == "r0" and mode == "from a handler" else 1)
        assert late <= allowed, f"{late} handler(s) started after cancel() returned"
        assert len(js.get_shared_data("starts")) <= len(ref.get_shared_data("starts"))
        assert_resume_starts_nothing(flow, js)
    finally:
        gate.release.set()
        GATES.pop(token, None)
        flow.shutdown(wait=False)


@STRATEGIES
def test_resuming_a_job_cancelled_while_paused_with_deferred_events_starts_nothing(
    strategy: str,
) -> None:
    spec = Spec((Node((0,), "override", 1, 0), Node((1,), "append", 2, 3)), (1, 2, 3), strategy, 2)
    flow = build_flow(spec, new_flow_id())
    try:
        js = flow.execute("r0", params(spec.items, pause={"r1": 2}, defer=True))
        assert js.status == "paused"
        assert js.deferred_events  # r1's output of its 2nd delivery waits for resume
        flow.cancel(js, reason="while paused")
        assert js.status == "cancelled"
        assert js.pending_tasks == []
        assert_resume_starts_nothing(flow, js)
    finally:
        flow.shutdown(wait=False)


class PpMeetAndPause(Routine):
    """With ``together`` in the control data, every delivery waits for the other
    one (a Barrier of two) and then pauses the job."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.on_input)
        self.define_event("output", ["value"])
        self.meet = threading.Barrier(2, timeout=LONG)  # test hook, never saved

    def on_input(self, value: int) -> None:
        ctx = _context(self)
        js = ctx.job_state
        with js.lock:
            _note_start(js)
        if (js.get_shared_data("control") or {}).get("together"):
            self.meet.wait()
            ctx.flow.pause(js, reason=f"together {value}")
        self.emit("output", value=value)


def test_two_handlers_pausing_at_once_do_not_wait_for_each_other() -> None:
    flow = Flow(new_flow_id(), execution_strategy="concurrent", max_workers=2)
    flow.add_routine(PpSource(), "r0")
    flow.add_routine(PpMeetAndPause(), "r1")
    flow.add_routine(PpStage(), "r2")
    flow.connect("r0", "output", "r1", "input")
    flow.connect("r1", "output", "r2", "input")
    try:
        ref = run_reference(flow, (1, 2))
        js = flow.execute("r0", params((1, 2), together=True), wait=False)
        # Both pauses are in effect at once; neither has anything left to wait
        # for but the other pausing handler.  Allow less than half of the 5 s.
        assert js.wait_for_completion(2.0), "the two pausing handlers waited for each other"
        assert_paused_part_of(js, ref, pauses=2)
        loaded = reload(js)
        flow.resume(loaded)
        assert_same_end(loaded, ref, ["r2"])
    finally:
        flow.shutdown(wait=False)


# ---------------------------------------------------------------- 4. retry and pause


def build_retry_flow(strategy: str, workers: int, flow_id: str) -> Flow:
    """r0 -> r1 -> flaky -> r3 (append), and r0 -> r4 beside them."""
    flow = Flow(flow_id, execution_strategy=strategy, max_workers=workers)
    flow.add_routine(PpSource(), "r0")
    mid = PpStage()
    mid.set_config(a=2, b=1)
    flow.add_routine(mid, "r1")
    flaky = PpFlaky()
    flaky.set_error_handler(ErrorHandler(strategy="retry", max_retries=3, retry_delay=0.01))
    flow.add_routine(flaky, "flaky")
    flow.add_routine(PpAppendStage(), "r3")
    flow.add_routine(PpStage(), "r4")
    flow.connect("r0", "output", "r1", "input")
    flow.connect("r1", "output", "flaky", "input")
    flow.connect("flaky", "output", "r3", "input")
    flow.connect("r0", "output", "r4", "input")
    return flow


def assert_two_calls_per_delivery(js: JobState, items: tuple[int, ...]) -> None:
    state = js.routine_states["flaky"]
    expected = {str((v * 2 + 1) % MOD): 2 for v in items}
    assert state["calls"] == expected
    assert state["positions"] == list(range(1, len(items) + 1))
    assert state["retry_count"] == 1


@STRATEGIES
@SETTINGS
@given(data=st.data())
def test_retries_survive_a_pause(strategy: str, data: Any) -> None:
    # Distinct items: the flaky routine tells its deliveries apart by value.
    items = tuple(
        data.draw(st.lists(st.integers(0, 999), min_size=1, max_size=10, unique=True), "items")
    )
    workers = data.draw(st.integers(1, 4), label="workers") if strategy == "concurrent" else 1
    flow = build_retry_flow(strategy, workers, new_flow_id())
    try:
        ref = run_reference(flow, items)
        assert_two_calls_per_delivery(ref, items)
        pauser = data.draw(st.sampled_from(["r0", "r1", "flaky", "r3", "r4"]), label="pauser")
        k = data.draw(st.integers(1, deliveries(ref, pauser)), label="k")
        defer = data.draw(st.booleans(), label="defer")

        js = flow.execute("r0", params(items, pause={pauser: k}, defer=defer))
        assert_paused_part_of(js, ref)
        retries = [t for t in js.pending_tasks if t["retry_count"]]
        event(f"retries pending at pause: {bool(retries)}")
        loaded = reload(js)
        flow.resume(loaded)
        assert_same_end(loaded, ref, ["r3", "r4"])
        assert_two_calls_per_delivery(loaded, items)
    finally:
        flow.shutdown(wait=False)


# ---------------------------------------------------------------- 5. many jobs at once

JOBS = 10


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=specs(max_nodes=4, max_items=6, strategy="concurrent"),
    data=st.data(),
)
def test_many_jobs_paused_and_resumed_at_once(spec: Spec, data: Any) -> None:
    flow = build_flow(spec, new_flow_id())
    try:
        values = [[v + 1000 * j for v in spec.items] for j in range(JOBS)]
        refs = [run_reference(flow, values[j]) for j in range(JOBS)]
        pausers = [data.draw(st.sampled_from(spec.rids), label=f"pauser {j}") for j in range(JOBS)]
        # Every routine acts as often in every job; spread k over its deliveries.
        ks = [1 + j % deliveries(refs[0], pausers[j]) for j in range(JOBS)]

        jobs = [
            flow.execute("r0", params(values[j], pause={pausers[j]: ks[j]}), wait=False)
            for j in range(JOBS)
        ]
        for j, js in enumerate(jobs):
            assert js.wait_for_completion(LONG)
            assert_paused_part_of(js, refs[j])
        loaded = [reload(js) for js in jobs]

        threads_count = data.draw(st.integers(2, 5), label="resuming threads")
        barrier = threading.Barrier(threads_count, timeout=LONG)
        errors: list[BaseException] = []

        def resume_batch(batch: list[JobState]) -> None:
            try:
                barrier.wait()
                for js in batch:
                    flow.resume(js)
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                errors.append(exc)

        threads = [
            threading.Thread(target=resume_batch, args=(loaded[t::threads_count],), daemon=True)
            for t in range(threads_count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(LONG)
        assert not any(thread.is_alive() for thread in threads), "a resume never returned"
        assert errors == []
        for j in range(JOBS):
            assert_same_end(loaded[j], refs[j], spec.sinks)
        assert flow.wait_for_completion(LONG)
    finally:
        flow.shutdown(wait=False)

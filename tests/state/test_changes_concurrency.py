"""The visibility rule of ``routilux.changes`` under concurrent deliveries.

The hazard: two deliveries share one in-memory JobState.  If delivery A commits a
value it computed from delivery B's write and B's record is lost in a crash, recovery
re-runs B on top of A's value and B's effect is doubled.  Each test here "crashes" by
keeping a prefix of the released records that ends at a cut (what a journal that ends
transactions only at cuts can have made durable), replays it onto the starting
snapshot, re-runs every delivery whose record is not in it, and compares with the run
that did not crash: nothing lost, nothing applied twice.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from routilux.changes import ChangeLog, Record, apply_ops
from routilux.job_state import JobState

Step = tuple[str, int, int]  # (action, target, amount)


def run_step(js: JobState, delivery: Any, index: int, step: Step) -> None:
    """One logical operation of a delivery (the same code live and on re-run)."""
    action, target, amount = step
    if action == "inc":  # read-modify-write of a shared counter under the lock
        with js.lock:
            key = f"c{target}"
            js.shared_data[key] = js.shared_data.get(key, 0) + amount
    elif action == "state_inc":  # the same on a routine state, read through a take
        with js.lock:
            state = js.get_routine_state(f"r{target}") or {}
            js.merge_routine_state(f"r{target}", {"n": state.get("n", 0) + amount})
    elif action == "append":  # in place, on a list taken out of shared data
        with js.lock:
            js.get_shared_data("items").append([str(delivery), index])
    elif action == "log":
        js.append_to_shared_log({"d": str(delivery), "i": index})
    else:
        js.record_execution(f"d{delivery}", "e", {"i": index})


def start_state() -> JobState:
    js = JobState("flow")
    js.shared_data["items"] = []
    return js


def logical(js: JobState) -> dict[str, Any]:
    """What exactly-once is about: counters exact, entries as multisets (a re-run
    delivery appends after the others, so order may differ from the live run)."""
    return {
        "shared": {k: v for k, v in js.shared_data.items() if k != "items"},
        "states": dict(js.routine_states),
        "items": Counter(tuple(item) for item in js.shared_data["items"]),
        "log": Counter((e["d"], e["i"]) for e in js.shared_log),
        "history": Counter((r.routine_id, r.data["i"]) for r in js.execution_history),
    }


def recover(
    start: dict[str, Any],
    durable: list[Record],
    programs: dict[Any, list[Step]],
) -> JobState:
    """Replay ``durable``, then re-run from scratch every delivery not in it."""
    js = JobState().deserialize(start)
    for record in durable:
        apply_ops(js, record.ops)
    done = {record.key for record in durable}
    for key, steps in programs.items():
        if key not in done:
            for index, step in enumerate(steps):
                run_step(js, key, index, step)
    return js


def cut_prefixes(released: list[Record]) -> list[list[Record]]:
    """Every prefix a crash can leave durable: empty, or ending at a cut."""
    return [[]] + [released[: i + 1] for i, r in enumerate(released) if r.cut]


# ---------------------------------------------------------------------------
# (a) Deterministic interleavings with real threads
# ---------------------------------------------------------------------------


def in_thread(fn: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=fn)
    thread.start()
    return thread


def test_a_value_computed_from_an_open_deliverys_write_waits_for_it() -> None:
    js = start_state()
    start = js.serialize()
    log = ChangeLog(js)
    b_wrote, a_ended, b_may_end = threading.Event(), threading.Event(), threading.Event()

    def delivery_b() -> None:
        with log.delivery("B"):
            run_step(js, "B", 0, ("inc", 0, 1))  # c0: 0 -> 1
            b_wrote.set()
            assert b_may_end.wait(10)

    def delivery_a() -> None:
        assert b_wrote.wait(10)
        with log.delivery("A"):
            run_step(js, "A", 0, ("inc", 0, 10))  # c0: 1 -> 11, computed from B's write
        a_ended.set()

    threads = [in_thread(delivery_b), in_thread(delivery_a)]
    assert a_ended.wait(10)
    assert log.take_ready() == []  # A saw B's write and B is still open
    b_may_end.set()
    for thread in threads:
        thread.join(10)
    released = log.take_ready()
    # Released in end order, as one group: A carries nothing and is no cut; B,
    # the group's last record, carries both writes in the order they were made.
    assert [r.key for r in released] == ["A", "B"]
    assert [r.cut for r in released] == [False, True]
    assert released[0].ops == []
    assert [op[:3] for op in released[1].ops[:2]] == [
        ["shared_set", "c0", 1],
        ["shared_set", "c0", 11],
    ]
    programs = {"A": [("inc", 0, 10)], "B": [("inc", 0, 1)]}
    for durable in cut_prefixes(released):
        assert recover(start, durable, programs).shared_data["c0"] == 11
    replay = JobState().deserialize(start)
    for record in released:
        apply_ops(replay, record.ops)
    assert replay.serialize() == js.serialize()


def test_a_delivery_that_wrote_after_another_ended_does_not_hold_it_back() -> None:
    js = start_state()
    log = ChangeLog(js)
    a_ended, b_may_end = threading.Event(), threading.Event()
    b_started = threading.Event()

    def delivery_b() -> None:
        with log.delivery("B"):  # open before A ends, but writes only after
            b_started.set()
            assert a_ended.wait(10)
            run_step(js, "B", 0, ("inc", 0, 1))
            assert b_may_end.wait(10)

    thread = in_thread(delivery_b)
    assert b_started.wait(10)
    with log.delivery("A"):
        run_step(js, "A", 0, ("inc", 0, 10))
    a_ended.set()
    (record,) = log.take_ready()
    assert record.key == "A" and record.cut
    b_may_end.set()
    thread.join(10)
    (record,) = log.take_ready()
    assert record.key == "B" and record.cut and js.shared_data["c0"] == 11


def test_a_take_counts_as_a_write_at_the_time_of_the_take() -> None:
    js = start_state()
    start = js.serialize()
    log = ChangeLog(js)
    a_took, b_ended, a_may_end = threading.Event(), threading.Event(), threading.Event()

    def delivery_a() -> None:
        with log.delivery("A"):
            items = js.get_shared_data("items")  # taken: A may change it in place
            items.append(["A", 0])
            a_took.set()
            assert a_may_end.wait(10)

    thread = in_thread(delivery_a)
    assert a_took.wait(10)
    with log.delivery("B"):  # B sees A's in-place append and extends after it
        run_step(js, "B", 0, ("append", 0, 0))
    b_ended.set()
    assert log.take_ready() == []  # B could have seen A's uncommitted change
    a_may_end.set()
    thread.join(10)
    released = log.take_ready()
    assert [r.key for r in released] == ["B", "A"] and released[-1].cut
    assert not released[0].cut
    replay = JobState().deserialize(start)
    for record in released:
        apply_ops(replay, record.ops)
    assert replay.serialize() == js.serialize()
    assert js.shared_data["items"] == [["A", 0], ["B", 0]]


# ---------------------------------------------------------------------------
# (b) Random interleavings, a crash at every point
# ---------------------------------------------------------------------------

_step = st.tuples(
    st.sampled_from(["inc", "inc", "state_inc", "append", "log", "history"]),
    st.integers(0, 1),
    st.integers(1, 5),
)


@st.composite
def interleavings(draw: st.DrawFn) -> tuple[dict[Any, list[Step]], list[Any], list[bool]]:
    """Programs of 2-4 deliveries, an interleaving of their steps (a delivery's last
    turn is its end), and after each turn whether the journal asks for ready records."""
    count = draw(st.integers(2, 4))
    programs = {d: draw(st.lists(_step, min_size=0, max_size=4)) for d in range(count)}
    turns = [d for d, steps in programs.items() for _ in range(len(steps) + 1)]
    order = draw(st.permutations(turns))
    takes = draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
    return programs, list(order), takes


@settings(max_examples=300)
@given(interleavings())
def test_any_crash_point_loses_nothing_and_applies_nothing_twice(
    case: tuple[dict[Any, list[Step]], list[Any], list[bool]],
) -> None:
    programs, order, takes = case
    js = start_state()
    start = js.serialize()
    log = ChangeLog(js)
    progress = dict.fromkeys(programs, 0)
    released: list[Record] = []
    crash_points: list[int] = [0]  # how many released records existed at each point
    for turn, take in zip(order, takes):
        index = progress[turn]
        if index == 0:
            log.begin(turn)
        if index < len(programs[turn]):
            with log.bound(turn):
                run_step(js, turn, index, programs[turn][index])
        else:
            log.end(turn)
        progress[turn] = index + 1
        if take:
            released += log.take_ready()
        crash_points.append(len(released))
    released += log.take_ready(flush=True)
    crash_points.append(len(released))
    assert log.pending == 0 and log.open_deliveries == 0
    assert sorted(r.key for r in released if r.key is not None) == sorted(programs)

    # No crash: replaying everything reproduces the live state exactly.
    replay = JobState().deserialize(start)
    for record in released:
        apply_ops(replay, record.ops)
    assert replay.serialize() == js.serialize()

    # A crash anywhere: a prefix of what was released by then, ending at a cut.
    expected = logical(js)
    for available in sorted(set(crash_points)):
        for durable in cut_prefixes(released[:available]):
            assert logical(recover(start, durable, programs)) == expected


# ---------------------------------------------------------------------------
# (c) Real threads hammering shared counters under the lock
# ---------------------------------------------------------------------------


def test_threads_hammering_shared_counters_recover_exactly() -> None:
    threads_n, per_thread = 4, 150
    js = start_state()
    start = js.serialize()
    log = ChangeLog(js)
    programs: dict[Any, list[Step]] = {
        (t, i): [("inc", (t + i) % 2, 1 + i % 3), ("log", 0, 0), ("history", 0, 0)]
        + ([("state_inc", i % 2, 1)] if i % 4 == 0 else [])
        + ([("append", 0, 0)] if i % 5 == 0 else [])
        for t in range(threads_n)
        for i in range(per_thread)
    }
    barrier = threading.Barrier(threads_n + 1)
    done = threading.Event()
    released: list[Record] = []
    crash_points: list[int] = []

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            with log.delivery((t, i)):
                for index, step in enumerate(programs[(t, i)]):
                    run_step(js, (t, i), index, step)

    def journal() -> None:
        barrier.wait()
        while not done.is_set():
            batch = log.take_ready()
            if batch:
                released.extend(batch)
                crash_points.append(len(released))

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    collector = threading.Thread(target=journal)
    for thread in [*workers, collector]:
        thread.start()
    for thread in workers:
        thread.join(60)
    done.set()
    collector.join(60)
    released += log.take_ready(flush=True)
    assert sorted(r.key for r in released if r.key is not None) == sorted(programs)

    replay = JobState().deserialize(start)
    for record in released:
        apply_ops(replay, record.ops)
    assert replay.serialize() == js.serialize()

    expected = logical(js)
    total = sum(step[2] for steps in programs.values() for step in steps if step[0] == "inc")
    assert expected["shared"]["c0"] + expected["shared"]["c1"] == total
    cuts = [i + 1 for i, r in enumerate(released) if r.cut]
    step = max(1, len(cuts) // 25)
    for available in [0, *cuts[::step], len(released)]:
        durable = released[:available]
        assert logical(recover(start, durable, programs)) == expected


def test_asyncio_tasks_each_have_their_own_delivery() -> None:
    import asyncio

    js = start_state()
    start = js.serialize()
    log = ChangeLog(js)

    async def main() -> None:
        a_wrote, b_wrote = asyncio.Event(), asyncio.Event()

        async def delivery(key: str, mine: asyncio.Event, theirs: asyncio.Event) -> None:
            with log.delivery(key):
                js.append_to_shared_log({"d": key, "i": 0})
                mine.set()
                await theirs.wait()  # the other task writes while this one is open
                js.record_execution(f"d{key}", "e", {"i": 1})

        await asyncio.gather(delivery("A", a_wrote, b_wrote), delivery("B", b_wrote, a_wrote))

    asyncio.run(main())
    released = log.take_ready(flush=True)
    # B ends first (A's event was already set); A wrote before B ended: one group.
    assert [r.key for r in released] == ["B", "A"] and [r.cut for r in released] == [False, True]
    ops = released[-1].ops
    assert [op[0] for op in ops[:4]] == ["log", "log", "history", "history"]
    assert [op[1]["d"] for op in ops[:2]] == ["A", "B"]
    assert [op[1] for op in ops[2:4]] == ["dB", "dA"]
    replay = JobState().deserialize(start)
    for record in released:
        apply_ops(replay, record.ops)
    assert replay.serialize() == js.serialize()

"""Many jobs on one concurrent flow at once: isolation, nothing lost, nothing duplicated.

Issue 4 acceptance 1 (200 jobs from 8 threads over a fan-out/fan-in flow, and the
same check over hypothesis-generated graphs) and the JobState thread-safety
rules of spec 30 §11.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routilux import Flow, JobState, Routine

TIMEOUT = 30.0
WORKERS = 4  # fan-out width of the stress flow


def canon(data: Any) -> str:
    return json.dumps(data, sort_keys=True)


def history_of(js: JobState) -> Counter:
    return Counter((r.routine_id, r.event_name, canon(r.data)) for r in js.get_execution_history())


def log_of(js: JobState) -> Counter:
    return Counter(
        canon({k: v for k, v in entry.items() if k != "timestamp"}) for entry in js.get_shared_log()
    )


@pytest.fixture
def busy_switching():
    """Switch threads far more often than the default 5 ms, to shake out races."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


# -- the fan-out / fan-in flow ---------------------------------------------------------


class Source(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("out", ["tag", "i", "salt"])

    def start(self, tag: str, n: int, salt: int) -> None:
        ctx = self.get_execution_context()
        ctx.job_state.update_routine_state(ctx.routine_id, {"tag": tag, "n": n})
        for i in range(n):
            self.emit("out", tag=tag, i=i, salt=salt + i)


class Worker(Routine):
    """Every worker gets every item; it records it and passes it on."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("in", handler=self.on_item)
        self.define_event("out", ["tag", "i", "salt", "by"])

    def on_item(self, tag: str, i: int, salt: int) -> None:
        ctx = self.get_execution_context()
        js, rid = ctx.job_state, ctx.routine_id
        with js.lock:  # read-modify-write: the rule for handler authors
            state = dict(js.get_routine_state(rid) or {"items": []})
            state["items"] = state["items"] + [[tag, i, salt]]
            js.update_routine_state(rid, state)
        js.update_shared_data(f"{rid}:{i}", [tag, salt])  # a single, atomic operation
        js.append_to_shared_log({"tag": tag, "i": i, "by": rid})
        self.emit("out", tag=tag, i=i, salt=salt, by=rid)


class Aggregator(Routine):
    """Fan-in: ``count`` (override merge) and ``collect`` (append merge, per-job buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("count", handler=self.on_count)
        self.define_slot("collect", handler=self.on_collect, merge_strategy="append")
        self.define_event("seen", ["tag", "i", "by"])

    def on_count(self, tag: str, i: int, salt: int, by: str) -> None:
        ctx = self.get_execution_context()
        js, rid = ctx.job_state, ctx.routine_id
        with js.lock:
            state = dict(js.get_routine_state(rid) or {"count": 0, "pairs": []})
            state["count"] += 1
            state["pairs"] = state["pairs"] + [[by, i]]
            js.update_routine_state(rid, state)
        js.append_to_shared_log({"tag": tag, "i": i, "by": rid, "from": by})
        self.emit("seen", tag=tag, i=i, by=by)

    def on_collect(self, tag: list, salt: list, **_: Any) -> None:
        ctx = self.get_execution_context()
        js = ctx.job_state
        with js.lock:  # the buffer's lists are live: snapshot them under the job's lock
            tags, salts = list(tag), list(salt)
            best = js.get_shared_data("collected", [])
            if len(salts) > len(best):
                js.update_shared_data("collected", sorted(salts))
            js.update_shared_data(
                "collected_tags", sorted(set(tags) | set(js.get_shared_data("collected_tags", [])))
            )


def build_stress_flow() -> Flow:
    flow = Flow(flow_id="stress", execution_strategy="concurrent", max_workers=8)
    flow.add_routine(Source(), "source")
    flow.add_routine(Aggregator(), "agg")
    for w in range(WORKERS):
        flow.add_routine(Worker(), f"w{w}")
        flow.connect("source", "out", f"w{w}", "in")
        flow.connect(f"w{w}", "out", "agg", "count")
        flow.connect(f"w{w}", "out", "agg", "collect")
    return flow


def job_params(k: int) -> dict[str, Any]:
    return {"tag": f"job{k}", "n": 1 + k % 5, "salt": k * 1000}


def check_stress_job(js: JobState, params: dict[str, Any]) -> None:
    tag, n, salt = params["tag"], params["n"], params["salt"]
    workers = [f"w{w}" for w in range(WORKERS)]
    assert js.status == "completed", (tag, js.get_execution_history())

    expected = Counter()
    for i in range(n):
        expected[("source", "out", canon({"tag": tag, "i": i, "salt": salt + i}))] += 1
        for w in workers:
            item = {"tag": tag, "i": i, "salt": salt + i, "by": w}
            expected[(w, "out", canon(item))] += 1
            expected[("agg", "seen", canon({"tag": tag, "i": i, "by": w}))] += 1
    assert history_of(js) == expected

    states = {rid: dict(s) for rid, s in js.routine_states.items()}
    source = states.pop("source")
    assert (source["tag"], source["n"], source["status"]) == (tag, n, "completed")
    agg = states.pop("agg")
    assert agg["count"] == n * WORKERS
    assert sorted(map(tuple, agg["pairs"])) == sorted((w, i) for w in workers for i in range(n))
    assert sorted(states) == workers
    for w in workers:
        items = sorted(map(tuple, states[w]["items"]))
        assert items == [(tag, i, salt + i) for i in range(n)]

    shared = dict(js.shared_data)
    assert shared.pop("collected") == sorted([salt + i for i in range(n)] * WORKERS)
    assert shared.pop("collected_tags") == [tag]
    assert shared == {f"{w}:{i}": [tag, salt + i] for w in workers for i in range(n)}

    expected_log = Counter()
    for i in range(n):
        for w in workers:
            expected_log[canon({"tag": tag, "i": i, "by": w})] += 1
            expected_log[canon({"tag": tag, "i": i, "by": "agg", "from": w})] += 1
    assert log_of(js) == expected_log


def run_from_threads(flow: Flow, params: list[dict], threads: int, wait: bool) -> list[JobState]:
    """Start every job from ``threads`` threads released together by a barrier."""
    results: list[Any] = [None] * len(params)
    start = threading.Barrier(threads, timeout=TIMEOUT)
    errors: list[BaseException] = []

    def run(offset: int) -> None:
        try:
            start.wait()
            for k in range(offset, len(params), threads):
                results[k] = flow.execute(params[k]["entry"], params[k]["params"], wait=wait)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(TIMEOUT)
    assert errors == []
    assert not any(t.is_alive() for t in pool)
    if not wait:
        assert flow.wait_for_completion(timeout=TIMEOUT)
    return results


@pytest.mark.parametrize("wait", [True, False], ids=["blocking", "wait-false"])
def test_200_jobs_from_8_threads_on_one_flow(wait, busy_switching):
    flow = build_stress_flow()
    params = [{"entry": "source", "params": job_params(k)} for k in range(200)]
    jobs = run_from_threads(flow, params, threads=8, wait=wait)
    assert len({js.job_id for js in jobs}) == 200
    for js, p in zip(jobs, params):
        check_stress_job(js, p["params"])


# -- hypothesis: random DAGs -------------------------------------------------------------


@st.composite
def dags(draw: Any) -> dict[str, Any]:
    """A DAG whose node 0 is the entry; every node is reachable from it.

    Each node gets at least one predecessor with a lower index, plus optional
    extra forward edges (fan-in), so fan-out and fan-in both occur.  Some
    handlers are ``async def``.
    """
    size = draw(st.integers(min_value=2, max_value=6))
    edges: set[tuple[int, int]] = set()
    for node in range(1, size):
        first = draw(st.integers(min_value=0, max_value=node - 1))
        extra = draw(st.sets(st.integers(min_value=0, max_value=node - 1), max_size=2))
        edges |= {(p, node) for p in {first} | extra}
    is_async = draw(st.lists(st.booleans(), min_size=size, max_size=size))
    return {"size": size, "edges": sorted(edges), "async": is_async}


class Node(Routine):
    """Receives a path, records it, and emits the path extended with its own id."""

    def __init__(self, entry: bool) -> None:
        super().__init__()
        self.define_slot("trigger" if entry else "in", handler=self.on_path)
        self.define_event("out", ["tag", "path"])

    def record(self, tag: str, path: list) -> None:
        ctx = self.get_execution_context()
        js, rid = ctx.job_state, ctx.routine_id
        new_path = path + [rid]
        with js.lock:
            state = dict(js.get_routine_state(rid) or {"paths": []})
            state["paths"] = state["paths"] + ["/".join(new_path)]
            js.update_routine_state(rid, state)
        js.append_to_shared_log({"tag": tag, "at": rid, "path": "/".join(new_path)})
        self.emit("out", tag=tag, path=new_path)

    def on_path(self, tag: str, path: list) -> None:
        self.record(tag, path)


class AsyncNode(Node):
    async def on_path(self, tag: str, path: list) -> None:  # type: ignore[override]
        await asyncio.sleep(0)  # give the loop to other handlers before recording
        self.record(tag, path)


def build_dag_flow(dag: dict[str, Any], workers: int) -> Flow:
    flow = Flow(execution_strategy="concurrent", max_workers=workers)
    for node in range(dag["size"]):
        cls = AsyncNode if dag["async"][node] and node else Node
        flow.add_routine(cls(entry=node == 0), f"n{node}")
    for a, b in dag["edges"]:
        flow.connect(f"n{a}", "out", f"n{b}", "in")
    return flow


def dag_paths(dag: dict[str, Any]) -> dict[str, list[str]]:
    """Every path from the entry to each node, as "n0/n2/n5"."""
    paths: dict[str, list[str]] = {"n0": ["n0"]}
    for node in range(1, dag["size"]):
        rid = f"n{node}"
        paths[rid] = [f"{p}/{rid}" for a, b in dag["edges"] if b == node for p in paths[f"n{a}"]]
    return paths


def check_dag_job(js: JobState, dag: dict[str, Any], tag: str) -> None:
    assert js.status == "completed", js.get_execution_history()
    paths = dag_paths(dag)
    expected = Counter(
        (rid, "out", canon({"tag": tag, "path": p.split("/")}))
        for rid, ps in paths.items()
        for p in ps
    )
    assert history_of(js) == expected
    for rid, ps in paths.items():
        assert sorted(js.get_routine_state(rid)["paths"]) == sorted(ps), rid
    assert log_of(js) == Counter(
        canon({"tag": tag, "at": rid, "path": p}) for rid, ps in paths.items() for p in ps
    )
    assert js.shared_data == {}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(dag=dags(), workers=st.integers(min_value=1, max_value=6))
def test_random_graphs_many_jobs_from_threads(dag, workers):
    flow = build_dag_flow(dag, workers)
    params = [{"entry": "n0", "params": {"tag": f"job{k}", "path": []}} for k in range(16)]
    jobs = run_from_threads(flow, params, threads=4, wait=True)
    assert len({js.job_id for js in jobs}) == 16
    for k, js in enumerate(jobs):
        check_dag_job(js, dag, f"job{k}")
    flow.shutdown()


# -- JobState operations under concurrent use (spec 30 §11) ------------------------------


def test_jobstate_single_operations_lose_nothing(busy_switching):
    js = JobState("f")
    threads, per_thread = 8, 500
    start = threading.Barrier(threads, timeout=TIMEOUT)

    def hammer(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            js.update_routine_state(f"r{t}-{i}", {"t": t, "i": i})
            js.merge_routine_state(f"m{t}", {f"k{i}": i})
            js.update_shared_data(f"s{t}-{i}", i)
            js.append_to_shared_log({"t": t, "i": i})
            js.record_execution(f"r{t}", "out", {"i": i})

    pool = [threading.Thread(target=hammer, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(TIMEOUT)
    total = threads * per_thread
    assert len([k for k in js.routine_states if k.startswith("r")]) == total
    for t in range(threads):
        assert js.get_routine_state(f"m{t}") == {f"k{i}": i for i in range(per_thread)}
    assert len(js.shared_data) == total
    assert sorted((e["t"], e["i"]) for e in js.get_shared_log()) == sorted(
        (t, i) for t in range(threads) for i in range(per_thread)
    )
    history = js.get_execution_history()
    assert len(history) == total
    assert Counter((r.routine_id, r.data["i"]) for r in history) == Counter(
        (f"r{t}", i) for t in range(threads) for i in range(per_thread)
    )


class Fanner(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("out", ["i"])

    def start(self, n: int) -> None:
        for i in range(n):
            self.emit("out", i=i)


class Writer(Routine):
    """Many handlers of one job write at once: single operations without a lock,
    one read-modify-write under ``job_state.lock``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("in", handler=self.write)
        self.define_event("done", ["i"])

    def write(self, i: int) -> None:
        ctx = self.get_execution_context()
        js = ctx.job_state
        js.update_routine_state(f"item{i}", {"i": i})
        js.update_shared_data(f"k{i}", i)
        js.append_to_shared_log({"i": i})
        with js.lock:
            total = js.get_shared_data("total", 0)
            js.update_shared_data("total", total + 1)
        self.emit("done", i=i)


@pytest.mark.parametrize("history_limit", [None, 100])
def test_many_handlers_of_one_job_write_at_once(history_limit, busy_switching):
    n = 600
    flow = Flow(execution_strategy="concurrent", max_workers=8, history_limit=history_limit)
    flow.add_routine(Fanner(), "src")
    flow.add_routine(Writer(), "writer")
    flow.connect("src", "out", "writer", "in")
    js = flow.execute("src", {"n": n})
    assert js.status == "completed"
    assert {rid for rid in js.routine_states if rid.startswith("item")} == {
        f"item{i}" for i in range(n)
    }
    assert js.get_shared_data("total") == n
    assert sorted(k for k in js.shared_data if k != "total") == sorted(f"k{i}" for i in range(n))
    assert sorted(e["i"] for e in js.get_shared_log()) == list(range(n))
    history = js.get_execution_history()
    if history_limit is None:
        assert len(history) == 2 * n
        assert Counter((r.routine_id, r.data["i"]) for r in history) == Counter(
            [("src", i) for i in range(n)] + [("writer", i) for i in range(n)]
        )
    else:
        assert len(history) == history_limit
        assert js.history_dropped == 2 * n - history_limit

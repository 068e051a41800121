"""kill -9 in the middle of a journaled job loses nothing and applies nothing twice.

For each template of :mod:`durable.crash_flows` and each durability mode, hypothesis
picks the flow's shape, the job's size, the commit N around which the process dies
(N from 1 to the number of commits an uninterrupted journaled run made, half of it
where deliveries run concurrently) and the side
of the commit (before it reaches the database, or after it returned). A child process
runs the job and SIGKILLs itself there; a second fresh process runs
``flow.recover()``. The recovered JobState and the stored one must equal the JobState
of an uninterrupted run without a store: routine states, shared data, shared log,
history and outputs (timestamps aside; multisets where deliveries run concurrently).

The handlers' external effects (lines keyed by ``ctx.delivery_id`` in a file) show the
at-least-once side: every effect of the uninterrupted run is there, nothing else is,
and a delivery that ran again used the same delivery id.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import tempfile
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable import crash_flows

# Children fork from a server that has already imported the library: a real process
# per run at a fraction of an interpreter's start-up.
_MP = multiprocessing.get_context("forkserver")
_MP.set_forkserver_preload(["routilux", "routilux.store", "durable.crash_flows"])

EXAMPLES = 8  # per template and durability: 6 x 8 runs of the crashing child
MIN_KILLS = 5  # per test, so that a run of the module kills at least 30 processes
TIMEOUT = 60.0


def _run(target: Any, *args: Any) -> int:
    process = _MP.Process(target=target, args=args)
    process.start()
    process.join(TIMEOUT)
    if process.is_alive():
        process.kill()
        process.join()
        raise AssertionError(f"{target.__name__}{args[:3]} did not finish in {TIMEOUT} s")
    code = process.exitcode
    assert code is not None
    return code


def _effects(path: str) -> list[tuple[str, str, str, str]]:
    """The effects file as (delivery_id, routine, what, phase) lines."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [tuple(line.rstrip("\n").split("\t")) for line in handle]  # type: ignore[misc]


# (template, shape, n) -> (digest, effects as a set of (routine, what))
_REFERENCES: dict[str, tuple[dict[str, Any], set[tuple[str, str]]]] = {}
# (template, shape, n, durability) -> commits of an uninterrupted journaled run
_COMMITS: dict[str, int] = {}


def reference(template: str, shape: dict[str, Any], n: int) -> tuple[dict[str, Any], set]:
    key = json.dumps([template, shape, n], sort_keys=True)
    if key not in _REFERENCES:
        with tempfile.TemporaryDirectory() as folder:
            crash_flows._effects_path = os.path.join(folder, "effects")
            try:
                found = crash_flows.reference_digest(template, shape, n)
            finally:
                crash_flows._effects_path = None
            effects = {
                (routine, what) for _, routine, what, _ in _effects(os.path.join(folder, "effects"))
            }
        _REFERENCES[key] = (found, effects)
    return _REFERENCES[key]


def commits_needed(template: str, shape: dict[str, Any], n: int, durability: str) -> int:
    """How many commits an uninterrupted journaled run of this job makes (kill_at=0:
    never killed; the child reports its count)."""
    key = json.dumps([template, shape, n, durability], sort_keys=True)
    if key not in _COMMITS:
        with tempfile.TemporaryDirectory() as folder:
            count = os.path.join(folder, "count")
            code = _run(
                crash_flows.count_child,
                template,
                shape,
                n,
                os.path.join(folder, "jobs.db"),
                durability,
                count,
            )
            assert code == 0, f"the uninterrupted journaled run exited with {code}"
            with open(count, encoding="utf-8") as handle:
                _COMMITS[key] = int(handle.read())
    return _COMMITS[key]


def crash_and_recover(
    template: str,
    shape: dict[str, Any],
    n: int,
    durability: str,
    kill_at: int,
    side: str,
) -> bool:
    """One scenario; asserts its outcome and returns whether the child was killed."""
    expected, expected_effects = reference(template, shape, n)
    with tempfile.TemporaryDirectory() as folder:
        db = os.path.join(folder, "jobs.db")
        effects = os.path.join(folder, "effects")
        out = os.path.join(folder, "out.json")
        code = _run(
            crash_flows.crash_child, template, shape, n, db, durability, kill_at, side, effects
        )
        assert code in (0, -signal.SIGKILL), f"the crashing child exited with {code}"
        killed = code == -signal.SIGKILL
        code = _run(crash_flows.recover_child, template, shape, db, durability, effects, out)
        assert code == 0, f"the recovering child exited with {code}"
        with open(out, encoding="utf-8") as handle:
            result = json.load(handle)
        lines = _effects(effects)

    where = f"{template} {shape} n={n} {durability} kill_at={kill_at} {side} killed={killed}"
    assert len(result["stored"]) == 1, f"{where}: the store holds {len(result['stored'])} jobs"
    if killed and side == "before":
        # The killing commit never reached the store: the job was unfinished there.
        assert len(result["recovered"]) == 1, f"{where}: recover() found no job to resume"
    if not killed:
        assert result["recovered"] == [], f"{where}: a completed job was recovered"
    for found in [*result["recovered"], *result["stored"]]:
        for part in ("status", "routine_states", "shared_data", "shared_log", "history", "outputs"):
            assert found[part] == expected[part], f"{where}: {part} differs"

    # At least once outside: every effect and nothing else; within one process a
    # delivery id names one effect (it is an idempotency key); every task that was
    # pending in the store after the crash ran again under its own delivery id. (That
    # an id of the crashed run never names another delivery after recovery is
    # test_a_delivery_id_never_names_two_deliveries_across_a_crash.)
    assert {(routine, what) for _, routine, what, _ in lines} == expected_effects, where
    effects_of: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for delivery_id, routine, what, phase in lines:
        effects_of[(phase, delivery_id)].add((routine, what))
    assert all(len(found) == 1 for found in effects_of.values()), f"{where}: an id reused"
    rerun_ids = {delivery_id for delivery_id, _, _, phase in lines if phase == "recover"}
    missing = set(result["pending"]) - rerun_ids
    assert not missing, f"{where}: pending deliveries {sorted(missing)} did not run again"
    if not killed:
        assert len(lines) == len(expected_effects), f"{where}: a delivery ran twice"
    return killed


SHAPES = {
    "chain": st.fixed_dictionaries({"stages": st.integers(1, 3)}),
    "fan": st.just({}),
    "async": st.fixed_dictionaries({"strategy": st.sampled_from(["sequential", "concurrent"])}),
}
SIZES = {"chain": st.integers(1, 4), "fan": st.integers(2, 5), "async": st.integers(1, 3)}


@pytest.mark.parametrize("durability", ["batch", "sync"])
@pytest.mark.parametrize("template", ["chain", "fan", "async"])
def test_kill_at_a_commit_then_recover_loses_nothing_and_doubles_nothing(
    template: str, durability: str
) -> None:
    kills = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,  # a shrunk failure is printed; no replay file left behind
    )
    @given(data=st.data())
    def scenario(data: st.DataObject) -> None:
        shape = data.draw(SHAPES[template], label="shape")
        n = data.draw(SIZES[template], label="n")
        total = commits_needed(template, shape, n, durability)
        if template == "fan" or shape.get("strategy") == "concurrent":
            # Concurrent deliveries share transactions as they happen to end together,
            # so a run may make far fewer commits than the one counted.
            total = total // 2
        kill_at = data.draw(st.integers(1, max(1, total)), label="kill_at")
        side = data.draw(st.sampled_from(["before", "after"]), label="side")
        kills.append(crash_and_recover(template, shape, n, durability, kill_at, side))

    scenario()
    print(f"{template}/{durability}: {sum(kills)} kills in {len(kills)} runs")  # with -s
    assert sum(kills) >= MIN_KILLS, f"only {sum(kills)} of {len(kills)} runs were killed"


def test_a_delivery_id_never_names_two_deliveries_across_a_crash() -> None:
    """The crashed run's deliveries x and y never reached the journal; after the
    crash the router emits them in the other order (it depends on the outside world).
    Each delivery id of the effects must still name one delivery: an idempotent
    external write keyed on it would otherwise skip a delivery that never happened."""
    with tempfile.TemporaryDirectory() as folder:
        db = os.path.join(folder, "jobs.db")
        effects = os.path.join(folder, "effects")
        assert _run(crash_flows.branch_crash_child, db, effects) == -signal.SIGKILL
        assert _run(crash_flows.branch_recover_child, db, effects) == 0
        lines = _effects(effects)
    assert sorted(what for _, _, what, phase in lines if phase == "recover") == ['"x"', '"y"']
    named: dict[str, set[str]] = defaultdict(set)
    for delivery_id, _, what, _ in lines:
        named[delivery_id].add(what)
    assert all(len(values) == 1 for values in named.values()), dict(named)

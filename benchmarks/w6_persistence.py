"""W6: saving and loading a JobState with 10,000 history records.

``job_state.save(path)`` and ``JobState.load(path)`` (snapshot, datetimes to ISO strings,
atomic write with fsync; parsing, validation and rebuilding ``ExecutionRecord`` objects)
are timed beside the plain-Python baseline of the same work on the same data: the dict
``job_state.serialize()`` returns, written with ``json.dumps`` (same settings: compact
separators, ``ensure_ascii=False``, ``allow_nan=False``) to a file and read back with
``json.loads``. Target: within 3x.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))

from _common import median_seconds, row  # noqa: E402

from routilux import JobState  # noqa: E402

TARGET = 3.0


def build_job_state(records: int) -> JobState:
    """A finished job of a 4-stage flow: history, routine states, shared data and log."""
    js = JobState("w6-flow")
    js.status = "completed"
    js.current_routine_id = "source"
    stages = ("source", "parse", "enrich", "store")
    for i in range(records):
        rid = stages[i % len(stages)]
        js.record_execution(
            rid, "output", {"item": i, "value": i * 2.5, "label": f"item-{i}", "ok": i % 3 != 0}
        )
    for rid in stages:
        js.update_routine_state(rid, {"status": "completed", "count": records // len(stages)})
    js.update_shared_data("totals", {"items": records, "sum": records * (records - 1) * 1.25})
    for i in range(100):
        js.append_to_shared_log({"event": "checkpoint", "n": i})
    return js


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000, help="history records")
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per figure")
    args = parser.parse_args()

    js = build_job_state(args.records)
    plain = js.serialize()

    with tempfile.TemporaryDirectory(prefix="routilux-w6-") as tmp:
        ours = os.path.join(tmp, "job.json")
        baseline = os.path.join(tmp, "plain.json")

        def save() -> None:
            js.save(ours)

        def load() -> None:
            JobState.load(ours)

        def plain_dump() -> None:
            with open(baseline, "w", encoding="utf-8") as handle:
                handle.write(
                    json.dumps(plain, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
                )

        def plain_load() -> None:
            with open(baseline, encoding="utf-8") as handle:
                json.loads(handle.read())

        t_save = median_seconds(save, args.repeats) * 1e3
        t_dump = median_seconds(plain_dump, args.repeats) * 1e3
        t_load = median_seconds(load, args.repeats) * 1e3
        t_plain_load = median_seconds(plain_load, args.repeats) * 1e3
        size = os.path.getsize(ours)

        # The benchmark is only meaningful if the round trip is right.
        loaded = JobState.load(ours)
        assert len(loaded.execution_history) == args.records
        assert loaded.serialize() == json.loads(json.dumps(plain))

    save_ratio = t_save / t_dump
    load_ratio = t_load / t_plain_load
    print(
        f"W6: JobState with {args.records:,} history records, {size / 1e6:.1f} MB of JSON "
        f"(median of {args.repeats} runs; target within {TARGET:g}x)"
    )
    row("routilux  job_state.save(path)", t_save, "ms", f"{save_ratio:.2f}x json.dumps")
    row("baseline  json.dumps + write", t_dump, "ms")
    row("routilux  JobState.load(path)", t_load, "ms", f"{load_ratio:.2f}x json.loads")
    row("baseline  read + json.loads", t_plain_load, "ms")
    for name, ratio in (("save", save_ratio), ("load", load_ratio)):
        verdict = "within" if ratio <= TARGET else "OVER"
        print(f"  {name} ratio {ratio:.2f}x: {verdict} the {TARGET:g}x target")


if __name__ == "__main__":
    main()

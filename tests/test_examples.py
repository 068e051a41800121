"""Every script in examples/ runs and prints what it is meant to print.

Each example is run as a separate process with the interpreter running the tests
(cwd = the repository root), must exit with code 0, and must print the key lines listed
for it below. An example without an entry here fails the test, so a new example cannot
go unchecked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

# Lines (stripped of surrounding blanks) each example's output must contain.
EXPECTED: dict[str, list[str]] = {
    "quickstart.py": [
        "Status: completed",
        "validator: {'valid': 4, 'invalid': 1}",
        "aggregator: {'received': 5}",
        "accepted: ['item_0', 'item_1', 'item_2', 'item_4']",
    ],
    "retry_and_fallback.py": [
        "Status: completed",
        "request: {'status': 'completed'}",
        "api_call: {'calls': 3, 'retry_count': 2}",
        "enrich: {'status': 'error_continued', 'error': 'credit service timed out'}",
        "sink: {'stored': 1}",
        "api_call error: attempt=1 action=retry retry_delay=0.05 "
        "ConnectionError: api.example.org unreachable (call 1)",
        "api_call error: attempt=2 action=retry retry_delay=0.1 "
        "ConnectionError: api.example.org unreachable (call 2)",
        "enrich error_continued: attempt=1 action=continue retry_delay=- "
        "TimeoutError: credit service timed out",
        "{'customer_id': 'c-42', 'enriched': False, 'name': 'Ada', 'tier': 'gold'}",
    ],
    "async_fanout.py": [
        "Status: completed",
        "Source state: 8 urls emitted",
        "Fetcher state: {'fetched': 8}",
        *(f"https://example.org/page/{i} -> 'Page {i}'" for i in range(8)),
        "8 fetches took less than 8 x 0.05 s: True",
        "The caller's event loop kept running meanwhile: True",
    ],
    "human_approval.py": [
        "[first process]",
        "Status: waiting",
        "Waiting for: review.decision: Approve order A-2 (4800)?",
        "Schema: {'approved': 'bool', 'by': 'str'}",
        "Booked so far: ['A-1 (250, approved by auto)', 'A-3 (90, approved by auto)']",
        "[reviewer process]",
        "Refused: field 'approved' must be a bool, got str 'yes'",
        "Decision: A-2 approved by alice",
        "Final status: completed",
        "A-1 (250, approved by auto)",
        "A-3 (90, approved by auto)",
        "A-2 (4800, approved by alice)",
        "Total: 5140",
        "Rejected: []",
    ],
    "crash_and_recover.py": [
        "[first process]",
        "Killed by SIGKILL: True",
        "[second process]",
        "Unfinished jobs in the store: 1",
        "Recovered job: True",
        "Status: completed",
        "book: {'booked': 10}",
        "Booked: ['order-0', 'order-1', 'order-2', 'order-3', 'order-4', 'order-5', "
        "'order-6', 'order-7', 'order-8', 'order-9']",
        "Every order exactly once: True",
        "Shared log entries: 10",
        "Ledger rows: 10 (10 distinct orders)",
    ],
    "builtin_pipeline.py": [
        "Status: completed",
        "Filtered out (not paid): ['A-2', 'A-5']",
        "#0 (full): [{'id': 'A-1', 'total': 30}, {'id': 'A-3', 'total': 300}, "
        "{'id': 'A-4', 'total': 5}]",
        "#1 (full): [{'id': 'A-6', 'total': 100}, {'id': 'A-7', 'total': 480}, "
        "{'id': 'A-8', 'total': 48}]",
        "#2 (job_end): [{'id': 'A-9', 'total': 21}]",
        "A-3 (300, route 'large')",
        "A-7 (480, route 'large')",
    ],
    "ui_demo.py": [
        "Jobs in the store: 1",
        "Status: waiting",
        "Waiting for: review.decision: Approve order A-2 (4800)?",
        "Schema: {'approved': 'bool', 'by': 'str', 'note': 'str'}",
        "Booked so far: ['A-1']",
    ],
    "stream_progress.py": [
        "orders    [########] 1/1",
        "validate  [####....] 2/4 (1 failed: order A-2 has no quantity)",
        "validate  [########] 4/4",
        "price     [########] 3/3",
        "store     [########] 3/3",
        "Status: completed",
        "stored A-1: 30.00",
        "stored A-3: 300.00",
        "stored A-4: 5.00",
    ],
}

# Arguments an example is run with: one that would serve until stopped has a --check.
ARGS: dict[str, list[str]] = {"ui_demo.py": ["--check"]}


def run_example(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def output_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.strip() for line in result.stdout.splitlines()]


def assert_lines_in_order(lines: list[str], expected: list[str]) -> None:
    """Each expected line appears as a whole line, after the previous expected one."""
    position = 0
    for want in expected:
        try:
            position = lines.index(want, position) + 1
        except ValueError:
            raise AssertionError(
                f"line {want!r} not found (in order) in output:\n" + "\n".join(lines)
            ) from None


def test_examples_exist() -> None:
    assert EXAMPLES, "no examples found"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_and_prints_key_lines(path: Path) -> None:
    assert path.name in EXPECTED, f"add the key output lines of {path.name} to EXPECTED"
    result = run_example(path, *ARGS.get(path.name, []))
    assert result.returncode == 0, result.stderr[-2000:]
    assert_lines_in_order(output_lines(result), EXPECTED[path.name])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_expectation_has_an_example(name: str) -> None:
    assert (ROOT / "examples" / name).is_file()


def test_human_approval_can_reject() -> None:
    result = run_example(ROOT / "examples" / "human_approval.py", "--decision", "reject")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = output_lines(result)
    assert_lines_in_order(
        lines,
        [
            "Status: waiting",
            "Decision: A-2 rejected by alice",
            "Final status: completed",
            "A-1 (250, approved by auto)",
            "A-3 (90, approved by auto)",
            "Total: 340",
            "Rejected: ['A-2']",
        ],
    )
    assert not any(line.startswith("A-2 (") for line in lines)

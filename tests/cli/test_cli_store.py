"""The command line with a durable store: ``run --store``, ``jobs list|show|resume|
cancel`` and ``graph --job``, through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("typer", reason="the command line needs the cli extra (typer, rich)")

from typer.testing import CliRunner  # noqa: E402

import routilux  # noqa: E402
from routilux.cli import app  # noqa: E402
from routilux.store import open_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ORDERS = ROOT / "examples" / "flows" / "orders.yaml"

try:
    runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
except TypeError:  # click >= 8.2 keeps them apart already
    runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


#: Set while a run must be "interrupted" (the handler raises KeyboardInterrupt).
INTERRUPT = {"on": False}


@routilux.register_serializable
class CliStoreStop(routilux.Routine):
    """``input``: keeps what it gets in shared data; raises KeyboardInterrupt (as if the
    user pressed Ctrl-C) while ``INTERRUPT["on"]``."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", self.take)

    def take(self, data: Any = None, **_: Any) -> None:
        if INTERRUPT["on"]:
            raise KeyboardInterrupt
        js = self.context.job_state
        with js.lock:
            js.shared_data["got"] = [*js.shared_data.get("got", []), data]


STOPPING = (
    "flow_id: cli-store\nentry: split\nroutines:\n  split: {class: Splitter}\n"
    "  stop: {class: CliStoreStop}\nconnections:\n  - {from: split.output, to: stop.input}\n"
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


def test_run_with_a_store_journals_the_job_and_jobs_list_and_show_read_it(url: str) -> None:
    result = invoke("run", str(ORDERS), "-p", "n=30", "--store", url, "--json")
    assert result.exit_code == 0, result.stderr
    job_id = json.loads(result.stdout)["job_id"]
    listed = invoke("jobs", "list", "--store", url, "--json")
    assert listed.exit_code == 0
    (row,) = json.loads(listed.stdout)
    assert (row["job_id"], row["flow_id"], row["status"]) == (job_id, "orders", "completed")
    table = invoke("jobs", "list", "--store", url, "--flow", "orders", "--status", "completed")
    assert table.exit_code == 0 and job_id[:8] in table.stdout
    assert "no jobs" in invoke("jobs", "list", "--store", url, "--flow", "other").stderr
    shown = invoke("jobs", "show", job_id, "--store", url, "--json")
    assert shown.exit_code == 0
    data = json.loads(shown.stdout)
    assert data["status"] == "completed" and data["pending_tasks"] == []
    assert data["history_records"] == len(open_store(url).load_job(job_id).execution_history)
    text = invoke("jobs", "show", job_id, "--store", url)
    assert text.exit_code == 0 and "completed" in text.stdout
    graph = invoke("graph", str(ORDERS), "--job", job_id, "--store", url)
    assert graph.exit_code == 0 and "flowchart" in graph.stdout


def test_ctrl_c_pauses_a_journaled_job_and_jobs_resume_finishes_it(
    url: str, tmp_path: Path
) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(STOPPING, encoding="utf-8")
    INTERRUPT["on"] = True
    try:
        result = invoke("run", str(path), "-p", "data=[1, 2, 3]", "--store", url)
    finally:
        INTERRUPT["on"] = False
    assert result.exit_code == 130
    assert "routilux jobs resume" in result.stderr
    (summary,) = open_store(url).list_jobs()
    assert summary.status == "paused"
    assert summary.job_id in result.stderr
    resumed = invoke("jobs", "resume", summary.job_id, str(path), "--store", url)
    assert resumed.exit_code == 0, resumed.stderr
    assert "completed" in resumed.stdout
    job = open_store(url).load_job(summary.job_id)
    assert job.status == "completed"
    assert job.shared_data["got"] == [1, 2, 3]


def test_jobs_cancel_ends_a_paused_job_and_refuses_a_finished_one(url: str, tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(STOPPING, encoding="utf-8")
    INTERRUPT["on"] = True
    try:
        assert invoke("run", str(path), "-p", "data=[1]", "--store", url).exit_code == 130
    finally:
        INTERRUPT["on"] = False
    (summary,) = open_store(url).list_jobs()
    assert summary.owner is None  # a paused job is released: anyone may take it
    done = invoke("jobs", "cancel", summary.job_id, "--store", url, "--reason", "not needed")
    assert done.exit_code == 0, done.stderr
    stored = open_store(url).load(summary.job_id)
    assert (stored.status, stored.tasks) == ("cancelled", [])
    job = open_store(url).load_job(summary.job_id)
    assert job.routine_states["_cancellation"] == {"reason": "not needed"}
    again = invoke("jobs", "cancel", summary.job_id, "--store", url)
    assert again.exit_code == 1 and "cancelled" in again.stderr


def test_jobs_commands_name_a_missing_job_and_a_bad_store(url: str) -> None:
    result = invoke("jobs", "show", "nope", "--store", url)
    assert result.exit_code == 1 and "nope" in result.stderr
    bad = invoke("jobs", "list", "--store", "nosuch://here")
    assert bad.exit_code == 2 and "nosuch://here" in bad.stderr

"""The web UI's live streams against a real server (uvicorn on a socket of
127.0.0.1): Last-Event-ID replay of a job's deltas and of the jobs feed, a reset when
the deltas are gone, jobs of another process showing up with their status changes
streamed, and pause/cancel of a job another live process runs (a control request its
heartbeat takes). Every wait is for an event or a line of the other process's output,
with a bound."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from ui_support import WAIT, EventReader, make_client, needs_ui, origin

needs_ui()

import httpx  # noqa: E402
import ui_flows  # noqa: E402

from routilux.engine.runner import Durable  # noqa: E402
from routilux.store import open_store  # noqa: E402

HERE = Path(__file__).resolve().parent


class Gate:
    """Steps a ``steps`` job of this process: each work delivery announces itself
    (``entered``) and waits for one permit."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.permits = threading.Semaphore(0)

    def __call__(self, i: int) -> None:
        self.entered.release()
        assert self.permits.acquire(timeout=WAIT)

    def step(self) -> None:
        """Let the running delivery finish and wait until the next one has begun (so
        the finished one's record is put)."""
        self.permits.release()
        assert self.entered.acquire(timeout=WAIT)


@pytest.fixture
def gate() -> Any:
    g = Gate()
    ui_flows.GATE = g
    yield g
    ui_flows.GATE = lambda i: None
    for _ in range(20):
        g.permits.release()


def flush(store: Any, job_id: str) -> None:
    journal = Durable.of(store).jobs.get(job_id)
    if journal is not None:
        journal.flush()
    else:  # finished: its journal is gone, its last records may still be in a writer
        Durable.of(store).flush()


def test_a_job_stream_replays_after_last_event_id(
    store_url: str, live_server: Any, gate: Gate
) -> None:
    store = open_store(store_url)
    flow = ui_flows.steps_flow()
    live = live_server(store, [flow])
    job = flow.execute("batch", entry_params={"n": 6}, wait=False)
    assert gate.entered.acquire(timeout=WAIT)  # item 0 is being worked on
    flush(store, job.job_id)
    url = f"{live.base}/api/jobs/{job.job_id}/events"
    first = EventReader(url)
    try:
        reset = first.next()
        assert reset.name == "reset"
        assert reset.data["status"] == "running"
        start_seq = int(reset.id)
        assert start_seq == reset.data["commit_seq"]
        gate.step()  # item 0 done, item 1 begins
        gate.step()  # item 1 done
        flush(store, job.job_id)
        seen = first.until(lambda e: e.name == "change" and int(e.id) >= start_seq + 2)
        changes = [e for e in seen if e.name == "change"]
        assert [int(e.id) for e in changes] == [start_seq + 1, start_seq + 2]
        assert [e.data["delivery"]["routine_id"] for e in changes] == ["work", "work"]
        last = changes[-1].id
    finally:
        first.close()
    gate.step()  # items 2 and 3 finish while nobody listens
    gate.step()
    flush(store, job.job_id)
    assert store.load(job.job_id).commit_seq == start_seq + 4
    second = EventReader(url, headers={"Last-Event-ID": last})
    try:
        replay = second.until(lambda e: e.name == "status")
        changes = [e for e in replay if e.name == "change"]
        assert [int(e.id) for e in changes] == [
            start_seq + 3,
            start_seq + 4,
        ]  # none lost or repeated
        assert [e.data["delivery"]["routine_id"] for e in changes] == ["work", "work"]
        assert "reset" not in [e.name for e in replay]
        # And live again: the next delivery arrives with the next id.
        gate.step()
        flush(store, job.job_id)
        live_change = second.next("change")
        assert int(live_change.id) == start_seq + 5
    finally:
        second.close()
    for _ in range(3):
        gate.permits.release()
    assert job.wait_for_completion(WAIT)
    flush(store, job.job_id)
    # Finished: the deltas are folded into the final snapshot; an old id gets a reset.
    third = EventReader(url, headers={"Last-Event-ID": last})
    try:
        event = third.next()
        assert event.name == "reset" and event.data["status"] == "completed"
        assert event.data["routines"][1]["deliveries"] == 6
    finally:
        third.close()


def test_the_jobs_feed_streams_new_jobs_and_replays(any_store_url: str, live_server: Any) -> None:
    store = open_store(any_store_url)
    flow = ui_flows.review_flow()
    live = live_server(store, [flow])
    feed = EventReader(f"{live.base}/api/events")
    try:
        reset = feed.next()
        assert reset.name == "reset"
        client = httpx.Client(base_url=live.base, headers=origin(live.base), timeout=WAIT)
        made = client.post("/api/flows/review/jobs", json={"entry": "reviewer"})
        assert made.status_code == 201
        job_id = made.json()["job_id"]
        events = feed.until(
            lambda e: e.data.get("job_id") == job_id and e.data["status"] == "waiting"
        )
        mine = [e for e in events if e.data.get("job_id") == job_id]
        assert mine[0].name == "created"
        last = mine[0].id
        answered = client.post(
            f"/api/jobs/{job_id}/input",
            json={
                "routine_id": "reviewer",
                "slot": "decision",
                "data": {"approved": False, "count": 0},
            },
        )
        assert answered.status_code == 200, answered.text
        done = feed.until(
            lambda e: e.data.get("job_id") == job_id and e.data["status"] == "completed"
        )
        assert done[-1].name == "status"
        ids = [int(e.id) for e in events + done if e.id]
        assert ids == sorted(set(ids))
    finally:
        feed.close()
    again = EventReader(f"{live.base}/api/events", headers={"Last-Event-ID": last})
    try:
        replay = again.until(lambda e: e.data.get("status") == "completed")
        assert "reset" not in [e.name for e in replay]
        assert [int(e.id) for e in replay] == [i for i in ids if i > int(last)]
    finally:
        again.close()
    # An id this server never gave (an earlier server's) gets a reset.
    stale = EventReader(f"{live.base}/api/events", headers={"Last-Event-ID": "5"})
    try:
        assert stale.next().name == "reset"
    finally:
        stale.close()


def test_streams_end_when_the_server_shuts_down(store_url: str, live_server: Any) -> None:
    live = live_server(open_store(store_url))
    feed = EventReader(f"{live.base}/api/events")
    assert feed.next().name == "reset"
    live.server.should_exit = True
    assert feed.ended()
    feed.close()


class OtherProcess:
    """``ui_flows.py`` run as a script: a ``steps`` job in another process. Its output
    lines are read on a thread, so a test waits for each with a bound."""

    def __init__(self, url: str, n: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "ui_flows.py"), url, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            self.lines.put(text)
        self.lines.put("")  # the end

    def line(self, prefix: str) -> str:
        """The rest of the next output line that starts with ``prefix``."""
        while True:
            try:
                text = self.lines.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"no line {prefix!r} in time; saw {self.seen}") from None
            assert text, f"the other process ended; its output: {self.seen}"
            self.seen.append(text.rstrip())
            if text.startswith(prefix):
                return text[len(prefix) :].strip()

    def release(self, count: int = 1) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n" * count)
        self.proc.stdin.flush()

    def wait(self) -> int:
        return self.proc.wait(timeout=WAIT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_pause_of_a_job_another_process_runs(store_url: str, live_server: Any) -> None:
    store = open_store(store_url)
    flow = ui_flows.steps_flow()
    live = live_server(store, [flow])
    feed = EventReader(f"{live.base}/api/events")
    other = OtherProcess(store_url, 3)
    try:
        assert feed.next().name == "reset"
        job_id = other.line("STARTED ")
        # The job of the other process shows up in the feed.
        feed.until(lambda e: e.data.get("job_id") == job_id and e.data["status"] == "running")
        client = make_client(live.app)
        asked = client.post(f"/api/jobs/{job_id}/pause", headers=origin())
        assert asked.status_code == 202, asked.text
        assert asked.json()["requested"] == "pause"
        # Its heartbeat takes the request and pauses the job; the running delivery
        # finishes when we let it.
        assert other.line("STATUS ") == "paused"
        other.release()
        assert other.line("EXIT ") == "paused"
        assert other.wait() == 0
        streamed = feed.until(
            lambda e: e.data.get("job_id") == job_id and e.data["status"] == "paused"
        )
        assert streamed[-1].name == "status"
        assert store.load(job_id).owner is None  # released: this process may take it
        # Resumed here (the flow is registered): the rest runs in this process.
        resumed = client.post(f"/api/jobs/{job_id}/resume", headers=origin())
        assert resumed.status_code == 200, resumed.text
        feed.until(lambda e: e.data.get("job_id") == job_id and e.data["status"] == "completed")
        view = client.get(f"/api/jobs/{job_id}").json()
        assert view["shared_data"] == {"item0": 0, "item1": 1, "item2": 2}
    finally:
        other.kill()
        feed.close()


def test_cancel_of_a_job_another_process_runs(store_url: str, live_server: Any) -> None:
    store = open_store(store_url)
    live = live_server(store, [])  # no flow needed to cancel
    other = OtherProcess(store_url, 3)
    try:
        job_id = other.line("STARTED ")
        stream = EventReader(f"{live.base}/api/jobs/{job_id}/events")
        assert stream.next().name == "reset"
        client = make_client(live.app)
        asked = client.post(f"/api/jobs/{job_id}/cancel", headers=origin())
        assert asked.status_code == 202, asked.text
        assert other.line("STATUS ") == "cancelled"
        other.release()
        assert other.line("EXIT ") == "cancelled"
        assert other.wait() == 0
        events = stream.until(
            lambda e: (
                (e.name == "change" and e.data["status"] == "cancelled")
                or (e.name in ("status", "reset") and e.data["status"] == "cancelled")
            )
        )
        assert events
        stream.close()
        assert store.load(job_id).status == "cancelled"
        assert client.post(f"/api/jobs/{job_id}/cancel", headers=origin()).status_code == 409
    finally:
        other.kill()


def test_a_job_of_a_dead_process_is_cancelled_here(store_url: str, live_server: Any) -> None:
    store = open_store(store_url)
    other = OtherProcess(store_url, 2)
    try:
        job_id = other.line("STARTED ")
        other.kill()  # dies mid-delivery: the job stays "running", its owner dead
        live = live_server(store, [])
        client = make_client(live.app)
        cancelled = client.post(f"/api/jobs/{job_id}/cancel", headers=origin())
        assert cancelled.status_code == 200, cancelled.text
        assert store.load(job_id).status == "cancelled"
    finally:
        other.kill()


def test_pausing_a_job_of_a_dead_process_is_refused(store_url: str, live_server: Any) -> None:
    """Nobody would take a pause request for a job whose process died: the API says
    so (409) instead of accepting a request that never acts."""
    store = open_store(store_url)
    other = OtherProcess(store_url, 2)
    try:
        job_id = other.line("STARTED ")
        other.kill()  # dies mid-delivery: the job stays "running", its owner dead
        live = live_server(store, [ui_flows.steps_flow()])
        client = make_client(live.app)
        refused = client.post(f"/api/jobs/{job_id}/pause", headers=origin())
        assert refused.status_code == 409, refused.text
        assert "gone" in refused.json()["error"]
        job = store.load(job_id)
        assert job.status == "running"
        assert job.owner is not None
        assert store.take_control_requests(job.owner) == []  # no request was left
    finally:
        other.kill()

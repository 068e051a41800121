"""The web UI in a real browser: headless Chromium (Debian's) driven by Playwright.

The UI server runs for real -- uvicorn in a thread, on a socket of 127.0.0.1 the test
binds and listens on first, so the browser's first request waits in the backlog
rather than racing the start -- over a temporary SQLite store, with the flows below
registered. Jobs are driven step by step, never by time: a ``Work`` delivery blocks on
a semaphore the test releases one permit at a time, and the job of another process
blocks on a line of its stdin. Every wait on the page is Playwright's auto-waiting
``expect``, which retries until the page shows what is expected.

The job page's screenshot is kept in ``build/test-artifacts/ui-job-page.png``; with
``ROUTILUX_UI_PICTURE=PATH`` (``make docs-ui-picture``) it is written there too.

Run as a script (``python test_browser.py STORE_URL``) this module is the other
process of the jobs-page test: it runs one ``relay`` job on the store, prints its id,
and finishes it when a line arrives on its stdin.
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from routilux import Flow, Routine

if __name__ != "__main__":
    from services import chromium, unavailable  # noqa: F401 - chromium: the browser fixture

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "build" / "test-artifacts"
SCREENSHOT = "ui-job-page.png"
#: Playwright's auto-waiting bound: generous, the machine may be loaded; a test
#: that passes never waits for it.
EXPECT_TIMEOUT_MS = 30_000

# -- the flows ------------------------------------------------------------------------

#: Gates of the ``Work`` deliveries, by name: each release lets one delivery finish.
GATES: dict[str, threading.Semaphore] = {}


class Batch(Routine):
    """Entry: ``trigger(n, gate)`` emits ``n`` items, each to be worked on."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("item", ["i", "gate"])

    def start(self, n: int = 3, gate: str = "", **_: Any) -> None:
        self.context.job_state.update_shared_data("items", n)
        for i in range(n):
            self.emit("item", i=i, gate=gate)


class Work(Routine):
    """One item's work; with a gate, it waits until the test releases one permit."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("item", handler=self.work)
        self.define_event("done", ["i"])

    def work(self, i: int, gate: str = "", **_: Any) -> None:
        if gate and not GATES[gate].acquire(timeout=EXPECT_TIMEOUT_MS / 1000 * 4):
            raise TimeoutError(f"gate {gate!r} was never released for item {i}")
        self.emit("done", i=i)


class Approve(Routine):
    """Counts the items done; when all are, asks a person to approve the batch."""

    SCHEMA = {"approved": bool, "reviewer": str, "score": int, "tags": (list, [])}

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("done", handler=self.count)
        self.define_slot("decision", handler=self.decide)

    def count(self, i: int, **_: Any) -> None:
        job = self.context.job_state
        with job.lock:
            done = job.shared_data.get("done", 0) + 1
            job.shared_data["done"] = done
        if done == job.shared_data["items"]:
            self.request_input("decision", prompt="Approve the batch?", schema=self.SCHEMA)

    def decide(self, approved: bool, reviewer: str, score: int, tags: list[str]) -> None:
        verdict = "approved" if approved else "rejected"
        self.context.job_state.update_shared_data("verdict", f"{verdict} by {reviewer}")


def batch_flow(store: Any) -> Flow:
    flow = Flow(flow_id="batch", store=store)
    flow.add_routine(Batch(), "batch")
    flow.add_routine(Work(), "work")
    flow.add_routine(Approve(), "approve")
    flow.connect("batch", "item", "work", "item")
    flow.connect("work", "done", "approve", "done")
    return flow


class Relay(Routine):
    """Entry of the other process's job: waits for one line of stdin, then ends."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)

    def start(self, **_: Any) -> None:
        line = sys.stdin.readline()
        self.context.job_state.update_shared_data("line", line.strip())


def relay_flow(store: Any) -> Flow:
    flow = Flow(flow_id="relay", store=store)
    flow.add_routine(Relay(), "relay")
    return flow


def run_relay(store_url: str) -> None:
    """The other process: one relay job, its id on stdout, its end on a stdin line."""
    flow = relay_flow(store_url)
    job = flow.execute("relay", wait=False)
    print(job.job_id, flush=True)
    job.wait_for_completion()
    flow.shutdown()
    print(job.status, flush=True)


# -- the server -----------------------------------------------------------------------


class Server:
    """The UI app under uvicorn in a thread, on a socket already listening."""

    def __init__(self, store_url: str, flows: list[Flow]) -> None:
        from routilux.ui import make_server

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        # Listening before uvicorn runs: a request sent before it serves waits in the
        # backlog instead of being refused.
        self.sock.listen(64)
        port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{port}"
        self.server = make_server(store_url, flows, port=port)
        self.server.config.timeout_graceful_shutdown = 10
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.sock.close()
        assert not self.thread.is_alive(), "the UI server did not stop"


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The UI server over a fresh SQLite store, the batch and relay flows registered."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        unavailable(f"the web UI needs {exc.name} (pip install 'routilux[ui]')")
    store_url = f"sqlite:///{tmp_path_factory.mktemp('ui') / 'jobs.db'}"
    flows = [batch_flow(store_url), relay_flow(store_url)]
    server = Server(store_url, flows)
    server.flows = {flow.flow_id: flow for flow in flows}
    server.store_url = store_url
    server.start()
    try:
        yield server
    finally:
        server.stop()
        # A test that failed half-way leaves deliveries waiting at a gate: open them
        # all, so the flows' shutdown does not wait for them.
        for permits in GATES.values():
            permits.release(100)
        for flow in flows:
            flow.shutdown()


@pytest.fixture()
def page(chromium: Any, ui: Any) -> Iterator[Any]:
    """A fresh browser page; every URL it requests is recorded in ``page.requested``."""
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.requested = requested
    try:
        yield page
    finally:
        # Closing the pages ends their event streams before the server stops.
        context.close()


def lines_of(stream: Any) -> queue.Queue[str]:
    """The lines of ``stream``, read on a thread of their own ("" at its end)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line.strip())
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    return lines


def next_line(lines: queue.Queue[str], what: str) -> str:
    try:
        line = lines.get(timeout=EXPECT_TIMEOUT_MS / 1000)
    except queue.Empty:
        raise AssertionError(f"the other process printed no line ({what} expected)") from None
    assert line, f"the other process ended without printing {what}"
    return line


def gate(name: str) -> threading.Semaphore:
    GATES[name] = threading.Semaphore(0)
    return GATES[name]


def expect(*args: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(*args)


# -- the tests ------------------------------------------------------------------------


def test_the_jobs_page_shows_another_process_s_job_and_its_status_live(page, ui):
    page.goto(ui.url + "/")
    expect(page.locator("table#jobs")).to_be_visible()
    # Gone if the page reloads: the row must appear and change in this same page.
    page.evaluate("window.__not_reloaded = true")
    other = subprocess.Popen(
        [sys.executable, __file__, ui.store_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    try:
        assert other.stdout is not None and other.stdin is not None
        lines = lines_of(other.stdout)
        job_id = next_line(lines, "the job id")
        row = page.locator(f'table#jobs tr[data-job-id="{job_id}"]')
        expect(row.locator("td.status")).to_have_text("running")
        other.stdin.write("go\n")
        other.stdin.flush()
        expect(row.locator("td.status")).to_have_text("completed")
        assert page.evaluate("window.__not_reloaded") is True
        assert next_line(lines, "the final status") == "completed"
        assert other.wait(timeout=60) == 0
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


def test_the_filters_show_only_the_jobs_of_a_flow_and_status(page, ui):
    done = ui.flows["batch"].execute("batch", {"n": 1})
    assert done.status == "waiting"
    page.goto(ui.url + "/")
    row = page.locator(f'tr[data-job-id="{done.job_id}"]')
    expect(row).to_be_visible()
    page.locator("#filter-flow").fill("relay")
    expect(row).to_have_count(0)
    page.locator("#filter-flow").fill("batch")
    page.locator("#filter-status").select_option("waiting")
    expect(row.locator("td.status")).to_have_text("waiting")
    page.locator("#filter-status").select_option("completed")
    expect(row).to_have_count(0)


def test_a_running_job_s_node_counts_change_live(page, ui):
    permits = gate("counts")
    job = ui.flows["batch"].execute("batch", {"n": 3, "gate": "counts"}, wait=False)
    page.goto(f"{ui.url}/jobs/{job.job_id}")
    expect(page.locator("#job-status")).to_have_text("running")
    work = page.locator('table#routines tr[data-routine-id="work"] td.deliveries')
    approve = page.locator('table#routines tr[data-routine-id="approve"] td.deliveries')
    # Deliveries made to a routine: the three items are sent to work at once; each
    # one work finishes sends one to approve.
    expect(work).to_have_text("3")
    expect(approve).to_have_text("0")
    for done in (1, 2, 3):
        permits.release()
        expect(approve).to_have_text(str(done))
    # All done: the job waits for the approval, whose form the page shows.
    expect(page.locator("#job-status")).to_have_text("waiting")
    expect(
        page.locator('form[data-input-slot="decision"][data-routine-id="approve"]')
    ).to_be_visible()
    expect(page.locator("#diagram svg")).to_be_visible()
    save_screenshot(page)


def test_an_answer_in_the_form_resumes_the_job_to_completed(page, ui):
    flow = ui.flows["batch"]
    job = flow.execute("batch", {"n": 2})
    assert job.status == "waiting"
    page.goto(f"{ui.url}/jobs/{job.job_id}")
    form = page.locator('form[data-input-slot="decision"][data-routine-id="approve"]')
    expect(form).to_be_visible()
    expect(form.locator('input[name="approved"]')).to_have_attribute("type", "checkbox")
    expect(form.locator('input[name="score"]')).to_have_attribute("type", "number")
    form.locator('input[name="approved"]').check()
    form.locator('input[name="reviewer"]').fill("Ada")
    form.locator('input[name="score"]').fill("5")
    form.locator("button").click()
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(form).to_have_count(0)
    expect(page.locator("#shared-data")).to_contain_text("approved by Ada")


def test_an_invalid_answer_shows_the_error_and_the_job_keeps_waiting(page, ui):
    flow = ui.flows["batch"]
    job = flow.execute("batch", {"n": 1})
    assert job.status == "waiting"
    page.goto(f"{ui.url}/jobs/{job.job_id}")
    form = page.locator('form[data-input-slot="decision"][data-routine-id="approve"]')
    expect(form).to_be_visible()
    form.locator('input[name="reviewer"]').fill("Ada")
    form.locator('input[name="score"]').fill("2")
    # Valid JSON, so the page sends it; the schema wants a list: the server refuses.
    form.locator('input[name="tags"]').fill('{"urgent": true}')
    form.locator("button").click()
    alert = form.locator('[role="alert"]')
    expect(alert).to_contain_text("tags")
    expect(alert).to_contain_text("list")
    expect(page.locator("#job-status")).to_have_text("waiting")
    assert job.status == "waiting" and len(job.waiting_for) == 1
    # The request is still open: a good answer is taken.
    form.locator('input[name="tags"]').fill('["urgent"]')
    form.locator("button").click()
    expect(page.locator("#job-status")).to_have_text("completed")
    assert job.shared_data["verdict"] == "rejected by Ada"


def test_the_pages_load_nothing_from_outside_the_server_and_draw_the_diagram(page, ui):
    job = ui.flows["batch"].execute("batch", {"n": 1})
    page.goto(ui.url + "/")
    expect(page.locator(f'tr[data-job-id="{job.job_id}"] td.status')).to_have_text("waiting")
    page.goto(f"{ui.url}/jobs/{job.job_id}")
    expect(page.locator("#diagram svg")).to_be_visible()
    expect(page.locator("#diagram svg")).to_contain_text("approve")
    page.goto(ui.url + "/flows")
    expect(page.locator('[data-flow-id="relay"] svg')).to_be_visible()
    assert f"{ui.url}/static/vendor/mermaid.min.js" in page.requested
    outside = [url for url in page.requested if not url.startswith(ui.url + "/")]
    assert outside == []


def test_the_flows_page_starts_a_job_with_parameters(page, ui):
    page.goto(ui.url + "/flows")
    expect(page.locator('[data-flow-id="batch"] svg')).to_be_visible()
    form = page.locator("form#start-job")
    form.locator("select[name=flow]").select_option("batch")
    form.locator("select[name=entry]").select_option("batch")
    form.locator("textarea[name=params]").fill('{"n": 2}')
    form.locator("button").click()
    # The new job's page: both items worked on, the approval asked for.
    expect(page).to_have_url(re.compile(re.escape(ui.url) + "/jobs/[^/]+$"))
    expect(page.locator("#job-status")).to_have_text("waiting")
    expect(page.locator('tr[data-routine-id="approve"] td.deliveries')).to_have_text("2")
    job_id = page.url.rsplit("/", 1)[1]
    stored = ui.flows["batch"].store.load_job(job_id)
    assert (stored.flow_id, stored.status) == ("batch", "waiting")
    assert stored.waiting_for[0]["routine_id"] == "approve"


def save_screenshot(page: Any) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / SCREENSHOT), full_page=True)
    extra = os.environ.get("ROUTILUX_UI_PICTURE")
    if extra:
        page.screenshot(path=extra, full_page=True)


if __name__ == "__main__":
    run_relay(sys.argv[1])
    sys.exit(0)

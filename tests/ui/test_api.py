"""The web UI's JSON API through Starlette's test client: every endpoint, auth on and
off, same-origin and host checks, bad input (unknown job, input against the schema,
oversized bodies, bad query parameters) and the OpenAPI document."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from ui_support import WAIT, make_client, needs_ui, origin

needs_ui()

import ui_flows  # noqa: E402

from routilux import JobHooks  # noqa: E402
from routilux.store import open_store  # noqa: E402
from routilux.ui import UIConfigError, check_bind, create_app, make_server  # noqa: E402

H = origin()


@pytest.fixture
def setup(store_url: str) -> Any:
    yield from _setup(store_url)


@pytest.fixture
def any_setup(any_store_url: str) -> Any:
    """``setup`` on SQLite and on PostgreSQL."""
    yield from _setup(any_store_url)


def _setup(store_url: str) -> Any:
    store = open_store(store_url)
    flows = [ui_flows.review_flow(), ui_flows.steps_flow(), ui_flows.failing_flow()]
    app = create_app(store, flows)
    yield make_client(app), store, {flow.flow_id: flow for flow in flows}
    app.state.watcher.close()
    for flow in flows:
        flow.shutdown()
    store.close()


def start(client: Any, flow_id: str, entry: str, params: Any = None) -> str:
    response = client.post(
        f"/api/flows/{flow_id}/jobs", json={"entry": entry, "params": params or {}}, headers=H
    )
    assert response.status_code == 201, response.text
    return str(response.json()["job_id"])


def settled(flows: dict[str, Any], flow_id: str, job_id: str) -> None:
    """Wait until the job started by the UI has no work left (its JobState says so)."""
    from routilux.engine.runner import Durable

    journal = Durable.of(flows[flow_id].store).jobs.get(job_id)
    if journal is not None:
        assert journal.job_state.wait_for_completion(WAIT)
        journal.flush()


# ---------------------------------------------------------------- the package


def test_importing_routilux_does_not_import_starlette() -> None:
    code = "import sys, routilux, routilux.store, routilux.cli; print('starlette' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_the_ui_without_the_extra_says_how_to_install_it() -> None:
    code = "import sys; sys.modules['starlette'] = None; import routilux.ui"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert "pip install 'routilux[ui]'" in done.stderr


# ---------------------------------------------------------------- jobs and flows


def test_flows_endpoints(setup: Any) -> None:
    client, _, _ = setup
    flows = client.get("/api/flows").json()["flows"]
    assert {flow["flow_id"] for flow in flows} == {"review", "steps", "failing"}
    detail = client.get("/api/flows/steps").json()
    assert detail["entries"] == ["batch"]
    assert detail["entry_params"]["batch"] == [{"name": "n", "required": False, "default": 3}]
    assert detail["mermaid"].startswith("flowchart")
    assert detail["connections"] == [
        {"source": "batch", "event": "item", "target": "work", "slot": "input"}
    ]
    assert client.get("/api/flows/nope").status_code == 404


def test_a_job_is_listed_viewed_and_answered(any_setup: Any) -> None:
    client, _, flows = any_setup
    job_id = start(client, "review", "reviewer", {"draft": "hello"})
    settled(flows, "review", job_id)
    listed = client.get("/api/jobs").json()["jobs"]
    assert [(j["job_id"], j["status"], j["waiting"]) for j in listed] == [(job_id, "waiting", 1)]
    view = client.get(f"/api/jobs/{job_id}").json()
    assert view["status"] == "waiting"
    (request,) = view["waiting_for"]
    assert request["schema"] == {"approved": "bool", "count": "int", "note": "str"}
    assert request["defaults"] == {"note": ""}
    assert view["shared_data"] == {"draft": "hello"}
    assert view["routines"][0]["routine_id"] == "reviewer"
    assert view["routines"][0]["deliveries"] == 1
    assert "reviewer" in view["mermaid"]
    # Invalid input: 422 naming the field; the job keeps waiting.
    bad = client.post(
        f"/api/jobs/{job_id}/input",
        json={"routine_id": "reviewer", "slot": "decision", "data": {"approved": "yes"}},
        headers=H,
    )
    assert bad.status_code == 422 and bad.json()["field"] == "approved"
    missing = client.post(
        f"/api/jobs/{job_id}/input",
        json={"routine_id": "reviewer", "slot": "decision", "data": {"approved": True}},
        headers=H,
    )
    assert missing.status_code == 422 and missing.json()["field"] == "count"
    extra = client.post(
        f"/api/jobs/{job_id}/input",
        json={
            "routine_id": "reviewer",
            "slot": "decision",
            "data": {"approved": True, "count": 1, "evil": 1},
        },
        headers=H,
    )
    assert extra.status_code == 422 and extra.json()["field"] == "evil"
    wrong_slot = client.post(
        f"/api/jobs/{job_id}/input",
        json={"routine_id": "reviewer", "slot": "nope", "data": {}},
        headers=H,
    )
    assert wrong_slot.status_code == 422
    assert client.get(f"/api/jobs/{job_id}").json()["status"] == "waiting"
    good = client.post(
        f"/api/jobs/{job_id}/input",
        json={"routine_id": "reviewer", "slot": "decision", "data": {"approved": True, "count": 2}},
        headers=H,
    )
    assert good.status_code == 200, good.text
    settled(flows, "review", job_id)
    view = client.get(f"/api/jobs/{job_id}").json()
    assert view["status"] == "completed"
    assert view["outputs"][0]["data"] == {"approved": True}
    again = client.post(
        f"/api/jobs/{job_id}/input",
        json={"routine_id": "reviewer", "slot": "decision", "data": {"approved": True, "count": 2}},
        headers=H,
    )
    assert again.status_code == 409


def test_errors_carry_their_tracebacks(setup: Any) -> None:
    client, _, flows = setup
    job_id = start(client, "failing", "bad")
    settled(flows, "failing", job_id)
    view = client.get(f"/api/jobs/{job_id}").json()
    assert view["status"] == "failed"
    (error,) = view["errors"]
    assert error["routine_id"] == "bad" and error["error_type"] == "ValueError"
    assert "boom from the handler" in error["traceback"]
    assert "Traceback" in error["traceback"]


def test_pause_resume_cancel_of_a_job_of_this_process(setup: Any) -> None:
    client, _, flows = setup
    entered = threading.Semaphore(0)
    gate = threading.Semaphore(0)

    def step(i: int) -> None:
        entered.release()
        assert gate.acquire(timeout=WAIT)

    paused = threading.Event()

    class Paused(JobHooks):
        def on_status(self, job_state: Any, old: str, new: str) -> None:
            if new == "paused":
                paused.set()

    flows["steps"].add_hooks(Paused())
    ui_flows.GATE = step
    try:
        job_id = start(client, "steps", "batch", {"n": 3})
        assert entered.acquire(timeout=WAIT)  # item 0 is being worked on
        result: dict[str, Any] = {}

        def pause() -> None:
            result["pause"] = client.post(f"/api/jobs/{job_id}/pause", headers=H)

        pausing = threading.Thread(target=pause)
        pausing.start()
        # The pause waits for the running delivery: once the job is paused, let it finish.
        assert paused.wait(WAIT)
        gate.release()
        pausing.join(WAIT)
        assert result["pause"].status_code == 200, result["pause"].text
        assert result["pause"].json()["status"] == "paused"
        settled(flows, "steps", job_id)
        view = client.get(f"/api/jobs/{job_id}").json()
        assert view["status"] == "paused"
        assert client.post(f"/api/jobs/{job_id}/pause", headers=H).status_code == 409
        resumed = client.post(f"/api/jobs/{job_id}/resume", headers=H)
        assert resumed.status_code == 200, resumed.text
        assert entered.acquire(timeout=WAIT)  # item 1
        cancelled = client.post(f"/api/jobs/{job_id}/cancel", headers=H)
        assert cancelled.status_code == 200, cancelled.text
        gate.release()
        settled(flows, "steps", job_id)
        assert client.get(f"/api/jobs/{job_id}").json()["status"] == "cancelled"
        assert client.post(f"/api/jobs/{job_id}/cancel", headers=H).status_code == 409
        assert client.post(f"/api/jobs/{job_id}/resume", headers=H).status_code == 409
    finally:
        ui_flows.GATE = lambda i: None
        for _ in range(5):
            gate.release()


def test_unknown_jobs_are_404(setup: Any) -> None:
    client, _, _ = setup
    assert client.get("/api/jobs/nope").status_code == 404
    assert "nope" in client.get("/api/jobs/nope").json()["error"]
    for action in ("pause", "resume", "cancel"):
        assert client.post(f"/api/jobs/nope/{action}", headers=H).status_code == 404
    body = {"routine_id": "r", "slot": "s", "data": {}}
    assert client.post("/api/jobs/nope/input", json=body, headers=H).status_code == 404
    assert client.get("/api/jobs/nope/events").status_code == 404


def test_starting_a_job_checks_the_entry_and_params(setup: Any) -> None:
    client, _, _ = setup

    def post(body: Any, flow: str = "steps") -> Any:
        return client.post(f"/api/flows/{flow}/jobs", json=body, headers=H)

    assert post({"entry": "batch", "params": {"n": 0}}).status_code == 201
    assert post({"entry": "nope"}).json()["field"] == "entry"
    assert post({"entry": "work"}).status_code == 422  # no trigger slot
    assert post({"entry": "batch", "params": [1]}).json()["field"] == "params"
    assert post({"entry": "batch", "params": {"not a name": 1}}).status_code == 422
    assert post({"entry": "batch", "surprise": 1}).status_code == 400
    assert post([1]).status_code == 400
    assert post({"entry": "batch"}, flow="nope").status_code == 404


def test_bad_bodies(setup: Any) -> None:
    client, _, _ = setup
    url = "/api/flows/steps/jobs"
    bad_json = client.post(url, content=b"{nope", headers={**H, "Content-Type": "application/json"})
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["error"]
    nan = client.post(
        url,
        content=b'{"entry": "batch", "params": {"n": NaN}}',
        headers={**H, "Content-Type": "application/json"},
    )
    assert nan.status_code == 400
    not_json = client.post(url, content=b"entry=batch", headers={**H, "Content-Type": "text/plain"})
    assert not_json.status_code == 400
    big = b'{"entry": "batch", "params": {"x": "' + b"a" * (1024 * 1024) + b'"}}'
    declared = client.post(url, content=big, headers={**H, "Content-Type": "application/json"})
    assert declared.status_code == 413

    def chunks() -> Any:  # no Content-Length: refused while reading
        yield b'{"entry": "batch", "params": {"x": "'
        for _ in range(300):
            yield b"a" * 4096
        yield b'"}}'

    streamed = client.post(url, content=chunks(), headers={**H, "Content-Type": "application/json"})
    assert streamed.status_code == 413


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("status=sleeping", "status"),
        ("since=yesterday", "since"),
        ("since=nan", "since"),
        ("until=-5", "until"),
        ("since=100&until=50", "until"),
        ("colour=red", "colour"),
    ],
)
def test_bad_query_parameters_are_named(setup: Any, query: str, named: str) -> None:
    client, _, _ = setup
    response = client.get(f"/api/jobs?{query}")
    assert response.status_code == 400
    assert named in response.json()["error"]


def test_jobs_are_filtered(any_setup: Any) -> None:
    client, store, flows = any_setup
    first = start(client, "steps", "batch", {"n": 0})
    second = start(client, "review", "reviewer")
    settled(flows, "steps", first)
    settled(flows, "review", second)
    created = {j.job_id: j.created_at for j in store.list_jobs()}

    def ids(query: str) -> list[str]:
        response = client.get(f"/api/jobs?{query}")
        assert response.status_code == 200, response.text
        return [job["job_id"] for job in response.json()["jobs"]]

    assert ids("") == [second, first]
    assert ids("flow_id=steps") == [first]
    assert ids("status=waiting") == [second]
    assert ids("status=waiting,completed") == [second, first]
    assert ids(f"since={created[second]}") == [second]
    assert ids(f"until={created[second]}") == [first]
    assert ids("limit=1") == [second]
    assert ids("limit=1&offset=1") == [first]
    assert ids("since=0&limit=1&offset=1") == [first]


# ---------------------------------------------------------------- security


def test_token_required_on_every_request(store_url: str) -> None:
    app = create_app(store_url, [ui_flows.review_flow()], token="s3cret")
    client = make_client(app, base="http://192.0.2.7:8321")
    try:
        for path in ("/", "/api/jobs", "/api/flows", "/static/app.js", "/api/events"):
            refused = client.get(path)
            assert refused.status_code == 401, path
        assert client.get("/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.get("/api/jobs", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        posted = client.post(
            "/api/flows/review/jobs",
            json={"entry": "reviewer"},
            headers={"Authorization": "Bearer s3cret", "Origin": "http://192.0.2.7:8321"},
        )
        assert posted.status_code == 201
        # A page visited with ?token= sets the cookie and drops the token from the URL.
        visit = client.get("/?token=s3cret", follow_redirects=False)
        assert visit.status_code == 303 and visit.headers["location"] == "/"
        assert "HttpOnly" in visit.headers["set-cookie"]
        assert "SameSite=Strict" in visit.headers["set-cookie"]
        fresh = make_client(app, base="http://192.0.2.7:8321")
        assert fresh.get("/?token=wrong", follow_redirects=False).status_code == 401
        client.cookies.set("routilux_ui_token", "s3cret")
        assert client.get("/api/jobs").status_code == 200
        assert client.get("/").status_code == 200
    finally:
        app.state.watcher.close()


def test_without_a_token_only_loopback_hosts_are_served(store_url: str) -> None:
    app = create_app(store_url)
    try:
        assert make_client(app).get("/api/jobs").status_code == 200
        assert make_client(app, base="http://localhost:8321").get("/").status_code == 200
        rebound = make_client(app, base="http://evil.example:8321").get("/api/jobs")
        assert rebound.status_code == 403
    finally:
        app.state.watcher.close()


def test_state_changing_requests_need_the_same_origin(setup: Any) -> None:
    client, _, flows = setup
    job_id = start(client, "review", "reviewer")
    settled(flows, "review", job_id)
    url = f"/api/jobs/{job_id}/cancel"
    assert client.post(url).status_code == 403  # neither Origin nor Sec-Fetch-Site
    assert client.post(url, headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post(url, headers={"Origin": "http://127.0.0.1:9999"}).status_code == 403
    assert client.post(url, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert client.get(f"/api/jobs/{job_id}").json()["status"] == "waiting"
    done = client.post(url, headers={"Sec-Fetch-Site": "same-origin"})
    assert done.status_code == 200, done.text
    assert client.get(f"/api/jobs/{job_id}").json()["status"] == "cancelled"


def test_a_public_address_needs_a_token(store_url: str) -> None:
    with pytest.raises(UIConfigError, match="token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(UIConfigError, match="token"):
        make_server(store_url, host="192.0.2.7")
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("localhost", None)
    check_bind("0.0.0.0", "s3cret")


def test_security_headers(setup: Any) -> None:
    client, _, _ = setup
    for path in ("/", "/flows", "/api/jobs", "/static/app.js"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
        assert response.headers["x-content-type-options"] == "nosniff"


def test_static_files_are_a_fixed_set(setup: Any) -> None:
    client, _, _ = setup
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").status_code == 200
    for name in ("../app.py", "..%2fapp.py", "app.py", "/etc/passwd", "static/app.js"):
        assert client.get(f"/static/{name}").status_code == 404, name


def test_pages_carry_the_contract_elements(setup: Any) -> None:
    client, _, flows = setup
    jobs = client.get("/").text
    for marker in ('<table id="jobs">', 'id="filter-flow"', 'id="filter-status"'):
        assert marker in jobs
    job_id = start(client, "review", "reviewer")
    settled(flows, "review", job_id)
    page = client.get(f"/jobs/{job_id}").text
    for marker in (
        'id="job-status"',
        'id="pause"',
        'id="resume"',
        'id="cancel"',
        'id="diagram"',
        '<table id="routines">',
        'id="timeline"',
        'id="outputs"',
        'id="errors"',
        'id="shared-data"',
    ):
        assert marker in page, marker
    assert "<script>" not in page and "onclick" not in page
    flows_page = client.get("/flows").text
    assert '<form id="start-job">' in flows_page and 'name="params"' in flows_page
    assert client.get("/flows/steps").status_code == 200
    assert client.get("/flows/nope").status_code == 404
    # The id shown in the page is escaped (job data is untrusted).
    assert "<b>" not in client.get("/jobs/<b>x").text


# ---------------------------------------------------------------- OpenAPI


def test_the_openapi_document_describes_every_route(setup: Any) -> None:
    client, _, _ = setup
    document = client.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.")
    described = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item
    }
    routes = {
        (route.path, method)
        for route in client.app.routes
        for method in route.methods
        if method != "HEAD" and route.path.startswith("/api/")
    }
    assert routes == described


def test_the_cli_refuses_a_public_address_without_a_token(store_url: str) -> None:
    from typer.testing import CliRunner

    from routilux.cli import app

    result = CliRunner().invoke(app, ["ui", "--store", store_url, "--host", "0.0.0.0"], env={})
    assert result.exit_code == 2
    assert "token" in result.output


def test_the_cli_reads_the_token_from_the_environment(store_url: str, monkeypatch: Any) -> None:
    from typer.testing import CliRunner

    import routilux.ui.app as ui_app
    from routilux.cli import app

    ran: list[Any] = []
    monkeypatch.setattr(ui_app.UIServer, "run", lambda self, sockets=None: ran.append(self))
    flow_file = Path(__file__).resolve().parents[2] / "examples" / "flows"
    files = sorted(flow_file.glob("*.yaml"))[:1]
    args = ["ui", "--store", store_url, "--host", "0.0.0.0", "--port", "0"]
    for path in files:
        args += ["--flow", str(path)]
    result = CliRunner().invoke(app, args, env={"ROUTILUX_UI_TOKEN": "s3cret"})
    assert result.exit_code == 0, result.output
    (server,) = ran
    assert server.config.host == "0.0.0.0"
    assert len(server.config.app.state.flows) == len(files)
    server.config.app.state.watcher.close()

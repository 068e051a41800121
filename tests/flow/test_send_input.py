"""``Flow.send_input``: a job waits for human input (status ``waiting``) and resumes when
it arrives -- both strategies, ``async def`` handlers, bad input, cancel, pause, a
job still running, and a waiting job saved to a file and answered in another process."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from routilux import (
    Flow,
    FlowError,
    InvalidInputError,
    JobHooks,
    JobState,
    JobStateError,
    Routine,
)

STRATEGIES = ("sequential", "concurrent")


class Draft(Routine):
    """Writes a draft (counting its runs), asks whether to publish it and books the answer."""

    def __init__(self, asynchronous: bool = False) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.ask_async if asynchronous else self.ask)
        self.define_slot(
            "decision", handler=self.on_decision_async if asynchronous else self.on_decision
        )
        self.define_event("published", ["note"])

    def _ask(self) -> None:
        js = self.context.job_state
        with js.lock:
            js.update_shared_data("asked", js.get_shared_data("asked", 0) + 1)
        self.request_input(
            "decision", prompt="Publish this draft?", schema={"approved": bool, "note": (str, "")}
        )

    def ask(self, **kwargs: Any) -> None:
        self._ask()

    async def ask_async(self, **kwargs: Any) -> None:
        await asyncio.sleep(0)
        self._ask()

    def on_decision(self, approved: bool, note: str) -> None:
        js = self.context.job_state
        with js.lock:
            js.update_shared_data("decided", [*js.get_shared_data("decided", []), [approved, note]])
        if approved:
            self.emit("published", note=note)

    async def on_decision_async(self, approved: bool, note: str) -> None:
        await asyncio.sleep(0)
        self.on_decision(approved, note)


class Publisher(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.publish)

    def publish(self, note: str = "") -> None:
        self.context.job_state.update_shared_data("published", note)


class Statuses(JobHooks):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_status(self, job_state: JobState, old: str, new: str) -> None:
        self.seen.append((old, new))


def draft_flow(strategy: str = "sequential", asynchronous: bool = False) -> Flow:
    flow = Flow("drafts", execution_strategy=strategy)
    flow.add_routine(Draft(asynchronous), "writer")
    flow.add_routine(Publisher(), "publisher")
    flow.connect("writer", "published", "publisher", "input")
    return flow


@pytest.mark.parametrize("asynchronous", [False, True], ids=["def", "async-def"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_job_waits_then_resumes_with_the_input(strategy: str, asynchronous: bool) -> None:
    flow = draft_flow(strategy, asynchronous)
    hooks = Statuses()
    flow.add_hooks(hooks)
    job = flow.execute("writer")
    assert job.status == "waiting"
    assert job.wait_for_completion(0)  # a waiting job holds no run
    assert flow.wait_for_completion(0)
    assert [r["slot"] for r in job.waiting_for] == ["decision"]
    assert hooks.seen == [("pending", "running"), ("running", "waiting")]

    returned = flow.send_input(job.job_id, "writer", "decision", {"approved": True, "note": "ok"})
    assert returned is job
    assert job.status == "completed"
    assert job.waiting_for == []
    assert job.shared_data == {"asked": 1, "decided": [[True, "ok"]], "published": "ok"}
    assert hooks.seen[2:] == [("waiting", "running"), ("running", "completed")]
    flow.shutdown()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bad_input_keeps_the_job_waiting(strategy: str) -> None:
    flow = draft_flow(strategy)
    job = flow.execute("writer")
    request = dict(job.waiting_for[0])
    with pytest.raises(InvalidInputError, match="field 'approved' must be a bool, got str") as info:
        flow.send_input(job, "writer", "decision", {"approved": "yes"})
    assert job.job_id in str(info.value) and "'writer'.'decision'" in str(info.value)
    with pytest.raises(InvalidInputError, match=r"field 'approved' \(bool\) is missing"):
        flow.send_input(job, "writer", "decision", {"note": "hm"})
    assert job.status == "waiting" and job.waiting_for == [request]
    assert "decided" not in job.shared_data

    flow.send_input(job, "writer", "decision", {"approved": False})
    assert job.status == "completed"
    assert job.shared_data["decided"] == [[False, ""]]  # the schema's default for 'note'
    flow.shutdown()


def test_input_nobody_asked_for_is_refused_naming_it() -> None:
    flow = draft_flow()
    job = flow.execute("writer")
    with pytest.raises(FlowError, match="no routine 'ghost' with a slot 'decision'"):
        flow.send_input(job, "ghost", "decision", {"approved": True})
    with pytest.raises(InvalidInputError) as info:
        flow.send_input(job, "publisher", "input", {"note": "x"})
    message = str(info.value)
    assert "'publisher'.'input'" in message and "no request for it is open" in message
    assert "'writer'.'decision'" in message  # what the job does wait for
    flow.send_input(job, "writer", "decision", {"approved": True})
    with pytest.raises(InvalidInputError, match="it has no open request"):
        flow.send_input(job, "writer", "decision", {"approved": True})
    assert job.shared_data["decided"] == [[True, ""]]


def test_unknown_job_id_is_refused() -> None:
    flow = draft_flow()
    with pytest.raises(JobStateError, match="runs no job 'nope'"):
        flow.send_input("nope", "writer", "decision", {"approved": True})
    other = Flow("other")
    job = draft_flow().execute("writer")
    with pytest.raises(JobStateError, match="does not match"):
        other.send_input(job, "writer", "decision", {"approved": True})


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_deliveries_before_the_wait_never_run_again(strategy: str) -> None:
    calls: list[str] = []

    class Counted(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.start)
            self.define_slot("step", handler=self.step)
            self.define_slot("reply", handler=self.reply)
            self.define_event("next", ["n"])

        def start(self, **kwargs: Any) -> None:
            calls.append("start")
            self.emit("next", n=1)

        def step(self, n: int) -> None:
            calls.append(f"step{n}")
            if n < 3:
                self.emit("next", n=n + 1)
            else:
                self.request_input("reply")

        def reply(self, **data: Any) -> None:
            calls.append(f"reply{data['round']}")
            if data["round"] < 2:
                self.request_input("reply")

    flow = Flow("counted", execution_strategy=strategy)
    flow.add_routine(Counted(), "c")
    flow.connect("c", "next", "c", "step")
    job = flow.execute("c")
    assert job.status == "waiting"
    flow.send_input(job, "c", "reply", {"round": 1})
    assert job.status == "waiting"  # it asked again
    flow.send_input(job, "c", "reply", {"round": 2})
    assert job.status == "completed"
    assert calls == ["start", "step1", "step2", "step3", "reply1", "reply2"]
    flow.shutdown()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_input_to_a_job_still_running_is_queued_and_it_never_waits(strategy: str) -> None:
    release = threading.Event()
    asked = threading.Event()

    class Busy(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.start)
            self.define_slot("work", handler=self.work)
            self.define_slot("reply", handler=self.reply)
            self.define_event("more")

        def start(self, **kwargs: Any) -> None:
            self.request_input("reply", schema={"ok": bool})
            self.emit("more")
            asked.set()

        def work(self, **kwargs: Any) -> None:
            assert release.wait(10)

        def reply(self, ok: bool) -> None:
            self.context.job_state.update_shared_data("ok", ok)

    flow = Flow("busy", execution_strategy=strategy)
    flow.add_routine(Busy(), "b")
    flow.connect("b", "more", "b", "work")
    hooks = Statuses()
    job = flow.execute("b", wait=False, hooks=[hooks])
    assert asked.wait(10)
    assert job.status == "running"
    flow.send_input(job, "b", "reply", {"ok": True}, wait=False)
    assert job.waiting_for == []
    release.set()
    assert job.wait_for_completion(10)
    assert job.status == "completed" and job.shared_data["ok"] is True
    assert ("running", "waiting") not in hooks.seen
    flow.shutdown()


def test_a_handler_may_answer_its_own_job() -> None:
    class Self(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.start)
            self.define_slot("reply", handler=self.reply)

        def start(self, **kwargs: Any) -> None:
            ctx = self.context
            self.request_input("reply", schema={"n": int})
            ctx.flow.send_input(ctx.job_state, ctx.routine_id, "reply", {"n": 7})

        def reply(self, n: int) -> None:
            self.context.job_state.update_shared_data("n", n)

    flow = Flow("self")
    flow.add_routine(Self(), "s")
    job = flow.execute("s")
    assert job.status == "completed" and job.shared_data["n"] == 7


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_at_job_end_waits_for_the_input(strategy: str) -> None:
    ends: list[int] = []

    class Ends(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.start)
            self.define_slot("reply", handler=self.reply)
            self.define_slot("end", handler=self.end)

        def start(self, **kwargs: Any) -> None:
            self.schedule_at_job_end("end")
            self.request_input("reply")

        def reply(self, **data: Any) -> None:
            self.context.job_state.update_shared_data("replied", True)

        def end(self, **data: Any) -> None:
            ends.append(1)
            assert self.context.job_state.get_shared_data("replied")

    flow = Flow("ends", execution_strategy=strategy)
    flow.add_routine(Ends(), "e")
    job = flow.execute("e")
    assert job.status == "waiting" and ends == []
    flow.send_input(job, "e", "reply", {})
    assert job.status == "completed" and ends == [1]
    flow.shutdown()


def test_a_pending_timer_keeps_the_job_running_until_it_fires() -> None:
    class Later(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.start)
            self.define_slot("tick", handler=self.tick)
            self.define_slot("reply", handler=self.reply)

        def start(self, **kwargs: Any) -> None:
            self.request_input("reply")
            self.schedule(0.01, "tick")

        def tick(self, **kwargs: Any) -> None:
            self.context.job_state.update_shared_data("ticked", True)

        def reply(self, **kwargs: Any) -> None:
            pass

    flow = Flow("later")
    flow.add_routine(Later(), "l")
    job = flow.execute("l")
    assert job.status == "waiting" and job.shared_data["ticked"] is True


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_waiting_job_can_be_cancelled(strategy: str) -> None:
    flow = draft_flow(strategy)
    job = flow.execute("writer")
    flow.cancel(job, reason="nobody answered")
    assert job.status == "cancelled" and job.waiting_for == []
    with pytest.raises(InvalidInputError, match="the job is cancelled"):
        flow.send_input(job, "writer", "decision", {"approved": True})
    with pytest.raises(JobStateError, match="runs no job"):
        flow.send_input(job.job_id, "writer", "decision", {"approved": True})
    with pytest.raises(JobStateError):
        flow.resume(job)
    flow.shutdown()


def test_paused_waiting_job_keeps_its_input_for_the_resume() -> None:
    flow = draft_flow()
    job = flow.execute("writer")
    flow.pause(job, reason="weekend")
    assert job.status == "paused"
    flow.send_input(job, "writer", "decision", {"approved": True, "note": "monday"})
    assert job.status == "paused" and job.waiting_for == []
    assert [t["slot_name"] for t in job.pending_tasks] == ["decision"]
    assert "decided" not in job.shared_data
    flow.resume(job)
    assert job.status == "completed" and job.shared_data["published"] == "monday"


def test_resume_without_input_waits_again() -> None:
    flow = draft_flow()
    job = flow.execute("writer")
    flow.pause(job)
    flow.resume(job)
    assert job.status == "waiting" and len(job.waiting_for) == 1
    assert job.shared_data["asked"] == 1


def test_execute_async_returns_a_waiting_job() -> None:
    flow = draft_flow("concurrent", asynchronous=True)

    async def main() -> JobState:
        return await flow.execute_async("writer")

    job = asyncio.run(main())
    assert job.status == "waiting"
    flow.send_input(job, "writer", "decision", {"approved": True})
    assert job.status == "completed"
    flow.shutdown()


def test_send_input_wait_false_returns_at_once() -> None:
    flow = draft_flow("concurrent")
    job = flow.execute("writer")
    flow.send_input(job, "writer", "decision", {"approved": True}, wait=False)
    assert job.wait_for_completion(10)
    assert job.status == "completed"
    flow.shutdown()


def test_two_requests_are_answered_oldest_first() -> None:
    class Two(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.start)
            self.define_slot("reply", handler=self.reply)

        def start(self, **kwargs: Any) -> None:
            self.request_input("reply", prompt="first", schema={"a": int})
            self.request_input("reply", prompt="second", schema={"b": str})

        def reply(self, **data: Any) -> None:
            js = self.context.job_state
            js.update_shared_data("got", [*js.get_shared_data("got", []), data])

    flow = Flow("two")
    flow.add_routine(Two(), "t")
    job = flow.execute("t")
    with pytest.raises(InvalidInputError, match="field 'b' is not in"):
        flow.send_input(job, "t", "reply", {"b": "x"})
    flow.send_input(job, "t", "reply", {"a": 1})
    assert job.status == "waiting" and [r["prompt"] for r in job.waiting_for] == ["second"]
    flow.send_input(job, "t", "reply", {"b": "x"})
    assert job.status == "completed" and job.shared_data["got"] == [{"a": 1}, {"b": "x"}]


# -- a waiting job saved to a file, answered in another process ---------------------

MODULE = textwrap.dedent(
    """
    from pathlib import Path
    from routilux import Flow, Routine

    class Counted(Routine):
        def __init__(self, log):
            super().__init__()
            self.log = Path(log)
            self.define_slot("trigger", handler=self.start)
            self.define_slot("decision", handler=self.decide)

        def _count(self, what):
            with self.log.open("a") as f:
                f.write(what + "\\n")

        def start(self, **kwargs):
            self._count("start")
            self.context.job_state.update_shared_data("draft", "v1")
            self.request_input("decision", prompt="ok?", schema={"approved": bool})

        def decide(self, approved):
            self._count(f"decide {approved}")
            self.context.job_state.update_shared_data("approved", approved)

    def build(log, strategy):
        flow = Flow("saved-waiting", execution_strategy=strategy)
        flow.add_routine(Counted(log), "c")
        return flow
    """
)

CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from counted_flow import build
    from routilux import InvalidInputError, JobState

    log, path, strategy = sys.argv[2], sys.argv[3], sys.argv[4]
    flow = build(log, strategy)
    job = JobState.load(path)
    before = job.status
    try:
        flow.send_input(job, "c", "decision", {"approved": "yes"})
    except InvalidInputError:
        refused = job.status
    flow.send_input(job, "c", "decision", {"approved": True})
    print(json.dumps([before, refused, job.status, job.shared_data]))
    flow.shutdown()
    """
)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_waiting_job_saved_and_answered_in_another_process(tmp_path: Path, strategy: str) -> None:
    (tmp_path / "counted_flow.py").write_text(MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        import counted_flow  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("counted_flow", None)
    log = tmp_path / "calls.log"
    flow = counted_flow.build(str(log), strategy)
    job = flow.execute("c")
    assert job.status == "waiting"
    job.save(tmp_path / "job.json")
    saved = json.loads((tmp_path / "job.json").read_text())
    assert saved["status"] == "waiting" and saved["waiting_for"] == job.waiting_for
    flow.shutdown()

    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(log), str(tmp_path / "job.json")]
        + [strategy],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    before, refused, after, shared = json.loads(child.stdout)
    assert (before, refused, after) == ("waiting", "waiting", "completed")
    assert shared == {"draft": "v1", "approved": True}
    assert log.read_text().splitlines() == ["start", "decide True"]


def test_loaded_waiting_job_is_resumed_to_waiting() -> None:
    flow = draft_flow()
    job = flow.execute("writer")
    loaded = JobState().deserialize(json.loads(json.dumps(job.serialize())))
    assert loaded.status == "waiting" and loaded.waiting_for == job.waiting_for
    flow.resume(loaded)
    assert loaded.status == "waiting" and loaded.shared_data["asked"] == 1
    flow.send_input(loaded, "writer", "decision", {"approved": True})
    assert loaded.status == "completed" and loaded.shared_data["asked"] == 1


def test_a_job_saved_while_running_takes_no_input() -> None:
    flow = draft_flow()
    job = flow.execute("writer")
    data = job.serialize()
    data["status"] = "running"
    loaded = JobState().deserialize(data)
    with pytest.raises(JobStateError, match="no run of it is active here"):
        flow.send_input(loaded, "writer", "decision", {"approved": True})
    assert loaded.waiting_for == job.waiting_for


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_input_racing_the_job_settling_is_never_lost(strategy: str) -> None:
    """Input sent while the job is settling into ``waiting`` is either queued before
    it settles or delivered by resuming the waiting job: exactly once, every time."""
    asked = threading.Event()

    class Racer(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.start)
            self.define_slot("reply", handler=self.reply)

        def start(self, **kwargs: Any) -> None:
            self.request_input("reply", schema={"n": int})
            asked.set()  # the job settles right after this returns

        def reply(self, n: int) -> None:
            js = self.context.job_state
            with js.lock:
                js.update_shared_data("replies", js.get_shared_data("replies", 0) + 1)

    flow = Flow("race", execution_strategy=strategy)
    flow.add_routine(Racer(), "r")
    # Switch threads as often as possible, so the send lands inside the settling.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        race(flow, asked)
    finally:
        sys.setswitchinterval(interval)
    flow.shutdown()


def race(flow: Flow, asked: threading.Event) -> None:
    for n in range(300):
        asked.clear()
        job = flow.execute("r", wait=False)
        assert asked.wait(10)
        flow.send_input(job, "r", "reply", {"n": n})
        assert job.wait_for_completion(10)
        assert (job.status, job.shared_data.get("replies"), job.waiting_for) == (
            "completed",
            1,
            [],
        ), n


def test_send_input_to_a_running_job_waits_for_it_without_holding_it_up() -> None:
    """``wait=True`` on a job still running: the caller waits for the job to settle,
    while the delivery (which takes the job's lock) and the rest of the job go on."""
    release = threading.Event()
    asked = threading.Event()

    class Busy(Routine):
        def __init__(self) -> None:
            super().__init__()
            self.define_slot("trigger", handler=self.start)
            self.define_slot("work", handler=self.work)
            self.define_slot("reply", handler=self.reply)
            self.define_event("more")

        def start(self, **kwargs: Any) -> None:
            self.request_input("reply")
            self.emit("more")
            asked.set()

        def work(self, **kwargs: Any) -> None:
            assert release.wait(10), "the reply never arrived"

        def reply(self, **kwargs: Any) -> None:
            js = self.context.job_state
            with js.lock:
                js.update_shared_data("replied", True)
            release.set()

    flow = Flow("busy-wait", execution_strategy="concurrent", max_workers=2)
    flow.add_routine(Busy(), "b")
    flow.connect("b", "more", "b", "work")
    job = flow.execute("b", wait=False)
    assert asked.wait(10)
    flow.send_input(job, "b", "reply", {}, timeout=20)
    assert job.status == "completed" and job.shared_data["replied"] is True
    assert not [r for r in job.execution_history if r.event_name == "error"]
    flow.shutdown()


def test_human_input_page_example_runs(tmp_path: Path) -> None:
    page = Path(__file__).resolve().parents[2] / "docs" / "human-input.md"
    code = "\n".join(
        textwrap.dedent(block)
        for block in re.findall(r"^```python\n(.*?)^```$", page.read_text(), re.S | re.M)
    )
    assert "request_input" in code
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "field 'approved' must be a bool, got str 'yes'" in done.stdout

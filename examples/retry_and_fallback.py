"""Retry and fallback: a flaky API call is retried; an optional step may fail.

    request --output--> api_call --response--> enrich (optional) --enriched--> sink
                                 \\--response---------------------------------> sink

``api_call`` raises ``ConnectionError`` on its first two calls and succeeds on the
third: its ``retry`` error handler re-delivers the same data after 0.05 s, then 0.1 s
(``retry_delay * retry_backoff ** (n - 1)``, the default backoff being 2). ``enrich``
always fails, but it is made optional (``set_as_optional()``), so its failure is recorded
and the job carries on: the sink falls back to the plain API response.

Run with ``.venv/bin/python examples/retry_and_fallback.py``.
"""

from __future__ import annotations

from typing import Any, Optional

from routilux import ErrorHandler, Flow, Routine

# Keys the engine adds to the entry routine's state that change on every run.
TIMING_KEYS = ("execution_time", "start_time", "end_time", "error_time")


class Request(Routine):
    """Entry routine: emits the id of the customer to look up."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("trigger", handler=self.start)
        self.define_event("output", ["customer_id"])

    def start(self, customer_id: str = "c-1", **kwargs: Any) -> None:
        self.emit("output", customer_id=customer_id)


class ApiCall(Routine):
    """Calls a (simulated) remote API that is down for the first two calls."""

    FAILURES_BEFORE_SUCCESS = 2

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.call)
        self.define_event("response", ["customer_id", "profile"])

    def call(self, customer_id: str = "", **kwargs: Any) -> None:
        ctx = self.context
        # The attempt counter belongs to this job, not to the shared routine object.
        # merge_routine_state keeps the engine's own keys (retry_count) intact.
        state = ctx.job_state.get_routine_state(ctx.routine_id) or {}
        calls = state.get("calls", 0) + 1
        ctx.job_state.merge_routine_state(ctx.routine_id, {"calls": calls})
        if calls <= self.FAILURES_BEFORE_SUCCESS:
            raise ConnectionError(f"api.example.org unreachable (call {calls})")
        self.emit("response", customer_id=customer_id, profile={"name": "Ada", "tier": "gold"})


class Enrich(Routine):
    """Optional step: would add credit data, but its back end is always down."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.enrich)
        self.define_event("enriched", ["customer_id", "profile"])

    def enrich(self, customer_id: str = "", profile: Optional[dict[str, Any]] = None) -> None:
        raise TimeoutError("credit service timed out")


class Sink(Routine):
    """Stores every profile it receives, noting whether it was enriched."""

    def __init__(self) -> None:
        super().__init__()
        self.define_slot("plain", handler=self.store_plain)
        self.define_slot("enriched", handler=self.store_enriched)

    def store_plain(self, customer_id: str = "", profile: Any = None, **kwargs: Any) -> None:
        self._store(customer_id, profile, enriched=False)

    def store_enriched(self, customer_id: str = "", profile: Any = None, **kwargs: Any) -> None:
        self._store(customer_id, profile, enriched=True)

    def _store(self, customer_id: str, profile: Any, enriched: bool) -> None:
        ctx = self.context
        with ctx.job_state.lock:
            stored = list(ctx.job_state.get_shared_data("profiles", []))
            stored.append({"customer_id": customer_id, "enriched": enriched, **profile})
            ctx.job_state.update_shared_data("profiles", stored)
            ctx.job_state.merge_routine_state(ctx.routine_id, {"stored": len(stored)})


def build_flow() -> Flow:
    flow = Flow(flow_id="retry_and_fallback")
    flow.add_routine(Request(), "request")
    flow.add_routine(ApiCall(), "api_call")
    flow.add_routine(Enrich(), "enrich")
    flow.add_routine(Sink(), "sink")
    flow.connect("request", "output", "api_call", "input")
    flow.connect("api_call", "response", "enrich", "input")
    flow.connect("api_call", "response", "sink", "plain")
    flow.connect("enrich", "enriched", "sink", "enriched")

    flow.routines["api_call"].set_error_handler(
        ErrorHandler(strategy="retry", max_retries=3, retry_delay=0.05)
    )
    flow.routines["enrich"].set_as_optional()
    return flow


def stable(state: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """A routine state without the keys that hold times."""
    if state is None:
        return None
    return {k: v for k, v in state.items() if k not in TIMING_KEYS}


def main() -> None:
    flow = build_flow()
    job = flow.execute("request", entry_params={"customer_id": "c-42"})

    print(f"Status: {job.status}")
    print("\nRoutine states:")
    for rid in ("request", "api_call", "enrich", "sink"):
        print(f"  {rid}: {stable(job.get_routine_state(rid))}")
    print("\nError records:")
    for rec in job.get_execution_history():
        if rec.event_name not in ("error", "error_continued"):
            continue
        data = rec.data
        print(
            f"  {rec.routine_id} {rec.event_name}: attempt={data['attempt']}"
            f" action={data['action']} retry_delay={data.get('retry_delay', '-')}"
            f" {data['error_type']}: {data['error']}"
        )
    print("\nStored profiles:")
    for profile in job.get_shared_data("profiles", []):
        print(f"  {profile}")


if __name__ == "__main__":
    main()

"""Logs that carry the job (routilux.logs): the context filter, the delivery
hook, the JSON formatter, failure warnings."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import Numbers, Step, pipeline
from routilux import ErrorHandler, ErrorStrategy, Flow, Routine
from routilux.logs import CONTEXT_FIELDS, JobContextFilter, JsonFormatter, LogContext

app_log = logging.getLogger("tests.logs.app")


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(JobContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def capture() -> Iterator[Capture]:
    handler = Capture()
    for name in ("tests.logs.app", "routilux.delivery"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for name in ("tests.logs.app", "routilux.delivery"):
        logging.getLogger(name).removeHandler(handler)


def logging_step(routine: Routine, data: dict[str, Any]) -> None:
    app_log.info("got %s", data["value"])


class AsyncLogger(Routine):
    def __init__(self) -> None:
        super().__init__()
        self.define_slot("input", handler=self.take)

    async def take(self, value: int) -> None:
        await asyncio.sleep(0)
        app_log.info("async got %s", value)


def context_of(record: logging.LogRecord) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in CONTEXT_FIELDS)


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_handlers_records_carry_its_job_routine_and_slot(
    capture: Capture, strategy: str, kind: str
) -> None:
    worker = Step(logging_step, slot="input") if kind == "sync" else AsyncLogger()
    flow = pipeline(
        ("source", Numbers()),
        ("worker", worker),
        flow_id="logged",
        execution_strategy=strategy,
        hooks=[LogContext()],
    )
    job = flow.execute("source", {"n": 3})
    assert job.status == "completed"
    mine = [r for r in capture.records if r.name == "tests.logs.app"]
    assert len(mine) == 3
    assert {context_of(r)[:-1] for r in mine} == {(job.job_id, "logged", "worker", "input", 1)}
    # The last field is the delivery id: one per delivery, named after the job.
    assert CONTEXT_FIELDS[-1] == "delivery_id"
    ids = {context_of(r)[-1] for r in mine}
    assert len(ids) == 3 and all(i.startswith(job.job_id + ":") for i in ids)
    # Outside a job the fields are there, and None.
    app_log.info("idle")
    assert context_of(capture.records[-1]) == (None,) * len(CONTEXT_FIELDS)


def test_without_the_hook_the_filter_still_knows_the_job(capture: Capture) -> None:
    flow = pipeline(("source", Numbers()), ("worker", Step(logging_step, slot="input")))
    job = flow.execute("source", {"n": 1})
    (record,) = capture.records
    assert (record.job_id, record.flow_id, record.routine_id) == (job.job_id, flow.flow_id, None)


def test_a_value_given_with_extra_is_kept(capture: Capture) -> None:
    app_log.info("explicit", extra={"job_id": "mine", "slot": "s"})
    record = capture.records[-1]
    assert (record.job_id, record.slot, record.routine_id) == ("mine", "s", None)


def test_each_failed_delivery_logs_one_warning_with_its_traceback(capture: Capture) -> None:
    calls = []

    def flaky(routine: Routine, data: dict[str, Any]) -> None:
        calls.append(data)
        if len(calls) == 1:
            raise ConnectionError("first call fails")

    worker = Step(flaky, slot="input")
    worker.set_error_handler(
        ErrorHandler(strategy=ErrorStrategy.RETRY, max_retries=2, retry_delay=0.0)
    )
    flow = pipeline(
        ("source", Numbers()), ("worker", worker), hooks=[LogContext(log_failures=True)]
    )
    job = flow.execute("source", {"n": 1})
    assert job.status == "completed" and len(calls) == 2
    warnings = [r for r in capture.records if r.name == "routilux.delivery"]
    assert len(warnings) == 1
    (warning,) = warnings
    assert warning.levelno == logging.WARNING
    assert context_of(warning)[:5] == (job.job_id, flow.flow_id, "worker", "input", 1)
    assert "ConnectionError: first call fails" in warning.getMessage()
    assert warning.exc_info is not None and warning.exc_info[1] is not None
    assert "in flaky" in JsonFormatter().format(warning)


def test_the_json_formatter_writes_one_object_with_the_context() -> None:
    formatter = JsonFormatter(extra_fields=["user"])
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed %s", ("it",), exc_info=sys.exc_info()
        )
    JobContextFilter().filter(record)
    record.user = object()
    entry = json.loads(formatter.format(record))
    assert entry["message"] == "failed it" and entry["level"] == "ERROR"
    assert entry["logger"] == "x" and entry["time"].endswith("+00:00")
    assert all(name in entry for name in CONTEXT_FIELDS) and entry["job_id"] is None
    assert entry["exception"].startswith("Traceback") and "ValueError: boom" in entry["exception"]
    assert entry["user"].startswith("<object object")


def test_dictconfig_installs_filter_and_formatter(capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"job": {"()": "routilux.logs.JobContextFilter"}},
            "formatters": {"json": {"()": "routilux.logs.JsonFormatter"}},
            "handlers": {
                "stdout": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stdout",
                    "filters": ["job"],
                    "formatter": "json",
                }
            },
            "loggers": {"tests.logs.dict": {"handlers": ["stdout"], "level": "INFO"}},
        }
    )
    logger = logging.getLogger("tests.logs.dict")
    flow = Flow("dict")
    flow.add_routine(Step(lambda r, d: logger.info("inside"), slot="trigger"), "only")
    flow.add_hooks(LogContext())
    job = flow.execute("only")
    try:
        line = capsys.readouterr().out.strip()
        entry = json.loads(line)
        assert entry["message"] == "inside" and entry["job_id"] == job.job_id
        assert entry["routine_id"] == "only" and entry["slot"] == "trigger"
    finally:
        logger.handlers.clear()


def test_records_carry_the_delivery_id_the_handler_sees(capture: Capture) -> None:
    seen: list[str] = []

    def step(routine: Routine, data: dict[str, Any]) -> None:
        seen.append(routine.context.delivery_id)
        app_log.info("step")

    flow = pipeline(("source", Numbers()), ("worker", Step(step, slot="input")))
    flow.add_hooks(LogContext())
    job = flow.execute("source", {"n": 3})
    assert job.status == "completed"
    logged = [r.delivery_id for r in capture.records if r.getMessage() == "step"]
    assert logged == seen and len(set(seen)) == 3
    assert all(d.startswith(job.job_id + ":") for d in logged)

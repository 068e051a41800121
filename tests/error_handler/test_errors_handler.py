"""ErrorStrategy and ErrorHandler as plain objects (spec 40 §1, §2; 50 §3).

These tests do not run a flow, except where ``handle_error`` is called from
inside a handler to show what it records in the job.
"""

from __future__ import annotations

import json
import sys

import pytest

from helpers import Step
from routilux import ErrorHandler, ErrorStrategy, Flow, Routine, SerializationError
from routilux.flow.error_handling import get_error_handler_for_routine

# -- ErrorStrategy -------------------------------------------------------------


def test_error_strategy_values():
    assert {s.name: s.value for s in ErrorStrategy} == {
        "STOP": "stop",
        "CONTINUE": "continue",
        "RETRY": "retry",
        "SKIP": "skip",
    }


# -- constructor ---------------------------------------------------------------


def test_error_handler_defaults():
    handler = ErrorHandler()
    assert handler.strategy is ErrorStrategy.STOP
    assert handler.max_retries == 3
    assert handler.retry_delay == 1.0
    assert handler.retry_backoff == 2.0
    # None means "every exception is retryable" (the tutorial's ValueError/RuntimeError is wrong).
    assert handler.retryable_exceptions == (Exception,)
    assert handler.is_critical is False
    assert handler.retry_count == 0


@pytest.mark.parametrize("strategy", list(ErrorStrategy))
def test_strategy_string_is_converted_to_the_enum(strategy):
    assert ErrorHandler(strategy=strategy.value).strategy is strategy
    assert ErrorHandler(strategy=strategy).strategy is strategy


@pytest.mark.parametrize("bad", ["abort", "STOP", "", "retries"])
def test_unknown_strategy_string_raises_value_error(bad):
    with pytest.raises(ValueError):
        ErrorHandler(strategy=bad)


def test_empty_retryable_exceptions_means_every_exception():
    assert ErrorHandler(retryable_exceptions=()).retryable_exceptions == (Exception,)


def test_retryable_exceptions_are_kept_as_a_tuple():
    handler = ErrorHandler(retryable_exceptions=(ConnectionError, TimeoutError))
    assert handler.retryable_exceptions == (ConnectionError, TimeoutError)


# -- handle_error (the single-step API of spec 40 §1) ----------------------------


def test_handle_error_stop_returns_false():
    handler = ErrorHandler("stop")
    assert handler.handle_error(ValueError("x"), None, "r", None) is False


@pytest.mark.parametrize("strategy", ["continue", "skip"])
def test_handle_error_continue_and_skip_return_true_outside_a_job(strategy):
    handler = ErrorHandler(strategy)
    assert handler.handle_error(ValueError("x"), None, "r", None) is True


def test_handle_error_retry_counts_up_to_max_retries_then_returns_not_critical():
    handler = ErrorHandler("retry", max_retries=2, retry_delay=0.0)
    error = ValueError("x")
    assert handler.handle_error(error, None, "r", None) is True
    assert handler.retry_count == 1
    assert handler.handle_error(error, None, "r", None) is True
    assert handler.retry_count == 2
    # Exhausted: the upstream quirk "return not is_critical" is kept.
    assert handler.handle_error(error, None, "r", None) is True
    assert handler.retry_count == 2
    handler.is_critical = True
    assert handler.handle_error(error, None, "r", None) is False
    handler.reset()
    assert handler.retry_count == 0


def test_handle_error_retry_rejects_a_non_retryable_error_without_counting():
    handler = ErrorHandler("retry", retryable_exceptions=(ConnectionError,), retry_delay=0.0)
    assert handler.handle_error(ValueError("x"), None, "r", None) is False
    assert handler.retry_count == 0
    # The rule is isinstance: a subclass of a retryable class is retryable.
    handler = ErrorHandler("retry", retryable_exceptions=(OSError,), retry_delay=0.0)
    assert handler.handle_error(ConnectionResetError("x"), None, "r", None) is True
    assert handler.retry_count == 1


@pytest.mark.parametrize("strategy", ["continue", "skip"])
def test_handle_error_inside_a_job_records_in_the_job(strategy):
    """CONTINUE records ``error_continued``; SKIP marks the routine ``skipped``."""
    policy = ErrorHandler(strategy)
    answers = []

    def ask_policy(routine, data):
        answers.append(policy.handle_error(KeyError("k"), routine, "probe", None))

    flow = Flow()
    flow.add_routine(Step(ask_policy, "trigger"), "probe")
    job = flow.execute("probe")
    assert answers == [True]
    assert job.status == "completed"
    if strategy == "continue":
        records = job.get_execution_history("probe")
        assert [(r.event_name, r.data) for r in records] == [
            (
                "error_continued",
                {
                    "error": str(KeyError("k")),
                    "error_type": "KeyError",
                    "traceback": "KeyError: 'k'\n",  # raised nowhere: no frames to show
                },
            )
        ]
    else:
        state = job.get_routine_state("probe")
        assert state["status"] == "skipped"
        assert state["error"] == str(KeyError("k"))


# -- convenience setters and precedence (spec 40 §2) --------------------------------


def test_set_as_optional_defaults_to_continue():
    routine = Routine()
    routine.set_as_optional()
    handler = routine.get_error_handler()
    assert handler.strategy is ErrorStrategy.CONTINUE
    assert handler.is_critical is False


@pytest.mark.parametrize("strategy", [ErrorStrategy.SKIP, "skip"])
def test_set_as_optional_accepts_a_strategy(strategy):
    routine = Routine()
    routine.set_as_optional(strategy)
    assert routine.get_error_handler().strategy is ErrorStrategy.SKIP


def test_set_as_critical_installs_a_critical_retry_handler():
    routine = Routine()
    routine.set_as_critical()
    handler = routine.get_error_handler()
    assert handler.strategy is ErrorStrategy.RETRY
    assert (handler.max_retries, handler.retry_delay, handler.retry_backoff) == (3, 1.0, 2.0)
    assert handler.is_critical is True
    routine.set_as_critical(max_retries=5, retry_delay=0.5, retry_backoff=3.0)
    handler = routine.get_error_handler()
    assert (handler.max_retries, handler.retry_delay, handler.retry_backoff) == (5, 0.5, 3.0)


def test_get_error_handler_for_routine_precedence():
    flow = Flow()
    own, flows = ErrorHandler("skip"), ErrorHandler("continue")
    with_own, without = Routine(), Routine()
    with_own.set_error_handler(own)
    flow.add_routine(with_own, "a")
    flow.add_routine(without, "b")
    assert get_error_handler_for_routine(without, "b", flow) is None
    flow.set_error_handler(flows)
    assert get_error_handler_for_routine(with_own, "a", flow) is own
    assert get_error_handler_for_routine(without, "b", flow) is flows
    assert with_own.get_error_handler() is own
    assert without.get_error_handler() is None
    with_own.set_error_handler(None)
    assert get_error_handler_for_routine(with_own, "a", flow) is flows


# -- serialization (spec 40 §1, 50 §3, 90 D14) ----------------------------------------


def test_serialize_is_json_safe_and_names_the_strategy_value():
    data = ErrorHandler("retry", max_retries=4, retry_delay=0.25, retry_backoff=3.0).serialize()
    assert json.loads(json.dumps(data)) == data
    assert data["_type"] == "ErrorHandler"
    assert data["strategy"] == "retry"
    assert (data["max_retries"], data["retry_delay"], data["retry_backoff"]) == (4, 0.25, 3.0)
    assert data["retry_count"] == 0
    assert data["is_critical"] is False
    assert data["retryable_exceptions"] == ["builtins.Exception"]


@pytest.mark.parametrize("strategy", list(ErrorStrategy))
def test_serialize_deserialize_round_trip(strategy, monkeypatch):
    from routilux import serialization

    # A saved exception class outside builtins and routilux must be registered (issue 9).
    monkeypatch.setattr(serialization, "_FUNCTIONS", dict(serialization._FUNCTIONS))
    monkeypatch.setattr(serialization, "_FUNCTION_NAMES", dict(serialization._FUNCTION_NAMES))
    serialization.register_function(json.JSONDecodeError)
    original = ErrorHandler(
        strategy=strategy,
        max_retries=7,
        retry_delay=0.125,
        retry_backoff=1.5,
        retryable_exceptions=(ConnectionError, json.JSONDecodeError),
        is_critical=True,
    )
    original.retry_count = 2
    data = json.loads(json.dumps(original.serialize()))
    restored = ErrorHandler().deserialize(data)
    assert restored.strategy is strategy
    assert restored.max_retries == 7
    assert restored.retry_delay == 0.125
    assert restored.retry_backoff == 1.5
    assert restored.retry_count == 2
    assert restored.is_critical is True
    assert restored.retryable_exceptions == (ConnectionError, json.JSONDecodeError)
    assert restored.serialize() == original.serialize()


def test_round_trip_keeps_the_retryable_rule():
    restored = ErrorHandler().deserialize(
        ErrorHandler("retry", retryable_exceptions=(ConnectionError,)).serialize()
    )
    assert restored.handle_error(ConnectionError("x"), None, "r", None) is True
    assert restored.handle_error(ValueError("x"), None, "r", None) is False


def test_deserialize_never_imports_a_module_named_in_the_data():
    name = "routilux_test_errors_module_that_must_not_be_imported"
    assert name not in sys.modules
    data = ErrorHandler("retry").serialize()
    data["retryable_exceptions"] = ["builtins.ConnectionError", f"{name}.Boom"]
    # Issue 9: an unknown class is an error naming it (it used to be dropped silently).
    with pytest.raises(SerializationError, match=r"retryable_exceptions\[1\].*Boom"):
        ErrorHandler().deserialize(data)
    assert name not in sys.modules


def test_a_failure_record_keeps_the_formatted_traceback():
    """The JobState says where a handler failed, also after a save."""

    def broken(routine, data):
        raise ValueError("bad row")

    flow = Flow()
    flow.add_routine(Step(broken, "trigger"), "probe")
    flow.set_error_handler(ErrorHandler("continue"))
    job = flow.execute("probe")
    (record,) = [r for r in job.get_execution_history("probe") if r.event_name.startswith("error")]
    trace = record.data["traceback"]
    assert trace.startswith("Traceback (most recent call last):")
    assert "in broken" in trace and trace.endswith("ValueError: bad row\n")

"""Numeric configuration is range-checked (set_config and loaded files alike), and no
delay, however large, can stop the engine's shared timer thread."""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any

import pytest

from routilux import Flow
from routilux.builtin_routines import (
    Aggregator,
    Batcher,
    DataFlattener,
    Debouncer,
    TextClipper,
)
from routilux.builtin_routines._base import (
    MAX_COUNT,
    MAX_FLATTEN_DEPTH,
    MAX_TEXT_LENGTH,
    MAX_WAIT_SECONDS,
)
from routilux.engine.timers import TimerService
from routilux.exceptions import ConfigError, SerializationError

# (routine class, key, a valid value, bad values)
RANGES: list[tuple[type, str, Any, list[Any]]] = [
    (Debouncer, "wait", 0.5, [-1, math.nan, math.inf, -math.inf, 1e10, MAX_WAIT_SECONDS + 1]),
    (Batcher, "max_wait", 2.0, [-0.5, math.nan, math.inf, MAX_WAIT_SECONDS * 2]),
    (Batcher, "batch_size", 5, [0, -3, MAX_COUNT + 1]),
    (Aggregator, "timeout", 1, [-1, math.nan, math.inf, 1e12]),
    (Aggregator, "expected_count", 3, [0, -1, MAX_COUNT + 1]),
    (TextClipper, "max_length", 80, [-1, MAX_TEXT_LENGTH + 1]),
    (DataFlattener, "max_depth", 10, [-1, MAX_FLATTEN_DEPTH + 1, 10**6]),
]

CASES = [
    pytest.param(cls, key, bad, id=f"{cls.__name__}.{key}={bad!r}")
    for cls, key, _good, bads in RANGES
    for bad in bads
]
GOOD = [pytest.param(cls, key, good, id=f"{cls.__name__}.{key}") for cls, key, good, _ in RANGES]


class TestSetConfig:
    @pytest.mark.parametrize(("cls", "key", "bad"), CASES)
    def test_out_of_range_value_is_a_config_error_naming_routine_and_key(self, cls, key, bad):
        routine = cls()
        with pytest.raises(ConfigError) as info:
            routine.set_config(**{key: bad})
        message = str(info.value)
        assert cls.__name__ in message and f"'{key}'" in message, message

    @pytest.mark.parametrize(("cls", "key", "good"), GOOD)
    def test_values_in_range_are_kept(self, cls, key, good):
        routine = cls()
        routine.set_config(**{key: good})
        assert routine.get_config(key) == good

    def test_the_caps_themselves_are_accepted(self):
        Debouncer().set_config(wait=MAX_WAIT_SECONDS)
        Batcher().set_config(batch_size=MAX_COUNT, max_wait=0)
        Aggregator().set_config(expected_count=MAX_COUNT, timeout=0.0)
        TextClipper().set_config(max_length=0)
        DataFlattener().set_config(max_depth=MAX_FLATTEN_DEPTH)


class TestLoadedFiles:
    @pytest.mark.parametrize(("cls", "key", "bad"), CASES)
    def test_a_file_with_an_out_of_range_value_does_not_load(self, cls, key, bad):
        flow = Flow(flow_id="ranges")
        flow.add_routine(cls(), "victim")
        saved = flow.serialize()
        # Python's json writes NaN/Infinity and reads them back: what a crafted file holds.
        text = json.dumps(saved)
        data = json.loads(text)
        data["routines"]["victim"]["_config"][key] = bad
        crafted = json.loads(json.dumps(data))
        with pytest.raises((SerializationError, ConfigError)) as info:
            Flow().deserialize(crafted)
        message = str(info.value)
        assert f"'{key}'" in message, message


class TestTimerThread:
    @pytest.mark.parametrize("delay", [1e10, math.inf, threading.TIMEOUT_MAX * 2])
    def test_a_huge_delay_leaves_the_timer_thread_alive(self, delay, monkeypatch):
        """Before the fix Condition.wait(1e10) raised OverflowError on the timer thread:
        the thread died, and timers already scheduled never fired."""
        crashes: list[BaseException] = []
        monkeypatch.setattr(threading, "excepthook", lambda args: crashes.append(args.exc_value))
        waiting = threading.Event()
        timer_threads: list[int] = []

        def clock() -> float:
            # The loop reads the clock (holding the service's lock) right before it
            # waits for the earliest timer: here, the huge one.
            if threading.current_thread().name == "routilux-timers":
                timer_threads.append(threading.get_ident())
                waiting.set()
            return time.monotonic()

        service = TimerService(clock=clock)
        huge = service.schedule(delay, lambda handle: None)
        assert waiting.wait(10), "the timer thread never started"
        fired = threading.Event()
        fired_on: list[int] = []

        def soon(handle: Any) -> None:
            fired_on.append(threading.get_ident())
            fired.set()

        # Taking the lock in schedule() means the timer thread is inside its wait now.
        service.schedule(0.0, soon)
        assert fired.wait(10), "a timer scheduled after the huge one never fired"
        assert fired_on == [timer_threads[0]], "the first timer thread died"
        assert huge.pending, "the huge timer must still be waiting"
        assert crashes == []
        assert huge.cancel()

    def test_debouncer_wait_of_1e10_is_refused_before_it_reaches_the_timer(self):
        with pytest.raises(ConfigError, match="wait"):
            Debouncer().set_config(wait=1e10)

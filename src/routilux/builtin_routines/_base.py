"""What every built-in routine shares: validated configuration, a configuration that
round-trips through JSON even when it holds callables, per-job state and timer
bookkeeping.

Built-ins use only the public Routine API. Invariants kept here:

* Everything a run changes lives in the JobState (``ctx.job_state``), read and written
  under ``job_state.lock``. Outside a job (standalone use, ``slot.receive(...)`` in a
  test) the same code works on a private dict of the routine instead.
* Timeouts use the engine's named timers (``set_timer`` / ``cancel_timer``), which
  belong to the job. Every timer delivery also carries a sequence number and stale
  ones are ignored, so a delivery that was already on its way when its timer was
  cancelled does no harm.
* Emissions happen after the job lock is released, so a built-in never holds the job
  lock while the engine takes its own locks.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable as CallableABC
from collections.abc import Iterator
from typing import Any, ClassVar, Optional

from routilux.exceptions import ConfigError
from routilux.routine import Routine
from routilux.slot import Slot

from ._expressions import (
    ExpressionError,
    compile_expression,
    decode_config_value,
    encode_config_value,
    evaluate,
)

ConfigType = Any  # a type or a tuple of types, as Routine.config_schema expects
NoneType = type(None)
CALLABLE: Any = CallableABC  # for config schemas: "any callable"

# Caps of numeric configuration (documented in docs/builtin-routines.md). A value from
# a file is checked like one given to set_config, so these also bound what a crafted
# flow file can ask for.
MAX_WAIT_SECONDS = 30 * 24 * 3600
"""Longest wait or timeout (Debouncer ``wait``, Batcher ``max_wait``, Aggregator
``timeout``): 30 days."""
MAX_COUNT = 10_000_000
"""Largest item count (Batcher ``batch_size``, Aggregator ``expected_count``)."""
MAX_TEXT_LENGTH = 1_000_000_000
"""Largest text length (TextClipper ``max_length``)."""
MAX_FLATTEN_DEPTH = 500
"""Deepest DataFlattener ``max_depth`` (flattening recurses once per level)."""
MAX_PLAIN_DEPTH = 100
"""Nesting of plain-data config values (ConditionalRouter's extra keys)."""


def check_plain_data(value: Any) -> Optional[str]:
    """None when ``value`` is plain JSON data (None, bool, int, finite float, str, and
    lists, tuples and str-keyed dicts of those, nested at most MAX_PLAIN_DEPTH levels);
    else what is wrong and where. A loop, not a recursion, so any input is safe."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        where = f" at {path}" if path else ""
        if depth > MAX_PLAIN_DEPTH:
            return f"nested more than {MAX_PLAIN_DEPTH} levels{where}"
        if item is None or isinstance(item, (bool, int, str)):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"{item!r}{where} is not a finite number"
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(item))
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    return f"the key {key!r}{where} is not a str"
                stack.append((child, f"{path}[{key!r}]", depth + 1))
        else:
            return f"a {type(item).__name__}{where} is not JSON data"
    return None


class BuiltinRoutine(Routine):
    """Base of the built-in routines (not registered itself; it has no slots)."""

    config_schema: ClassVar[Optional[dict[str, ConfigType]]] = {}

    def __init__(self) -> None:
        super().__init__()
        # Standalone use only (no job): the per-run state lives here instead.
        self._standalone_state: dict[str, Any] = {}
        self._standalone_lock = threading.RLock()

    # -- configuration -----------------------------------------------------------

    def set_config(self, **kwargs: Any) -> None:
        """Update the configuration; unknown keys and wrong types raise ConfigError."""
        for key, value in kwargs.items():
            self._validate_config_item(key, value)
        super().set_config(**kwargs)

    def _config_error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self!r}: config key '{key}' {problem}")

    def _validate_config_item(self, key: str, value: Any) -> None:
        schema = type(self).config_schema or {}
        if key not in schema:
            raise ConfigError(
                f"{self!r}: unknown config key '{key}' (known keys: {', '.join(sorted(schema))})"
            )
        expected = schema[key]
        types = expected if isinstance(expected, tuple) else (expected,)
        wrong_bool = isinstance(value, bool) and bool not in types and object not in types
        if wrong_bool or not isinstance(value, types):
            names = " or ".join("None" if t is NoneType else t.__name__ for t in types)
            raise self._config_error(key, f"must be {names}, got {type(value).__name__}")
        self._check_config_value(key, value)

    def _check_config_value(self, key: str, value: Any) -> None:
        """Value checks beyond the type (ranges, choices); subclasses override."""

    def _require_choice(self, key: str, value: Any, choices: tuple[str, ...]) -> None:
        if value not in choices:
            raise self._config_error(key, f"must be one of {', '.join(choices)}; got {value!r}")

    def _require_min(self, key: str, value: Any, minimum: float, inclusive: bool = True) -> None:
        if value is None:
            return
        if value < minimum or (not inclusive and value == minimum):
            relation = ">=" if inclusive else ">"
            raise self._config_error(key, f"must be {relation} {minimum}; got {value!r}")

    def _require_range(
        self,
        key: str,
        value: Any,
        minimum: float,
        maximum: float,
        *,
        exclusive_minimum: bool = False,
    ) -> None:
        """A number (None passes) must be finite and within ``minimum``..``maximum``."""
        if value is None:
            return
        if isinstance(value, float) and not math.isfinite(value):
            raise self._config_error(key, f"must be a finite number; got {value!r}")
        self._require_min(key, value, minimum, inclusive=not exclusive_minimum)
        if value > maximum:
            raise self._config_error(key, f"must be at most {maximum:,}; got {value!r}")

    def _require_expression(self, key: str, value: Any) -> None:
        if isinstance(value, str):
            try:
                compile_expression(value)
            except ExpressionError as exc:
                # Same class (a budget error stays one), now naming routine and key.
                raise type(exc)(
                    f"{self!r}: config key '{key}' is not a valid expression: {exc}"
                ) from None

    # -- expressions at run time -----------------------------------------------------

    def _name_in_job(self) -> str:
        """This routine as error messages name it: by its id in the flow inside a job."""
        ctx = self.get_execution_context()
        if ctx is None:
            return repr(self)
        return f"{type(self).__name__} '{ctx.routine_id}'"

    def _expression_failure(self, exc: ExpressionError, what: str) -> ExpressionError:
        """``exc`` again (same class), naming this routine and ``what`` failed."""
        return type(exc)(f"{self._name_in_job()}: {what}: {exc}")

    def _evaluate(self, key: str, expression: str, data: Any) -> Any:
        """Evaluate the expression of config ``key`` on ``data`` (with this routine's
        config); an ExpressionError names the routine and the key."""
        try:
            return evaluate(expression, data, self.config())
        except ExpressionError as exc:
            raise self._expression_failure(exc, f"config '{key}'") from None

    def _config_to_data(self) -> dict[str, Any]:
        data = super()._config_to_data()
        return {k: encode_config_value(v, f"{self!r} config '{k}'") for k, v in data.items()}

    def _config_from_data(self, data: dict[str, Any]) -> None:
        decoded = {k: decode_config_value(v, f"{self!r} config '{k}'") for k, v in data.items()}
        decoded = self._normalize_loaded_config(decoded)
        for key, value in decoded.items():
            self._validate_config_item(key, value)
        super()._config_from_data(decoded)

    def _normalize_loaded_config(self, data: dict[str, Any]) -> dict[str, Any]:
        """Undo what JSON did to the configuration (e.g. tuples -> lists)."""
        return data

    # -- input ---------------------------------------------------------------------

    def _define_input(self, handler: CallableABC[..., Any], name: str = "input") -> Slot:
        """Define the input slot ``name`` and a ``trigger`` slot with the same handler.

        The engine starts a job at its entry routine's ``trigger`` slot, so the twin
        slot lets any built-in be the entry of a flow (a flow file of built-ins only,
        ``routilux run flow.yaml -p data=...``): the trigger takes the same data as
        the input slot. Returns the input slot.
        """
        slot = self.define_slot(name, handler)
        self.define_slot("trigger", handler)
        return slot

    def _split_input(self, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The item of a delivery and the keys that travel with it.

        With a ``data`` key the item is its value and the other keys (say ``index``
        and ``total`` from a Splitter) are returned to be passed on. Otherwise the
        item is :meth:`_extract_input_data` of the delivery and nothing travels along.
        """
        if "data" in kwargs:
            extras = {k: v for k, v in kwargs.items() if k not in ("data", "flow")}
            return kwargs["data"], extras
        return self._extract_input_data(**kwargs), {}

    # -- per-job state ---------------------------------------------------------------

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        """Atomically read-modify-write this routine's state in the current job.

        Yields a shallow copy of the state; it is written back when the block ends
        without an exception. Nested values must be replaced, not mutated.
        """
        ctx = self.get_execution_context()
        if ctx is None:
            with self._standalone_lock:
                state = dict(self._standalone_state)
                yield state
                self._standalone_state = state
            return
        js, rid = ctx.job_state, ctx.routine_id
        with js.lock:
            state = dict(js.get_routine_state(rid) or {})
            yield state
            js.update_routine_state(rid, state)

    def _in_job(self) -> bool:
        return self.get_execution_context() is not None

    def _start_timer(self, name: str, seq: int, delay: float, slot: str, **data: Any) -> None:
        """Deliver ``data`` (plus ``seq``) to ``slot`` after ``delay`` s on the engine's
        timer, replacing this job's pending timer of the same name (in a job only)."""
        if self._in_job():
            self.set_timer(name, delay, slot, seq=seq, **data)

    def _stop_timer(self, name: str) -> None:
        """Cancel this job's pending timer ``name``, if any (in a job only)."""
        if self._in_job():
            self.cancel_timer(name)

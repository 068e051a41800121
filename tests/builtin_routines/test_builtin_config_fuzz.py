"""Fuzz: a built-in's saved configuration with any value in any key either loads (and
then passes the same checks as set_config) or raises a library error (ConfigError,
ExpressionError, SerializationError) naming the config — never anything else: no
RecursionError, OverflowError, TypeError from a comparison, hang or crash."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import routilux.builtin_routines as builtins_pkg
from routilux.exceptions import RoutiluxError

CLASSES = [getattr(builtins_pkg, name) for name in builtins_pkg.__all__]

SPECIAL = st.sampled_from(
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        1e10,
        10**100,
        -(10**100),
        "-" * 3000 + "1",
        "'%.999999999f' % 1.0",
        "[0]*999998+[1] in [[0]*999999]*999999",
        {"_type": "lambda_expression", "expression": "data * 10**9"},
        {"_type": "lambda_expression", "expression": "-" * 3000 + "x"},
        {"_type": "lambda_expression"},
        {"_type": "callable", "callable_type": "function", "module": "os", "name": "system"},
        {"_type": "callable"},
        [["r", "data > 1"], ["r2"]],
        [[1, "data"]],
        [["ok", {"_type": "lambda_expression", "expression": "__import__('os')"}]],
    ]
)
JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | SPECIAL,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(cls=st.sampled_from(CLASSES), data=st.data())
def test_any_value_in_a_saved_config_loads_or_raises_a_library_error(cls: Any, data: Any) -> None:
    saved = cls().serialize()
    config = dict(saved.get("_config") or {})
    key = data.draw(st.sampled_from(sorted(config) + ["unknown_key"]), label="key")
    config[key] = data.draw(JSONISH, label="value")
    saved["_config"] = config
    try:
        restored = cls().deserialize(saved)
    except RoutiluxError as exc:
        # The config is named; which key, the checks of the built-ins say (a malformed
        # callable spec is reported by the codec, which names the field only).
        assert key in str(exc) or "_config" in str(exc), str(exc)
        return
    # What loaded is what set_config would accept.
    restored.set_config(**{k: v for k, v in restored.config().items() if k == key})

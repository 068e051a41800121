"""The expression language runs on a budget: sizes, nesting and steps are bounded, and
going over is an ExpressionBudgetError naming the routine and the expression, raised
when the routine is configured if the text shows it, else when it is evaluated (then a
failure of the routine, handled by its error strategy)."""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import pytest

from helpers import Items
from routilux import ErrorHandler, ErrorStrategy, Flow, Routine
from routilux.builtin_routines import ConditionalRouter, DataTransformer, Filter, Mapper
from routilux.builtin_routines._expressions import (
    MAX_DEPTH,
    MAX_EXPRESSION_LENGTH,
    MAX_FORMAT_WIDTH,
    MAX_INT_DIGITS,
    MAX_STEPS,
    MAX_VALUE_SIZE,
    ExpressionBudgetError,
    ExpressionError,
    SafeLambda,
    compile_expression,
    decode_config_value,
    evaluate,
)
from routilux.exceptions import ConfigError, RoutiluxError, SerializationError

# The five from the issue: each hung the process, exhausted memory or raised
# RecursionError; each can be seen from the text alone.
ISSUE_EXAMPLES = [
    "[0]*999998+[1] in [[0]*999999]*999999",
    "'%.999999999f' % 1.0",
    "'%0999999999d' % 1",
    "len(str([[0]*999999]*999999)) > 0",
    "-" * 3000 + "1",
]

# Over budget only with the data they get at run time.
RUNTIME_BOMBS: list[tuple[str, Any]] = [
    ("data * 10**9", "a"),
    ("data * 10**6", [1, 2]),
    ("[data] * 2000", list(range(1000))),
    ("data % (10**9, 1)", "%*d"),
    ("data % 1.0", "%.999999999f"),
    ("str(data * 2)", [[0] * 999_999]),
    ("data + data", "x" * 600_000),
    ("data ** data", 10**5),
    ("data * data", 2**60_000),
    ("int(data)", "9" * (MAX_INT_DIGITS + 1)),
    ("len(str(data)) > 0", [[0] * 1000] * 2000),  # shared rows: 2,000,000 elements
]


def _short(value: Any) -> str:
    return value[:30] if isinstance(value, str) else type(value).__name__


def deep_stack(depth: int, fn: Any) -> Any:
    """Call ``fn`` with about ``depth`` frames on the stack (as a deep caller would)."""
    if depth <= 0:
        return fn()
    return deep_stack(depth - 1, fn)


def stack_depth() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


class TestStaticRefusal:
    @pytest.mark.parametrize("expression", ISSUE_EXAMPLES, ids=lambda e: e[:30])
    def test_issue_examples_are_refused_when_compiled(self, expression):
        with pytest.raises(ExpressionBudgetError) as info:
            compile_expression(expression)
        assert "budget" in str(info.value) or "nest" in str(info.value)

    @pytest.mark.parametrize("expression", ISSUE_EXAMPLES, ids=lambda e: e[:30])
    def test_issue_examples_are_refused_by_set_config_naming_routine_and_key(self, expression):
        for routine, key in ((Filter(), "condition"), (Mapper(), "expression")):
            with pytest.raises(ExpressionBudgetError) as info:
                routine.set_config(**{key: expression})
            message = str(info.value)
            assert type(routine).__name__ in message and f"'{key}'" in message, message
            assert expression[:20] in message, message
            assert isinstance(info.value, ConfigError)  # and a ValueError, a RoutiluxError
            assert isinstance(info.value, RoutiluxError)

    @pytest.mark.parametrize("expression", ISSUE_EXAMPLES, ids=lambda e: e[:30])
    def test_issue_examples_are_refused_as_router_conditions(self, expression):
        router = ConditionalRouter()
        with pytest.raises(ExpressionBudgetError, match="route 'bomb'"):
            router.set_config(routes=[("bomb", expression)])

    @pytest.mark.parametrize(
        "expression",
        [
            "'a' * 10**9",
            "[1] * 10**9",
            "10**10**10",
            "[data] * 10**9",
            "(data, data) * 600_000",
            "'%*d' % (10**9, 1)",
            "'%.20000f' % data",
            "data if data else 'x' * 10**7",
            "str([[0] * 1000] * 1001)",
            "'ab' * 500_001",
            "x" * (MAX_EXPRESSION_LENGTH + 1),
            "(" * 250 + "1" + ")" * 250,
            "not " * 300 + "1",
            "1 + " * (MAX_DEPTH + 1) + "1",
            "[" * 100 + "]" * 100,
            "data" + "[0]" * 300,
            "1 if 1 else " * 250 + "1",
        ],
    )
    def test_what_the_text_shows_is_refused_at_compile_time(self, expression):
        with pytest.raises(ExpressionBudgetError):
            compile_expression(expression)

    @pytest.mark.parametrize("depth", [250, 2000, 3999])
    def test_deep_unary_nesting_never_reaches_the_parser(self, depth):
        import ast

        seen: list[Any] = []
        real_parse = ast.parse

        def spy(source: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(source)
            return real_parse(source, *args, **kwargs)

        ast.parse = spy  # type: ignore[assignment]
        try:
            with pytest.raises(ExpressionBudgetError, match="nests too deeply"):
                compile_expression("-" * depth + "1")
        finally:
            ast.parse = real_parse  # type: ignore[assignment]
        assert seen == []

    def test_recursion_error_from_the_parser_becomes_an_expression_error(self):
        """Close to the recursion limit even modest nesting makes ast.parse raise
        RecursionError; the caller gets an ExpressionBudgetError, nothing else."""
        expression = "-" * 150 + "2"
        room = sys.getrecursionlimit() - stack_depth() - 40
        with pytest.raises(ExpressionBudgetError):
            deep_stack(room, lambda: compile_expression(expression))

    def test_a_saved_lambda_too_deep_for_the_parser_is_a_serialization_error(self):
        saved = {"_type": "lambda_expression", "expression": "-" * 3000 + "x"}
        with pytest.raises(SerializationError):
            decode_config_value(saved, "Mapper config 'function'")

    def test_f_strings_are_refused_before_parsing(self):
        with pytest.raises(ExpressionError, match="f-strings"):
            compile_expression("f'{data.__class__}'")


class TestRuntimeRefusal:
    @pytest.mark.parametrize(("expression", "data"), RUNTIME_BOMBS, ids=_short)
    def test_over_budget_at_run_time(self, expression, data):
        compile_expression(expression)  # nothing in the text gives it away
        with pytest.raises(ExpressionBudgetError, match="budget"):
            evaluate(expression, data)

    def test_step_budget(self):
        big = list(range(400_000))
        expression = "[" + ", ".join(["5 in data"] * (MAX_STEPS // 400_000 + 2)) + "]"
        with pytest.raises(ExpressionBudgetError, match="MAX_STEPS"):
            evaluate(expression, big)
        assert evaluate("[5 in data, 6 in data]", big) == [True, True]

    def test_runtime_error_names_the_expression(self):
        with pytest.raises(ExpressionBudgetError) as info:
            evaluate("data * 10**9", "a")
        assert "'data * 10**9'" in str(info.value)
        assert f"{MAX_VALUE_SIZE:,}" in str(info.value)

    def test_long_expressions_are_shortened_in_messages(self):
        expression = "[" + ", ".join(["data"] * 600) + "] * 10**6"
        with pytest.raises(ExpressionBudgetError) as info:
            compile_expression(expression)
        assert len(str(info.value)) < 400


class TestRealExpressionsStillWork:
    @pytest.mark.parametrize(
        ("expression", "data", "expected"),
        [
            ("len([0] * 999_999)", None, 999_999),
            ("len('ab' * 500_000)", None, 1_000_000),
            ("'%.2f' % data", 3.14159, "3.14"),
            ("'%5d|%-4s|' % (data, 'ab')", 42, "   42|ab  |"),
            ("'%*d' % (6, data)", 7, "     7"),
            ("'%(name)s is %(age)d' % data", {"name": "ann", "age": 30}, "ann is 30"),
            (f"len('%.{MAX_FORMAT_WIDTH}f' % data)", 1.0, MAX_FORMAT_WIDTH + 2),
            ("2 ** 1000 > 10 ** 300", None, True),
            ("1 ** 10 ** 50", None, 1),
            ("data['items'] + [4]", {"items": [1, 2, 3]}, [1, 2, 3, 4]),
            ("len(str(data))", list(range(1000)), len(str(list(range(1000))))),
            ("int(data) + 1", "41", 42),
            ("data['n'] * 2 if data['n'] > 0 else -1", {"n": 4}, 8),
            ("[data] * 3", 1, [1, 1, 1]),
            ("'' * 10**18", None, ""),
            ("[] * 10**18", None, []),
        ],
    )
    def test_within_budget(self, expression, data, expected):
        assert evaluate(expression, data) == expected

    def test_long_flat_conditions_are_not_mistaken_for_deep_ones(self):
        clauses = [f"data.get('k{i}', 0) >= {i}" for i in range(100)]
        expression = " and ".join(clauses)
        assert len(expression) < MAX_EXPRESSION_LENGTH
        assert evaluate(expression, {f"k{i}": i for i in range(100)}) is True
        listing = "[" + ", ".join(f"data[{i}] + 1" for i in range(250)) + "]"
        assert evaluate(listing, list(range(250))) == list(range(1, 251))

    def test_nesting_up_to_the_validator_limit_parses(self):
        assert evaluate("1 + " * (MAX_DEPTH - 2) + "1") == MAX_DEPTH - 1
        assert evaluate("(" * 40 + "data" + ")" * 40, 5) == 5
        assert evaluate("-" * 50 + "1") == 1


class TestAttributeAccess:
    @pytest.mark.parametrize(
        "expression",
        [
            "getattr(getattr(data, 'keys'), 'x')",
            "getattr(getattr(data, 'get'), 'x', 1)",
            "hasattr(getattr(data, 'keys'), 'x')",
            "getattr(isinstance, 'x', 1)",
            "getattr(dict, 'fromkeys')",
            "getattr(data, '_private', 1)",
            "getattr(data, 1)",
        ],
    )
    def test_no_attribute_reads_on_machinery(self, expression):
        with pytest.raises(ExpressionError):
            evaluate(expression, {"a": 1})

    def test_generator_frames_are_out_of_reach(self):
        def gen() -> Any:
            yield 1

        with pytest.raises(ExpressionError):
            evaluate("getattr(data, 'gi_frame')", gen())

    def test_plain_attributes_of_data_still_work(self):
        assert evaluate("getattr(data, 'real')", 5) == 5
        assert evaluate("hasattr(data, 'keys')", {}) is True


# ---------------------------------------------------------------------------
# In routines and flows
# ---------------------------------------------------------------------------


def flow_with(routine_id: str, routine: Routine) -> Flow:
    flow = Flow(flow_id=f"budget-{routine_id}")
    flow.add_routine(Items(), "source")
    flow.add_routine(routine, routine_id)
    flow.connect("source", "output", routine_id, "input")
    return flow


def error_records(job: Any, routine_id: str) -> list[Any]:
    return [r for r in job.get_execution_history(routine_id) if r.event_name == "error"]


class TestInFlows:
    def test_filter_over_budget_fails_the_job_promptly(self):
        """The flow-level check of the issue: before, execute(timeout=5) never returned."""
        filt = Filter()
        filt.set_config(condition="len(str(data * 10**6)) > 0")
        flow = flow_with("gate", filt)
        job = flow.execute("source", {"items": [[0] * 10]}, timeout=5)
        assert job.status == "failed"
        [record] = error_records(job, "gate")
        assert record.data["error_type"] == "ExpressionBudgetError"
        assert "Filter 'gate'" in record.data["error"]
        assert "data * 10**6" in record.data["error"]
        assert "data * 10**6" in job.get_routine_state("gate")["error"]

    def test_router_over_budget_is_an_error_not_a_false_condition(self):
        router = ConditionalRouter()
        router.set_config(
            routes=[("bomb", "data * 10**7 == 'x'"), ("missing", "data['nope'] > 1")],
            default_route="other",
        )
        flow = flow_with("router", router)
        job = flow.execute("source", {"items": ["ab"]}, timeout=5)
        assert job.status == "failed"
        [record] = error_records(job, "router")
        assert record.data["error_type"] == "ExpressionBudgetError"
        assert "ConditionalRouter 'router'" in record.data["error"]
        assert "route 'bomb'" in record.data["error"]

    def test_router_still_reads_other_failures_as_false(self):
        router = ConditionalRouter()
        router.set_config(routes=[("missing", "data['nope'] > 1")], default_route="other")
        job = flow_with("router", router).execute("source", {"items": [{}]}, timeout=5)
        assert job.status == "completed"
        assert [r.event_name for r in job.get_execution_history("router")] == ["other"]

    def test_mapper_over_budget_under_continue_goes_on(self):
        mapper = Mapper()
        mapper.set_config(expression="data * 10**6")
        mapper.set_error_handler(ErrorHandler(strategy=ErrorStrategy.CONTINUE))
        flow = flow_with("mapper", mapper)
        job = flow.execute("source", {"items": ["ab", 3]}, timeout=5)
        assert job.status == "completed"
        [record] = [
            r for r in job.get_execution_history("mapper") if r.event_name == "error_continued"
        ]
        assert record.data["error_type"] == "ExpressionBudgetError"
        outputs = [r.data for r in job.get_execution_history("mapper") if r.event_name == "output"]
        assert outputs == [{"data": 3_000_000}]

    def test_a_restored_lambda_over_budget_fails_its_routine(self):
        transformer = DataTransformer()
        transformer.set_config(transformations=[SafeLambda("data * 10**7")])
        flow = flow_with("transform", transformer)
        job = flow.execute("source", {"items": ["xy"]}, timeout=5)
        assert job.status == "failed"
        [record] = error_records(job, "transform")
        assert record.data["error_type"] == "ExpressionBudgetError"
        assert "DataTransformer 'transform'" in record.data["error"]

    def test_outside_a_job_the_routine_is_named_by_its_repr(self):
        filt = Filter()
        filt.set_config(condition="data * 10**9")
        with pytest.raises(ExpressionBudgetError) as info:
            filt.accepts("a")
        assert repr(filt) in str(info.value) and "'condition'" in str(info.value)

    def test_a_file_with_an_over_budget_expression_does_not_load(self):
        filt = Filter()
        filt.set_config(condition="data > 1")
        flow = flow_with("gate", filt)
        saved = json.loads(json.dumps(flow.serialize()))
        saved["routines"]["gate"]["_config"]["condition"] = "'%.999999999f' % data"
        with pytest.raises(SerializationError) as info:
            Flow().deserialize(saved)
        assert "condition" in str(info.value) and "budget" in str(info.value)

    def test_a_file_with_a_too_deep_router_condition_does_not_load(self):
        router = ConditionalRouter()
        router.set_config(routes=[("r", "data > 1")])
        saved = json.loads(json.dumps(flow_with("router", router).serialize()))
        saved["routines"]["router"]["_config"]["routes"] = [["r", "-" * 3000 + "1"]]
        with pytest.raises((SerializationError, ConfigError)) as info:
            Flow().deserialize(saved)
        assert "route 'r'" in str(info.value)


# ---------------------------------------------------------------------------
# The nesting estimate is an upper bound of the real nesting
# ---------------------------------------------------------------------------


def _tree_depth(node: Any) -> int:
    import ast

    skip = (ast.expr_context, ast.operator, ast.cmpop, ast.boolop, ast.unaryop)
    best, stack = 0, [(node, 1)]
    while stack:
        current, depth = stack.pop()
        best = max(best, depth)
        stack.extend(
            (c, depth + 1) for c in ast.iter_child_nodes(current) if not isinstance(c, skip)
        )
    return best


def _expressions() -> Any:
    from hypothesis import strategies as st

    leaves = st.sampled_from(["data", "1", "'s'", "x", "None", "2.5"])

    def extend(inner: Any) -> Any:
        binary = st.sampled_from(["+", "-", "*", "/", "%", "**", "//"])
        compare = st.sampled_from(["<", "==", "in", "not in", "is not", ">="])
        return st.one_of(
            st.tuples(inner, binary, inner).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
            st.tuples(inner, compare, inner).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
            st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(" ".join),
            st.tuples(st.sampled_from(["-", "not ", "+"]), inner).map("".join),
            inner.map(lambda e: f"({e})"),
            st.lists(inner, max_size=3).map(lambda es: "[" + ", ".join(es) + "]"),
            st.tuples(inner, inner).map(lambda t: f"{{{t[0]}: {t[1]}}}"),
            st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]})[{t[1]}:]"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]}).get({t[1]})"),
            st.tuples(inner, inner).map(lambda t: f"len({t[0]}, k={t[1]})"),
            st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} if {t[1]} else {t[2]}"),
            inner.map(lambda e: f"lambda: {e}"),
        )

    return st.recursive(leaves, extend, max_leaves=40)


def test_nesting_estimate_is_an_upper_bound():
    import ast

    from hypothesis import given, settings

    from routilux.builtin_routines._expressions import _nesting_estimate

    @settings(max_examples=300, deadline=None)
    @given(_expressions())
    def check(text: str) -> None:
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError:
            return  # e.g. a lambda where Python does not allow one
        assert _nesting_estimate(text) >= _tree_depth(tree.body), text

    check()


class TestRestoredLambdasOverBudget:
    """A lambda restored from a file is a SafeLambda: over budget it must fail its
    routine, not be swallowed as an ordinary error of a step, rule or extractor."""

    BOMB = SafeLambda("data * 10**7 == 1")

    def test_filter_condition(self):
        filt = Filter()
        filt.set_config(condition=self.BOMB)
        with pytest.raises(ExpressionBudgetError, match="config 'condition'"):
            filt.accepts("ab")

    def test_mapper_function(self):
        mapper = Mapper()
        mapper.set_config(function=self.BOMB)
        with pytest.raises(ExpressionBudgetError, match="config 'function'"):
            mapper.map_item("ab")

    def test_router_condition(self):
        router = ConditionalRouter()
        router.set_config(routes=[("r", self.BOMB)])
        with pytest.raises(ExpressionBudgetError, match="route 'r'"):
            router.match("ab")

    def test_transformer_step(self):
        transformer = DataTransformer()
        with pytest.raises(ExpressionBudgetError, match="transformation"):
            transformer.transform("ab", [self.BOMB])

    def test_validator_rule(self):
        from routilux.builtin_routines import DataValidator

        validator = DataValidator()
        validator.set_config(rules={"name": self.BOMB})
        with pytest.raises(ExpressionBudgetError, match="field 'name'"):
            validator.validate({"name": "ab"})

    def test_extractor(self):
        from routilux.builtin_routines import ResultExtractor

        extractor = ResultExtractor()
        extractor.register_extractor("bomb", SafeLambda("data * 10**7"))
        extractor.set_config(extractor_priority=["bomb"])
        with pytest.raises(ExpressionBudgetError, match="extractor 'bomb'"):
            extractor.extract("ab")

    def test_other_failures_of_steps_are_still_reported_as_before(self):
        transformer = DataTransformer()
        result, applied, errors = transformer.transform("ab", [SafeLambda("data['x']")])
        assert result == "ab" and applied == [] and errors and "Error applying" in errors[0]


# ---------------------------------------------------------------------------
# The budget changes no result: differential test against Python itself
# ---------------------------------------------------------------------------


def _small_expressions() -> Any:
    from hypothesis import strategies as st

    leaves = st.sampled_from(
        ["data", "1", "3", "-2", "'ab'", "2.5", "None", "True", "[1, 2]", "(3,)", "{'a': 1}"]
    )

    def extend(inner: Any) -> Any:
        binary = st.sampled_from(["+", "-", "*", "/", "%", "//"])
        # No `is`: whether two equal literals are one object is up to the compiler.
        compare = st.sampled_from(["<", "==", "!=", "in", "not in", ">="])
        return st.one_of(
            st.tuples(inner, binary, inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(inner, compare, inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            inner.map(lambda e: f"(not {e})"),
            inner.map(lambda e: f"(-{e})"),
            st.lists(inner, max_size=3).map(lambda es: "[" + ", ".join(es) + "]"),
            st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
            st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}:]"),
            st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
            st.tuples(st.sampled_from(["len", "str", "bool", "int", "float", "list"]), inner).map(
                lambda t: f"{t[0]}({t[1]})"
            ),
            st.tuples(st.sampled_from(["'%s'", "'%5d|'", "'%-4.1f'", "'%r%%'"]), inner).map(
                lambda t: f"({t[0]} % {t[1]})"
            ),
        )

    return st.recursive(leaves, extend, max_leaves=10)


def test_results_are_those_of_python():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    names = {f.__name__: f for f in (len, str, bool, int, float, list)}

    def outcome(run: Any) -> Any:
        try:
            return ("value", run())
        except ExpressionBudgetError:
            return ("budget", None)
        except Exception:  # noqa: BLE001 - any failure: the kinds may differ
            return ("error", None)

    @settings(max_examples=400, deadline=None)
    @given(_small_expressions(), st.sampled_from([0, 7, "xy", [1, 2, 3], {"a": 1}, None, 1.5]))
    def check(text: str, data: Any) -> None:
        ours = outcome(lambda: evaluate(text, data))
        with warnings.catch_warnings():  # CPython's "perhaps you missed a comma?" hints
            warnings.simplefilter("ignore", SyntaxWarning)
            theirs = outcome(
                lambda: eval(text, {"__builtins__": {}}, {"data": data, **names})  # noqa: S307
            )
        assert ours[0] != "budget", text  # these are all small
        assert ours == theirs, text

    check()

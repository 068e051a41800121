"""The safe expression language of the built-in routines, and the callable codec for
their configuration.

Conditions (ConditionalRouter, Filter) and transforms (Mapper, DataTransformer, ...)
may be written as short Python-like expressions over the names ``data``, ``config``
and ``stats``.  An expression is parsed with :func:`ast.parse` and then *interpreted
by walking the tree*: nothing here ever calls ``eval``, ``exec`` or ``compile``, and
only an allow-listed subset of Python is accepted:

* constants, ``list``/``tuple``/``set``/``dict`` displays, the names above;
* arithmetic, comparisons (including ``in``/``not in``/``is``), ``and``/``or``/``not``,
  conditional expressions ``a if c else b``, subscripts and slices;
* calls of the builtins ``isinstance, dict, list, str, int, float, bool, len, getattr,
  hasattr`` and of a few side-effect-free methods of builtin values (``d.get(k)``,
  ``s.startswith(p)``, ...).  ``getattr``/``hasattr`` refuse names starting with ``_``.

Work is bounded (expression length, nesting, ``**`` and sequence repetition sizes), so an
expression taken from a saved file can neither run code nor hang the process.

The second half of the module turns callables found in a routine's configuration into
JSON-safe data and back: functions that :func:`routilux.serialization.encode_callable`
can restore are saved by reference; a lambda or nested function whose body is a single
expression of the safe language is saved as ``{"_type": "lambda_expression",
"expression": ...}`` and comes back as a :class:`SafeLambda`.
"""

from __future__ import annotations

import ast
import functools
import inspect
import operator
import textwrap
import types
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Optional

from routilux.exceptions import ExpressionError, SerializationError
from routilux.serialization import decode_callable, encode_callable

__all__ = [
    "ExpressionError",
    "SafeLambda",
    "call_condition",
    "compile_expression",
    "decode_config_value",
    "encode_config_value",
    "evaluate",
    "expression_from_callable",
]

MAX_EXPRESSION_LENGTH = 4000
MAX_DEPTH = 60
MAX_SEQUENCE_RESULT = 1_000_000
MAX_POW_BITS = 100_000

LAMBDA_EXPRESSION = "lambda_expression"
PARAMETER_ALIASES = ("x", "item", "value", "obj")
"""Parameter names of saved lambdas that mean ``data`` (kept for old files)."""

CONTEXT_NAMES = ("data", "config", "stats")


def _safe_getattr(obj: Any, name: str, *default: Any) -> Any:
    if not isinstance(name, str) or name.startswith("_"):
        raise ExpressionError(f"getattr of {name!r} is not allowed in expressions")
    return getattr(obj, name, *default)


def _safe_hasattr(obj: Any, name: str) -> bool:
    if not isinstance(name, str) or name.startswith("_"):
        raise ExpressionError(f"hasattr of {name!r} is not allowed in expressions")
    return hasattr(obj, name)


ALLOWED_FUNCTIONS: dict[str, Any] = {
    "isinstance": isinstance,
    "dict": dict,
    "list": list,
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "len": len,
    "getattr": _safe_getattr,
    "hasattr": _safe_hasattr,
}

# Methods that only read their receiver, per builtin receiver type.
_ALLOWED_METHODS: dict[type, frozenset[str]] = {
    dict: frozenset({"get", "keys", "values", "items"}),
    str: frozenset(
        {
            "lower",
            "upper",
            "strip",
            "lstrip",
            "rstrip",
            "startswith",
            "endswith",
            "isdigit",
            "isalpha",
            "isalnum",
            "isspace",
            "split",
            "count",
            "find",
        }
    ),  # fmt: skip
    list: frozenset({"count", "index"}),
    tuple: frozenset({"count", "index"}),
}
_ALL_METHOD_NAMES = frozenset().union(*_ALLOWED_METHODS.values())

_BIN_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPS: dict[type, Callable[[Any], Any]] = {
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_COMPARE_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_CONSTANT_TYPES = (str, bytes, int, float, bool, type(None))


# ---------------------------------------------------------------------------
# Parsing and validation
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def compile_expression(expression: str) -> ast.Expression:
    """Parse ``expression`` and check it uses only the safe subset.

    Returns the (cached, never mutated) tree; raises :class:`ExpressionError` naming the
    construct that is not allowed. ("compile" as in *prepare*: no code object is made.)
    """
    if not isinstance(expression, str):
        raise ExpressionError(f"an expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression {expression!r}: {exc.msg}") from None
    _Validator(expression).check(tree.body, 0)
    return tree


class _Validator:
    def __init__(self, expression: str) -> None:
        self.expression = expression

    def fail(self, node: ast.AST, what: str) -> ExpressionError:
        return ExpressionError(
            f"{what} is not allowed in expressions (in {self.expression!r}, "
            f"column {getattr(node, 'col_offset', 0) + 1})"
        )

    def check(self, node: ast.AST, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise self.fail(node, "nesting this deep")
        nxt = depth + 1
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, _CONSTANT_TYPES):
                raise self.fail(node, f"the constant {node.value!r}")
        elif isinstance(node, ast.Name):
            if node.id not in CONTEXT_NAMES and node.id not in ALLOWED_FUNCTIONS:
                raise self.fail(node, f"the name {node.id!r}")
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self.check(value, nxt)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BIN_OPS:
                raise self.fail(node, f"the operator {type(node.op).__name__}")
            self.check(node.left, nxt)
            self.check(node.right, nxt)
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY_OPS:
                raise self.fail(node, f"the operator {type(node.op).__name__}")
            self.check(node.operand, nxt)
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _COMPARE_OPS:
                    raise self.fail(node, f"the comparison {type(op).__name__}")
            self.check(node.left, nxt)
            for comparator in node.comparators:
                self.check(comparator, nxt)
        elif isinstance(node, ast.IfExp):
            self.check(node.test, nxt)
            self.check(node.body, nxt)
            self.check(node.orelse, nxt)
        elif isinstance(node, ast.Subscript):
            self.check(node.value, nxt)
            self.check(node.slice, nxt)
        elif isinstance(node, ast.Slice):
            for part in (node.lower, node.upper, node.step):
                if part is not None:
                    self.check(part, nxt)
        elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            for element in node.elts:
                if isinstance(element, ast.Starred):
                    raise self.fail(element, "unpacking with *")
                self.check(element, nxt)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if key is None:
                    raise self.fail(value, "unpacking with **")
                self.check(key, nxt)
                self.check(value, nxt)
        elif isinstance(node, ast.Call):
            self.check_call(node, nxt)
        elif isinstance(node, ast.Attribute):
            raise self.fail(
                node,
                f"reading the attribute {node.attr!r} (only method calls "
                f"such as .get(...) are allowed)",
            )
        else:
            raise self.fail(node, f"the construct {type(node).__name__}")

    def check_call(self, node: ast.Call, depth: int) -> None:
        func = node.func
        if isinstance(func, ast.Name):
            if func.id not in ALLOWED_FUNCTIONS:
                raise self.fail(node, f"calling {func.id!r}")
        elif isinstance(func, ast.Attribute):
            if func.attr not in _ALL_METHOD_NAMES:
                raise self.fail(node, f"calling the method {func.attr!r}")
            self.check(func.value, depth)
        else:
            raise self.fail(node, "calling the result of an expression")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.fail(arg, "unpacking with *")
            self.check(arg, depth)
        for keyword in node.keywords:
            if keyword.arg is None:
                raise self.fail(keyword.value, "unpacking with **")
            self.check(keyword.value, depth)


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


def evaluate(
    expression: str,
    data: Any = None,
    config: Mapping[str, Any] | None = None,
    stats: Mapping[str, Any] | None = None,
) -> Any:
    """Evaluate ``expression`` with the names ``data``, ``config`` and ``stats``.

    Raises :class:`ExpressionError` for a construct outside the safe language; any
    other exception comes from the evaluation itself (e.g. a missing key).
    """
    tree = compile_expression(expression)
    env = {"data": data, "config": dict(config or {}), "stats": dict(stats or {})}
    return _Interpreter(env).value_of(tree.body)


class _Interpreter:
    def __init__(self, env: dict[str, Any]) -> None:
        self.env = env

    def value_of(self, node: ast.AST) -> Any:  # noqa: C901 - one dispatch table
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            if node.id in ALLOWED_FUNCTIONS:
                return ALLOWED_FUNCTIONS[node.id]
            raise ExpressionError(f"the name {node.id!r} is not allowed in expressions")
        if isinstance(node, ast.BoolOp):
            is_and = isinstance(node.op, ast.And)
            result: Any = None
            for value in node.values:
                result = self.value_of(value)
                if bool(result) != is_and:
                    return result
            return result
        if isinstance(node, ast.BinOp):
            left = self.value_of(node.left)
            right = self.value_of(node.right)
            _check_bin_op_size(node.op, left, right)
            return _BIN_OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp):
            return _UNARY_OPS[type(node.op)](self.value_of(node.operand))
        if isinstance(node, ast.Compare):
            left = self.value_of(node.left)
            for op, comparator in zip(node.ops, node.comparators):
                right = self.value_of(comparator)
                if not _COMPARE_OPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            chosen = node.body if self.value_of(node.test) else node.orelse
            return self.value_of(chosen)
        if isinstance(node, ast.Subscript):
            return self.value_of(node.value)[self.value_of(node.slice)]
        if isinstance(node, ast.Slice):
            return slice(
                None if node.lower is None else self.value_of(node.lower),
                None if node.upper is None else self.value_of(node.upper),
                None if node.step is None else self.value_of(node.step),
            )
        if isinstance(node, ast.List):
            return [self.value_of(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self.value_of(e) for e in node.elts)
        if isinstance(node, ast.Set):
            return {self.value_of(e) for e in node.elts}
        if isinstance(node, ast.Dict):
            return {
                self.value_of(k): self.value_of(v)
                for k, v in zip(node.keys, node.values)
                if k is not None
            }
        if isinstance(node, ast.Call):
            return self.call(node)
        raise ExpressionError(f"the construct {type(node).__name__} is not allowed")

    def call(self, node: ast.Call) -> Any:
        func = node.func
        target: Callable[..., Any]
        if isinstance(func, ast.Name):
            if func.id not in ALLOWED_FUNCTIONS:
                raise ExpressionError(f"calling {func.id!r} is not allowed in expressions")
            target = ALLOWED_FUNCTIONS[func.id]
        elif isinstance(func, ast.Attribute):
            receiver = self.value_of(func.value)
            allowed = next(
                (names for t, names in _ALLOWED_METHODS.items() if type(receiver) is t),
                frozenset(),
            )
            if func.attr not in allowed:
                raise ExpressionError(
                    f"calling .{func.attr}() on a {type(receiver).__name__} is not allowed "
                    f"in expressions"
                )
            target = getattr(receiver, func.attr)
        else:
            raise ExpressionError("calling the result of an expression is not allowed")
        args = [self.value_of(a) for a in node.args]
        kwargs = {kw.arg: self.value_of(kw.value) for kw in node.keywords if kw.arg is not None}
        return target(*args, **kwargs)


def _check_bin_op_size(op: ast.operator, left: Any, right: Any) -> None:
    """Refuse operations whose result would be huge (the language must not hang)."""
    if isinstance(op, ast.Pow) and isinstance(left, int) and isinstance(right, int):
        if right > 0 and max(left.bit_length(), 1) * right > MAX_POW_BITS:
            raise ExpressionError("the result of ** would be too large")
    if isinstance(op, ast.Mult):
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int):
                if len(seq) * count > MAX_SEQUENCE_RESULT:
                    raise ExpressionError("the result of * would be too large")


# ---------------------------------------------------------------------------
# SafeLambda: an expression that behaves like a function
# ---------------------------------------------------------------------------


class SafeLambda:
    """A callable built from a safe expression: ``SafeLambda("data > 3")(5) -> True``.

    It stands in for a lambda restored from saved data, so it accepts ``data`` plus the
    optional ``config`` and ``stats`` a condition may be given.
    """

    __name__ = "<lambda>"

    def __init__(self, expression: str) -> None:
        compile_expression(expression)
        self.expression = expression

    def __call__(
        self,
        data: Any = None,
        config: Optional[Mapping[str, Any]] = None,
        stats: Optional[Mapping[str, Any]] = None,
    ) -> Any:
        return evaluate(self.expression, data, config, stats)

    def __repr__(self) -> str:
        return f"SafeLambda({self.expression!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SafeLambda) and other.expression == self.expression

    def __hash__(self) -> int:
        return hash(("SafeLambda", self.expression))


def call_condition(fn: Callable[..., Any], data: Any, config: Mapping[str, Any]) -> Any:
    """Call a user condition with the arguments it asks for (spec 80, ConditionalRouter).

    One parameter: ``fn(data)``. Two: keyword call with ``data`` plus ``config``/``stats``
    when those names are used, else ``fn(data, config)``. More: keyword call with the
    ones of ``data``/``config``/``stats`` it names. When the parameters cannot be bound
    that way, ``fn(data)``. Exceptions raised by ``fn`` itself propagate.
    """
    if isinstance(fn, SafeLambda):
        return fn(data, config, {})
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn(data)
    params = [
        p
        for p in sig.parameters.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    available: dict[str, Any] = {"data": data, "config": config, "stats": {}}
    args: tuple[Any, ...] = (data,)
    kwargs: dict[str, Any] = {}
    names = [p.name for p in params]
    if len(params) == 2:
        if "data" in names and set(names) <= set(available):
            kwargs = {n: available[n] for n in names}
            args = ()
        else:
            args = (data, config)
    elif len(params) > 2:
        kwargs = {n: available[n] for n in names if n in available}
        args = ()
    try:
        sig.bind(*args, **kwargs)
    except TypeError:
        args, kwargs = (data,), {}
    return fn(*args, **kwargs)


# ---------------------------------------------------------------------------
# Lambdas -> expressions
# ---------------------------------------------------------------------------


class _Rename(ast.NodeTransformer):
    def __init__(self, mapping: Mapping[str, str]) -> None:
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.AST:
        new = self.mapping.get(node.id)
        if new is None:
            return node
        return ast.copy_location(ast.Name(id=new, ctx=node.ctx), node)


def rename_aliases(expression: str) -> str:
    """Rewrite the legacy parameter names ``x``, ``item``, ``value``, ``obj`` to ``data``."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression {expression!r}: {exc.msg}") from None
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    if not names & set(PARAMETER_ALIASES):
        return expression
    mapping = {alias: "data" for alias in PARAMETER_ALIASES}
    return ast.unparse(_Rename(mapping).visit(tree))


def expression_from_callable(fn: Callable[..., Any]) -> str:
    """The safe expression equivalent to a lambda or a ``def`` that only returns one.

    The source is read with :mod:`inspect` and parsed (never executed). The function's
    parameters are renamed to ``data`` (one parameter) or ``data, config`` (two); the
    result must be valid in the safe language. Raises :class:`ExpressionError` with
    the reason when that is impossible.
    """
    if not isinstance(fn, types.FunctionType):
        raise ExpressionError(f"{type(fn).__name__} objects have no source expression")
    node = _find_definition(fn)
    if isinstance(node, ast.Lambda):
        body: ast.expr = node.body
    else:
        statements = list(node.body)
        if (
            statements
            and isinstance(statements[0], ast.Expr)
            and isinstance(statements[0].value, ast.Constant)
            and isinstance(statements[0].value.value, str)
        ):
            statements = statements[1:]  # docstring
        if len(statements) != 1 or not isinstance(statements[0], ast.Return):
            raise ExpressionError("the function body is not a single 'return <expression>'")
        if statements[0].value is None:
            raise ExpressionError("the function returns nothing")
        body = statements[0].value
    args = node.args
    if args.vararg or args.kwarg or args.kwonlyargs:
        raise ExpressionError("the function takes *args, **kwargs or keyword-only arguments")
    params = [a.arg for a in (*args.posonlyargs, *args.args)]
    if len(params) == 1:
        mapping = {params[0]: "data"}
    elif len(params) == 2 and not set(params) <= set(CONTEXT_NAMES):
        mapping = {params[0]: "data", params[1]: "config"}
    elif params and set(params) <= set(CONTEXT_NAMES):
        mapping = {p: p for p in params}
    else:
        raise ExpressionError(f"cannot map the parameters {params} to data/config/stats")
    used = {n.id for n in ast.walk(body) if isinstance(n, ast.Name)}
    shadowed = (used & set(CONTEXT_NAMES)) - set(mapping)
    if shadowed:
        raise ExpressionError(f"the body uses {sorted(shadowed)} from outside the function")
    expression = ast.unparse(_Rename(mapping).visit(body))
    compile_expression(expression)
    return expression


def _find_definition(fn: types.FunctionType) -> ast.Lambda | ast.FunctionDef:
    code = fn.__code__
    try:
        lines, _ = inspect.findsource(fn)
    except (OSError, TypeError) as exc:
        raise ExpressionError(f"its source is not available ({exc})") from None
    try:
        module = ast.parse("".join(lines))
        offset = 0
    except SyntaxError:
        # Fall back to the function's own block (e.g. a file that no longer parses).
        try:
            block = textwrap.dedent(inspect.getsource(fn))
            module = ast.parse(block)
        except (OSError, SyntaxError) as exc:
            raise ExpressionError(f"its source cannot be parsed ({exc})") from None
        offset = code.co_firstlineno - 1
    first = code.co_firstlineno - offset
    arg_names = list(code.co_varnames[: code.co_argcount + code.co_posonlyargcount])
    if fn.__name__ == "<lambda>":
        candidates: list[Any] = [
            n
            for n in ast.walk(module)
            if isinstance(n, ast.Lambda)
            and n.lineno == first
            and [a.arg for a in (*n.args.posonlyargs, *n.args.args)] == arg_names
        ]
        if len(candidates) > 1:
            candidates = _narrow_by_position(candidates, code, offset)
        what = "lambda"
    else:
        candidates = [
            n
            for n in ast.walk(module)
            if isinstance(n, ast.FunctionDef)
            and n.name == fn.__name__
            and first in (n.lineno, *(d.lineno for d in n.decorator_list))
        ]
        what = f"function {fn.__name__!r}"
    if not candidates:
        raise ExpressionError(f"the {what} was not found in its source")
    if len(candidates) > 1:
        raise ExpressionError(f"several {what}s on line {code.co_firstlineno} look alike")
    result: ast.Lambda | ast.FunctionDef = candidates[0]
    return result


def _narrow_by_position(candidates: list[Any], code: types.CodeType, offset: int) -> list[Any]:
    """Pick the lambda whose source span holds the code's instructions (Python 3.11+)."""
    positions_fn = getattr(code, "co_positions", None)
    if positions_fn is None:
        return candidates
    spans = [
        (line - offset, col)
        for line, _end, col, _endcol in positions_fn()
        if line is not None and col is not None
    ]
    if not spans:
        return candidates

    def inside(node: ast.Lambda) -> bool:
        start = (node.body.lineno, node.body.col_offset)
        end = (node.body.end_lineno or node.body.lineno, node.body.end_col_offset or 0)
        return all(start <= span <= end for span in spans)

    narrowed = [c for c in candidates if inside(c)]
    return narrowed or candidates


# ---------------------------------------------------------------------------
# Configuration values <-> JSON-safe data
# ---------------------------------------------------------------------------


def _encode_function(fn: Callable[..., Any], where: str) -> dict[str, Any]:
    if isinstance(fn, SafeLambda):
        return {"_type": LAMBDA_EXPRESSION, "expression": fn.expression}
    spec: dict[str, Any] | None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            spec = encode_callable(fn)
        except Exception:  # noqa: BLE001 - any failure means "not by reference"
            spec = None
    restored = None
    # A configuration has no owner object to resolve a method against; anything else is
    # saved by reference only when loading would give this very callable back, i.e. when
    # it is registered (register_function) or a safe builtin.
    if spec is not None and spec.get("callable_type") != "method":
        try:
            restored = decode_callable(spec)
        except SerializationError:
            restored = None
    if spec is not None and restored is not None and restored == fn:
        return spec
    try:
        expression = expression_from_callable(fn)
    except ExpressionError as exc:
        raise SerializationError(
            f"{where} cannot be serialized: {fn!r} is neither a registered function "
            f"(routilux.register_function) nor a lambda whose body is a safe expression "
            f"({exc})"
        ) from None
    return {"_type": LAMBDA_EXPRESSION, "expression": expression}


def encode_config_value(value: Any, where: str) -> Any:
    """``value`` with every callable replaced by its saved form; tuples become lists."""
    if isinstance(value, dict):
        return {k: encode_config_value(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_config_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if callable(value):
        return _encode_function(value, where)
    return value


def decode_callable_value(spec: Mapping[str, Any], where: str) -> Callable[..., Any]:
    """Rebuild a callable saved by :func:`encode_config_value`; SerializationError if not."""
    if spec.get("_type") == LAMBDA_EXPRESSION:
        expression = spec.get("expression")
        if not isinstance(expression, str):
            raise SerializationError(f"{where}: lambda_expression without an expression")
        try:
            return SafeLambda(rename_aliases(expression))
        except ExpressionError as exc:
            raise SerializationError(f"{where} cannot be restored: {exc}") from None
    try:
        fn = decode_callable(spec)
    except SerializationError as exc:
        raise SerializationError(f"{where} cannot be restored: {exc}") from None
    if fn is None:  # pragma: no cover - a saved callable dict never decodes to None
        raise SerializationError(f"{where} cannot be restored: no callable")
    return fn


def _is_saved_callable(value: Any) -> bool:
    return isinstance(value, dict) and value.get("_type") in ("callable", LAMBDA_EXPRESSION)


def decode_config_value(value: Any, where: str) -> Any:
    """The inverse of :func:`encode_config_value` (lists stay lists)."""
    if _is_saved_callable(value):
        return decode_callable_value(value, where)
    if isinstance(value, dict):
        return {k: decode_config_value(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list):
        return [decode_config_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value

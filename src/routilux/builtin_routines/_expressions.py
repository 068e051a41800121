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
  ``s.startswith(p)``, ...).  ``getattr``/``hasattr`` refuse names starting with ``_``
  and refuse to look inside modules, classes, functions, frames and code.

Every evaluation runs on a *budget* (the ``MAX_*`` constants below), so an expression
taken from a saved file can neither run code nor hang the process nor exhaust its
memory:

* the text is at most :data:`MAX_EXPRESSION_LENGTH` characters and its nesting is
  estimated from its tokens *before* :func:`ast.parse` sees it (CPython's parser and
  AST builder recurse, so a deeply nested text would otherwise raise RecursionError);
  the parsed tree may nest :data:`MAX_DEPTH` levels;
* no value the expression builds (by ``*``, ``+``, ``%``, ``str()``, ``list()``, ...)
  is larger than :data:`MAX_VALUE_SIZE`, no int longer than :data:`MAX_INT_BITS` bits,
  no ``%`` format width or precision above :data:`MAX_FORMAT_WIDTH`;
* one evaluation takes at most :data:`MAX_STEPS` steps, a step being one node of the
  tree or one element or character an operation has to touch.

Going over budget raises :class:`ExpressionBudgetError` (an :class:`ExpressionError`).
What can be seen from the text alone (length, nesting, a constant format width, a
constant part such as ``'a' * 10**9``) is refused by :func:`compile_expression`, i.e.
when a routine is configured or a flow is loaded; the rest when it is evaluated.

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
import io
import math
import operator
import textwrap
import tokenize
import types
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable, Optional, Union

from routilux.exceptions import ExpressionBudgetError, ExpressionError, SerializationError
from routilux.serialization import decode_callable, encode_callable

__all__ = [
    "ExpressionBudgetError",
    "ExpressionError",
    "SafeLambda",
    "call_condition",
    "compile_expression",
    "decode_config_value",
    "encode_config_value",
    "evaluate",
    "expression_from_callable",
]

# -- The budget ---------------------------------------------------------------------
# Generous for conditions and transforms people write, small enough that the worst an
# expression can do stays well under a second and a few tens of megabytes.

MAX_EXPRESSION_LENGTH = 4000
"""Characters of one expression."""

MAX_PARSE_NESTING = 200
"""Upper estimate of the nesting of an expression, computed from its tokens before it
is parsed; above it the text never reaches :func:`ast.parse`."""

MAX_DEPTH = 60
"""Nesting of the parsed tree (``1 + 1 + ... + 1`` nests once per ``+``)."""

MAX_VALUE_SIZE = 1_000_000
"""Size of any value an expression builds: the length of a str or bytes, 1 per element
of a container plus the sizes of its elements (an element counted as often as it is
repeated), about a quarter of its bit length for an int, 1 for other values.
``[0] * 999_999`` fits; ``[[0] * 1000] * 1000`` does not. (Parts of ``data`` and
``config`` taken as they are do not count; building on them does.)"""

MAX_INT_BITS = 100_000
"""Bits of an int built by ``*`` or ``**`` (about 30,000 decimal digits)."""

MAX_FORMAT_WIDTH = 10_000
"""Width or precision in a ``%`` format (``'%.2f'``, ``'%*d'``)."""

MAX_INT_DIGITS = 4_300
"""Length of a string given to ``int()`` (the conversion is quadratic)."""

MAX_STEPS = 5_000_000
"""Steps of one evaluation: one per node evaluated plus one per element or character
an operation touches (a comparison, a concatenation, ``str()`` of a container, ...)."""

# Names of the first version, kept for code that imported them.
MAX_SEQUENCE_RESULT = MAX_VALUE_SIZE
MAX_POW_BITS = MAX_INT_BITS

_SHOWN_CHARS = 80  # how much of an expression an error message quotes

LAMBDA_EXPRESSION = "lambda_expression"
PARAMETER_ALIASES = ("x", "item", "value", "obj")
"""Parameter names of saved lambdas that mean ``data`` (kept for old files)."""

CONTEXT_NAMES = ("data", "config", "stats")


def _shown(expression: str) -> str:
    """``expression`` quoted for an error message, shortened when it is long."""
    if len(expression) <= _SHOWN_CHARS:
        return repr(expression)
    return repr(expression[:_SHOWN_CHARS]) + f"... ({len(expression)} characters)"


# Values whose attributes are the interpreter's own machinery, not data: reading them
# is how sandbox escapes start (``f.__globals__``, ``gen.gi_frame.f_back``, ...).
_OPAQUE_TYPES: tuple[type, ...] = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.FrameType,
    types.CodeType,
    types.TracebackType,
    types.GeneratorType,
    types.CoroutineType,
    types.AsyncGeneratorType,
    type(str.join),  # method descriptor
    type("".join),  # builtin method
    type((1).__add__),  # method-wrapper
)


def _check_attribute(obj: Any, name: Any, what: str) -> None:
    if not isinstance(name, str) or name.startswith("_"):
        raise ExpressionError(f"{what} of {name!r} is not allowed in expressions")
    if isinstance(obj, _OPAQUE_TYPES):
        raise ExpressionError(
            f"{what} on a {type(obj).__name__} object is not allowed in expressions"
        )


def _safe_getattr(obj: Any, name: str, *default: Any) -> Any:
    _check_attribute(obj, name, "getattr")
    return getattr(obj, name, *default)


def _safe_hasattr(obj: Any, name: str) -> bool:
    _check_attribute(obj, name, "hasattr")
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
_NO_METHODS: frozenset[str] = frozenset()

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
_TEXT = (str, bytes)
_SEQUENCES = (str, bytes, list, tuple)
_SIZED = (str, bytes, list, tuple, dict, set, frozenset)


# ---------------------------------------------------------------------------
# Parsing and validation
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def compile_expression(expression: str) -> ast.Expression:
    """Parse ``expression`` and check it uses only the safe subset, within budget.

    Returns the (cached, never mutated) tree; raises :class:`ExpressionError` naming the
    construct that is not allowed, or :class:`ExpressionBudgetError` when the text is
    too long or too deeply nested, or a part of it that depends on no input (such as
    ``'a' * 10**9`` or ``'%.999999999f'``) is over budget. ("compile" as in *prepare*:
    no code object is made.)
    """
    if not isinstance(expression, str):
        raise ExpressionError(f"an expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ExpressionBudgetError(
            f"expression {_shown(expression)} is longer than {MAX_EXPRESSION_LENGTH} "
            f"characters (MAX_EXPRESSION_LENGTH)"
        )
    tree = parse_expression(expression)
    _Validator(expression).check(tree.body, 0)
    _check_constant_parts(expression, tree.body)
    return tree


def parse_expression(expression: str) -> ast.Expression:
    """``ast.parse(expression.strip(), mode="eval")``, refusing (ExpressionError) text
    that is too deeply nested for the parser, and any syntax error."""
    text = expression.strip()
    try:
        nesting = _nesting_estimate(text)
    except ExpressionError as exc:
        raise ExpressionError(f"{exc} (in {_shown(expression)})") from None
    if nesting > MAX_PARSE_NESTING:
        raise ExpressionBudgetError(
            f"expression {_shown(expression)} nests too deeply (about {nesting} levels; "
            f"MAX_PARSE_NESTING is {MAX_PARSE_NESTING})"
        )
    try:
        return ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression {_shown(expression)}: {exc.msg}") from None
    except (RecursionError, MemoryError) as exc:  # the estimate is a guard, this the net
        raise ExpressionBudgetError(
            f"expression {_shown(expression)} is too complex to parse ({type(exc).__name__})"
        ) from None


# Tokens that end one operand of a flat construct: the parts on either side are
# siblings in the tree, not nested in each other. Each kind of construct present at a
# bracket level (items of a tuple, dict, slice or call; a comparison chain; an
# and-chain; an or-chain) adds one level there, however long it is.
_NEST_SEPARATORS: dict[str, str] = {
    ",": "items",
    ":": "items",
    "=": "items",
    "and": "and",
    "or": "or",
    **dict.fromkeys(("<", ">", "==", "!=", "<=", ">=", "<>", "in", "is"), "compare"),
}
# Tokens each of which may wrap everything at its bracket level once more.
_NEST_WRAPPERS = frozenset({"if", "else", "lambda", "for", ":=", "await", "yield"})
_OPERAND_TOKENS = (tokenize.NAME, tokenize.NUMBER, tokenize.STRING)
_IGNORED_TOKENS = (
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.COMMENT,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
)
_FSTRING_START: Optional[int] = getattr(tokenize, "FSTRING_START", None)  # Python 3.12+


class _Level:
    """Nesting bookkeeping of one bracket level for :func:`_nesting_estimate`."""

    __slots__ = ("wrappers", "kinds", "best", "ops", "child")

    def __init__(self) -> None:
        self.wrappers = 0  # if/else/lambda/...: each may wrap the whole level
        self.kinds: set[str] = set()  # flat constructs seen (see _NEST_SEPARATORS)
        self.best = 0  # deepest operand so far
        self.ops = 0  # operators in the current operand (each nests once at most)
        self.child = 0  # deepest bracket inside the current operand

    def end_operand(self) -> None:
        self.best = max(self.best, self.ops + self.child)
        self.ops = self.child = 0

    def depth(self) -> int:
        self.end_operand()
        return self.wrappers + len(self.kinds) + self.best


def _nesting_estimate(text: str) -> int:
    """An upper estimate of how deeply the tree of ``text`` nests, from its tokens.

    Within an operand every operator, call, subscript and attribute may nest once;
    operands separated by ``,``, ``and``, ``<``, ... are siblings; a bracket adds its
    contents' depth. Tokenizing is a loop, so this cannot recurse however deep the text
    is. F-strings (outside the language) are refused here, since their inner
    expressions are a single token.
    """
    levels = [_Level()]
    prev_operand = False
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            kind, string = tok.type, tok.string
            if kind in _IGNORED_TOKENS:
                continue
            if (kind == _FSTRING_START and _FSTRING_START is not None) or (
                kind == tokenize.STRING and "f" in string[: string.find(string[-1])].lower()
            ):
                raise ExpressionError("f-strings are not allowed in expressions")
            level = levels[-1]
            if kind == tokenize.OP and string in "([{":
                if prev_operand:
                    level.ops += 1  # a call or subscript wraps what came before it
                levels.append(_Level())
                if len(levels) > MAX_PARSE_NESTING:
                    return len(levels)
                prev_operand = False
            elif kind == tokenize.OP and string in ")]}":
                if len(levels) > 1:
                    inner = levels.pop().depth() + 1
                    levels[-1].child = max(levels[-1].child, inner)
                prev_operand = True
            elif string in _NEST_WRAPPERS:
                level.wrappers += 1
                level.end_operand()
                prev_operand = False
            elif string in _NEST_SEPARATORS:
                level.kinds.add(_NEST_SEPARATORS[string])
                level.end_operand()
                prev_operand = False
            elif kind in _OPERAND_TOKENS and string != "not":
                prev_operand = True
            else:  # an operator, `not`, `.`, ...
                level.ops += 1
                if level.ops > MAX_PARSE_NESTING:
                    return level.ops
                prev_operand = False
    except (tokenize.TokenError, SyntaxError):
        pass  # ast.parse reports the syntax error; what was read so far is counted
    while len(levels) > 1:  # unclosed brackets
        inner = levels.pop().depth() + 1
        levels[-1].child = max(levels[-1].child, inner)
    return levels[0].depth() + 1  # + the leaf at the bottom


def _percent_specs(fmt: Union[str, bytes]) -> Iterator[tuple[Optional[str], Any, Any, str]]:
    """The conversions of a ``%`` format: ``(key, width, precision, type)`` each.

    ``width``/``precision`` are None, an int, or ``"*"`` (taken from the arguments). A
    number with more than 9 digits is reported as ``MAX_FORMAT_WIDTH + 1`` without being
    converted (converting a huge digit string is itself slow).
    """
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    size = len(text)

    def number(start: int) -> tuple[Any, int]:
        if start < size and text[start] == "*":
            return "*", start + 1
        end = start
        while end < size and "0" <= text[end] <= "9":
            end += 1
        if end == start:
            return None, end
        digits = text[start:end]
        return (int(digits) if len(digits) <= 9 else MAX_FORMAT_WIDTH + 1), end

    index = text.find("%")
    while 0 <= index < size - 1:
        i = index + 1
        key: Optional[str] = None
        if text[i] == "(":
            depth, j = 1, i + 1
            while j < size and depth:
                depth += {"(": 1, ")": -1}.get(text[j], 0)
                j += 1
            key, i = text[i + 1 : j - 1], j
        while i < size and text[i] in "-+ #0":
            i += 1
        width, i = number(i)
        precision = None
        if i < size and text[i] == ".":
            precision, i = number(i + 1)
            precision = 0 if precision is None else precision
        while i < size and text[i] in "hlL":
            i += 1
        conversion = text[i] if i < size else ""
        yield key, width, precision, conversion
        index = text.find("%", i + 1)


@functools.lru_cache(maxsize=256)
def _cached_percent_specs(
    fmt: Union[str, bytes],
) -> tuple[tuple[Optional[str], Any, Any, str], ...]:
    """:func:`_percent_specs` of a short format, remembered (formats are mostly constants)."""
    return tuple(_percent_specs(fmt))


def _static_format_problem(fmt: Union[str, bytes]) -> Optional[str]:
    for _key, width, precision, _conversion in _percent_specs(fmt):
        for part in (width, precision):
            if isinstance(part, int) and part > MAX_FORMAT_WIDTH:
                return f"a % format width or precision over {MAX_FORMAT_WIDTH} (MAX_FORMAT_WIDTH)"
    return None


class _Validator:
    def __init__(self, expression: str) -> None:
        self.expression = expression

    def fail(self, node: ast.AST, what: str) -> ExpressionError:
        return ExpressionError(
            f"{what} is not allowed in expressions (in {_shown(self.expression)}, "
            f"column {getattr(node, 'col_offset', 0) + 1})"
        )

    def check(self, node: ast.AST, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ExpressionBudgetError(
                f"expression {_shown(self.expression)} nests more than {MAX_DEPTH} levels "
                f"deep (MAX_DEPTH)"
            )
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
            if (
                isinstance(node.op, ast.Mod)
                and isinstance(node.left, ast.Constant)
                and isinstance(node.left.value, _TEXT)
            ):
                problem = _static_format_problem(node.left.value)
                if problem is not None:
                    raise ExpressionBudgetError(
                        f"expression {_shown(self.expression)} is over its budget: {problem}"
                    )
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


def _is_constant(node: ast.AST) -> bool:
    """Whether ``node`` reads no input (only constants and the allowed functions)."""
    if isinstance(node, ast.Name):
        return node.id not in CONTEXT_NAMES
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        parts: list[ast.AST] = [node.func.value, *node.args]
        return all(_is_constant(p) for p in parts) and all(
            _is_constant(k.value) for k in node.keywords
        )
    return all(_is_constant(child) for child in ast.iter_child_nodes(node))


def _constant_parts(node: ast.AST, found: list[ast.AST]) -> None:
    """Collect the largest sub-trees of ``node`` that read no input."""
    if _is_constant(node):
        if isinstance(node, ast.expr) and not isinstance(node, (ast.Constant, ast.Name)):
            found.append(node)
        return
    for child in ast.iter_child_nodes(node):
        _constant_parts(child, found)


def _check_constant_parts(expression: str, body: ast.AST) -> None:
    """Evaluate what depends on no input now, so that ``'a' * 10**9`` or a display
    repeated ``10**9`` times is refused when the routine is configured."""
    parts: list[ast.AST] = []
    _constant_parts(body, parts)
    interpreter = _Interpreter({}, expression)
    try:
        for part in parts:
            try:
                interpreter.value_of(part)
            except ExpressionError:
                raise
            except Exception:  # noqa: BLE001 - e.g. 1/0: a matter for evaluation time
                continue
        for node in ast.walk(body):
            _check_constant_repetition(interpreter, node)
    except (RecursionError, MemoryError) as exc:
        raise interpreter.over(type(exc).__name__) from None


def _check_constant_repetition(interpreter: _Interpreter, node: ast.AST) -> None:
    """``[data] * 10**9``: a non-empty display repeated a constant number of times."""
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult)):
        return
    for display, count in ((node.left, node.right), (node.right, node.left)):
        if isinstance(display, (ast.List, ast.Tuple)) and display.elts and _is_constant(count):
            try:
                times = interpreter.value_of(count)
            except Exception:  # noqa: BLE001 - reported (or not) by the constant pass
                return
            if isinstance(times, int) and times * len(display.elts) > MAX_VALUE_SIZE:
                raise interpreter.over(
                    f"the result of * would have size over {MAX_VALUE_SIZE:,} (MAX_VALUE_SIZE)"
                )


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

    Raises :class:`ExpressionError` for a construct outside the safe language and
    :class:`ExpressionBudgetError` when the evaluation goes over budget; any other
    exception comes from the evaluation itself (e.g. a missing key).
    """
    tree = compile_expression(expression)
    env = {"data": data, "config": dict(config or {}), "stats": dict(stats or {})}
    interpreter = _Interpreter(env, expression)
    try:
        return interpreter.value_of(tree.body)
    except (RecursionError, MemoryError) as exc:
        raise interpreter.over(type(exc).__name__) from None


def _int_cost(*values: int) -> int:
    """Steps for arithmetic on ints: about the product of their lengths in words."""
    cost = 1
    for value in values:
        cost *= abs(value).bit_length() // 64 + 1
    return cost // 8 + 1


_SMALL_INT = 1 << 4096  # below this, int arithmetic is too cheap to count


class _Interpreter:
    """Evaluates one tree on one budget.

    ``sizes`` remembers the size (see :data:`MAX_VALUE_SIZE`) of values already
    measured or built in this evaluation, keyed by ``id`` and holding the value itself
    so the id cannot be reused while the evaluation runs.
    """

    __slots__ = ("env", "expression", "steps", "sizes")

    def __init__(self, env: dict[str, Any], expression: str) -> None:
        self.env = env
        self.expression = expression
        self.steps = 0
        self.sizes: dict[int, tuple[Any, int]] = {}

    # -- the budget ------------------------------------------------------------------

    def over(self, what: str) -> ExpressionBudgetError:
        return ExpressionBudgetError(
            f"expression {_shown(self.expression)} is over its budget: {what}"
        )

    def charge(self, steps: int) -> None:
        self.steps += steps
        if self.steps > MAX_STEPS:
            raise self.over(f"it takes more than {MAX_STEPS:,} steps (MAX_STEPS)")

    def too_large(self, what: str) -> ExpressionBudgetError:
        return self.over(f"{what} would have size over {MAX_VALUE_SIZE:,} (MAX_VALUE_SIZE)")

    def built(self, value: Any, size: int) -> Any:
        self.sizes[id(value)] = (value, size)
        return value

    def hint(self, value: Any) -> int:
        """A cheap size: the measured one if known, else the length, else 1."""
        kind = type(value)
        if kind is int or kind is float or kind is bool or value is None:
            return 1
        known = self.sizes.get(id(value))
        if known is not None:
            return known[1]
        if isinstance(value, _SIZED):
            return len(value) + 1
        return 1

    def size(self, value: Any, limit: int = MAX_VALUE_SIZE) -> int:
        """The size of ``value`` (see :data:`MAX_VALUE_SIZE`); stops counting, and
        returns a number above ``limit``, as soon as it exceeds ``limit``.

        A loop over an explicit stack (deep data cannot make it recurse); every element
        visited is a step.
        """
        kind = type(value)
        if kind is str or kind is bytes:
            return len(value) or 1
        if kind is float or kind is bool or value is None:
            return 1
        if kind is int:
            return 1 + value.bit_length() // 4
        known = self.sizes.get(id(value))
        if known is not None:
            return known[1]
        sizes = self.sizes
        total = visited = 0
        stack = [value]
        while stack and total <= limit:
            item = stack.pop()
            visited += 1
            if isinstance(item, _TEXT):
                total += len(item) or 1
            elif isinstance(item, int):
                total += 1 + item.bit_length() // 4
            elif isinstance(item, (list, tuple, set, frozenset, dict)):
                total += 1
                children: Iterable[Any] = item.items() if isinstance(item, dict) else item
                for child in children:
                    visited += 1
                    kind = type(child)
                    if kind is int or kind is float or kind is bool or child is None:
                        total += 1
                    elif kind is str:
                        total += len(child) or 1
                    else:
                        measured = sizes.get(id(child))
                        if measured is not None:
                            total += measured[1]
                        else:
                            stack.append(child)
                    if total > limit:
                        break
            else:
                total += 1
        self.charge(visited)
        if total <= limit:
            sizes[id(value)] = (value, total)
        return total

    # -- nodes -----------------------------------------------------------------------

    def value_of(self, node: ast.AST) -> Any:  # noqa: C901 - one dispatch table
        self.steps += 1
        if self.steps > MAX_STEPS:
            self.charge(0)
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
            return self.binary(node)
        if isinstance(node, ast.UnaryOp):
            operand = self.value_of(node.operand)
            if isinstance(operand, int) and not -_SMALL_INT < operand < _SMALL_INT:
                self.charge(_int_cost(operand))
            return _UNARY_OPS[type(node.op)](operand)
        if isinstance(node, ast.Compare):
            left = self.value_of(node.left)
            for op, comparator in zip(node.ops, node.comparators):
                right = self.value_of(comparator)
                kind = type(op)
                if isinstance(right, _SIZED) or isinstance(left, _SIZED):  # else: O(1)
                    if kind is ast.In or kind is ast.NotIn:
                        self.charge(self.hint(left) + self.hint(right))
                    elif kind is not ast.Is and kind is not ast.IsNot:
                        self.charge(min(self.hint(left), self.hint(right)))
                if not _COMPARE_OPS[kind](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            chosen = node.body if self.value_of(node.test) else node.orelse
            return self.value_of(chosen)
        if isinstance(node, ast.Subscript):
            container = self.value_of(node.value)
            index = self.value_of(node.slice)
            if not isinstance(index, (int, str, slice)):
                self.charge(self.hint(index))  # hashing a big key
            result = container[index]
            if isinstance(index, slice) and isinstance(result, _SIZED):
                self.charge(len(result))
            return result
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
            elements = [self.value_of(e) for e in node.elts]
            self.charge(sum(self.hint(e) for e in elements))
            return set(elements)
        if isinstance(node, ast.Dict):
            pairs = [
                (self.value_of(k), self.value_of(v))
                for k, v in zip(node.keys, node.values)
                if k is not None
            ]
            self.charge(sum(self.hint(k) for k, _v in pairs))
            return dict(pairs)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise ExpressionError(f"the construct {type(node).__name__} is not allowed")

    # -- operators -------------------------------------------------------------------

    def binary(self, node: ast.BinOp) -> Any:
        left = self.value_of(node.left)
        right = self.value_of(node.right)
        kind = type(node.op)
        if kind is ast.Mult:
            return self.multiply(left, right)
        if kind is ast.Add:
            return self.add(left, right)
        if kind is ast.Mod and isinstance(left, _TEXT):
            return self.percent_format(left, right)
        if isinstance(left, int) and isinstance(right, int):
            if kind is ast.Pow and right > 0:
                magnitude = abs(left)
                bits = 1.0
                if magnitude > 1:  # 0, 1 and -1 stay small whatever the exponent
                    if right > MAX_INT_BITS:
                        raise self.over(f"the result of ** would have over {MAX_INT_BITS:,} bits")
                    bits = right * math.log2(magnitude)
                if bits > MAX_INT_BITS:
                    raise self.over(f"the result of ** would have over {MAX_INT_BITS:,} bits")
                words = int(bits) // 64 + 1
                self.charge(words * words // 4 + right.bit_length())
            elif not (-_SMALL_INT < left < _SMALL_INT and -_SMALL_INT < right < _SMALL_INT):
                self.charge(_int_cost(left, right))
        elif isinstance(left, (set, frozenset)):
            self.charge(self.hint(left) + self.hint(right))
        return _BIN_OPS[kind](left, right)

    def multiply(self, left: Any, right: Any) -> Any:
        for seq, count in ((left, right), (right, left)):
            if (
                isinstance(seq, _SEQUENCES)
                and not isinstance(count, _SEQUENCES)
                and hasattr(type(count), "__index__")
            ):
                times = operator.index(count)
                if times <= 0:
                    return operator.mul(left, right)
                # A copy of a list or tuple repeats its elements, not the container.
                container = 0 if isinstance(seq, _TEXT) else 1
                per_copy = self.size(seq, MAX_VALUE_SIZE // times + 1) - container
                if isinstance(seq, _TEXT):
                    per_copy = len(seq)
                total = per_copy * times + container
                if total > MAX_VALUE_SIZE:
                    raise self.too_large("the result of *")
                self.charge(len(seq) * times)
                return self.built(operator.mul(left, right), total)
        if isinstance(left, int) and isinstance(right, int):
            bits = left.bit_length() + right.bit_length()
            if bits > MAX_INT_BITS:
                raise self.over(f"the result of * would have over {MAX_INT_BITS:,} bits")
            if bits > 4096:
                self.charge(_int_cost(left, right))
        return operator.mul(left, right)

    def add(self, left: Any, right: Any) -> Any:
        if isinstance(left, _SIZED) and isinstance(right, _SIZED):
            length = len(left) + len(right)
            if length > MAX_VALUE_SIZE:
                raise self.too_large("the result of +")
            self.charge(length)
            result = operator.add(left, right)
            known_left, known_right = self.sizes.get(id(left)), self.sizes.get(id(right))
            if known_left is not None and known_right is not None:
                self.built(result, known_left[1] + known_right[1])
            return result
        if isinstance(left, int) and isinstance(right, int):
            if not (-_SMALL_INT < left < _SMALL_INT and -_SMALL_INT < right < _SMALL_INT):
                self.charge(_int_cost(left) + _int_cost(right))
        return operator.add(left, right)

    def percent_format(self, fmt: Union[str, bytes], args: Any) -> Any:
        """``fmt % args`` once the widths, precisions and arguments fit the budget."""
        if len(fmt) > MAX_VALUE_SIZE:
            raise self.too_large("the result of %")
        self.charge(len(fmt))
        values = args if isinstance(args, tuple) else (args,)
        position = 0
        estimate = len(fmt)
        specs = _cached_percent_specs(fmt) if len(fmt) <= 200 else _percent_specs(fmt)
        for key, width, precision, conversion in specs:
            self.charge(4)
            if conversion == "%":
                continue
            extent = 0
            for part in (width, precision):
                if part == "*":
                    part = values[position] if position < len(values) else None
                    position += 1
                if isinstance(part, int):
                    if abs(part) > MAX_FORMAT_WIDTH:
                        raise self.over(
                            f"a % format width or precision over {MAX_FORMAT_WIDTH:,} "
                            f"(MAX_FORMAT_WIDTH)"
                        )
                    extent += abs(part)
            if key is not None:
                value = args.get(key) if isinstance(args, dict) else args
            else:
                value = values[position] if position < len(values) else None
                position += 1
            if isinstance(value, int) and not -_SMALL_INT < value < _SMALL_INT:
                self.charge(_int_cost(value, value))  # int -> decimal is quadratic
            estimate += extent + self.size(value, MAX_VALUE_SIZE - estimate)
            if estimate > MAX_VALUE_SIZE:
                raise self.too_large("the result of %")
        result = operator.mod(fmt, args)
        self.charge(len(result))
        return result

    # -- calls -----------------------------------------------------------------------

    def call(self, node: ast.Call) -> Any:
        func = node.func
        target: Callable[..., Any]
        receiver: Any = None
        if isinstance(func, ast.Name):
            if func.id not in ALLOWED_FUNCTIONS:
                raise ExpressionError(f"calling {func.id!r} is not allowed in expressions")
            target = ALLOWED_FUNCTIONS[func.id]
        elif isinstance(func, ast.Attribute):
            receiver = self.value_of(func.value)
            allowed = _ALLOWED_METHODS.get(type(receiver), _NO_METHODS)  # exact types only
            if func.attr not in allowed:
                raise ExpressionError(
                    f"calling .{func.attr}() on a {type(receiver).__name__} is not allowed "
                    f"in expressions"
                )
            target = getattr(receiver, func.attr)
        else:
            raise ExpressionError("calling the result of an expression is not allowed")
        args = [self.value_of(a) for a in node.args]
        kwargs = (
            {kw.arg: self.value_of(kw.value) for kw in node.keywords if kw.arg is not None}
            if node.keywords
            else {}
        )
        if receiver is not None:
            cost = self.hint(receiver)
            for arg in args:
                cost += self.hint(arg)
            self.charge(cost)
        else:
            self.check_builtin_call(target, args)
        result = target(*args, **kwargs)
        if (
            isinstance(result, _TEXT)
            and result is not receiver
            and not (args and result is args[0])
        ):
            self.charge(len(result))  # what str() or .upper() really built
        return result

    def check_builtin_call(self, target: Any, args: list[Any]) -> None:
        """Charge (or refuse) the work ``target(*args)`` would do."""
        if not args:
            return
        first = args[0]
        if target is str:
            if type(first) is str:
                return
            if isinstance(first, int):
                self.charge(_int_cost(first, first))  # int -> decimal is quadratic
            if self.size(first) > MAX_VALUE_SIZE:
                raise self.too_large("str() of this value")
        elif target is int or target is float:
            if isinstance(first, _TEXT) and len(first) > MAX_INT_DIGITS:
                raise self.over(
                    f"{target.__name__}() of a string longer than {MAX_INT_DIGITS:,} "
                    f"characters (MAX_INT_DIGITS)"
                )
            self.charge(self.hint(first))
        elif target is list or target is dict:
            if isinstance(first, _SIZED) and len(first) > MAX_VALUE_SIZE:
                raise self.too_large(f"{target.__name__}() of this value")
            self.charge(self.hint(first))


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
    tree = parse_expression(expression)
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

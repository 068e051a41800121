"""An attack corpus against the expression language (issue 9 item 2): code execution,
attribute chains, format-string tricks, size bombs, deep nesting, step exhaustion.

Every attack must be refused with an ExpressionError, none may run code (a sentinel
file, a canary object and ``sys.modules`` are checked), and none may take more than
1 s or 200 MB. The corpus runs in a subprocess of its own, with its address space
limited as a backstop; time is measured per attack there, memory per attack with
tracemalloc. The whole run takes a few seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).with_name("_attack_runner.py")
# An attack's work is bounded in CPU time (what it takes from the machine, whatever
# else runs there); the wall-clock bound, far above it, catches one that blocks.
MAX_SECONDS = 1.0
MAX_WALL_SECONDS = 20.0
MAX_BYTES = 200 * 1024**2


def flat(term: str, count: int) -> str:
    return "[" + ", ".join([term] * count) + "]"


SENTINEL = "ROUTILUX_ATTACK_SENTINEL"

# (expression, data kind): see _attack_runner.data_of for the kinds.
CODE_EXECUTION = [
    (f"__import__('os').system('touch {SENTINEL}')", "none"),
    (f"open('{SENTINEL}', 'w')", "none"),
    ("eval(\"__import__('os')\")", "none"),
    ("exec('1')", "none"),
    ("compile('1', '', 'eval')", "none"),
    ("globals()", "none"),
    ("locals()", "none"),
    ("vars(data)", "obj"),
    ("dir(data)", "obj"),
    ("breakpoint()", "none"),
    ("print(1)", "none"),
    ("input()", "none"),
    ("type(data)", "obj"),
    ("__builtins__", "none"),
    ("__import__", "none"),
    ("import os", "none"),
    ("(lambda: 1)()", "none"),
    ("(lambda: __import__('os'))()", "none"),
    ("[x for x in ().__class__.__base__.__subclasses__()]", "none"),
    ("[c for c in data]", "dict"),
    ("{k: v for k, v in data.items()}", "dict"),
    ("(x for x in data)", "dict"),
    ("(x := __import__('os'))", "none"),
    ("await data", "obj"),
    ("yield 1", "none"),
    ("sorted(data)", "dict"),
    ("memoryview(b'x')", "none"),
    ("bytearray(10**9)", "none"),
    ("range(10**9)", "none"),
]
ATTRIBUTE_CHAINS = [
    ("data.__class__", "obj"),
    ("data.__class__.__base__.__subclasses__()", "obj"),
    ("().__class__.__bases__[0].__subclasses__()", "none"),
    ("''.__class__.__mro__[1].__subclasses__()", "none"),
    ("[].__class__", "none"),
    ("data.__dict__", "obj"),
    ("data.get.__self__", "dict"),
    ("getattr(data, '__class__')", "obj"),
    ("getattr(getattr(data, '__class__'), '__subclasses__')", "obj"),
    ("getattr(data, 'pwn')()", "obj"),
    ("data.pwn()", "obj"),
    ("getattr(data, 'gi_frame')", "gen"),
    ("getattr(getattr(data, 'gi_frame'), 'f_globals')", "gen"),
    ("getattr(getattr(data, 'keys'), 'x')", "dict"),
    ("getattr(isinstance, 'x', 1)", "none"),
    ("getattr(dict, 'fromkeys')", "none"),
    ("hasattr(data, '__reduce__')", "obj"),
    ("getattr(data, 1)", "obj"),
    ("data.pop('a')", "dict"),
    ("data.clear()", "dict"),
    ("data.update({'a': 2})", "dict"),
    ("'abc'.join(data)", "dict"),
    ("dict(**data)", "dict"),
    ("len(*data)", "dict"),
    ("[*data]", "dict"),
]
FORMAT_STRINGS = [
    ("'{0.__class__}'.format(data)", "obj"),
    ("'{0.__class__.__init__.__globals__}'.format(data)", "obj"),
    ("'{x.__class__}'.format_map({'x': data})", "obj"),
    ("str.format('{0.__class__}', data)", "obj"),
    ("getattr('', 'format')('{0.__class__}', data)", "obj"),
    ("f'{data.__class__}'", "obj"),
    ("f'{data!r:>{10**9}}'", "none"),
    ("'%.999999999f' % 1.0", "none"),
    ("'%0999999999d' % 1", "none"),
    ("'%*d' % (10**9, 1)", "none"),
    ("'%.*f' % (10**9, 1.0)", "none"),
    ("'%(a)0999999999d' % data", "dict"),
    ("b'%0999999999d' % 1", "none"),
    ("data % (10**8, 1)", ["literal", "%*d"]),
    ("data % 1.0", ["literal", "%.99999999f"]),
]
SIZE_BOMBS = [
    ("[0]*999998+[1] in [[0]*999999]*999999", "none"),
    ("len(str([[0]*999999]*999999)) > 0", "none"),
    ("10**10**10", "none"),
    ("'a'*10**9", "none"),
    ("[1]*10**9", "none"),
    ("[[0]*1000]*1001", "none"),
    ("'a'*999999 + 'b'*999999", "none"),
    ("str([[0]*999]*999) * 2", "none"),
    ("len(str([[0] * 1000] * 1000 * 1000))", "none"),
    ("(2**99999) * (2**99999)", "none"),
    ("data ** data", "int"),
    ("int('9' * 5000)", "none"),
    ("(data,) * 999999", "big"),
    ("len(str(data)) > 0", "shared"),
    ("'%s' % (data,)", "shared"),
    ("str(data * 2)", "shared"),
    ("[data] * 10**9", "none"),
    ("list(data * 1001)", ["literal", "x" * 1000]),
]
NESTING = [
    ("-" * 3000 + "1", "none"),
    ("(" * 250 + "1" + ")" * 250, "none"),
    ("not " * 999 + "1", "none"),
    ("[" * 1333 + "]" * 1333, "none"),
    ("1" + "+1" * 1999, "none"),
    ("1 if 1 else " * 333 + "1", "none"),
    ("data" + "[0]" * 1300, "none"),
    ("x" * 5000, "none"),
    ("~" * 3999 + "1", "none"),
    ("1" + "**1" * 1333, "none"),
]
STEP_EXHAUSTION = [
    (flat("5 in data", 398), "big"),
    (flat("str(data)", 360), "big"),
    (flat("data == data[:]", 260), "big"),
    (flat("len(list('a' * 999999))", 160), "none"),
    (flat("data.count(1)", 280), "big"),
]

CORPUS = CODE_EXECUTION + ATTRIBUTE_CHAINS + FORMAT_STRINGS + SIZE_BOMBS + NESTING
CORPUS += STEP_EXHAUSTION


def test_the_corpus_is_large():
    assert len(CORPUS) >= 50
    assert len({expression for expression, _kind in CORPUS}) == len(CORPUS)


def test_no_attack_runs_code_or_takes_more_than_1s_or_200mb(tmp_path):
    sentinel = tmp_path / SENTINEL
    request = json.dumps({"attacks": CORPUS, "sentinel": str(sentinel)})
    done = subprocess.run(
        [sys.executable, str(RUNNER)],
        input=request,
        capture_output=True,
        text=True,
        cwd=tmp_path,  # a relative 'touch SENTINEL' would land here
        timeout=100,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    results = report["results"]
    assert len(results) == len(CORPUS)

    not_refused = [r for r in results if not r["refused"]]
    assert not_refused == [], "every attack must raise an ExpressionError"
    out_of_memory = [r for r in results if "MemoryError" in r["message"]]
    assert out_of_memory == [], "the address-space backstop was hit"
    slow = [(r["expression"], round(r["cpu"], 3)) for r in results if r["cpu"] > MAX_SECONDS]
    assert slow == []
    blocked = [
        (r["expression"], round(r["elapsed"], 3))
        for r in results
        if r["elapsed"] > MAX_WALL_SECONDS
    ]
    assert blocked == []
    hungry = [(r["expression"], r["peak_bytes"]) for r in results if r["peak_bytes"] > MAX_BYTES]
    assert hungry == []

    assert not sentinel.exists() and not report["sentinel_exists"]
    assert report["canary_calls"] == []
    assert report["new_modules"] == []

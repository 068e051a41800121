"""W1 and W2 for an instruction counter: run N units once, print nothing.

Wall-clock medians on a shared machine are noisy; instructions are not.  Count
them with callgrind at two sizes and take the difference, which cancels the
start-up (imports, the first job) and leaves the cost of one unit::

    for n in 500 2500; do
      valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/w1_w2_instructions.py w1 $n 2>&1 | grep Collected
    done
    # instructions per W1 job = (I(2500) - I(500)) / 2000

``w1 N``: N trivial jobs (source -> sink, one message each).  ``w2 N``: one job
pushing N messages through the 10-stage chain (11 events per message, so divide
by 11 * 2000 for instructions per event).  Run ``python -c "import routilux"``
first so that compiling ``.pyc`` files is not counted in the first size only.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from w1_w2_core import build_w1, build_w2  # noqa: E402


def main() -> None:
    workload, size = sys.argv[1], int(sys.argv[2])
    if workload == "w1":
        flow = build_w1()
        flow.execute("source", {"n": 1})  # the first job (plan, pool of nothing) not counted apart
        for _ in range(size):
            flow.execute("source", {"n": 1})
    elif workload == "w2":
        flow = build_w2()
        flow.execute("source", {"n": 1})
        flow.execute("source", {"n": size})
    else:
        raise SystemExit(f"unknown workload {workload!r}: use w1 or w2")


if __name__ == "__main__":
    main()

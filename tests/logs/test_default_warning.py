"""Without any logging set-up, a failed delivery is not silent: one WARNING with its
traceback reaches stderr (Python's last-resort handler; the library adds no NullHandler)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    from routilux import ErrorHandler, Flow, Routine

    class Broken(Routine):
        def __init__(self):
            super().__init__()
            self.define_slot("trigger", handler=self.run)

        def run(self, **data):
            raise ValueError("bad row")

    flow = Flow()
    flow.add_routine(Broken(), "broken")
    flow.set_error_handler(ErrorHandler("continue"))
    job = flow.execute("broken")
    print(job.status)
    """
)


def test_a_failed_delivery_warns_once_with_its_traceback_by_default() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "completed"
    assert done.stderr.count("routine broken failed, continuing: bad row") == 1
    assert "Traceback (most recent call last):" in done.stderr
    assert "ValueError: bad row" in done.stderr

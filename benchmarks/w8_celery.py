"""W8 (Celery): jobs per second on Celery workers, and the per-job cost of going there.

A 3-routine flow (source -> double -> sink, one message per job) runs as Celery jobs:
``rc.submit()`` N jobs, then ``rc.wait()`` for every one, timed from the first submit to
the last job settled, with 1 and with 2 worker processes (``celery worker -P solo``).
Beside them, in the same run, the same flow in this process: ``flow.execute()`` with no
store, and journaled (``Flow(store=...)``, SQLite) for reference. Figures: microseconds
per job, jobs per second, and the ratio to in-process ``flow.execute()``; medians of
several runs.

The benchmark starts everything it uses and stops it at the end (also on Ctrl-C or an
error): a private ``redis-server`` on a free port of 127.0.0.1 without persistence,
a temporary SQLite job store, and the worker processes (app: ``_celery_bench_app.py``).
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
sys.path.insert(0, HERE)

#: How long to wait for a server or a worker to start, or for a batch of jobs.
PATIENCE = 120.0


def missing_requirements() -> Optional[str]:
    """Why the benchmark cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server not found on PATH (Debian package 'redis-server')"
    for module in ("celery", "redis"):
        try:
            __import__(module)
        except ImportError:
            return f"the Python package {module!r} is missing: pip install 'routilux[celery]'"
    return None


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to a process still running, then kill it if it has not exited."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """A throw-away ``redis-server`` (no persistence) in a directory of its own."""

    def __init__(self, folder: str) -> None:
        self.port = free_port()
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        """Start the server and return once it answers PING."""
        import redis

        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.folder,
                "--logfile", os.path.join(self.folder, "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches this script, which stops it
        )  # fmt: skip
        client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + PATIENCE
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    # Not listening yet: give the process a moment to bind or exit.
                    try:
                        self.process.wait(timeout=0.05)
                    except subprocess.TimeoutExpired:
                        pass
            raise RuntimeError(f"redis-server on port {self.port} did not answer PING")
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


class Worker:
    """One ``celery worker -P solo`` process of the benchmark app."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        self.log: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "_celery_bench_app", "worker",
                "-P", "solo", "-n", f"{name}@%h", "-l", "info",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=HERE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches this script, which stops it
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_ready(self) -> None:
        """Return once the worker logs ``ready.``; RuntimeError if it exits first."""
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                tail = "\n".join(self.log[-40:])
                raise RuntimeError(f"worker {self.name} did not become ready; log:\n{tail}")
            self.log.append(line)
            if "ready." in line:
                return

    def stop(self) -> None:
        # Cold shutdown: the benchmark is over, nothing of the worker's state matters.
        stop_process(self.process, signal.SIGQUIT)


def worker_env(broker: str, store: str) -> dict[str, str]:
    """The environment of a worker: the app's configuration and the import path."""
    path = [HERE, SRC, os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "ROUTILUX_BENCH_BROKER": broker,
        "ROUTILUX_BENCH_STORE": store,
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
    }


def run_celery_batch(rc: Any, flow_id: str, jobs: int) -> float:
    """Submit ``jobs`` jobs, wait for all; the seconds from first submit to last settled."""
    start = time.perf_counter()
    ids = [rc.submit(flow_id, "source", {"n": i}) for i in range(jobs)]
    for i, job_id in enumerate(ids):
        job = rc.wait(job_id, timeout=PATIENCE)
        if job.status != "completed" or job.shared_data.get("result") != 2 * i:
            raise RuntimeError(f"job {job_id}: {job.status}, shared data {job.shared_data}")
    return time.perf_counter() - start


def run_in_process_batch(flow: Any, jobs: int) -> float:
    """Run ``jobs`` jobs back to back with ``flow.execute()``; the seconds it took."""
    start = time.perf_counter()
    for i in range(jobs):
        job = flow.execute("source", {"n": i})
        if job.status != "completed":
            raise RuntimeError(f"in-process job: {job.status}")
    return time.perf_counter() - start


def median_of(batch: Callable[[], float], runs: int) -> float:
    """The median of ``runs`` timed batches (after one warm-up batch)."""
    batch()
    return statistics.median(batch() for _ in range(runs))


def print_table(rows: list[tuple[str, float]], jobs: int, runs: int) -> None:
    """One line per measurement: us/job, jobs/s, the us/job added to in-process
    ``flow.execute()`` (the first row) and the ratio to it."""
    baseline = rows[0][1] / jobs * 1e6
    print(f"W8: source -> double -> sink, {jobs} jobs per run, median of {runs} runs")
    header = f"{'us/job':>10} {'jobs/s':>10} {'+us/job':>10} {'x execute':>10}"
    print(f"  {'':<42} {header}")
    for label, seconds in rows:
        per_job = seconds / jobs * 1e6
        figures = (
            f"{per_job:>10,.1f} {jobs / seconds:>10,.1f} "
            f"{per_job - baseline:>10,.1f} {per_job / baseline:>10,.1f}"
        )
        print(f"  {label:<42} {figures}")


def in_process_rows(bench_app: Any, folder: str, jobs: int, runs: int) -> list[tuple[str, float]]:
    """The flow run here with ``flow.execute()``: without a store, then journaled."""
    plain = bench_app.build_flow()
    journaled = bench_app.build_flow(store=f"sqlite:///{os.path.join(folder, 'journal.db')}")
    t_plain = median_of(lambda: run_in_process_batch(plain, jobs), runs)
    t_journaled = median_of(lambda: run_in_process_batch(journaled, jobs), runs)
    return [
        ("in-process execute(), no store", t_plain),
        ("in-process execute(), journaled (SQLite)", t_journaled),
    ]


def celery_rows(bench_app: Any, folder: str, jobs: int, runs: int) -> list[tuple[str, float]]:
    """The flow as Celery jobs, with 1 and then 2 workers; every process started here
    (Redis, the workers) is stopped before this returns or raises."""
    rows: list[tuple[str, float]] = []
    redis_server = RedisServer(folder)
    workers: list[Worker] = []
    rc = None
    try:
        redis_server.start()
        store = f"sqlite:///{os.path.join(folder, 'jobs.db')}"
        rc = bench_app.make(redis_server.url, store)
        env = worker_env(redis_server.url, store)
        for count in (1, 2):
            while len(workers) < count:
                workers.append(Worker(f"w{len(workers) + 1}", env))
                workers[-1].wait_ready()
            seconds = median_of(lambda: run_celery_batch(rc, bench_app.FLOW_ID, jobs), runs)
            rows.append(
                (f"Celery, {count} worker{'s' if count > 1 else ''} (SQLite store)", seconds)
            )
    finally:
        for worker in workers:
            worker.stop()
        if rc is not None:
            rc.close()
        redis_server.stop()
    return rows


def benchmark(folder: str, jobs: int, runs: int) -> None:
    import _celery_bench_app as bench_app

    rows = in_process_rows(bench_app, folder, jobs, runs)
    rows += celery_rows(bench_app, folder, jobs, runs)
    print_table(rows, jobs, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per run")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per measurement")
    args = parser.parse_args()
    problem = missing_requirements()
    if problem is not None:
        sys.exit(f"w8_celery: cannot run: {problem}")
    folder = tempfile.mkdtemp(prefix="routilux-w8-celery-")
    try:
        benchmark(folder, args.jobs, args.runs)
    except KeyboardInterrupt:
        sys.exit("w8_celery: interrupted; every process it started is stopped")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

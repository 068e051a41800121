"""Fixtures of the Celery tests: a private Redis (broker and notifications), a fresh
SQLite job store per test, and real ``celery worker`` processes.

Workers are separate processes (``celery -A routilux_test_app worker -P solo``), so a
test can SIGKILL one. A worker counts as started when its log says ``ready``; the
tests wait for lines of the logs (a reader thread per worker hands them over through
a condition), never by sleeping.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from services import postgres_dsn, postgres_server, redis_server, redis_url  # noqa: E402,F401

#: How long a test waits for anything a worker does (generous: the machines are shared).
PATIENCE = 30.0


class Worker:
    """One ``celery worker`` process and its log."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "routilux_test_app", "worker",
                "-P", "solo", "-n", f"{name}@%h", "-l", "info",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=HERE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        self.pid = self.process.pid
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<exited>")
            self._cond.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = PATIENCE, count: int = 1) -> str:
        """The ``count``-th log line matching ``pattern`` (waiting for it); fails on
        timeout or when the worker exits first."""
        regex = re.compile(pattern)

        def found() -> list[str]:
            return [line for line in self.lines if regex.search(line)]

        with self._cond:
            self._cond.wait_for(lambda: len(found()) >= count or "<exited>" in self.lines, timeout)
            lines = found()
        if len(lines) < count:
            log = "\n".join(self.lines[-150:])
            raise AssertionError(
                f"worker {self.name}: {len(lines)} of {count} log lines {pattern!r}; log:\n{log}"
            )
        return lines[count - 1]

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the worker."""
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            # Cold shutdown: the test is over, nothing of the worker's state matters.
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Cluster:
    """The workers of one test, the test's RoutiluxCelery (the submitter) and a Redis
    client; everything shares one fresh store and one flushed Redis database."""

    def __init__(self, broker: str, store: str, tag: str = "cluster") -> None:
        import redis
        import routilux_test_app

        self.broker = broker
        self.tag = tag  # names its workers' logs
        self.store_url = store
        self.rc = routilux_test_app.make(broker, store)
        self.redis = redis.Redis.from_url(broker)
        self.workers: list[Worker] = []
        root = str(HERE.parents[1] / "src")
        self.env = {
            **os.environ,
            "ROUTILUX_TEST_BROKER": broker,
            "ROUTILUX_TEST_STORE": store,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), root]),
        }

    def use_store(self, url: str) -> None:
        """Use the store ``url`` instead (before any worker starts)."""
        import routilux_test_app

        assert not self.workers, "use_store() comes before the workers"
        self.rc.close()
        self.store_url = url
        self.rc = routilux_test_app.make(self.broker, url)
        self.env["ROUTILUX_TEST_STORE"] = url

    def start_workers(self, count: int, **env: str) -> list[Worker]:
        """Start ``count`` workers and wait until each is ready."""
        started = [Worker(f"w{len(self.workers) + i}", {**self.env, **env}) for i in range(count)]
        self.workers.extend(started)
        for worker in started:
            worker.wait_for_line(r"ready\.")
        return started

    def worker_of(self, pid: int) -> Worker:
        return next(worker for worker in self.workers if worker.pid == pid)

    def started(self, job_id: str) -> int:
        """Wait until the gate of ``job_id`` starts (again): the PID of its worker."""
        item = self.redis.blpop([f"started:{job_id}"], timeout=PATIENCE)
        assert item is not None, f"job {job_id}: the gate never started"
        return int(item[1])

    def let_go(self, job_id: str) -> None:
        self.redis.rpush(f"go:{job_id}", 1)

    def attempts(self, job_id: str) -> int:
        """How many times the gate of ``job_id`` started."""
        return int(self.redis.get(f"attempts:{job_id}") or 0)

    def count(self, job_id: str) -> int:
        """How many times the count routine of ``job_id`` ran."""
        return int(self.redis.get(f"count:{job_id}") or 0)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
            if os.environ.get("ROUTILUX_TEST_WORKER_LOGS"):
                logs = Path(os.environ["ROUTILUX_TEST_WORKER_LOGS"])
                (logs / f"{self.tag}-{worker.name}.log").write_text("\n".join(worker.lines))
        self.rc.close()
        self.redis.close()


def _flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()  # the queue and the test keys of an earlier test
    client.close()


@pytest.fixture
def cluster(
    redis_url: str,  # noqa: F811
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Cluster]:
    """A cluster of this test alone (fresh store and Redis), no worker started yet."""
    _flush(redis_url)
    running = Cluster(redis_url, f"sqlite:///{tmp_path / 'jobs.db'}", request.node.name)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def shared(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:  # noqa: F811
    """Two workers shared by the tests of a module that kill no worker (each test's
    jobs have ids of their own, so they do not meet): worker starts are the slow part.
    They use Redis database 1, so the single-test clusters' workers (database 0) and
    these never take each other's messages."""
    assert redis_url.endswith("/0")
    broker = redis_url[:-1] + "1"
    _flush(broker)
    running = Cluster(
        broker, f"sqlite:///{tmp_path_factory.mktemp('shared') / 'jobs.db'}", "shared"
    )
    try:
        running.start_workers(2)
        yield running
    finally:
        running.close()


@pytest.fixture
def postgres_url(postgres_dsn: str) -> str:  # noqa: F811 - the fixture, by name
    """The PostgreSQL test database with the job tables emptied."""
    import psycopg

    from routilux.store import open_store

    with open_store(postgres_dsn):
        pass  # creates the tables on first use
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE routilux_job, routilux_task, routilux_delta, routilux_runner, routilux_batch"
        )
    return postgres_dsn

"""Private servers for the tests that need one (PostgreSQL, Redis), and a browser.

Each server is started by the test session itself, in a temporary directory, on a free
port of 127.0.0.1, and stopped at the end; the tests never connect anywhere else. When
the server's binaries are missing or it cannot start, the tests that need it skip with
the reason -- unless ``ROUTILUX_REQUIRE_SERVICES=1`` (set by ``.ci/run``), which turns
the skip into a failure so CI cannot pass without them.

Redis runs without persistence (``--save "" --appendonly no``): the tests that need a
broker surviving a restart restart nothing, they kill workers and submitters.

PostgreSQL refuses to run as root: when the tests run as root the server commands run
as the unprivileged user ``nobody`` (``runuser``), which owns the data directory.

The browser tests drive Debian's ``chromium`` headless through Playwright (the Python
package only: Playwright's own browser downloads are never used). A missing Chromium
or Playwright is skipped or failed the same way as a missing server.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def services_required() -> bool:
    """Whether a missing service is a failure rather than a skip."""
    return os.environ.get("ROUTILUX_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    """Skip the test (or fail it when services are required) with ``reason``."""
    if services_required():
        pytest.fail(f"{reason} (ROUTILUX_REQUIRE_SERVICES=1: a missing service is a failure)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_postgres_bin(name: str) -> str | None:
    """``name`` (initdb, pg_ctl) on PATH, else in the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found

    def version(path: str) -> int:
        part = Path(path).parts[-3]
        return int(part) if part.isdigit() else 0

    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version)
    return candidates[-1] if candidates else None


class PostgresServer:
    """A throw-away PostgreSQL cluster: ``start()``, ``dsn``, ``stop()``."""

    def __init__(self) -> None:
        self.initdb = find_postgres_bin("initdb")
        self.pg_ctl = find_postgres_bin("pg_ctl")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="routilux-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self.prefix: list[str] = []
        self.started = False

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, *args], capture_output=True, text=True, timeout=120, check=False
        )

    def start(self) -> None:
        """initdb and pg_ctl start; raises RuntimeError with the server's words."""
        if not self.initdb or not self.pg_ctl:
            raise FileNotFoundError(
                "PostgreSQL binaries (initdb, pg_ctl) not found on PATH or under "
                "/usr/lib/postgresql/*/bin (Debian package 'postgresql')"
            )
        self.sockets.mkdir()
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise FileNotFoundError("running as root and 'runuser' is missing")
            # The server must not run as root: hand its directories to 'nobody'.
            self.prefix = [runuser, "-u", "nobody", "--"]
            os.chmod(self.root, 0o755)
            self.data.mkdir(mode=0o700)
            for path in (self.data, self.sockets):
                shutil.chown(path, "nobody")
            self.log.touch()
            shutil.chown(self.log, "nobody")
        result = self._run(
            self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        result = self._run(
            self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr.strip()}\n{log}")
        self.started = True

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.started and self.pg_ctl:
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)


def _serve(server: Any, what: str) -> Iterator[Any]:
    """Start ``server`` for the session and stop it at the end; yields the server, or
    the reason it could not start (a str, which the dependent fixtures turn into a
    skip, or a failure under ROUTILUX_REQUIRE_SERVICES=1)."""
    try:
        server.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        server.stop()
        yield f"{what} test server unavailable: {exc}"
        return
    try:
        yield server
    finally:
        # The journal's runners of this process heartbeat their stores from threads
        # of their own until the interpreter exits: stop them while the server is up.
        from routilux.engine.runner import Durable

        Durable.shutdown_all()
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer | str]:
    """The session's PostgreSQL server, or the reason there is none."""
    yield from _serve(PostgresServer(), "PostgreSQL")


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PostgresServer | str) -> str:
    """A DSN of a fresh database ``routilux_test`` on the session's private server."""
    if isinstance(postgres_server, str):
        unavailable(postgres_server)
        raise AssertionError("unreachable")
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed (pip install 'routilux[postgres]')")
        raise AssertionError("unreachable") from None
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS routilux_test")
        conn.execute("CREATE DATABASE routilux_test")
    return postgres_server.dsn("routilux_test")


class RedisServer:
    """A throw-away ``redis-server`` on a free port of 127.0.0.1: ``start()``, ``url``,
    ``stop()``."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="routilux-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers PING; RuntimeError otherwise."""
        if not self.binary:
            raise FileNotFoundError(
                "redis-server not found on PATH (Debian package 'redis-server')"
            )
        log = self.root / "server.log"
        self.process = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.root),
                "--logfile", str(log), "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # redis-cli is in the same package; its -r/-i options would poll, so connect
        # with a socket that blocks until the server accepts (bounded by a deadline).
        deadline = 30.0
        try:
            import redis
        except ImportError as exc:
            raise FileNotFoundError(
                "the redis client is not installed (pip install 'routilux[celery]')"
            ) from exc
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=deadline)
        try:
            for _ in range(300):
                if self.process.poll() is not None:
                    text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RuntimeError(
                        f"redis-server exited with {self.process.returncode}: {text}"
                    )
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    # Not listening yet: wait for the process a little (it either binds
                    # or exits), never a blind sleep.
                    try:
                        self.process.wait(timeout=0.1)
                    except subprocess.TimeoutExpired:
                        pass
            raise RuntimeError(f"redis-server on port {self.port} did not answer PING")
        finally:
            client.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer | str]:
    """The session's Redis server, or the reason there is none."""
    yield from _serve(RedisServer(), "Redis")


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | str) -> str:
    """The URL of database 0 of the session's private Redis server."""
    if isinstance(redis_server, str):
        unavailable(redis_server)
        raise AssertionError("unreachable")
    return redis_server.url


#: Where Debian's package ``chromium`` puts the browser.
CHROMIUM_PATHS = ("/usr/bin/chromium",)


def find_chromium() -> str | None:
    """Debian's Chromium: ``/usr/bin/chromium``, else ``chromium`` on PATH."""
    for path in CHROMIUM_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium (a Playwright ``Browser``) for one test module.

    Module-scoped rather than session-scoped: Playwright's synchronous API keeps an
    event loop of its own in the thread while it is open, which must not outlive the
    browser tests into tests that run asyncio themselves.
    """
    path = find_chromium()
    if path is None:
        unavailable(
            "Chromium not found at /usr/bin/chromium or as 'chromium' on PATH "
            "(Debian package 'chromium')"
        )
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install playwright)")
        raise AssertionError("unreachable") from None
    with sync_playwright() as playwright:
        try:
            # --no-sandbox: Chromium's sandbox refuses to run as root (CI containers).
            browser = playwright.chromium.launch(
                executable_path=path, headless=True, args=["--no-sandbox"]
            )
        except PlaywrightError as exc:
            unavailable(f"Chromium at {path} did not start: {exc}")
            raise AssertionError("unreachable") from None
        try:
            yield browser
        finally:
            browser.close()

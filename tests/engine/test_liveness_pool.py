"""The flows' worker pool (``routilux.engine.pool``): daemon threads, bounded,
FIFO, and able to give up a worker that is stuck."""

from __future__ import annotations

import threading

import pytest

from routilux.engine.pool import WorkerPool


def test_calls_run_in_order_on_at_most_max_workers_daemon_threads() -> None:
    pool = WorkerPool(2, name="t")
    gate = threading.Event()
    seen: list[int] = []
    threads: set[threading.Thread] = set()
    both = threading.Barrier(3)
    lock = threading.Lock()

    def blocked() -> None:
        threads.add(threading.current_thread())
        both.wait(10)
        gate.wait(10)

    def record(i: int) -> None:
        with lock:
            seen.append(i)
            threads.add(threading.current_thread())

    pool.submit(blocked)
    pool.submit(blocked)
    both.wait(10)  # two workers busy at once: the pool grew to its size
    for i in range(20):
        pool.submit(lambda i=i: record(i))
    gate.set()
    pool.shutdown(wait=True)  # queued calls still run before the workers exit
    assert sorted(seen) == list(range(20))
    assert len(threads) == 2
    assert all(t.daemon for t in threads)


def test_an_abandoned_worker_is_replaced_and_exits_when_its_call_returns() -> None:
    pool = WorkerPool(1, name="t")
    release = threading.Event()
    running = threading.Event()
    stuck: list[threading.Thread] = []

    def hang() -> None:
        stuck.append(threading.current_thread())
        running.set()
        release.wait(10)

    pool.submit(hang)
    assert running.wait(10)
    done = threading.Event()
    pool.submit(done.set)
    pool.abandon(stuck[0])  # the only worker is stuck: a replacement takes the call
    assert done.wait(10)
    pool.shutdown(wait=True)  # joins the replacement, not the stuck thread
    assert stuck[0].is_alive()
    release.set()
    stuck[0].join(10)
    assert not stuck[0].is_alive()


def test_a_failing_call_does_not_kill_its_worker(caplog: pytest.LogCaptureFixture) -> None:
    pool = WorkerPool(1, name="t")
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("boom")

    pool.submit(boom)
    pool.submit(done.set)
    assert done.wait(10)
    pool.shutdown(wait=True)
    assert "boom" in caplog.text


def test_a_shut_down_pool_refuses_calls() -> None:
    pool = WorkerPool(1, name="t")
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(lambda: None)

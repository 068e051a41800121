"""A runner's lease: registration and a heartbeat kept fresh from a daemon thread.

A process that owns journaled jobs must look alive to the others (see
:meth:`routilux.store.Store.claim`): :class:`Heartbeat` registers the runner and renews
its heartbeat every ``interval`` seconds until stopped. Choose ``stale_after`` (what
claimers treat as dead) several intervals long, so one slow beat does not lose a lease.
``on_beat`` runs on the same thread after each renewal: the runner of the engine takes
its control requests there (:meth:`Store.take_control_requests`).
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Callable, Optional

from routilux.exceptions import StoreError

from ._base import Store

_log = logging.getLogger("routilux.store")


class Heartbeat:
    """Register ``runner_id`` (default: a new random id) in ``store`` and renew its
    heartbeat every ``interval`` seconds from a daemon thread.

    A failed renewal is passed to ``on_error`` (default: logged) and retried at the
    next beat, unless the store was closed (a store with a ``closed`` attribute): then
    the thread ends without a word. ``on_beat()`` is called after each renewal (its
    failures are logged).
    ``stop()`` ends the thread and, with ``remove=True``, forgets the runner so its
    jobs become claimable at once. A context manager.
    """

    def __init__(
        self,
        store: Store,
        runner_id: Optional[str] = None,
        *,
        interval: float = 5.0,
        on_error: Optional[Callable[[StoreError], None]] = None,
        on_beat: Optional[Callable[[], None]] = None,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise StoreError(f"Heartbeat: interval must be a positive number, got {interval!r}")
        self.store = store
        self.runner_id = runner_id or f"runner-{uuid.uuid4()}"
        self.interval = float(interval)
        self.on_error = on_error
        self.on_beat = on_beat
        #: Renewals done so far (the registration not counted).
        self.beats = 0
        self._stopped = threading.Event()
        self._beat = threading.Condition()
        store.register_runner(self.runner_id)
        self._thread = threading.Thread(
            target=self._run, name=f"routilux-heartbeat-{self.runner_id}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        # Event.wait(interval) is the beat's clock; stop() sets the event to end it.
        while not self._stopped.wait(self.interval):
            try:
                self.store.heartbeat(self.runner_id)
            except StoreError as exc:
                if getattr(self.store, "closed", False):
                    # The store's owner closed it: the lease ends with it (nothing
                    # can be renewed or claimed through a closed store), quietly.
                    _log.debug("runner %r: store closed, heartbeat ends", self.runner_id)
                    return
                if self.on_error is not None:
                    self.on_error(exc)
                else:
                    _log.warning("heartbeat of runner %r failed: %s", self.runner_id, exc)
                continue
            if self.on_beat is not None:
                try:
                    self.on_beat()
                except Exception:  # the lease matters more than the callback
                    _log.exception("heartbeat callback of runner %r failed", self.runner_id)
            with self._beat:
                self.beats += 1
                self._beat.notify_all()

    def wait_beats(self, count: int, timeout: Optional[float] = None) -> bool:
        """Block until ``count`` renewals have happened; False on timeout."""
        with self._beat:
            return self._beat.wait_for(lambda: self.beats >= count, timeout)

    def stop(self, remove: bool = True) -> None:
        """Stop renewing; with ``remove`` also delete the runner row."""
        self._stopped.set()
        self._thread.join()
        if remove:
            self.store.remove_runner(self.runner_id)

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

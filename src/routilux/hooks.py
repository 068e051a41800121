"""Lifecycle hooks: :class:`JobHooks`, the one way to observe a running job.

This module owns the hooks protocol (the base class users subclass), the
:class:`Delivery` record handed to the delivery hooks, and :class:`HookSet`,
the per-job dispatcher the engine and the JobState call.  The execution
tracker and the output handlers are hooks too (``execution_tracker.py``,
``output_handler.py``); the engine knows nothing but a job's HookSet.

Invariants:

* A hook never breaks a job.  Every call of a user hook is guarded: an
  exception is logged on the ``routilux.hooks`` logger and the job and the
  other hooks go on.  (Hooks of the library itself are marked trusted and
  called directly: they do not raise and they sit on hot paths.)
* No hook, no cost.  A HookSet resolves once which hooks override which
  method; an event nobody listens to has no caller (``None``) and the engine
  skips it with one ``is None`` check: no allocation, no call.  Jobs that
  bring no hooks of their own share their flow's HookSet.
* Hooks are called synchronously, on the thread (or asyncio task) where the
  thing happened, in the order the hooks were given.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Optional

from .exceptions import InvalidArgumentError

if TYPE_CHECKING:
    from .job_state import ExecutionRecord, JobState

__all__ = ["Delivery", "JobHooks"]

logger = logging.getLogger("routilux.hooks")


@dataclass(frozen=True)
class Delivery:
    """One delivery of data to a slot: one call of its handler.

    ``attempt`` counts from 1 (a retry of the same data is attempt 2, ...);
    ``entry`` is True for the entry routine's ``trigger`` delivery; ``data``
    is the data as queued, before the connection's mapping and the slot's merge;
    ``delivery_id`` is the handler's ``context.delivery_id`` (``"<job_id>:<seq>"``,
    the same for every attempt).
    """

    routine_id: str
    slot_name: str
    attempt: int = 1
    entry: bool = False
    data: Any = None
    delivery_id: str | None = None


class JobHooks:
    """Base class of lifecycle hooks: override the methods you need.

    Every method is a no-op here; only overridden ones are ever called (an
    object that does not subclass JobHooks works too, with any of these
    methods).  Hooks run synchronously on the engine's threads, so keep them
    quick and never wait in one for the job itself (``wait_for_completion``,
    ``resume``): the job waits for its hooks.  A hook that raises is logged
    (logger ``routilux.hooks``) and ignored.

    Install them per flow (``Flow(hooks=[...])``, ``flow.add_hooks(...)``) or
    per call (``execute(..., hooks=[...])``, ``resume(..., hooks=[...])``).
    """

    def on_job_start(self, job_state: JobState) -> None:
        """A run of the job begins: ``execute()`` (status still ``pending``) or
        ``resume()`` (status ``paused``).  Called before the run's first status
        change, on the caller's thread."""

    def on_job_end(self, job_state: JobState) -> None:
        """The run has settled: nothing is queued or running.  The status is
        final (``completed``, ``failed``, ``cancelled``) or ``paused``.  Called
        before the callers waiting for the job are woken."""

    def on_status(self, job_state: JobState, old: str, new: str) -> None:
        """The job's status changed from ``old`` to ``new``.  Called while the
        job's lock is held, so statuses arrive in the order they happened."""

    def on_delivery_start(self, job_state: JobState, delivery: Delivery) -> None:
        """A handler is about to be called (in the thread or asyncio task that
        runs it, so ``get_execution_context()`` works)."""

    def on_delivery_end(
        self,
        job_state: JobState,
        delivery: Delivery,
        duration: float,
        error: BaseException | None,
    ) -> None:
        """The delivery is over: ``duration`` in seconds (monotonic clock,
        ``>= 0``) and the exception it failed with, or None.  Called after the
        error strategy has acted (a retry is scheduled, a STOP has failed the
        job) and exactly once per :meth:`on_delivery_start`.  A delivery the job
        gave up on (a handler timeout, Ctrl-C) ends when the job gives up."""

    def on_emit(self, job_state: JobState, record: ExecutionRecord) -> None:
        """A routine emitted an event: ``record`` is the job's history record
        (``routine_id``, ``event_name``, ``data``, ``timestamp``).  Treat it as
        read-only."""

    def on_output(
        self,
        job_state: JobState,
        routine_id: str,
        output_type: str,
        data: Any,
        timestamp: datetime,
    ) -> None:
        """A routine called ``send_output`` (before the entry joins ``output_log``)."""

    def on_timer(self, job_state: JobState, routine_id: str, slot_name: str, delay: float) -> None:
        """A delivery to ``routine_id``'s ``slot_name`` was scheduled ``delay``
        seconds ahead (a retry's backoff, ``Routine.schedule``, ``set_timer``)."""


#: The methods of the protocol, in the order of :class:`HookSet`'s slots.
HOOK_METHODS: tuple[str, ...] = (
    "on_job_start",
    "on_job_end",
    "on_status",
    "on_delivery_start",
    "on_delivery_end",
    "on_emit",
    "on_output",
    "on_timer",
)

_overridden: dict[type, frozenset[str]] = {}


def _methods_of(cls: type) -> frozenset[str]:
    """The protocol methods ``cls`` implements (JobHooks' no-ops do not count)."""
    found = _overridden.get(cls)
    if found is None:
        found = frozenset(
            name
            for name in HOOK_METHODS
            if callable(getattr(cls, name, None))
            and getattr(cls, name) is not getattr(JobHooks, name)
        )
        _overridden[cls] = found
    return found


def check_hooks(hooks: Iterable[Any] | None, where: str) -> tuple[Any, ...]:
    """``hooks`` as a tuple; InvalidArgumentError for something that is no hook."""
    if hooks is None:
        return ()
    if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Iterable):
        raise InvalidArgumentError(f"{where}: hooks must be a list of JobHooks, got {hooks!r}")
    found = tuple(hooks)
    for hook in found:
        if not isinstance(hook, JobHooks) and not _methods_of(type(hook)):
            raise InvalidArgumentError(
                f"{where}: {hook!r} is not a hook (subclass routilux.JobHooks and "
                f"override some of {', '.join(HOOK_METHODS)})"
            )
    return found


Caller = Optional[Callable[..., None]]


def _guarded(name: str, hooks: tuple[Any, ...]) -> Callable[..., None]:
    """One caller for ``name`` on each of ``hooks``: an exception of one is
    logged and the next still runs."""
    bound = tuple((hook, getattr(hook, name)) for hook in hooks)

    def call(*args: Any) -> None:
        for hook, method in bound:
            try:
                method(*args)
            except Exception:  # noqa: BLE001 - a hook must never break the job
                logger.exception("hook %r failed in %s", hook, name)

    return call


def _both(first: Callable[..., None], second: Callable[..., None]) -> Callable[..., None]:
    """One caller for two of the library's own hooks (the tracker and a stream
    both watching emissions, say): no guard, no loop."""

    def call(*args: Any) -> None:
        first(*args)
        second(*args)

    return call


def _trusted(hooks: tuple[Any, ...]) -> bool:
    return all(getattr(h, "_routilux_trusted", False) for h in hooks)


def _caller(name: str, listening: tuple[Any, ...]) -> Caller:
    """One caller of method ``name`` on each of ``listening`` (None for none)."""
    if not listening:
        return None
    if _trusted(listening):
        if len(listening) == 1:
            return getattr(listening[0], name)  # the library's own: called directly
        if len(listening) == 2:
            return _both(getattr(listening[0], name), getattr(listening[1], name))
    return _guarded(name, listening)


class HookSet:
    """The hooks of a job, resolved once: one caller (or None) per method.

    The flow builds one for its own hooks (shared by every job that brings no
    hooks of its own) and one per job that does, and installs it on the
    JobState (``job_state._hooks``); the engine reads its callers.  A caller
    never raises because of a user hook.  Immutable once built.
    """

    job_start: Caller
    job_end: Caller
    status: Caller
    delivery_start: Caller
    delivery_end: Caller
    emit: Caller
    output: Caller
    timer: Caller
    #: True when someone listens to deliveries (the engine then reports them).
    deliveries: bool

    #: The first hook listening to emissions (None: none does) and one caller
    #: for the others (None: no other): the engine may do the first's work
    #: inline (the tracker's) and call only the rest.
    emit_first: Any = None
    emit_rest: Caller = None

    def __init__(self, hooks: tuple[Any, ...], attach: Any = None) -> None:
        self.hooks = hooks
        #: How ``JobState.events()`` opens a stream on a job of these hooks that
        #: was started without one (the flow's door to ``routilux.streaming``),
        #: or None.  Called only when someone asks: it costs a job nothing.
        self.attach = attach
        for name in HOOK_METHODS:
            listening = tuple(h for h in hooks if name in _methods_of(type(h)))
            setattr(self, name[3:], _caller(name, listening))
            if name == "on_emit" and listening:
                self.emit_first = listening[0]
                self.emit_rest = _caller(name, listening[1:])
        self.deliveries = self.delivery_start is not None or self.delivery_end is not None
        if self.deliveries:
            # Start and end come in pairs: both get a caller.
            if self.delivery_start is None:
                self.delivery_start = _ignore
            if self.delivery_end is None:
                self.delivery_end = _ignore

    def __repr__(self) -> str:
        return f"HookSet({list(self.hooks)!r})"


def _ignore(*_args: Any) -> None:
    return None

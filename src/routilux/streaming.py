"""Event streaming: watch a job as it runs, as a sync or an async iterator.

This module owns the stream events (small frozen dataclasses, one class per
``kind``), the bounded buffer between a running job and its consumer, the lifecycle
hook that fills it (:class:`StreamHooks`) and the consumer side
(:class:`EventStream`, :class:`AsyncEventStream`).  ``Flow.stream`` /
``Flow.astream`` are thin doors to :func:`stream_job` and :func:`astream_job`;
``JobState.events``/``aevents`` open the :class:`StreamHooks` a run was started
with, or attach a new one to a running job (:func:`attach_stream`, through the
flow: no replay, a ``job_started`` with the current status first).

Invariants:

* **Nothing is lost silently.**  With ``overflow="block"`` (the default) a full
  buffer makes the job's producing thread wait for the consumer (backpressure);
  with ``overflow="drop_oldest"`` the job never waits, the oldest event goes and
  :attr:`EventStream.dropped` counts it.  Sequence numbers (``seq``) are given in
  buffer order, so a gap in them is exactly what was dropped.
* **Backpressure never deadlocks the job.**  Only deliveries, emissions and
  outputs ever wait; status changes (reported under the job's lock), the job's
  start (on the caller's thread) and its end (before its waiters wake) never do,
  and neither does anything produced on the consumer's own thread (a
  sequential job run by the thread that would consume, a concurrent job's entry
  handler run by :func:`stream_job`'s caller): the buffer then grows past its bound.
  Closing the stream releases every waiting producer and discards what follows.
* **No consumer, no cost.**  The hook class is built per set of ``kinds``: a
  stream that does not ask for deliveries does not make the engine report them.
* **Cheap producers.**  A producer appends a tuple (a timestamp and what the
  hook was given) without a lock while there is room; the event object is built
  when the consumer takes it (and never for a dropped one).

The consumer object is separate from the hook the job holds: dropping it
(``break`` out of a ``for`` loop over ``flow.stream(...)``) closes the stream,
the job goes on (or is cancelled with ``cancel_on_close=True``).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from time import time as _time
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, Union

from .exceptions import InvalidArgumentError, JobStateError
from .hooks import Delivery, JobHooks

if TYPE_CHECKING:
    from datetime import datetime

    from .job_state import ExecutionRecord, JobState

__all__ = [
    "KINDS",
    "AsyncEventStream",
    "DeliveryFinished",
    "DeliveryStarted",
    "Emitted",
    "EventStream",
    "JobFinished",
    "JobStarted",
    "Output",
    "StatusChanged",
    "StreamEvent",
    "StreamHooks",
]


# ---------------------------------------------------------------------------
# The events
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamEvent:
    """What every stream event carries.

    ``seq`` numbers the events of one stream from 0 in the order they were
    buffered; ``timestamp`` is POSIX seconds (``time.time()``) of the moment it
    happened; ``routine_id`` is None for job-level events; ``data`` is the
    event's payload (an emission's or an output's data, a delivery's queued data),
    None where there is none.
    """

    kind: ClassVar[str] = ""
    seq: int
    timestamp: float
    job_id: str
    routine_id: Optional[str]
    data: Any


@dataclass(frozen=True)
class JobStarted(StreamEvent):
    """A run of the job began (``routine_id`` is the routine it starts from):
    ``execute()`` (``status`` ``pending``) or ``resume()`` (``paused``)."""

    kind: ClassVar[str] = "job_started"
    flow_id: str
    status: str


@dataclass(frozen=True)
class DeliveryStarted(StreamEvent):
    """A handler of ``routine_id`` is about to take ``data`` on ``slot``
    (``attempt`` 1, or 2 for the first retry, ...)."""

    kind: ClassVar[str] = "delivery_started"
    slot: str
    attempt: int


@dataclass(frozen=True)
class DeliveryFinished(StreamEvent):
    """That delivery is over after ``duration`` seconds; ``error`` is what it
    failed with, or None."""

    kind: ClassVar[str] = "delivery_finished"
    slot: str
    attempt: int
    duration: float
    error: Optional[BaseException]


@dataclass(frozen=True)
class Emitted(StreamEvent):
    """``routine_id`` emitted ``event_name`` with ``data``."""

    kind: ClassVar[str] = "emitted"
    event_name: str


@dataclass(frozen=True)
class Output(StreamEvent):
    """``routine_id`` called ``send_output(output_type, **data)``."""

    kind: ClassVar[str] = "output"
    output_type: str


@dataclass(frozen=True)
class StatusChanged(StreamEvent):
    """The job's status went from ``old`` to ``new`` (``running``, ``paused``, ...)."""

    kind: ClassVar[str] = "status"
    old: str
    new: str


@dataclass(frozen=True)
class JobFinished(StreamEvent):
    """The run settled with ``status`` (``completed``, ``failed``, ``cancelled``
    or ``paused``); ``job_state`` is the job.  Always the last event of a stream."""

    kind: ClassVar[str] = "job_finished"
    status: str
    job_state: Any


_CLASSES: tuple[type[StreamEvent], ...] = (
    JobStarted,
    DeliveryStarted,
    DeliveryFinished,
    Emitted,
    Output,
    StatusChanged,
    JobFinished,
)
#: Every kind of event, in the order of a job's life.
KINDS: tuple[str, ...] = tuple(cls.kind for cls in _CLASSES)

OVERFLOWS = ("block", "drop_oldest")

# Builders: the buffer holds flat tuples (builder, the fields after seq) -- one
# tuple per event, not a pair around a second one -- and the consumer builds
# the event with build(seq, item).  Filling __dict__ directly is allowed for a frozen dataclass
# and costs half of its __init__ (one object.__setattr__ per field); the tests
# check every builder against the dataclass's own fields.
_new = object.__new__
Fields = tuple[Any, ...]


def _build_job_started(seq: int, f: Fields) -> JobStarted:
    event = _new(JobStarted)
    d = event.__dict__
    d["seq"] = seq
    _, d["timestamp"], d["job_id"], d["routine_id"], d["data"], d["flow_id"], d["status"] = f
    return event


def _build_delivery_started(seq: int, f: Fields) -> DeliveryStarted:
    # f: (builder, timestamp, job_id, the Delivery)
    event = _new(DeliveryStarted)
    d = event.__dict__
    d["seq"] = seq
    _, d["timestamp"], d["job_id"], delivery = f
    d["routine_id"] = delivery.routine_id
    d["data"] = delivery.data
    d["slot"] = delivery.slot_name
    d["attempt"] = delivery.attempt
    return event


def _build_delivery_finished(seq: int, f: Fields) -> DeliveryFinished:
    # f: (builder, timestamp, job_id, the Delivery, duration, error)
    event = _new(DeliveryFinished)
    d = event.__dict__
    d["seq"] = seq
    _, d["timestamp"], d["job_id"], delivery, d["duration"], d["error"] = f
    d["routine_id"] = delivery.routine_id
    d["data"] = delivery.data
    d["slot"] = delivery.slot_name
    d["attempt"] = delivery.attempt
    return event


def _build_emitted(seq: int, f: Fields) -> Emitted:
    # f: (builder, timestamp, job_id, the job's ExecutionRecord)
    event = _new(Emitted)
    d = event.__dict__
    d["seq"] = seq
    _, d["timestamp"], d["job_id"], record = f
    d["routine_id"] = record.routine_id
    d["data"] = record.data
    d["event_name"] = record.event_name
    return event


def _build_output(seq: int, f: Fields) -> Output:
    event = _new(Output)
    d = event.__dict__
    d["seq"] = seq
    _, d["timestamp"], d["job_id"], d["routine_id"], d["data"], d["output_type"] = f
    return event


def _build_status(seq: int, f: Fields) -> StatusChanged:
    event = _new(StatusChanged)
    d = event.__dict__
    d["seq"] = seq
    _, d["timestamp"], d["job_id"], d["routine_id"], d["data"], d["old"], d["new"] = f
    return event


def _build_job_finished(seq: int, f: Fields) -> JobFinished:
    event = _new(JobFinished)
    d = event.__dict__
    d["seq"] = seq
    _, d["timestamp"], d["job_id"], d["routine_id"], d["data"], d["status"], d["job_state"] = f
    return event


#: Event class -> its builder.
BUILDERS: dict[type[StreamEvent], Callable[[int, Fields], StreamEvent]] = {
    JobStarted: _build_job_started,
    DeliveryStarted: _build_delivery_started,
    DeliveryFinished: _build_delivery_finished,
    Emitted: _build_emitted,
    Output: _build_output,
    StatusChanged: _build_status,
    JobFinished: _build_job_finished,
}


# ---------------------------------------------------------------------------
# The buffer
# ---------------------------------------------------------------------------

_EMPTY = object()


class _Buffer:
    """A bounded FIFO of ``(event class, fields)`` between producers and one consumer.

    The common case takes no lock: a producer appends when there is room (a
    ``deque`` append is atomic), a blocking-mode consumer pops.  The lock and
    its conditions serve the rest: a full buffer (drop or wait), a consumer
    going to sleep, the end.  Wake-ups are never lost because each side first
    publishes what it did, then looks at the other's flag: a producer appends,
    then reads ``consumer_waiting``; the consumer sets ``consumer_waiting`` (under
    the lock), then looks at the items again before it waits (and symmetrically
    for ``wants_release``: a producer sets it, then looks at the items; the
    consumer pops, then reads it).  Concurrent producers may overshoot the bound
    by one item each.  A producer that found the buffer full waits until the
    consumer has read it down to half (``low_water``); the consumer releases the
    waiting producers once per wait (it clears ``wants_release``), not once per
    event it pops until a released producer gets to run.

    ``seq`` is given by the consumer: the events popped plus those dropped
    before it, which is its position in the buffer's order (what is dropped is
    always older than what is left).
    """

    def __init__(self, maxsize: int, overflow: str) -> None:
        self.maxsize = maxsize
        self.low_water = maxsize // 2
        self.drop = overflow == "drop_oldest"
        self.items: deque[Fields] = deque()
        self.lock = threading.Lock()
        self.not_empty = threading.Condition(self.lock)
        self.not_full = threading.Condition(self.lock)
        self.popped = 0
        self.dropped = 0
        self.open = True  # False once closed or finished: producers discard
        self.finished = False  # the job's end is in the buffer: nothing follows
        self.closed = False  # the consumer is gone
        self.consumer_waiting = False
        self.wants_release = False  # a producer waits for the low-water mark
        # The consumer's thread: a producer on it must never wait for it.
        self.consumer_thread = threading.get_ident()
        self.async_waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    # -- producers ---------------------------------------------------------

    def put(self, item: Fields, may_wait: bool) -> None:
        if not self.open:
            return
        if len(self.items) < self.maxsize:
            self.items.append(item)
            if self.consumer_waiting or self.async_waiter is not None:
                self._wake()
        else:
            self._put_full(item, may_wait)

    def _put_full(self, item: Fields, may_wait: bool) -> None:
        with self.lock:
            if not self.open:
                return
            if self.drop:
                while len(self.items) >= self.maxsize:
                    self.items.popleft()
                    self.dropped += 1
            elif may_wait and threading.get_ident() != self.consumer_thread:
                # Wait until the consumer has read down to the low-water mark,
                # not just for one free place: one hand-over per half buffer
                # instead of one per event.
                while True:
                    self.wants_release = True  # published before the look at the items
                    if len(self.items) <= self.low_water or self.closed:
                        break
                    self.not_full.wait()
                if self.closed:
                    return
            self.items.append(item)
        if self.consumer_waiting or self.async_waiter is not None:
            self._wake()

    def finish(self, item: Fields) -> None:
        """Put the job's end (never dropped, never waited for) and end the stream."""
        with self.lock:
            if not self.open:
                return
            self.items.append(item)
            self.open = False
            self.finished = True
        self._wake()

    def _wake(self) -> None:
        with self.lock:
            if self.consumer_waiting:
                # Cleared here: until the consumer runs and looks again, the
                # next producers need not wake it a second time.
                self.consumer_waiting = False
                self.not_empty.notify()
            waiter, self.async_waiter = self.async_waiter, None
        if waiter is not None:
            loop, future = waiter
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # the consumer's loop is closed: nobody waits any more
                pass

    # -- the consumer --------------------------------------------------------

    def _pop(self) -> Any:
        """The next event, or _EMPTY when there is none right now."""
        if self.drop:
            with self.lock:  # a drop must not slip between the pop and the seq
                if not self.items:
                    return _EMPTY
                fields = self.items.popleft()
                seq = self.popped + self.dropped
        else:
            try:
                fields = self.items.popleft()
            except IndexError:
                return _EMPTY
            seq = self.popped
        build = fields[0]
        self.popped += 1
        if self.wants_release and len(self.items) <= self.low_water:
            self.release_producer()
        # Built here rather than by the producer: a dropped event never is.
        return build(seq, fields)

    def release_producer(self) -> None:
        """The buffer is down to its low-water mark: the waiting producers go on."""
        with self.lock:
            self.wants_release = False
            self.not_full.notify_all()

    def take(self, timeout: float | None = None) -> Any:
        """The next event; _EMPTY once the stream is over (or after ``timeout``)."""
        self.consumer_thread = threading.get_ident()
        while True:
            event = self._pop()
            if event is not _EMPTY:
                return event
            with self.lock:
                if self.items:
                    continue
                if self.finished or self.closed:
                    return _EMPTY
                self.consumer_waiting = True
                try:
                    if not self.not_empty.wait(timeout):
                        return _EMPTY
                finally:
                    self.consumer_waiting = False

    async def atake(self) -> Any:
        """The next event, awaited on the running loop; _EMPTY once it is over."""
        loop = asyncio.get_running_loop()
        self.consumer_thread = threading.get_ident()
        while True:
            event = self._pop()
            if event is not _EMPTY:
                return event
            with self.lock:
                if self.items:
                    continue
                if self.finished or self.closed:
                    return _EMPTY
                future: asyncio.Future[None] = loop.create_future()
                self.async_waiter = (loop, future)
            try:
                await future
            finally:
                with self.lock:
                    if self.async_waiter is not None and self.async_waiter[1] is future:
                        self.async_waiter = None

    def close(self) -> bool:
        """Stop buffering and release waiting producers; True if the job's end
        had not been buffered yet."""
        with self.lock:
            unfinished = not self.closed and not self.finished
            self.closed = True
            self.open = False
            self.items.clear()
            self.not_full.notify_all()
            self.not_empty.notify_all()
            waiter, self.async_waiter = self.async_waiter, None
        if waiter is not None:
            loop, future = waiter
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:
                pass
        return unfinished


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# ---------------------------------------------------------------------------
# The hook
# ---------------------------------------------------------------------------


class StreamHooks(JobHooks):
    """The lifecycle hook that feeds one stream's buffer.

    Built by :class:`EventStream` (``stream.hooks``); install it on one run,
    ``flow.execute(..., hooks=[stream.hooks])``.  Its class is made per set of
    kinds, so it implements only the hook methods those kinds need.
    """

    _routilux_stream = True
    # The library's own hook: it never raises, so the engine may call it directly.
    _routilux_trusted = True

    def __init__(self, buffer: _Buffer, kinds: frozenset[str]) -> None:
        self._buffer = buffer
        self.kinds = kinds
        self.job_state: JobState | None = None

    def open(self, asynchronous: bool = False) -> EventStream | AsyncEventStream:
        """A consumer for this hook's buffer (``JobState.events()``, ``aevents()``)."""
        return AsyncEventStream._over(self) if asynchronous else EventStream._over(self)

    # The implementations; _hook_class picks those its kinds need.  Each puts
    # (event class, its fields after seq); the consumer builds the event.

    def _job_start(self, job_state: JobState) -> None:
        self.job_state = job_state
        if "job_started" in self.kinds:
            item = (
                _build_job_started,
                _time(),
                job_state.job_id,
                job_state.current_routine_id,
                None,
                job_state.flow_id,
                job_state.status,
            )
            self._buffer.put(item, False)

    def _job_end(self, job_state: JobState) -> None:
        # Always put (it ends the iteration), whatever the kinds: a consumer
        # that did not ask for it never sees it (see _Consumer._wanted).
        item = (
            _build_job_finished,
            _time(),
            job_state.job_id,
            None,
            None,
            job_state.status,
            job_state,
        )
        self._buffer.finish(item)

    def _status(self, job_state: JobState, old: str, new: str) -> None:
        self._buffer.put((_build_status, _time(), job_state.job_id, None, None, old, new), False)

    # The three hot ones (a delivery's start and end, an emission) put the
    # Delivery or the record itself, read by the builder on the consumer's side,
    # and inline _Buffer.put's common case (room left: one append).

    def _delivery_start(self, job_state: JobState, delivery: Delivery) -> None:
        buffer = self._buffer
        item = (_build_delivery_started, _time(), job_state.job_id, delivery)
        if buffer.open and len(buffer.items) < buffer.maxsize:
            buffer.items.append(item)
            if buffer.consumer_waiting or buffer.async_waiter is not None:
                buffer._wake()
        else:
            buffer.put(item, True)

    def _delivery_end(
        self,
        job_state: JobState,
        delivery: Delivery,
        duration: float,
        error: BaseException | None,
    ) -> None:
        buffer = self._buffer
        item = (_build_delivery_finished, _time(), job_state.job_id, delivery, duration, error)
        if buffer.open and len(buffer.items) < buffer.maxsize:
            buffer.items.append(item)
            if buffer.consumer_waiting or buffer.async_waiter is not None:
                buffer._wake()
        else:
            buffer.put(item, True)

    def _emit(self, job_state: JobState, record: ExecutionRecord) -> None:
        buffer = self._buffer
        item = (_build_emitted, _time(), job_state.job_id, record)
        if buffer.open and len(buffer.items) < buffer.maxsize:
            buffer.items.append(item)
            if buffer.consumer_waiting or buffer.async_waiter is not None:
                buffer._wake()
        else:
            buffer.put(item, True)

    def _output(
        self,
        job_state: JobState,
        routine_id: str,
        output_type: str,
        data: Any,
        timestamp: datetime,
    ) -> None:
        item = (_build_output, _time(), job_state.job_id, routine_id, data, output_type)
        self._buffer.put(item, True)


# kind -> the hook methods it needs (and their implementation on StreamHooks).
_NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "job_started": (("on_job_start", "_job_start"),),
    "delivery_started": (("on_delivery_start", "_delivery_start"),),
    "delivery_finished": (("on_delivery_end", "_delivery_end"),),
    "emitted": (("on_emit", "_emit"),),
    "output": (("on_output", "_output"),),
    "status": (("on_status", "_status"),),
    "job_finished": (),
}
_classes: dict[frozenset[str], type[StreamHooks]] = {}
_classes_lock = threading.Lock()


def _hook_class(kinds: frozenset[str]) -> type[StreamHooks]:
    """The StreamHooks subclass implementing exactly what ``kinds`` needs."""
    with _classes_lock:
        cls = _classes.get(kinds)
        if cls is None:
            # The start is always watched (it tells the stream its job), the end
            # always (it ends the stream).
            methods: dict[str, Any] = {
                "on_job_start": StreamHooks._job_start,
                "on_job_end": StreamHooks._job_end,
            }
            for kind in kinds:
                for method, impl in _NEEDS[kind]:
                    methods[method] = getattr(StreamHooks, impl)
            name = "StreamHooks[" + ",".join(k for k in KINDS if k in kinds) + "]"
            cls = type(name, (StreamHooks,), methods)
            _classes[kinds] = cls
        return cls


def _check_kinds(kinds: Iterable[str] | None) -> frozenset[str]:
    if kinds is None:
        return frozenset(KINDS)
    if isinstance(kinds, str):
        kinds = (kinds,)
    chosen = frozenset(kinds)
    unknown = sorted(k for k in chosen if k not in KINDS)
    if unknown or not chosen:
        raise InvalidArgumentError(
            f"stream kinds: unknown {unknown or 'empty selection'}; choose from {', '.join(KINDS)}"
        )
    return chosen


# ---------------------------------------------------------------------------
# The consumers
# ---------------------------------------------------------------------------


class _Consumer:
    """What the sync and async consumers share: the options and closing."""

    hooks: StreamHooks
    _flow: Any
    cancel_on_close: bool

    def _setup(
        self,
        kinds: Iterable[str] | None,
        maxsize: int,
        overflow: str,
        cancel_on_close: bool,
        flow: Any,
    ) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise InvalidArgumentError(f"stream maxsize must be an int >= 1, got {maxsize!r}")
        if overflow not in OVERFLOWS:
            raise InvalidArgumentError(
                f"stream overflow must be one of {', '.join(OVERFLOWS)}, got {overflow!r}"
            )
        if cancel_on_close and flow is None:
            raise InvalidArgumentError("stream cancel_on_close=True needs the flow (flow=...)")
        chosen = _check_kinds(kinds)
        self.hooks = _hook_class(chosen)(_Buffer(maxsize, overflow), chosen)
        self._flow = flow
        self.cancel_on_close = cancel_on_close
        self._done = False

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds of event this stream yields."""
        return self.hooks.kinds

    @property
    def dropped(self) -> int:
        """How many events ``overflow="drop_oldest"`` has dropped so far."""
        return self.hooks._buffer.dropped

    @property
    def job_state(self) -> JobState | None:
        """The job being streamed (None until its run has started)."""
        return self.hooks.job_state

    def close(self) -> None:
        """Stop streaming: buffered events are discarded, the job's producers
        never wait again.  With ``cancel_on_close`` an unfinished job is cancelled."""
        if self._done:
            return
        self._done = True
        unfinished = self.hooks._buffer.close()
        job_state = self.hooks.job_state
        if unfinished and self.cancel_on_close and job_state is not None:
            try:
                self._flow.cancel(job_state, "event stream closed")
            except JobStateError:  # it ended meanwhile: nothing to cancel
                pass

    def __del__(self) -> None:
        # Dropped without close() (a ``break`` out of ``for ev in flow.stream()``):
        # release the job, which would otherwise wait for us forever.
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    def _wanted(self, event: StreamEvent) -> bool:
        if isinstance(event, JobFinished):
            self._done = True
            return "job_finished" in self.hooks.kinds
        return True


class EventStream(_Consumer):
    """A sync iterator over a job's events, oldest first, ending after its
    ``job_finished``.

    ``kinds``: the kinds to receive (default: all of :data:`KINDS`).
    ``maxsize``: the buffer's bound.  ``overflow``: ``"block"`` (the job waits for
    a slow consumer) or ``"drop_oldest"`` (it never waits; :attr:`dropped` counts).
    ``cancel_on_close``: closing before the job ended cancels it (needs ``flow``).

    Made by ``flow.stream(...)``, which also starts the job; to start it
    yourself, give :attr:`hooks` to the run::

        events = EventStream(kinds=["output"])
        job = flow.execute("source", wait=False, hooks=[events.hooks])
        for ev in events: ...

    A ``with`` block or :meth:`close` ends it early; so does dropping the object.
    One consumer per stream.
    """

    def __init__(
        self,
        *,
        kinds: Iterable[str] | None = None,
        maxsize: int = 1000,
        overflow: str = "block",
        cancel_on_close: bool = False,
        flow: Any = None,
    ) -> None:
        self._setup(kinds, maxsize, overflow, cancel_on_close, flow)

    @classmethod
    def _over(cls, hooks: StreamHooks) -> EventStream:
        self = cls.__new__(cls)
        self.hooks = hooks
        self._flow = None
        self.cancel_on_close = False
        self._done = False
        return self

    def __iter__(self) -> Iterator[StreamEvent]:
        # A generator rather than self: resuming its frame costs less per event
        # than a __next__ call, and it drains what is buffered in one go.
        # next(stream) still works (__next__); both read the same buffer.
        return self._iterate()

    def _iterate(self) -> Iterator[StreamEvent]:
        buffer = self.hooks._buffer
        items = buffer.items
        popleft = items.popleft
        end_wanted = "job_finished" in self.hooks.kinds
        while not self._done:
            if not buffer.drop:
                # The common case: events are waiting (no lock needed, see _Buffer).
                while True:
                    try:
                        fields = popleft()
                    except IndexError:
                        break
                    build = fields[0]
                    seq = buffer.popped
                    buffer.popped = seq + 1
                    if buffer.wants_release and len(items) <= buffer.low_water:
                        buffer.release_producer()
                    if build is _build_job_finished:
                        self._done = True
                        if end_wanted:
                            yield build(seq, fields)
                        return
                    yield build(seq, fields)
                if self._done:  # closed meanwhile
                    return
            event = buffer.take()
            if event is _EMPTY:
                break
            if self._wanted(event):
                yield event
        self._done = True

    def __next__(self) -> StreamEvent:
        buffer = self.hooks._buffer
        while not self._done:
            if not buffer.drop:
                # The common case, inlined: an event is waiting (no lock needed,
                # see _Buffer); anything else goes through take().
                try:
                    fields = buffer.items.popleft()
                except IndexError:
                    pass
                else:
                    build = fields[0]
                    seq = buffer.popped
                    buffer.popped = seq + 1
                    if buffer.wants_release and len(buffer.items) <= buffer.low_water:
                        buffer.release_producer()
                    if build is not _build_job_finished:
                        return build(seq, fields)
                    self._done = True
                    if "job_finished" in self.hooks.kinds:
                        return build(seq, fields)
                    break
            event = buffer.take()
            if event is _EMPTY:
                break
            if self._wanted(event):
                return event
        self._done = True
        raise StopIteration

    def next(self, timeout: float | None = None) -> StreamEvent | None:
        """The next event, or None when none came within ``timeout`` seconds or
        the stream is over."""
        while not self._done:
            event = self.hooks._buffer.take(timeout)
            if event is _EMPTY:
                return None
            if self._wanted(event):
                return event
        return None

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncEventStream(_Consumer):
    """An async iterator over a job's events (``async for``); see :class:`EventStream`.

    ``flow.astream(...)`` makes one; the job starts (through
    ``flow.execute_async(..., wait=False)``, off the caller's loop) at the first
    ``__anext__``.  ``async with`` or :meth:`aclose` ends it early.
    """

    def __init__(
        self,
        *,
        kinds: Iterable[str] | None = None,
        maxsize: int = 1000,
        overflow: str = "block",
        cancel_on_close: bool = False,
        flow: Any = None,
        start: Optional[Callable[[StreamHooks], Any]] = None,
    ) -> None:
        self._setup(kinds, maxsize, overflow, cancel_on_close, flow)
        self._start = start

    @classmethod
    def _over(cls, hooks: StreamHooks) -> AsyncEventStream:
        self = cls.__new__(cls)
        self.hooks = hooks
        self._flow = None
        self.cancel_on_close = False
        self._done = False
        self._start = None
        return self

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self

    async def __anext__(self) -> StreamEvent:
        start, self._start = self._start, None
        if start is not None:
            await start(self.hooks)
        while not self._done:
            event = await self.hooks._buffer.atake()
            if event is _EMPTY:
                break
            if self._wanted(event):
                return event
        self._done = True
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """:meth:`close`, awaitable."""
        self.close()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------
# The doors (Flow.stream, Flow.astream, JobState.events)
# ---------------------------------------------------------------------------

StreamOptions = Union[Iterable[str], None]


def stream_job(
    flow: Any,
    entry_routine_id: str,
    entry_params: dict[str, Any] | None = None,
    execution_strategy: str | None = None,
    *,
    kinds: StreamOptions = None,
    maxsize: int = 1000,
    overflow: str = "block",
    cancel_on_close: bool = False,
    hooks: Iterable[Any] | None = None,
) -> EventStream:
    """Start a job of ``flow`` (as ``execute(..., wait=False)``) and stream it."""
    stream = EventStream(
        kinds=kinds,
        maxsize=maxsize,
        overflow=overflow,
        cancel_on_close=cancel_on_close,
        flow=flow,
    )
    flow.execute(
        entry_routine_id,
        entry_params,
        execution_strategy,
        wait=False,
        hooks=[*(hooks or ()), stream.hooks],
    )
    return stream


def astream_job(
    flow: Any,
    entry_routine_id: str,
    entry_params: dict[str, Any] | None = None,
    execution_strategy: str | None = None,
    *,
    kinds: StreamOptions = None,
    maxsize: int = 1000,
    overflow: str = "block",
    cancel_on_close: bool = False,
    hooks: Iterable[Any] | None = None,
) -> AsyncEventStream:
    """An async stream of a new job of ``flow``, started at the first ``__anext__``
    (as ``await execute_async(..., wait=False)``)."""
    extra = list(hooks or ())

    async def start(stream_hooks: StreamHooks) -> None:
        await flow.execute_async(
            entry_routine_id,
            entry_params,
            execution_strategy,
            wait=False,
            hooks=[*extra, stream_hooks],
        )

    return AsyncEventStream(
        kinds=kinds,
        maxsize=maxsize,
        overflow=overflow,
        cancel_on_close=cancel_on_close,
        flow=flow,
        start=start,
    )


def attach_stream(
    job_state: JobState,
    run: Any,
    asynchronous: bool,
    *,
    kinds: StreamOptions = None,
    maxsize: int = 1000,
    overflow: str = "block",
) -> EventStream | AsyncEventStream:
    """A stream of ``job_state`` from now on, for a job started without one
    (``JobState.events()``): its hook is attached to ``run`` (the job's engine
    run, None when none is going on).

    Nothing that happened before is replayed: the stream begins with a
    ``job_started`` whose ``status`` is the job's status now, then what happens
    from here on, then ``job_finished``.  A job with no run going on gives those
    two at once.
    """
    stream: EventStream | AsyncEventStream
    if asynchronous:
        stream = AsyncEventStream(kinds=kinds, maxsize=maxsize, overflow=overflow)
    else:
        stream = EventStream(kinds=kinds, maxsize=maxsize, overflow=overflow)
    hooks = stream.hooks
    hooks._job_start(job_state)

    def settled() -> None:
        # The job's end, unless its on_job_end reached the hook (finish() is
        # idempotent: the first end buffered wins).
        hooks._job_end(job_state)

    if run is None or not run.add_hook(hooks, settled):
        settled()
    return stream

"""Change capture for durable jobs: what each delivery did to a JobState, as JSON-safe ops.

This module owns three things:

* **Capture** -- :class:`ChangeLog`, attached to one :class:`~routilux.job_state.JobState`
  (``job_state._changes``).  While attached, every mutation of the JobState's data
  records an *op*: a JSON-safe list such as ``["shared_set", "total", 3]``.  Values are
  encoded when they are written (:func:`encode_value`: the form a save writes), so a
  later in-place change never alters a recorded op.  ``shared_data``, ``routine_states``
  and ``slot_buffers`` become :class:`TrackedDict` while attached, so direct writes are
  recorded too, and a read that hands out a mutable value marks its key *taken* by the
  current delivery: when the delivery ends the key's value is encoded again and, if it
  changed, recorded.  Ops belong to the delivery bound with :meth:`ChangeLog.delivery`
  (a :mod:`contextvars` scope, so threads and asyncio tasks of concurrent deliveries
  each have their own); writes outside any delivery belong to the job and travel with
  the next record released -- or, while a sequential job's delivery begun by
  :meth:`ChangeLog.open_serial` runs, to that delivery.
* **Visibility** -- every op (and every take) gets a job-wide write sequence number
  under the job's lock.  :meth:`ChangeLog.take_ready` releases finished deliveries as
  :class:`Record` objects only when nothing they could have seen is still unfinished,
  and in groups that must be made durable together (see ``Record.cut``), so a crash
  that keeps a prefix of the released records never keeps a value computed from a
  write that is lost.
* **Replay** -- :func:`apply_ops` validates ops (they may come from a file) and applies
  them to a JobState, reproducing the state the live run had.

It knows only the state and codec layers.  What is *not* captured: status, pause
points and pending tasks (the journal records those beside the ops), and in-place
changes to a value a routine kept from an earlier delivery (that value is not read
from the JobState in the delivery that changes it).
"""

from __future__ import annotations

import heapq
import json
import math
import threading
from collections.abc import Hashable, Iterable, Iterator
from contextvars import ContextVar, Token
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Optional, Union

from .exceptions import JobStateError, SerializationError
from .job_state import ExecutionRecord, JobState
from .jsontext import atoms_text, quote, record_head
from .serialization import find_unserializable, key_path, short_repr

__all__ = [
    "OPS",
    "ChangeLog",
    "Record",
    "TrackedDict",
    "apply_ops",
    "encode_value",
]

# ---------------------------------------------------------------------------
# Encoding values: the JSON-safe form a save writes
# ---------------------------------------------------------------------------

#: Types JSON holds as they are (floats are checked: NaN is refused).
_ATOMS = frozenset({str, int, bool, type(None)})

#: (routine id, event name) -> the texts a serial delivery's history op and its
#: record's saved form start with (see :func:`_history_heads`); bounded, as a process
#: may run flows of ever new routine ids.
_HEADS: dict[tuple[str, str], tuple[str, str]] = {}
_HEADS_KEPT = 4096


def _history_heads(routine_id: str, event_name: str) -> tuple[str, str]:
    """The JSON texts a history op of ``routine_id``'s ``event_name`` and the saved
    form of its record start with, up to the data (made once per event: quoting
    the names on every emission costs a W2 delivery about 4 % of its instructions)."""
    rid_text, name_text = quote(routine_id), quote(event_name)
    heads = (f'["history",{rid_text},{name_text},', record_head(rid_text, name_text))
    if len(_HEADS) < _HEADS_KEPT:
        _HEADS[(routine_id, event_name)] = heads
    return heads


#: Types whose values cannot change in place: reading one never marks a key taken.
_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes, complex, frozenset})


class _Unencodable(Exception):
    """Internal: the fast encoder met something JSON cannot hold faithfully."""


def _encode(value: Any) -> Any:
    """A JSON-safe deep copy of ``value``, or :class:`_Unencodable`."""
    cls = type(value)
    if cls is str or cls is int or cls is bool or value is None:
        return value
    if cls is float:
        if math.isfinite(value):
            return value
        raise _Unencodable
    if cls is dict or isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _Unencodable
            kind = type(item)
            out[key] = item if (kind is str or kind is int or kind is bool) else _encode(item)
        return out
    if cls is list or isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    # Subclasses of the scalars: JSON writes (and loads back) their base value.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return _encode(float.__float__(value))
    raise _Unencodable


def encode_value(value: Any, path: str) -> Any:
    """The JSON-safe form of ``value``: what a save of the JobState writes for it.

    Dicts (string keys only) and lists are copied, tuples become lists, subclasses of
    str/int/float become their base type.  Anything JSON cannot hold faithfully (a
    set, an object, a non-string key, NaN, a circular or too deeply nested value)
    raises :class:`SerializationError` naming its key path below ``path``.
    """
    try:
        return _encode(value)
    except (_Unencodable, RecursionError):
        pass
    try:
        found = find_unserializable(value, path, string_keys=True)
    except RecursionError:
        found = None
    where, problem = found if found is not None else (path, "it is nested too deeply")
    raise SerializationError(f"cannot save value at '{where}': {problem}") from None


# ---------------------------------------------------------------------------
# Scopes and records
# ---------------------------------------------------------------------------

#: One op: a JSON-safe list -- or, in the record of a serial delivery
#: (:meth:`ChangeLog.open_serial`), possibly that list's JSON text already (a history
#: op); :meth:`ChangeLog.ops_as_lists` turns those back into lists.
Op = Union[list[Any], str]

#: A field of the JobState whose mapping is tracked: op prefix -> attribute name.
_FIELDS = {"shared": "shared_data", "state": "routine_states", "buffers": "slot_buffers"}

# Zero-padded digits and bounds for ChangeLog._iso.
_D3 = tuple(f"{i:03d}" for i in range(1000))
_DAY_ONE = datetime(1, 1, 1)
_ONE_SECOND = timedelta(seconds=1)

# Mirror markers: the key is absent / its encoded value could not be known at the take.
_ABSENT: Any = object()
_UNKNOWN: Any = object()


class Record:
    """One delivery's changes: open while it runs, then a finished record that
    :meth:`ChangeLog.take_ready` releases.

    ``key``: what :meth:`ChangeLog.delivery` was given (None for a record that carries
    only job-level writes).  ``ops``: the ops to store with it and to apply, in order,
    on recovery (see :data:`Op`: a serial delivery's history op may be its JSON
    text).  Deliveries whose writes interleave form a *group*: the ops of all of
    its records (and the job-level writes among them) travel, in write order, in the
    group's last record, and the others carry none.  ``cut`` is True on the last record
    of a group: the journal may end a transaction only after a record whose ``cut``
    is True, since a crash between two records of a group would keep one delivery's
    consumption without its effects, or a value computed from a lost write.
    ``end_seq``/``first_seq``: the write sequence numbers of its end and of its first
    op or take.  ``error``: the SerializationError :meth:`ChangeLog.end` raised for it
    (an in-place change it could not encode, which is then not in ``ops``), else None.
    ``token``: the binding :meth:`ChangeLog.open_bound` made (None once unbound).
    ``added``/``removed``: free for the log's owner (the engine's journal keeps there
    the rows the delivery queued and the timers it withdrew), None until it uses them.
    """

    # Slots, every one set here: the serial lane reads a record's fields once per
    # delivery, and Python 3.11 does not specialize reading a class-level default
    # through an instance (each such read takes the generic lookup); a slot read is.
    __slots__ = (
        "key",
        "ops",
        "log",
        "seqs",
        "end_seq",
        "first_seq",
        "cut",
        "error",
        "first",
        "taken",
        "ended",
        "updated_at",
        "token",
        "text_ops",
        "added",
        "removed",
    )

    def __init__(self, log: ChangeLog | None, key: Hashable) -> None:
        self.key = key
        self.ops: list[Op] = []
        # The log it belongs to (while open), and the write seq of each op.
        self.log = log
        self.seqs: list[int] = []
        self.end_seq = 0
        self.first_seq = 0
        self.cut = False
        self.error: SerializationError | None = None
        # While open: the write seq of its first op or take (None: none yet), the
        # (field, key) pairs of tracked mappings it took a mutable value from; and
        # whether it has ended.
        self.first: int | None = None
        self.taken: dict[tuple[str, str], None] | None = None
        self.ended = False
        #: The JobState's ``updated_at`` when it ended.
        self.updated_at: datetime | None = None
        self.token: Token[Optional[Record]] | None = None
        # Whether a history op of it may be written as JSON text (a serial delivery's:
        # see ChangeLog.history); False once ChangeLog.ops_as_lists turned them back.
        self.text_ops = True
        self.added: list[Any] | None = None
        self.removed: list[int] | None = None

    def _finish(self, end_seq: int, updated_at: datetime) -> None:
        self.ended = True
        self.end_seq = end_seq
        self.first_seq = self.first if self.first is not None else end_seq
        self.updated_at = updated_at

    def __repr__(self) -> str:
        state = f"end {self.end_seq}" if self.ended else "open"
        return f"Record[{self.key!r}: {len(self.ops)} ops, {state}{', cut' if self.cut else ''}]"


_Scope = Record

#: The delivery the current thread or asyncio task is running (None: the job level).
_current: ContextVar[Optional[Record]] = ContextVar("routilux_changes_scope", default=None)

#: Bound by :meth:`ChangeLog.reading`: reads mark nothing taken (a snapshot copies only).
_READER = Record(None, "<reader>")


class _Delivery:
    """The context manager of :meth:`ChangeLog.delivery` (begin, bind, end)."""

    __slots__ = ("_log", "_key", "_token", "_begin")

    def __init__(self, log: ChangeLog, key: Hashable, begin: bool) -> None:
        self._log = log
        self._key = key
        self._begin = begin
        self._token: Token[Optional[_Scope]] | None = None

    def __enter__(self) -> Hashable:
        log = self._log
        scope = log._begin(self._key) if self._begin else log._open_scope(self._key)
        self._token = _current.set(scope)
        return self._key

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if self._begin:
            self._log.end(self._key)


class _Reading:
    """The context manager of :meth:`ChangeLog.reading`."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _current.set(_READER)

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


# ---------------------------------------------------------------------------
# Tracked mappings
# ---------------------------------------------------------------------------


class TrackedDict(dict):
    """A dict of a journaled JobState (``shared_data``, ``routine_states``,
    ``slot_buffers``) that records every write as an op, and marks a key *taken* when a
    read hands out its mutable value (see :class:`ChangeLog`).  Installed by
    ``ChangeLog(job_state)``; the plain dict comes back on :meth:`ChangeLog.detach`."""

    __slots__ = ("_log", "_field")

    # Made only by _tracked (without a Python-level __init__: three per job), which
    # sets these two.
    _log: ChangeLog
    _field: str

    # -- writes ---------------------------------------------------------------

    def __setitem__(self, key: str, value: Any) -> None:
        log = self._log
        with log._lock:
            log._set(self, key, value)

    def __delitem__(self, key: str) -> None:
        log = self._log
        with log._lock:
            dict.__delitem__(self, key)  # the KeyError of a plain dict, nothing recorded
            log._deleted(self, key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        items = dict(*args, **kwargs)
        log = self._log
        with log._lock:
            # Encoded first: a value that cannot be saved leaves the mapping unchanged.
            encoded = [(k, log._check(self, k, v)) for k, v in items.items()]
            for (key, enc), value in zip(encoded, items.values()):
                log._store(self, key, value, enc)

    def __ior__(self, other: Any) -> TrackedDict:
        self.update(other)
        return self

    def setdefault(self, key: str, default: Any = None) -> Any:
        log = self._log
        with log._lock:
            if not dict.__contains__(self, key):
                log._set(self, key, default)
            value = dict.__getitem__(self, key)
            if type(value) not in _IMMUTABLE:
                log._take(self, key)
        return value

    def pop(self, key: str, *default: Any) -> Any:
        log = self._log
        with log._lock:
            if dict.__contains__(self, key):
                value = dict.pop(self, key)
                log._deleted(self, key)
                return value
        if default:
            return default[0]
        raise KeyError(key)

    def popitem(self) -> tuple[str, Any]:
        log = self._log
        with log._lock:
            key, value = dict.popitem(self)  # the KeyError of a plain dict when empty
            log._deleted(self, key)
        return key, value

    def clear(self) -> None:
        log = self._log
        with log._lock:
            dict.clear(self)
            log._cleared(self)

    # -- reads that hand values out ---------------------------------------------

    def __getitem__(self, key: str) -> Any:
        value = dict.__getitem__(self, key)
        if type(value) not in _IMMUTABLE:
            self._log._take(self, key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            value = dict.__getitem__(self, key)
        except KeyError:
            return default
        if type(value) not in _IMMUTABLE:
            self._log._take(self, key)
        return value

    def _take_all(self) -> None:
        log = self._log
        for key, value in list(dict.items(self)):
            if type(value) not in _IMMUTABLE:
                log._take(self, key)

    def values(self) -> Any:
        self._take_all()
        return dict.values(self)

    def items(self) -> Any:
        self._take_all()
        return dict.items(self)

    def copy(self) -> dict[str, Any]:
        self._take_all()
        return dict(dict.items(self))

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        self._take_all()
        merged = dict(dict.items(self))
        merged.update(other)
        return merged

    def __reduce__(self) -> tuple[Any, ...]:
        # Copies and pickles are plain dicts: the tracking belongs to the live JobState.
        return (dict, (dict(dict.items(self)),))


def _tracked(data: dict[str, Any], log: ChangeLog, field: str) -> TrackedDict:
    """A TrackedDict of ``data``'s items recording into ``log`` as ``field`` (the one
    way one is made: a log makes three per job, most of them of an empty dict, so
    without a Python-level ``__init__`` call)."""
    tracked = _new_dict(TrackedDict)
    if data:
        dict.update(tracked, data)
    tracked._log = log
    tracked._field = field
    return tracked


_new_dict = dict.__new__


# ---------------------------------------------------------------------------
# The change log
# ---------------------------------------------------------------------------


class ChangeLog:
    """Records what each delivery does to one JobState; releases finished ones in a
    safe order.  Creating it attaches it to ``job_state``.

    Capture rules:

    * Every mutator of the JobState and every write to its tracked mappings records
      an op, with the value encoded at the time of the write (:func:`encode_value`);
      an unencodable value raises SerializationError and changes nothing.
    * A read of a mutable value from ``shared_data``, ``routine_states`` or
      ``slot_buffers`` (``[]``, ``get``, ``setdefault``, ``items``, ``values``,
      ``copy``, ``|``) marks the key *taken* by the current delivery.  When that
      delivery ends, the key's current value is encoded again and recorded if it
      changed: in-place changes to a shared value become part of the delivery that
      took it out.  (A change between values Python calls equal, such as 1 -> 1.0, is
      not seen.)  Inside :meth:`reading` reads mark nothing (for snapshots).
    * The current delivery is the one bound by :meth:`delivery` in this thread or
      asyncio task (threads and tasks it starts inherit it while it is open).  Writes
      outside any open delivery of this log -- also writes of a delivery that has
      ended -- belong to the job level: they are released with the next record.

    Visibility rule: each op and each take gets a job-wide write sequence number
    under ``job_state.lock``; :meth:`end` freezes a delivery's record with an end
    sequence number.  A finished record R may become durable only when every write
    numbered below R's end belongs to a finished delivery (R may have seen any of
    them), and records are released in end order, in groups (see :class:`Record`)
    closed under that rule: every write numbered below a group's end is in that group
    or before it.  So the durable prefix never holds a value computed from a write
    that is lost, and applying the released ops in order reproduces the live state.
    """

    # Fields that start the same in every log are class attributes (a log is made
    # per job); __init__ says what each is for.
    _seq = 0
    _last_history: tuple[Op, datetime, str] | None = None
    emitted: tuple[Any, str] | None = None
    _second: tuple[datetime, datetime, str] = (_DAY_ONE, _DAY_ONE, "")

    def __init__(self, job_state: JobState) -> None:
        lock: threading.RLock = job_state._lock  # (``lock``, without the property's call)
        with lock:
            if job_state._changes is not None:
                raise JobStateError(f"job {job_state.job_id} already has a ChangeLog attached")
            self.job_state = job_state
            self._lock = lock
            # self._seq: the job-wide write sequence number of the latest op or take.
            self._job = _Scope(self, None)
            # Where writes go that no bound delivery owns: the job level, or the
            # delivery open_serial began.
            self._unbound: _Scope = self._job
            self._open: dict[Hashable, _Scope] = {}
            self._ended: list[Record] = []
            # (field, key) -> encoded value last recorded, kept while some scope has
            # the key taken; and how many scopes have it taken.
            self._mirror: dict[tuple[str, str], Any] = {}
            self._takers: dict[tuple[str, str], int] = {}
            self._touched: datetime | None = job_state.updated_at
            # self._last_history: the latest history op, its time and that time's
            # text (see _touch).  self.emitted: the data of the latest history op
            # written as text (a serial delivery's) and that text: the journal reuses
            # it for the row of the task the emission queues (see engine/journal.py).
            # self._second: the second _iso formatted last: its start, its end, its
            # text.
            # (one line per field of _FIELDS: a log is made per job)
            job_state.shared_data = _tracked(job_state.shared_data, self, "shared")
            job_state.routine_states = _tracked(job_state.routine_states, self, "state")
            job_state.slot_buffers = _tracked(job_state.slot_buffers, self, "buffers")
            job_state._changes = self

    def __repr__(self) -> str:
        return f"ChangeLog[{self.job_state.job_id}: {len(self._open)} open, seq {self._seq}]"

    def detach(self) -> None:
        """Stop recording: the JobState gets plain dicts again, no ChangeLog, and no
        saved texts of history records."""
        js = self.job_state
        with self._lock:
            if js._changes is not self:
                return
            # dict.copy: a plain dict of the same items (no tracked method runs).
            js.shared_data = dict.copy(js.shared_data)
            js.routine_states = dict.copy(js.routine_states)
            js.slot_buffers = dict.copy(js.slot_buffers)
            js._changes = None
            # The history records' saved texts are this capture's (see history): a
            # JobState without it keeps none, and its next save encodes each record.
            for record in js.execution_history:
                record.saved_text = None

    # -- scopes ---------------------------------------------------------------

    def delivery(self, key: Hashable) -> _Delivery:
        """``with log.delivery(key):`` -- begin a delivery, bind it to the current
        thread or asyncio task, and end it (:meth:`end`) on the way out, also when the
        body raises.  ``key`` identifies it (e.g. the task sequence number)."""
        return _Delivery(self, key, begin=True)

    def begin(self, key: Hashable) -> None:
        """Open delivery ``key`` without binding it (bind it with :meth:`bound`)."""
        self._begin(key)

    def bound(self, key: Hashable) -> _Delivery:
        """``with log.bound(key):`` -- bind an open delivery here without ending it."""
        return _Delivery(self, key, begin=False)

    def open_bound(self, key: Hashable) -> Record:
        """Begin delivery ``key`` and bind it to the current thread or asyncio task
        (:meth:`begin` and :meth:`bound` in one step, for the engine's journal, which
        opens and closes a delivery in two calls): its open record, whose ``token``
        :meth:`close_bound` resets.

        Without the job's lock: a delivery that has written nothing yet holds nothing
        back (its writes, numbered under the lock, all come after whatever a release
        looks at meanwhile), and :meth:`take_ready` reads ``_open`` through a copy."""
        opened = self._open
        if key in opened:
            raise JobStateError(f"delivery {key!r} of job {self.job_state.job_id} is already open")
        scope = opened[key] = Record(self, key)
        scope.token = _current.set(scope)
        return scope

    def close_bound(self, key: Hashable) -> Record | None:
        """Unbind delivery ``key`` (opened by :meth:`open_bound`; a binding made in
        another context, e.g. a coroutine's, is left alone) and end it, as :meth:`end`
        (the job's lock must be held).

        When it is the only delivery -- nothing else open or waiting, no job-level
        write or take pending: a sequential job -- its record is released at once and
        returned, exactly as :meth:`take_ready` would return it (a group of its own,
        ``cut`` True, touched); else None, and it waits for :meth:`take_ready`.
        """
        scope = self._open.pop(key, None)
        if scope is None:
            raise JobStateError(f"no open delivery {key!r} in job {self.job_state.job_id}")
        if scope is self._unbound:
            self._unbound = self._job
        token = scope.token
        if token is not None:
            scope.token = None
            try:
                _current.reset(token)
            except (ValueError, RuntimeError):
                pass  # made in another context (a coroutine): nothing bound here
        return self._close(scope)

    def close_serial(self, scope: Record) -> Record | None:
        """:meth:`close_bound` for the delivery :meth:`open_serial` began (``scope``,
        its record; the job's lock must be held)."""
        if self._unbound is not scope:
            raise JobStateError(
                f"delivery {scope.key!r} is not the serial delivery of job {self.job_state.job_id}"
            )
        del self._open[scope.key]
        job = self._unbound = self._job
        if scope.taken or self._open or self._ended or job.seqs or job.taken:
            return self._close(scope)
        # _close's common case, inline (once per delivery of a sequential job): the
        # record is released at once, a group of its own; no field but ``ops`` is
        # read after this, so only the ones take_ready would look at are set.
        self._seq = seq = self._seq + 1
        scope.ended = True
        scope.end_seq = seq
        scope.cut = True
        stamp = self.job_state.updated_at
        if stamp is not None and stamp != self._touched:
            last = self._last_history
            ops = scope.ops
            if last is not None and last[1] == stamp and ops and ops[-1] is last[0]:
                self._touched = stamp  # the history op that ends it touches already
            else:
                self._touch_ops(ops, stamp)
        return scope

    def _close(self, scope: Record) -> Record | None:
        """End ``scope`` (no longer open, unbound); released at once when alone."""
        error = self._settle(scope) if scope.taken else None
        self._seq = seq = self._seq + 1
        scope.ended = True
        scope.end_seq = seq
        first = scope.first
        scope.first_seq = first if first is not None else seq
        stamp = scope.updated_at = self.job_state.updated_at
        scope.error = error
        job = self._job
        if error is None and not self._open and not self._ended and not job.seqs and not job.taken:
            scope.cut = True
            if stamp is not None and stamp != self._touched:
                self._touch_ops(scope.ops, stamp)
            return scope
        self._ended.append(scope)
        if error is not None:
            raise error
        return None

    def open_serial(self, key: Hashable) -> Record:
        """Begin delivery ``key`` of a sequential job without binding it: until it
        ends, every write that no bound delivery of this log owns -- from any thread
        -- is its own (a job-level write would travel with its record anyway, since
        nothing else runs).  Costs no context-variable round; one at a time, and
        only while no other delivery is open (JobStateError otherwise).  End it
        with :meth:`close_bound`."""
        opened = self._open
        if opened or self._unbound is not self._job:
            raise JobStateError(
                f"delivery {key!r} of job {self.job_state.job_id}: a serial delivery needs "
                "no other delivery open"
            )
        scope = opened[key] = Record(self, key)
        self._unbound = scope
        return scope

    def ops_as_lists(self, record: Record) -> None:
        """Turn the ops of ``record`` that are JSON texts (a serial delivery's history
        ops) into the lists they encode, for whoever takes them as lists (the job's
        lock must be held, or the record not yet ended)."""
        record.text_ops = False
        ops = record.ops
        for i, op in enumerate(ops):
            if type(op) is str:
                ops[i] = json.loads(op)

    def _touch_ops(self, ops: list[Op], stamp: datetime) -> None:
        """:meth:`_touch` for released ``ops`` ending at ``stamp`` (not yet touched)."""
        self._touched = stamp
        last = self._last_history
        if last is not None and last[1] == stamp:
            # The latest history op has this very time (record_execution sets
            # updated_at to it): when it ends the release, replaying it sets
            # updated_at already; otherwise its text is reused.
            if not (ops and ops[-1] is last[0]):
                ops.append(["touch", last[2]])
            return
        ops.append(["touch", stamp.isoformat()])

    def reading(self) -> _Reading:
        """``with log.reading():`` -- reads mark nothing taken (for a snapshot, which
        only copies); writes inside count as job-level writes."""
        return _Reading()

    def _begin(self, key: Hashable) -> _Scope:
        with self._lock:
            if key in self._open:
                raise JobStateError(
                    f"delivery {key!r} of job {self.job_state.job_id} is already open"
                )
            scope = self._open[key] = _Scope(self, key)
        return scope

    def _open_scope(self, key: Hashable) -> _Scope:
        try:
            return self._open[key]
        except KeyError:
            raise JobStateError(
                f"no open delivery {key!r} in job {self.job_state.job_id}"
            ) from None

    def end(self, key: Hashable) -> Record:
        """End delivery ``key``: record its taken keys' changes, freeze its record.

        An in-place change that cannot be encoded raises SerializationError; the record
        is ended anyway (so later ones are not held back) with ``error`` set.
        """
        error: SerializationError | None = None
        with self._lock:
            scope = self._open.pop(key, None)
            if scope is None:
                raise JobStateError(f"no open delivery {key!r} in job {self.job_state.job_id}")
            if scope.taken:
                error = self._settle(scope)
            self._seq += 1
            scope._finish(self._seq, self.job_state.updated_at)
            scope.error = error
            self._ended.append(scope)
        if error is not None:
            raise error
        return scope

    @property
    def open_deliveries(self) -> int:
        """How many deliveries have begun and not ended."""
        return len(self._open)

    @property
    def pending(self) -> int:
        """How many ended records :meth:`take_ready` has not released yet."""
        return len(self._ended)

    # -- releasing ------------------------------------------------------------

    def take_job_writes(self) -> list[Op] | None:
        """``take_ready(flush=True)`` when nothing is open or ended (a sequential job
        settling, its deliveries released): the ops of the one record it would
        release, without the record ([]: none); None when something is open or
        ended (then take_ready)."""
        with self._lock:
            job = self._job
            if job.taken:
                self._settle(job, job_level=True)  # raises only for the job's own writes
            if self._ended or self._open:
                return None
            return self._job_writes() if job.ops else []

    def _job_writes(self) -> list[Op]:
        """The job-level writes, taken, with their ``touch`` (lock held)."""
        job = self._job
        ops, job.ops, job.seqs = job.ops, [], []
        stamp = self.job_state.updated_at
        if stamp is not None and stamp != self._touched:
            self._touch_ops(ops, stamp)
        return ops

    def take_ready(self, *, flush: bool = False) -> list[Record]:
        """The finished records that may become durable now, in commit order.

        Each is returned once.  Commit them in this order, ending transactions only
        after a record whose ``cut`` is True.  With ``flush``, job-level writes that no
        record carries become a record of their own (``key`` None) when nothing
        unfinished precedes them -- e.g. before a pause or at the end of the job.
        """
        with self._lock:
            job = self._job
            if job.taken:
                self._settle(job, job_level=True)  # raises only for the job's own writes
            ended = self._ended
            if not ended and not (flush and job.ops):
                return []  # nothing ended since the last release (close_bound took it)
            if len(ended) == 1 and not self._open and not job.seqs:
                # The common case of a sequential job, released after each delivery:
                # nothing is open and no job-level write waits, so the one record is
                # ready and a group of its own (what the general path below finds).
                record = ended.pop()
                record.cut = True
                self._touch(record)
                return [record]
            if not ended and not self._open:
                # A flush with nothing but job-level writes (a job's last touches as
                # it settles): all of them are one record (what the general path
                # below finds, with nothing open to hold any of them back).
                record = Record(self, None)
                record._finish(self._seq, self.job_state.updated_at)
                record.ops = self._job_writes()
                record.cut = True
                return [record]
            frontier = min(
                # (a copy: open_bound adds to _open without the lock)
                (s.first for s in list(self._open.values()) if s.first is not None),
                default=self._seq + 1,
            )
            # Records ending below the frontier saw only finished writes (ends rise,
            # so they are a prefix); a group may end after record i when no later
            # finished record wrote before i's end either.
            ready = 0
            while ready < len(ended) and ended[ready].end_seq < frontier:
                ready += 1
            # Held-back records (ended at or after the frontier) are only scanned for
            # their earliest write; a release touches the ready ones alone.
            later_first = min(frontier, min((r.first_seq for r in ended[ready:]), default=frontier))
            cuts = [False] * ready
            for i in range(ready - 1, -1, -1):
                record = ended[i]
                if record.end_seq < later_first:
                    cuts[i] = True
                if record.first_seq < later_first:
                    later_first = record.first_seq
            last_cut = max((i for i in range(ready) if cuts[i]), default=-1)
            released = ended[: last_cut + 1]
            del ended[: last_cut + 1]
            start = 0
            for i in range(len(released)):
                if cuts[i]:
                    self._close_group(released[start : i + 1])
                    start = i + 1
            if flush and job.ops:
                limit = min(frontier, min((r.first_seq for r in ended), default=frontier))
                carried = self._job_ops_below(limit)
                if carried:
                    record = Record(self, None)
                    record.ops = carried
                    record._finish(self._seq, self.job_state.updated_at)
                    record.cut = True
                    released.append(record)
            if released:
                self._touch(released[-1])
        return released

    def _close_group(self, group: list[Record]) -> None:
        """Put the ops of ``group`` (and the job-level writes before its end) in its
        last record, in write order; mark it a cut."""
        last = group[-1]
        job_ops = self._job.seqs and self._job.seqs[0] < last.end_seq
        if len(group) == 1 and not job_ops:
            last.cut = True
            return
        streams: list[Iterator[tuple[int, Op]]] = [zip(r.seqs, r.ops) for r in group]
        if job_ops:
            count = _count_below(self._job.seqs, last.end_seq)
            streams.append(zip(self._job.seqs[:count], self._job.ops[:count]))
            del self._job.seqs[:count]
            del self._job.ops[:count]
        merged = [op for _, op in heapq.merge(*streams, key=_first)]
        for record in group:
            record.ops = []
            record.seqs = []
        last.ops = merged
        last.cut = True

    def _job_ops_below(self, limit: int) -> list[Op]:
        job = self._job
        count = _count_below(job.seqs, limit)
        ops = job.ops[:count]
        del job.ops[:count]
        del job.seqs[:count]
        return ops

    def _touch(self, record: Record) -> None:
        """Append the ``touch`` op (the JobState's ``updated_at`` when ``record``
        ended) if it moved.  Once per release, on its last record: a crash that keeps
        an earlier cut of it keeps an ``updated_at`` a little older than the data."""
        stamp = record.updated_at
        if stamp is not None and stamp != self._touched:
            self._touch_ops(record.ops, stamp)

    # -- recording (the job's lock is held) -------------------------------------

    def _record(self, op: list[Any], scope: _Scope | None = None) -> None:
        """Number ``op`` and add it to ``scope`` (default: the current delivery, or
        the job level when none of this log is open here)."""
        self._seq = seq = self._seq + 1
        if scope is None:
            scope = _current.get()
            if scope is None or scope.log is not self or scope.ended:
                scope = self._unbound
        if scope.first is None and scope is not self._job:
            scope.first = seq
        scope.ops.append(op)
        scope.seqs.append(seq)

    def _check(self, tracked: TrackedDict, key: Any, value: Any) -> Any:
        """The encoded ``value`` for ``tracked[key]``, or SerializationError."""
        name = _FIELDS[tracked._field]
        if type(key) is not str:
            raise SerializationError(
                f"cannot save value at '{name}': its key {short_repr(key)} is a "
                f"{type(key).__name__}; JSON object keys are strings -- use string keys"
            )
        path = key_path(name, key)
        field = tracked._field
        if field != "shared":
            _check_shape(field, value, path, SerializationError)
        return encode_value(value, path)

    def _set(self, tracked: TrackedDict, key: str, value: Any) -> None:
        self._store(tracked, key, value, self._check(tracked, key, value))

    def _store(self, tracked: TrackedDict, key: str, value: Any, encoded: Any) -> None:
        dict.__setitem__(tracked, key, value)
        field = tracked._field
        self._record([f"{field}_set", key, encoded])
        mirror = self._mirror
        if mirror:  # empty unless some key is taken
            mirror_key = (field, key)
            if mirror_key in self._mirror:
                self._mirror[mirror_key] = encoded

    def _deleted(self, tracked: TrackedDict, key: str) -> None:
        field = tracked._field
        self._record([f"{field}_del", key])
        mirror = self._mirror
        if mirror:  # empty unless some key is taken
            mirror_key = (field, key)
            if mirror_key in self._mirror:
                self._mirror[mirror_key] = _ABSENT

    def _cleared(self, tracked: TrackedDict) -> None:
        field = tracked._field
        self._record([f"{field}_clear"])
        for mirror_key in self._mirror:
            if mirror_key[0] == field:
                self._mirror[mirror_key] = _ABSENT

    def _take(self, tracked: TrackedDict, key: str) -> None:
        """Mark ``tracked[key]`` taken by the current scope (a write, for visibility)."""
        scope = _current.get()
        if scope is None or scope.log is not self or scope.ended:
            if scope is _READER:
                return
            scope = self._unbound
        mirror_key = (tracked._field, key)
        taken = scope.taken
        if taken is not None and mirror_key in taken:
            return
        with self._lock:
            self._seq = seq = self._seq + 1
            if scope.first is None and scope is not self._job:
                scope.first = seq
            if taken is None:
                taken = scope.taken = {}
            taken[mirror_key] = None
            count = self._takers.get(mirror_key, 0)
            self._takers[mirror_key] = count + 1
            if count == 0:
                try:
                    self._mirror[mirror_key] = _encode(dict.__getitem__(tracked, key))
                except (_Unencodable, RecursionError, KeyError):
                    self._mirror[mirror_key] = _UNKNOWN

    def _settle(self, scope: _Scope, job_level: bool = False) -> SerializationError | None:
        """Record the changes of the keys ``scope`` took; forget its takes."""
        error: SerializationError | None = None
        for mirror_key in scope.taken or ():
            try:
                self._settle_key(scope, mirror_key)
            except SerializationError as exc:
                error = error or exc
            count = self._takers[mirror_key] - 1
            if count:
                self._takers[mirror_key] = count
            else:
                del self._takers[mirror_key]
                del self._mirror[mirror_key]
        scope.taken = None
        if job_level and error is not None:
            raise error
        return error

    def _settle_key(self, scope: _Scope, mirror_key: tuple[str, str]) -> None:
        field, key = mirror_key
        tracked = getattr(self.job_state, _FIELDS[field])
        old = self._mirror[mirror_key]
        if not dict.__contains__(tracked, key):
            return  # deleted: its op was recorded then
        current = dict.__getitem__(tracked, key)
        name = _FIELDS[field]
        if old is not _ABSENT and old is not _UNKNOWN:
            if field == "shared" and type(current) is list and type(old) is list:
                done = len(old)
                if len(current) >= done and current[:done] == old:
                    if len(current) > done:
                        tail = encode_value(current[done:], key_path(name, key))
                        self._record(["shared_extend", key, tail], scope)
                        self._mirror[mirror_key] = old + tail
                    return
            elif current == old:
                return
            if field == "state" and type(current) is dict and type(old) is dict:
                if all(k in current for k in old):
                    changed = {k: v for k, v in current.items() if k not in old or old[k] != v}
                    encoded = encode_value(changed, key_path(name, key))
                    self._record(["state_merge", key, encoded], scope)
                    self._mirror[mirror_key] = {**old, **encoded}
                    return
        encoded = self._check(tracked, key, current)
        self._record([f"{field}_set", key, encoded], scope)
        self._mirror[mirror_key] = encoded

    # -- the JobState's mutators call these (lock held, before they change anything)

    def merge_state(self, routine_id: str, updates: dict[str, Any]) -> None:
        """``JobState.merge_routine_state`` while journaled: encode, merge, record."""
        states: dict[str, Any] = self.job_state.routine_states
        try:
            encoded = _encode(updates)
        except (_Unencodable, RecursionError):
            encoded = encode_value(updates, key_path("routine_states", routine_id))
        state = dict(dict.get(states, routine_id) or {})
        state.update(updates)
        dict.__setitem__(states, routine_id, state)
        self._record(["state_merge", routine_id, encoded])
        mirror = self._mirror
        if mirror:  # empty unless some key is taken
            mirror_key = ("state", routine_id)
            if mirror_key in self._mirror:
                old = self._mirror[mirror_key]
                if old is _ABSENT:
                    self._mirror[mirror_key] = dict(encoded)
                elif isinstance(old, dict):
                    self._mirror[mirror_key] = {**old, **encoded}

    def history(self, record: ExecutionRecord) -> None:
        """``JobState.record_execution``: one history record."""
        data = record.data
        stamp = record.timestamp
        # _iso's common case inline: a naive datetime within the second of the last.
        second = self._second
        if type(stamp) is datetime and stamp.tzinfo is None and second[0] <= stamp < second[1]:
            micro = stamp.microsecond
            text = f"{second[2]}.{_D3[micro // 1000]}{_D3[micro % 1000]}" if micro else second[2]
        else:
            text = self._iso(stamp)
        # _record, inlined: this runs once per emission.
        self._seq = seq = self._seq + 1
        scope = _current.get()
        if scope is None or scope.log is not self or scope.ended:
            scope = self._unbound
            if scope is not self._job and type(data) is dict and scope.text_ops:
                # The serial delivery's (open_serial): its op written as JSON text
                # at once, and the data's text kept for the task it queues next.
                data_text = atoms_text(data)
                rid, name = record.routine_id, record.event_name
                if (
                    data_text is not None
                    and type(rid) is str
                    and type(name) is str
                    # A datetime's ISO text (digits, "-", ":", "T", ".", "+") needs
                    # nothing but its quotes.
                    and type(stamp) is datetime
                ):
                    heads = _HEADS.get((rid, name)) or _history_heads(rid, name)
                    op_text = f'{heads[0]}{data_text},"{text}"]'
                    # What a snapshot writes for the record: the same texts.
                    record.saved_text = f'{heads[1]}{data_text},"timestamp":"{text}"}}'
                    if scope.first is None:
                        scope.first = seq
                    scope.ops.append(op_text)
                    scope.seqs.append(seq)
                    self._last_history = (op_text, stamp, text)
                    self.emitted = (data, data_text)
                    return
        if type(data) is dict:
            # _encode's result for a dict of atoms (an emission's usual data), inline.
            for key, value in data.items():
                if type(key) is not str or type(value) not in _ATOMS:
                    data = encode_value(data, "execution_history[-1].data")
                    break
            else:
                data = dict(data)
        elif data is not None:
            data = encode_value(data, "execution_history[-1].data")
        op = ["history", record.routine_id, record.event_name, data, text]
        if scope.first is None and scope is not self._job:
            scope.first = seq
        scope.ops.append(op)
        scope.seqs.append(seq)
        self._last_history = (op, stamp, text)

    def _iso(self, stamp: datetime) -> str:
        """``stamp.isoformat()``: ``isoformat`` formats through ``printf``, so the
        text up to the second is kept and reused while emissions fall in that second
        (as ``serialization.iso_texts`` does for a snapshot)."""
        if type(stamp) is not datetime or stamp.tzinfo is not None:
            return stamp.isoformat()
        start, end, prefix = self._second
        if not (start <= stamp < end):
            start = stamp.replace(microsecond=0)
            prefix = start.isoformat()
            self._second = (start, start + _ONE_SECOND, prefix)
        micro = stamp.microsecond
        return f"{prefix}.{_D3[micro // 1000]}{_D3[micro % 1000]}" if micro else prefix

    def log(self, entry: dict[str, Any]) -> None:
        """``JobState.append_to_shared_log``: one stamped entry."""
        self._record(["log", encode_value(entry, "shared_log[-1]")])

    def deferred(self, event: dict[str, Any]) -> None:
        """``JobState.add_deferred_event``: one deferred event entry."""
        self._record(
            [
                "deferred",
                event["routine_id"],
                event["event_name"],
                encode_value(event["data"], "deferred_events[-1].data"),
                event["timestamp"],
            ]
        )

    def encode_output(self, data: Any) -> Any:
        """The encoded ``data`` of a ``send_output`` call (before anyone receives it)."""
        return encode_value(data, "output_log[-1].data")

    def output(self, entry: dict[str, Any], encoded: Any) -> None:
        """``JobState.send_output``: one output log entry, its data already encoded."""
        self._record(
            ["output", entry["routine_id"], entry["output_type"], encoded, entry["timestamp"]]
        )


def _first(item: tuple[int, Any]) -> int:
    return item[0]


def _count_below(seqs: list[int], limit: int) -> int:
    """How many of the ascending ``seqs`` are below ``limit``."""
    count = 0
    for seq in seqs:
        if seq >= limit:
            break
        count += 1
    return count


def _check_shape(field: str, value: Any, path: str, error: type[Exception]) -> None:
    """A routine state is a dict; slot buffers are a dict of dicts (as a load checks)."""
    if not isinstance(value, dict):
        raise error(f"'{path}' must be a dict, got {type(value).__name__}")
    if field == "buffers":
        for slot, buffer in value.items():
            if not isinstance(buffer, dict):
                raise error(
                    f"'{key_path(path, slot)}' must be a dict (a merge buffer), "
                    f"got {type(buffer).__name__}"
                )


# ---------------------------------------------------------------------------
# Replay
# ---------------------------------------------------------------------------

#: Op name -> the types of its arguments after the name (``"json"``: any JSON value,
#: ``"str?"``: a string or None).
OPS: dict[str, tuple[str, ...]] = {
    "shared_set": ("str", "json"),
    "shared_del": ("str",),
    "shared_clear": (),
    "shared_extend": ("str", "list"),
    "state_set": ("str", "dict"),
    "state_del": ("str",),
    "state_clear": (),
    "state_merge": ("str", "dict"),
    "buffers_set": ("str", "dict"),
    "buffers_del": ("str",),
    "buffers_clear": (),
    "history": ("str", "str", "dict?", "time"),
    "log": ("dict",),
    "deferred": ("str", "str", "dict?", "time"),
    "output": ("str", "str", "json", "time"),
    "touch": ("time",),
}

_KINDS: dict[str, Any] = {"str": str, "dict": dict, "list": list}


def _validate(index: int, op: Any) -> None:
    if not isinstance(op, list) or not op:
        raise SerializationError(f"op {index}: must be a non-empty list, got {short_repr(op)}")
    name = op[0]
    if not isinstance(name, str) or name not in OPS:
        raise SerializationError(f"op {index}: unknown op {short_repr(name)}")
    spec = OPS[name]
    if len(op) != len(spec) + 1:
        raise SerializationError(
            f"op {index} ({name}): takes {len(spec)} arguments, got {len(op) - 1}"
        )
    for position, (kind, arg) in enumerate(zip(spec, op[1:]), start=1):
        where = f"op {index} ({name}), argument {position}"
        if kind == "json":
            continue
        if kind == "dict?":
            if arg is not None and not isinstance(arg, dict):
                raise SerializationError(f"{where}: must be a dict or null, got {short_repr(arg)}")
        elif kind == "time":
            if not isinstance(arg, str):
                raise SerializationError(
                    f"{where}: must be an ISO time string, got {short_repr(arg)}"
                )
            try:
                datetime.fromisoformat(arg)
            except ValueError:
                raise SerializationError(f"{where}: invalid ISO time {short_repr(arg)}") from None
        elif not isinstance(arg, _KINDS[kind]):
            raise SerializationError(
                f"{where}: must be a {kind}, got {type(arg).__name__}: {short_repr(arg)}"
            )
    if name in ("state_set", "buffers_set"):
        _check_shape(name.split("_")[0], op[2], f"op {index} ({name}) value", SerializationError)


def _own(value: Any, index: int) -> Any:
    """A private copy of an op's value (the ops stay the caller's)."""
    try:
        return _encode(value)
    except (_Unencodable, RecursionError):
        raise SerializationError(
            f"op {index}: value is not JSON data or is nested too deeply: {short_repr(value)}"
        ) from None


def apply_ops(job_state: JobState, ops: Iterable[Any]) -> None:
    """Apply ``ops`` (from :attr:`Record.ops`, possibly read back from a file) to
    ``job_state`` in order, as the live run applied them.

    Every op is checked before any is applied: an unknown op, a wrong number of
    arguments or an argument of the wrong type raises :class:`SerializationError`
    naming the op's index.  An op that does not fit the state it meets (extending a
    value that is not a list) raises naming the index too, with the earlier ops
    applied.  Values are copied; history and output limits trim (and count) as live.
    Writes made here are not recorded by a ChangeLog attached to ``job_state``.
    """
    ops = list(ops)
    for index, op in enumerate(ops):
        _validate(index, op)
    js = job_state
    with js.lock:
        for index, op in enumerate(ops):
            name = op[0]
            prefix, _, action = name.partition("_")
            if prefix in _FIELDS:
                target = getattr(js, _FIELDS[prefix])
                if action == "set":
                    dict.__setitem__(target, op[1], _own(op[2], index))
                elif action == "del":
                    dict.pop(target, op[1], None)
                elif action == "clear":
                    dict.clear(target)
                elif action == "merge":
                    state = dict(dict.get(target, op[1]) or {})
                    state.update(_own(op[2], index))
                    dict.__setitem__(target, op[1], state)
                else:  # extend
                    current = dict.get(target, op[1])
                    if type(current) is not list:
                        raise SerializationError(
                            f"op {index} (shared_extend {op[1]!r}): shared_data[{op[1]!r}] "
                            f"is {type(current).__name__}, not a list"
                        )
                    current.extend(_own(op[2], index))
            elif name == "history":
                stamp = datetime.fromisoformat(op[4])
                data = _own(op[3], index)
                js.execution_history.append(
                    ExecutionRecord(op[1], op[2], data if data else None, stamp)
                )
                limit = js.history_limit
                excess = len(js.execution_history) - limit if limit is not None else 0
                if excess > 0:
                    del js.execution_history[:excess]
                    js.history_dropped += excess
                js.updated_at = stamp
            elif name == "log":
                js.shared_log.append(_own(op[1], index))
            elif name == "deferred":
                js.deferred_events.append(
                    {
                        "routine_id": op[1],
                        "event_name": op[2],
                        "data": _own(op[3], index),
                        "timestamp": op[4],
                    }
                )
            elif name == "output":
                js.output_log.append(
                    {
                        "routine_id": op[1],
                        "output_type": op[2],
                        "data": _own(op[3], index),
                        "timestamp": op[4],
                    }
                )
                limit = js.output_limit
                excess = len(js.output_log) - limit if limit is not None else 0
                if excess > 0:
                    del js.output_log[:excess]
                    js.output_dropped += excess
            else:  # touch
                js.updated_at = datetime.fromisoformat(op[1])

"""The exception hierarchy of Routilux.

Every error the library raises derives from :class:`RoutiluxError`.  Where the
behavioural spec promises a built-in type (``ValueError``, ``TypeError``,
``RuntimeError``) the class also derives from it, so code written against the
spec keeps working while new code can catch the precise class.
"""

from __future__ import annotations

from typing import Any


class RoutiluxError(Exception):
    """Base class of every error raised by Routilux."""


class DefinitionError(RoutiluxError, ValueError):
    """A routine or flow was defined wrongly (duplicate or unknown name)."""


class FlowError(DefinitionError):
    """A flow operation named a routine, event or slot the flow does not have."""


class InvalidArgumentError(RoutiluxError, ValueError, TypeError):
    """An argument of a library call has the wrong type or value."""


class ConfigError(RoutiluxError, ValueError, TypeError):
    """A routine's configuration has an unknown key or a value of the wrong type."""


class ExecutionContextError(RoutiluxError, RuntimeError):
    """An operation that needs a running job was called outside one."""


class JobStateError(RoutiluxError, ValueError):
    """A job state does not belong to the flow, or cannot make the transition asked for."""


class InvalidInputError(RoutiluxError, ValueError):
    """Input sent to a waiting job (``flow.send_input``) does not fit: no open request
    for that routine and slot, or a field missing, unknown or of the wrong type.

    The message names the job, the routine, the slot and the field; the job keeps
    waiting, its request still open.
    """


class SerializationError(RoutiluxError, ValueError):
    """Data could not be serialized, or a file or dict could not be deserialized."""


class NotConstructableError(SerializationError, TypeError):
    """A flow holds an object whose class cannot be rebuilt as ``cls()`` (spec 50 §2)."""


class EngineError(RoutiluxError, RuntimeError):
    """The engine itself failed; the job it was running is marked failed."""


class ExpressionError(ConfigError):
    """An expression of a built-in routine is outside the safe language or over its budget.

    Raised when a routine is configured (or a flow loaded) if the problem can be seen
    from the expression alone, otherwise when it is evaluated; the routine's error
    strategy then handles it like any handler failure.
    """


class ExpressionBudgetError(ExpressionError):
    """An expression would build too large a value, nest too deeply or take too many
    steps. Unlike other expression errors it is never read as "condition is False"."""


class HandlerTimeoutError(RoutiluxError, TimeoutError):
    """A delivery ran longer than its slot's (or the flow's) handler timeout."""


class RoutiluxWarning(UserWarning):
    """A definition that works but is probably not what was meant."""


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C interrupted ``execute()`` or ``resume()``; the job is now paused.

    A :class:`KeyboardInterrupt`, so ``except KeyboardInterrupt`` catches it
    (and, deliberately outside the :class:`RoutiluxError` tree, ``except
    Exception`` does not).  :attr:`job_state` is the paused job, with the
    interrupted deliveries in its ``pending_tasks``: save it and resume it later.
    """

    def __init__(self, job_state: Any) -> None:
        super().__init__(f"job {job_state.job_id} interrupted; it is paused")
        self.job_state = job_state


class StoreError(RoutiluxError, RuntimeError):
    """A job store (``routilux.store``) could not be opened, read or written.

    The message names the store (file or database) and, where there is one, the job,
    runner or key at fault.
    """


class JobNotFoundError(StoreError, KeyError):
    """A store holds no job (or runner) with the id asked for."""

    def __str__(self) -> str:
        # KeyError's str() would quote the message; keep it readable.
        return str(self.args[0]) if self.args else ""


class StaleEpochError(StoreError):
    """A write named an epoch that is no longer the job's: another runner claimed it.

    Nothing of the refused write is stored; the process that got it must stop
    advancing the job.
    """


class SchemaVersionError(StoreError):
    """A store was written by a newer version of Routilux than this one can read."""

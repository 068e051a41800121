"""What the web UI's buttons and forms do to a job: pause, resume, cancel, answer a
request for input, start a job of a registered flow.

A job may be run by this process, by another process on the same store, or by nobody
(paused, waiting, or its owner died):

* this process runs it (its journal is here): the flow's own ``pause``, ``cancel``,
  ``resume`` and ``send_input`` act on it;
* it is paused or waiting and no live runner holds it: ``resume`` and ``send_input``
  claim it and continue it here (the flow must be registered); ``cancel`` claims it
  and commits the cancellation (no flow needed);
* another live process runs it: ``pause`` and ``cancel`` leave a control request in
  the store (:meth:`~routilux.store.Store.request_control`), which that process's
  runner takes at its next heartbeat -- the answer is ``202 Accepted``, and the job's
  stream shows the status change when it happens;
* it is running but its process is gone (no live runner holds it): ``pause`` is
  refused (409: nobody would take the request; ``flow.recover()`` continues the job),
  ``cancel`` claims it and commits the cancellation.

Every failure is an :class:`ApiError` with the HTTP status the API answers with:
404 unknown job or flow, 409 a job in the wrong state, 422 input that does not fit the
request's schema (naming the field), 400 anything else malformed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

from routilux.engine.journal import STALE_AFTER
from routilux.engine.runner import Durable
from routilux.exceptions import (
    FlowError,
    InvalidArgumentError,
    InvalidInputError,
    JobNotFoundError,
    JobStateError,
    StoreError,
)
from routilux.flow.recovery import cancel_stored
from routilux.store import FINISHED_STATUSES, JournaledJob, Store

if TYPE_CHECKING:
    from routilux.flow.flow import Flow
    from routilux.job_state import JobState

_FIELD = re.compile(r"field '([^']+)'")
#: Longest routine id, slot name or parameter name the API accepts.
MAX_NAME = 200


class ApiError(Exception):
    """A request the API refuses: ``status`` is the HTTP status, ``message`` says why
    (naming the parameter, job, routine, slot or field); ``extra`` goes into the body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def load_job(store: Store, job_id: str) -> JournaledJob:
    try:
        return store.load(job_id)
    except JobNotFoundError:
        raise ApiError(404, f"no job {job_id!r} in the store") from None


def _flow_for(flows: Mapping[str, Flow], job: JournaledJob, action: str) -> Flow:
    flow = flows.get(job.flow_id)
    if flow is None:
        raise ApiError(
            409,
            f"cannot {action} job {job.job_id!r}: its flow {job.flow_id!r} is not registered "
            "in this UI (start it with --flow FILE)",
        )
    return flow


def _local(store: Store, job_id: str) -> Optional[JobState]:
    """The JobState of the job when this process journals it (runs or keeps it)."""
    journal = Durable.of(store).jobs.get(job_id)
    if journal is None or journal.finished:
        return None
    return journal.job_state


def _refuse_finished(job: JournaledJob, action: str) -> None:
    if job.status in FINISHED_STATUSES:
        raise ApiError(409, f"cannot {action} job {job.job_id!r}: it is {job.status}")


def pause(store: Store, flows: Mapping[str, Flow], job_id: str) -> tuple[int, dict[str, Any]]:
    job = load_job(store, job_id)
    _refuse_finished(job, "pause")
    if job.status == "paused":
        raise ApiError(409, f"cannot pause job {job_id!r}: it is already paused")
    local = _local(store, job_id)
    flow = flows.get(job.flow_id)
    if local is not None and flow is not None:
        try:
            flow.pause(local, "paused from the web UI")
        except JobStateError as exc:
            raise ApiError(409, str(exc)) from None
        return 200, {"job_id": job_id, "status": local.status}
    if job.status == "waiting":
        raise ApiError(
            409,
            f"cannot pause job {job_id!r}: it is waiting for input and runs nothing "
            "(answer or cancel it)",
        )
    if job_id in store.claimable_jobs(job.flow_id, STALE_AFTER):
        raise ApiError(
            409,
            f"cannot pause job {job_id!r}: the process that ran it is gone (owner "
            f"{job.owner!r}), so nothing would take the request; recover it "
            "(flow.recover()) or cancel it",
        )
    return _request(store, job, "pause")


def cancel(store: Store, flows: Mapping[str, Flow], job_id: str) -> tuple[int, dict[str, Any]]:
    job = load_job(store, job_id)
    _refuse_finished(job, "cancel")
    local = _local(store, job_id)
    flow = flows.get(job.flow_id)
    reason = "cancelled from the web UI"
    if local is not None and flow is not None:
        try:
            flow.cancel(local, reason)
        except JobStateError as exc:
            raise ApiError(409, str(exc)) from None
        return 200, {"job_id": job_id, "status": local.status}
    try:
        # Claimed and cancelled here when no live runner holds it (paused, waiting,
        # or its owner died); a job a live process runs is asked to cancel.
        cancel_stored(store, job_id, reason=reason)
    except JobStateError as exc:
        if job.status == "running":
            return _request(store, job, "cancel")
        raise ApiError(409, str(exc)) from None
    return 200, {"job_id": job_id, "status": "cancelled"}


def _request(store: Store, job: JournaledJob, action: str) -> tuple[int, dict[str, Any]]:
    """Leave a control request for the live process that runs the job."""
    try:
        store.request_control(job.job_id, action, f"{action} from the web UI")
    except JobNotFoundError:
        raise ApiError(404, f"no job {job.job_id!r} in the store") from None
    return 202, {
        "job_id": job.job_id,
        "status": job.status,
        "requested": action,
        "owner": job.owner,
    }


def resume(store: Store, flows: Mapping[str, Flow], job_id: str) -> tuple[int, dict[str, Any]]:
    job = load_job(store, job_id)
    _refuse_finished(job, "resume")
    if job.status == "waiting":
        raise ApiError(409, f"cannot resume job {job_id!r}: it waits for input (answer it)")
    if job.status != "paused":
        raise ApiError(409, f"cannot resume job {job_id!r}: it is {job.status}, not paused")
    flow = _flow_for(flows, job, "resume")
    try:
        state = flow.resume(job_id, wait=False)
    except (JobStateError, StoreError) as exc:
        raise ApiError(409, str(exc)) from None
    return 200, {"job_id": job_id, "status": state.status}


def send_input(
    store: Store, flows: Mapping[str, Flow], job_id: str, body: Any
) -> tuple[int, dict[str, Any]]:
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object {routine_id, slot, data}")
    unknown = sorted(set(body) - {"routine_id", "slot", "data"})
    if unknown:
        raise ApiError(
            400, f"unknown key {unknown[0]!r} in the body (keys: routine_id, slot, data)"
        )
    routine_id = _name(body.get("routine_id"), "routine_id")
    slot = _name(body.get("slot"), "slot")
    data = body.get("data")
    if not isinstance(data, dict):
        raise ApiError(422, "'data' must be a JSON object of the request's fields", field="data")
    job = load_job(store, job_id)
    _refuse_finished(job, "send input to")
    flow = _flow_for(flows, job, "send input to")
    try:
        state = flow.send_input(job_id, routine_id, slot, data, wait=False)
    except InvalidInputError as exc:
        found = _FIELD.search(str(exc))
        raise ApiError(422, str(exc), field=found.group(1) if found else None) from None
    except FlowError as exc:
        raise ApiError(422, str(exc), field="slot") from None
    except (JobStateError, StoreError) as exc:
        raise ApiError(409, str(exc)) from None
    return 200, {"job_id": job_id, "status": state.status}


def start_job(flows: Mapping[str, Flow], flow_id: str, body: Any) -> tuple[int, dict[str, Any]]:
    flow = flows.get(flow_id)
    if flow is None:
        raise ApiError(404, f"no flow {flow_id!r} is registered")
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object {entry, params}")
    unknown = sorted(set(body) - {"entry", "params"})
    if unknown:
        raise ApiError(400, f"unknown key {unknown[0]!r} in the body (keys: entry, params)")
    entry = _name(body.get("entry"), "entry")
    routine = flow.routines.get(entry)
    if routine is None:
        raise ApiError(
            422,
            f"entry {entry!r}: flow {flow_id!r} has no such routine "
            f"(routines: {', '.join(flow.routines)})",
            field="entry",
        )
    if routine.get_slot("trigger") is None:
        raise ApiError(
            422,
            f"entry {entry!r}: routine {entry!r} has no 'trigger' slot, so it cannot start a job",
            field="entry",
        )
    params = body.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ApiError(422, "'params' must be a JSON object of entry parameters", field="params")
    for key in params:
        if not key.isidentifier() or len(key) > MAX_NAME:
            # The rule of `routilux run -p key=value`: a key is a name.
            raise ApiError(422, f"params: {key!r} is not a parameter name", field="params")
    try:
        state = flow.execute(entry, params, wait=False)
    except (FlowError, InvalidArgumentError, StoreError) as exc:
        raise ApiError(422, str(exc), field="params") from None
    return 201, {"job_id": state.job_id, "flow_id": flow_id, "status": state.status}


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise ApiError(
            422, f"'{what}' must be a non-empty string of at most {MAX_NAME} characters", field=what
        )
    return value

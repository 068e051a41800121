"""Function forms of pause, resume and cancel (the Flow methods do the work)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..job_state import JobState
    from .flow import Flow


def pause_flow(
    flow: Flow, job_state: JobState, reason: str = "", checkpoint: dict[str, Any] | None = None
) -> None:
    """Same as ``flow.pause(job_state, reason, checkpoint)``."""
    flow.pause(job_state, reason=reason, checkpoint=checkpoint)


def resume_flow(flow: Flow, job_state: JobState, wait: bool = True) -> JobState:
    """Same as ``flow.resume(job_state, wait=wait)``."""
    return flow.resume(job_state, wait=wait)


def cancel_flow(flow: Flow, job_state: JobState, reason: str = "") -> None:
    """Same as ``flow.cancel(job_state, reason)``."""
    flow.cancel(job_state, reason=reason)


def wait_for_active_tasks(flow: Flow, timeout: float = 5.0) -> bool:
    """Wait until no job of ``flow`` has work left (at most ``timeout`` seconds)."""
    return flow.wait_for_completion(timeout)

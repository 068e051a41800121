"""The public description of a queued delivery: :class:`SlotActivationTask`.

The engine uses its own compact task type internally (``routilux.engine.tasks``);
this dataclass is the documented, user-facing shape of the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Optional


class TaskPriority(Enum):
    """Priority stored on a task (the queue is FIFO; priority does not reorder)."""

    HIGH = 1
    NORMAL = 2
    LOW = 3


@dataclass
class SlotActivationTask:
    """One delivery of ``data`` to ``slot`` (through ``connection``) for a job."""

    slot: Any
    data: dict[str, Any]
    connection: Any = None
    priority: TaskPriority = TaskPriority.NORMAL
    retry_count: int = 0
    max_retries: int = 0
    created_at: Optional[datetime] = None
    job_state: Any = field(default=None)

    def __post_init__(self) -> None:
        if self.created_at is None:
            self.created_at = datetime.now()

    def __lt__(self, other: SlotActivationTask) -> bool:
        return self.priority.value < other.priority.value

"""Flows: the definition of a workflow and the entry points that run its jobs."""

from .flow import Flow
from .task import SlotActivationTask, TaskPriority

__all__ = ["Flow", "SlotActivationTask", "TaskPriority"]

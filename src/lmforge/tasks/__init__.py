"""Tasks: how data, batches, losses, predictions and metrics fit each kind of job."""

from lmforge.tasks.registry import EvalResult, TaskData, get_task, register_task

__all__ = ["EvalResult", "TaskData", "get_task", "register_task"]

"""Tasks: how data, batches, losses, predictions and metrics fit each kind of job.

The contract is ``Task`` in ``base.py``; each task module registers itself in ``TASKS``. Importing
this package imports the built-in tasks, so ``get_task`` finds them.
"""

from lmforge.data.task_data import TaskData
from lmforge.evaluation.result import EvalResult
from lmforge.tasks import causal_lm, classification, masked_lm, seq2seq, token_classification  # noqa: F401
from lmforge.tasks.base import TASKS, Task, get_task

__all__ = ["TASKS", "EvalResult", "Task", "TaskData", "get_task"]

"""Continual learning: continue a finished run on new data or a new task (``lmforge train CONFIG
--from RUN``), with a method against forgetting (``continual.method``), and the stage matrix of
every stage's validation score (docs/continual.md).

Importing the package registers the built-in methods: none (``base.py``), replay, ewc, l2sp and
lora_per_task.
"""

from lmforge.training.continual import ewc, l2sp, lora_per_task, replay  # noqa: F401  (they register themselves)
from lmforge.training.continual.stage import Stage, open_stage

__all__ = ["Stage", "open_stage"]

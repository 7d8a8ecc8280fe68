"""What a continual-learning method sees of the stage being set up (``base.py``'s hooks read it)."""

from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmforge.config import JobConfig
from lmforge.data.examples import LabelSet
from lmforge.tasks import Task
from lmforge.tracking.run_record import RunRecord
from lmforge.training.continual.lineage import EarlierStage


@dataclass
class StageContext:
    """One continual stage: the job's config, its parent run, the earlier stages and its own data."""

    config: JobConfig
    task: Task  # the job's task
    number: int  # this stage's number: the parent's + 1
    parent: Path  # the parent run folder
    parent_record: RunRecord
    parent_model: Path  # the parent's saved model this stage starts from
    earlier: list[EarlierStage]  # stage 1 .. the parent, read back through the lineage
    labels: LabelSet | None  # this stage's labels: the parent's first, then the new ones
    parent_labels: LabelSet | None
    train: list  # this stage's own training examples (before replay), in ``labels``
    parent_shapes: dict[str, torch.Size] = field(default_factory=dict)  # trainable weights before growth
    # safetensors files (name -> tensors) the run keeps in its ``continual/`` folder
    files: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    facts: dict = field(default_factory=dict)  # what the method did, for the run record

    @property
    def settings(self):
        return self.config.continual

    @property
    def previous(self) -> EarlierStage:
        """The parent's stage."""
        return self.earlier[-1]

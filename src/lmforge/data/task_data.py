"""The splits of one job as a task reads them."""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TaskData:
    """The splits of a job, read and checked, plus the label set."""

    train: list
    validation: list
    test: list
    labels: Any = None  # a LabelSet for labelled tasks, None for language modelling
    notes: list[str] = field(default_factory=list)  # what training logs about the data (repairs, schemes)

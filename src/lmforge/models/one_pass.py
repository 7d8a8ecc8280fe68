"""The protocol of models that learn in one pass over the data, without epochs or an optimizer (the
n-gram family). The training recipe hands such a model to ``training/one_pass.py`` instead of the
PyTorch loop, and ``predict``/``eval``/``compare`` call these methods instead of a forward pass.
"""

from pathlib import Path
from typing import Protocol


class OnePassModel(Protocol):
    fits_in_one_pass: bool  # True: what the recipe and the predictor look for

    def fit(self, task, data) -> "OnePassModel":
        """Learn from ``data.train`` (a ``TaskData``) as ``task`` reads it."""

    def save(self, folder: Path) -> None:
        """Write ``config.json`` and the learned state (JSON, safetensors, no pickle) to ``folder``."""

    def evaluate(self, task, examples: list, labels):
        """The task's ``EvalResult`` (metrics and prediction rows) on labelled examples."""

    def parameter_count(self) -> int:
        """Learned numbers (weights, n-gram counts): what ``lmforge compare`` reports as size."""


def is_one_pass(model) -> bool:
    return bool(getattr(model, "fits_in_one_pass", False))

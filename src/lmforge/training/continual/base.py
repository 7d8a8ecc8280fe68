"""The continual-learning method contract and its registry (``continual.method``).

A method is one module with a ``ContinualMethod`` subclass registered with
``@CONTINUAL_METHODS.register(name)`` and imported by the package ``__init__``. The stage
(``stage.py``) calls the hooks below at fixed points of the set-up and the end of a run; every hook
has a default, and the defaults together are naive sequential fine-tuning (``none``).
"""

from pathlib import Path
from typing import ClassVar

from lmforge.config import JobConfig
from lmforge.models import LoadedModel
from lmforge.registry import Registry
from lmforge.training.continual.context import StageContext
from lmforge.training.continual.penalty import QuadraticPenalty


class ContinualMethod:
    """What a method changes in a stage. ``protocol`` says how earlier stages are evaluated:
    ``class-incremental`` (the one model, predicting over every label it knows) or
    ``task-incremental`` (each stage with its own model)."""

    name: ClassVar[str]
    protocol: ClassVar[str] = "class-incremental"
    # The stage's labels join the parent's (one model for every label); False: the stage keeps its own.
    merges_labels: ClassVar[bool] = True

    def check(self, config: JobConfig) -> None:
        """Refuse settings the method cannot work with, naming the key. Default: none."""

    def replay(self, stage: StageContext) -> list:
        """Examples of earlier stages to mix into this stage's training data. Default: none."""
        return []

    def starting_model(self, stage: StageContext, task, labels, dropout: float | None) -> LoadedModel | None:
        """The model to train instead of the parent's (already with one output per label of
        ``labels``), or None: the parent's model, its head grown. Default: None."""
        return None

    def before_growth(self, stage: StageContext, model, tokenizer, device) -> None:
        """Look at the parent's model as it was trained, before its head grows (EWC estimates the
        Fisher information there). Default: nothing."""

    def penalty(self, stage: StageContext, model) -> QuadraticPenalty | None:
        """A penalty added to every training loss, built on the model as training starts (its
        weights are the parent's). Default: none."""
        return None

    def stage_model(self, stage: StageContext, number: int) -> Path | None:
        """The run folder whose model evaluates earlier stage ``number``, or None: this run's
        model (class-incremental). Default: None."""
        return None

    def summary(self, stage: StageContext) -> dict:
        """The method's settings and what it did, for the run record. Default: nothing."""
        return {}


CONTINUAL_METHODS: Registry[type[ContinualMethod]] = Registry("continual-learning method", "continual.method")


@CONTINUAL_METHODS.register("none")
class NaiveFineTuning(ContinualMethod):
    """Sequential fine-tuning: the parent's model trains on the new stage's data, nothing more."""

    name = "none"

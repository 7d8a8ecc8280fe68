"""Model families and saved-model formats: the contract of each, their registries, and the two
entry points that build or load a model through them.

A family is one module that registers a ``ModelFamily`` in ``FAMILIES`` (how to build it for
training from its spec, how to load it from a run folder); an exported layout of its own (ONNX,
int8) registers a ``SavedFormat`` in ``SAVED_FORMATS``. ``lmforge.models`` imports the built-in
modules, so importing the package is enough to find them; this module imports none of them.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lmforge.config.model_spec import ModelSpec, as_spec
from lmforge.errors import ModelError
from lmforge.registry import Registry
from lmforge.tracking.run_record import RunRecord


@dataclass
class LoadedModel:
    """A model ready to train or run, its tokenizer, and what the run folder records about it."""

    model: Any
    tokenizer: Any
    info: dict = field(default_factory=dict)


class BuildModel(Protocol):
    def __call__(
        self,
        spec: Any,
        head: str,
        labels: list[str],
        texts: list[str],
        dropout: float | None = None,
        tokenizer_folder: Path | None = None,
    ) -> LoadedModel:
        """The family's model for the task's ``head`` from its spec (``spec`` is the family's own
        spec class), for ``labels``; ``texts`` are the training texts (tokenizers and vocabularies
        built from data); ``tokenizer_folder`` holds a tokenizer this run saved before (a resumed
        run reuses it)."""


SavedLoader = Callable[[Path, RunRecord], LoadedModel]  # (model folder, the run's record) -> model


def _nothing_to_check(spec: Any) -> None:
    return None


@dataclass(frozen=True)
class ModelFamily:
    """What a model family provides. ``check`` fails early, without building anything, on what a
    spec names that is not there (``lmforge validate``); by default there is nothing to check.
    ``input_embeddings`` gives a built model's module whose output is the token vectors the network
    reads (adversarial training perturbs that output); None: the family has no such vectors (n-gram)."""

    build: BuildModel
    load_saved: SavedLoader
    check: Callable[[Any], None] = _nothing_to_check
    input_embeddings: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class SavedFormat:
    """An exported layout: folders for which ``detect`` is true load with ``load``, whatever the family."""

    detect: Callable[[Path], bool]
    load: SavedLoader


FAMILIES: Registry[ModelFamily] = Registry("model family", "model.family", error=ModelError)
# Tried in registration order before the family's own loader; the first match wins.
SAVED_FORMATS: Registry[SavedFormat] = Registry("saved-model format", "model folder", error=ModelError)


def load_model(
    model: str | ModelSpec,
    head: str,
    labels: list[str],
    texts: list[str],
    dropout: float | None = None,
    tokenizer_folder: Path | None = None,
) -> LoadedModel:
    """Build or load the configured model with the task's head. ``tokenizer_folder`` holds a
    tokenizer saved earlier by this run (a resumed from-scratch run reuses it)."""
    spec = as_spec(model)
    family = FAMILIES.get(spec.family)
    return family.build(spec, head=head, labels=labels, texts=texts, dropout=dropout, tokenizer_folder=tokenizer_folder)


def load_saved(folder: Path, record: RunRecord) -> LoadedModel:
    """Load a model saved in a run folder: an exported layout first, else by the family recorded in
    ``lmforge.json``."""
    for saved_format in SAVED_FORMATS:
        if saved_format.detect(folder):
            return saved_format.load(folder, record)
    name = record.family
    if name not in FAMILIES:
        raise ModelError(f"{folder}: saved with model family '{name}', which this lmforge does not know")
    return FAMILIES.get(name).load_saved(folder, record)


def check_model(model: str | ModelSpec) -> None:
    """Fail now if the configured model names something that is not there (a folder, a segmenter)."""
    spec = as_spec(model)
    FAMILIES.get(spec.family).check(spec)

"""The registry of model families. A family is one module and one ``register_family`` call.

A family loader takes the model spec, the task's head name, the label names and the training texts
(for tokenizers or vocabularies built from data) and returns a ``LoadedModel``.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.config.schema import ModelSpec
from lmforge.errors import ModelError


@dataclass
class LoadedModel:
    """A model ready to train or run, its tokenizer, and what the run folder records about it."""

    model: Any
    tokenizer: Any
    info: dict = field(default_factory=dict)


FamilyLoader = Callable[..., LoadedModel]
SavedLoader = Callable[[Path, dict], LoadedModel]

FAMILIES: dict[str, FamilyLoader] = {}
SAVED_LOADERS: dict[str, SavedLoader] = {}
# Exported folders (ONNX, int8) in a layout of their own: (name, detect(folder), loader), first match wins.
SAVED_FORMATS: list[tuple[str, Callable[[Path], bool], SavedLoader]] = []


def register_family(name: str, loader: FamilyLoader, saved_loader: SavedLoader) -> None:
    """Register a family: how to build it for training, and how to load it from a run folder."""
    FAMILIES[name] = loader
    SAVED_LOADERS[name] = saved_loader


def register_format(name: str, detect: Callable[[Path], bool], loader: SavedLoader) -> None:
    """Register an exported layout: folders for which ``detect`` is true load with ``loader``."""
    SAVED_FORMATS.append((name, detect, loader))


def as_spec(model: str | ModelSpec) -> ModelSpec:
    """A bare string is an alias or a folder of the transformer family."""
    return ModelSpec(path=model) if isinstance(model, str) else model


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
    _ensure_builtin()
    spec = as_spec(model)
    loader = FAMILIES.get(spec.family)
    if loader is None:
        raise ModelError(f"model.family: unknown family '{spec.family}' (known: {', '.join(sorted(FAMILIES))})")
    return loader(spec, head=head, labels=labels, texts=texts, dropout=dropout, tokenizer_folder=tokenizer_folder)


def load_saved(folder: Path, meta: dict) -> LoadedModel:
    """Load a model saved in a run folder, by the family recorded in ``lmforge.json``."""
    _ensure_builtin()
    for _, detect, format_loader in SAVED_FORMATS:
        if detect(folder):
            return format_loader(folder, meta)
    family = meta.get("model", {}).get("family", "transformer")
    loader = SAVED_LOADERS.get(family)
    if loader is None:
        raise ModelError(f"{folder}: saved with model family '{family}', which this lmforge does not know")
    return loader(folder, meta)


def ensure_families() -> None:
    """Import the built-in families, which register themselves (the lstm family also registers its
    model type with transformers' Auto classes, so a saved lstm folder loads like any model)."""
    _ensure_builtin()


def _ensure_builtin() -> None:
    # Importing a family module registers it.
    from lmforge.models import (  # noqa: F401
        int8,
        lstm,
        ngram,  # noqa: F401
        onnx_model,
        transformer,
    )

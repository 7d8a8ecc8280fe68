"""Model families (``family.py``: the contract and the registries), bundled default weights and safe
loading. Importing the package imports the built-in families and saved formats, which register
themselves; the lstm family also registers its model types with transformers' Auto classes, so a
saved lstm folder loads like any model."""

from lmforge.models import int8, lstm, ngram, onnx_model, transformer  # noqa: F401  (they register themselves)
from lmforge.models.family import LoadedModel, load_model, load_saved

__all__ = ["LoadedModel", "load_model", "load_saved"]

"""Model families (``family.py``: the contract and the registries), bundled default weights and safe
loading. Importing the package imports the built-in families and saved formats, which register
themselves; the lstm family and the mean-pooled classifier (setfit) also register their model types
with transformers' Auto classes, so their saved folders load like any model."""

from lmforge.models import int8, lstm, mean_pooled, ngram, onnx_model, transformer  # noqa: F401  (registration)
from lmforge.models.family import LoadedModel, load_model, load_saved

__all__ = ["LoadedModel", "load_model", "load_saved"]

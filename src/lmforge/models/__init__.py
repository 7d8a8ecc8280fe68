"""Model families (``family.py``: the contract and the registries), bundled default weights and safe
loading. Importing the package imports the built-in families and saved formats, which register
themselves (the n-gram family, slow to import, when first asked for); the lstm family and the
mean-pooled classifier (setfit) also register their model types with transformers' Auto classes, so
their saved folders load like any model."""

from lmforge.models import int8, lstm, mean_pooled, onnx_model, transformer  # noqa: F401  (registration)
from lmforge.models.family import FAMILIES, LoadedModel, load_model, load_saved

FAMILIES.register_module("ngram", "lmforge.models.ngram")  # scikit-learn: imported when an n-gram run needs it

__all__ = ["LoadedModel", "load_model", "load_saved"]

"""Model families (registry), bundled default weights and safe loading."""

from lmforge.models.registry import LoadedModel, load_model, load_saved

__all__ = ["LoadedModel", "load_model", "load_saved"]

"""Exports of a run's model: adapters merged into plain weights (more to come: int8, ONNX)."""

from lmforge.export.merge import merge_run

__all__ = ["merge_run"]

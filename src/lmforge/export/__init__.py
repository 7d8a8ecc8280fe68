"""Exports of a run's model: merged adapters, pruning, ONNX, int8/int4, GGUF; each variant
re-evaluated (``pipeline.py``). The step contract and registry are in ``base.py``; importing this
package registers the built-in steps."""

from lmforge.export import gguf, merge, onnx_export, prune_step, quantize  # noqa: F401  (registration)
from lmforge.export.base import STEPS, ExportContext, ExportStep, Variant

__all__ = ["STEPS", "ExportContext", "ExportStep", "Variant"]

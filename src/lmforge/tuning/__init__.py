"""Tuning methods (full, freeze, LoRA via peft) and merging adapters for export."""

from lmforge.tuning.registry import apply_tuning, count_parameters, export_model, is_peft

__all__ = ["apply_tuning", "count_parameters", "export_model", "is_peft"]

"""Tuning methods (full, freeze, LoRA and the other PEFT methods via peft, SetFit) and merging
adapters for export. The contract and registry are in ``base.py``; importing this package registers the
built-in methods."""

from lmforge.tuning import freeze, full, lora, peft_methods, setfit  # noqa: F401  (registration)
from lmforge.tuning.base import (
    METHODS,
    TuningMethod,
    after_optimizer_step,
    apply_tuning,
    count_parameters,
    export_model,
    folds_in,
    is_peft,
)

__all__ = [
    "METHODS",
    "TuningMethod",
    "after_optimizer_step",
    "apply_tuning",
    "count_parameters",
    "export_model",
    "folds_in",
    "is_peft",
]

"""Full fine-tuning: every parameter trains."""

from typing import Any

from torch import nn

from lmforge.config.schema import TuningConfig
from lmforge.tuning.base import METHODS


def apply_full(
    model: nn.Module, config: TuningConfig, task_type: str, total_steps: int | None = None, **_: Any
) -> nn.Module:
    for param in model.parameters():
        param.requires_grad_(True)
    return model


METHODS.register("full", apply_full)

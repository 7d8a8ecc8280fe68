"""Freeze tuning: the task head plus the top ``trainable_layers`` encoder layers train."""

from typing import Any

from torch import nn

from lmforge.config.schema import TuningConfig
from lmforge.errors import ConfigError
from lmforge.tuning.base import METHODS


def layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The longest ``ModuleList`` of the model: its stack of transformer blocks."""
    best_name, best = "", None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and (best is None or len(module) > len(best)):
            best_name, best = name, module
    if best is None:
        raise ConfigError("tuning.method=freeze: this model has no stack of layers to freeze")
    return best_name, best


def head_prefixes(model: nn.Module) -> list[str]:
    """Parameter name prefixes outside the pretrained body: the task head (and BERT's pooler)."""
    base = getattr(model, "base_model_prefix", "")
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    prefixes = [n + "." for n in names if n != base]
    prefixes += [f"{base}.pooler."] if base else []
    return prefixes


def apply_freeze(
    model: nn.Module, config: TuningConfig, task_type: str, total_steps: int | None = None, **_: Any
) -> nn.Module:
    stack_name, stack = layer_stack(model)
    if config.trainable_layers > len(stack):
        raise ConfigError(f"tuning.trainable_layers: {config.trainable_layers} but the model has {len(stack)} layers")
    first = len(stack) - config.trainable_layers
    train_prefixes = head_prefixes(model) + [f"{stack_name}.{i}." for i in range(first, len(stack))]
    for name, param in model.named_parameters():
        param.requires_grad_(any(name.startswith(p) for p in train_prefixes))
    return model


METHODS.register("freeze", apply_freeze)

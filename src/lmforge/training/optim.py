"""AdamW with decoupled weight decay (not on biases and norms) and warm-up + decay schedules."""

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight", "ln_")


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases and normalisation weights get no decay."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if any(key in name for key in NO_DECAY) or param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    # The fused kernel (one pass over all tensors) is several times faster than the default
    # per-parameter loop on CPU as on GPU; fall back where a device or dtype lacks it.
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr)


class WarmupDecay:
    """Multiplier of the peak learning rate at a step: linear warm-up, then linear or cosine decay
    to zero at ``total`` steps (or constant). A class, not a lambda, so it can be described."""

    def __init__(self, warmup: int, total: int, kind: str):
        self.warmup, self.total, self.kind = warmup, max(total, 1), kind

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.kind == "constant":
            return 1.0
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress


def warmup_steps(warmup: float, total: int) -> int:
    """``train.warmup`` is a fraction of the steps when below 1, else a step count."""
    return int(round(warmup * total)) if warmup < 1 else int(warmup)


def build_scheduler(optimizer, warmup: float, total: int, kind: str) -> LambdaLR:
    return LambdaLR(optimizer, WarmupDecay(warmup_steps(warmup, total), total, kind))

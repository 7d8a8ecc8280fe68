"""Quadratic penalties that hold a model near earlier weights, and the diagonal Fisher information.

Both EWC and L2-SP are ``1/2 * sum_k w_k * (theta_k - a_k)^2`` over the trainable weights, with a
per-weight ``w`` and anchor ``a``:

- EWC (Kirkpatrick et al. 2017, eq. 3): ``a`` = the previous stage's weights ``theta*``,
  ``w = lambda * F`` with ``F`` the diagonal Fisher information of the previous stage's data;
- L2-SP (Li, Grandvalet & Davoine 2018, eq. 3): ``a`` = the parent's weights with ``w = alpha`` for
  every weight the parent had, and ``a = 0`` with ``w = beta`` for new ones (the rows of new labels).
"""

import random

import torch
from torch import nn


def pad_to(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``tensor`` in the leading corner of zeros of ``shape`` (a grown head's old rows)."""
    if tensor.shape == shape:
        return tensor
    if tensor.dim() != len(shape) or any(a > b for a, b in zip(tensor.shape, shape)):
        raise ValueError(f"cannot place a tensor of shape {tuple(tensor.shape)} in one of {tuple(shape)}")
    out = torch.zeros(shape, dtype=tensor.dtype, device=tensor.device)
    out[tuple(slice(0, n) for n in tensor.shape)] = tensor
    return out


class QuadraticPenalty:
    """``1/2 * sum over parameters of sum(weight * (parameter - anchor)^2)``; parameters are held by
    reference, so the value follows training."""

    def __init__(self, terms: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]]):
        self.terms = [(p, a.to(p.device), w.to(p.device)) for p, a, w in terms]

    def __call__(self) -> torch.Tensor:
        if not self.terms:
            return torch.zeros(())
        total = sum((w * (p.float() - a).square()).sum() for p, a, w in self.terms)
        return 0.5 * total  # type: ignore[return-value]  # a sum of tensors is a tensor


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def ewc_penalty(model: nn.Module, fisher: dict[str, torch.Tensor], lam: float) -> QuadraticPenalty:
    """EWC towards the model's current weights (the previous stage's ``theta*``), weighted by
    ``lam * fisher``; a grown head's new rows have no Fisher information (weight 0)."""
    terms = []
    for name, p in _trainable(model):
        if name in fisher:
            weight = lam * pad_to(fisher[name].float(), p.shape)
            terms.append((p, p.detach().float().clone(), weight))
    return QuadraticPenalty(terms)


def l2sp_penalty(model: nn.Module, parent_shapes: dict[str, torch.Size], alpha: float, beta: float) -> QuadraticPenalty:
    """L2-SP: ``alpha`` towards the model's current weights where the parent had them
    (``parent_shapes``, before the head grew), ``beta`` towards zero for the new ones."""
    terms = []
    for name, p in _trainable(model):
        old = parent_shapes.get(name)
        known = torch.zeros(p.shape, dtype=torch.bool)
        if old is not None:
            known[tuple(slice(0, n) for n in old)] = True
        weight = torch.where(known, alpha, beta).float()
        anchor = torch.where(known.to(p.device), p.detach().float(), 0.0)
        terms.append((p, anchor, weight))
    return QuadraticPenalty(terms)


def diagonal_fisher(
    model: nn.Module, task, tokenizer, features: list[dict], samples: int, seed: int, device, batch_size: int = 1
) -> dict:
    """The empirical diagonal Fisher information: the mean over ``samples`` training examples
    (seeded draw) of each trainable weight's squared gradient of the example's loss (the negative
    log-likelihood of its gold labels), dropout off.

    ``batch_size`` 1 takes the examples one at a time: the exact estimate. With B > 1 each batch
    gives ``B * g_mean^2`` (its mean gradient squared, times B): the same in expectation where the
    mean gradient over the data is zero (the end of training), noisier, and about B times faster."""
    chosen = random.Random(seed).sample(range(len(features)), min(samples, len(features)))
    batches = [chosen[i : i + batch_size] for i in range(0, len(chosen), batch_size)]
    params = _trainable(model)
    sums = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params}
    was_training = model.training
    model.eval()
    try:
        for idx in batches:
            batch = {k: v.to(device) for k, v in task.collate([features[i] for i in idx], tokenizer).items()}
            model.zero_grad(set_to_none=True)
            task.loss(model, batch).backward()
            for name, p in params:
                if p.grad is not None:
                    sums[name] += len(idx) * p.grad.detach().float() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {name: (total / max(len(batches), 1)).cpu() for name, total in sums.items()}

"""Pruning a run's model, then (optionally) a short recovery fine-tune that keeps the pruned weights
at zero.

Two methods:

- ``magnitude``: unstructured pruning of linear weights by absolute value (Han et al. 2015). The
  threshold is *global* over every linear weight matrix of the backbone (attention and
  feed-forward), so layers that matter less lose more. Embeddings, biases, norms, the pooler and
  the task head are kept: they are a few percent of the weights and the head is where the labels
  are read out. The sparsity asked for is exact over the prunable weights.
- ``heads``: structured pruning of whole attention heads by importance (Michel et al. 2019, "Are
  Sixteen Heads Really Better than One?"): a mask of ones multiplies each head's output, and a
  head's importance is ``|dL/dmask|`` summed over training batches, normalised per layer; the least
  important fraction of all heads goes (at least one head stays in each layer).

transformers 5 dropped ``prune_heads`` and ``config.pruned_heads``, and BERT's config derives the
head width from ``hidden_size / num_attention_heads``, so a BERT with fewer heads in some layers is
not a config plain transformers can load. ``slice_heads`` does shrink the q/k/v/output tensors in
memory (the compute saving, and the parity test's reference); the saved folder stores the removed
heads as zero rows and columns, which gives exactly the same outputs and loads anywhere.

Pruned weights are described by masks (parameter name -> bool tensor, True = kept); the recovery
loop re-applies them after every optimizer step, so AdamW's moments cannot regrow a pruned weight.
"""

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from lmforge.errors import ConfigError, ModelError

log = logging.getLogger("lmforge")
METHODS = ("magnitude", "heads")
EXCLUDED = ("pooler",)  # part of the classification head path (dense + tanh before it)


@dataclass
class PruneResult:
    """What was pruned: the masks to keep and figures for the report."""

    method: str
    masks: dict[str, torch.Tensor]
    sparsity: float  # magnitude: zero fraction of the prunable weights; heads: heads removed
    details: dict = field(default_factory=dict)


def check_amount(amount: float, method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"--prune-method {method}: unknown (choose {' or '.join(METHODS)})")
    if not 0.0 < amount < 1.0:
        raise ConfigError(f"--prune {amount}: the fraction to prune must be between 0 and 1 (e.g. 0.3)")


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero every pruned weight (after each optimizer step of a recovery fine-tune)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].device, params[name].dtype))


# -- magnitude ------------------------------------------------------------------------------------
def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The backbone's linear layers (``model.base_model``), without the pooler; the task head lives
    outside the backbone, so it is never among them."""
    backbone = getattr(model, "base_model", model)
    prefix = next((n + "." for n, m in model.named_modules() if m is backbone and n), "")
    return {
        prefix + name: module
        for name, module in backbone.named_modules()
        if isinstance(module, nn.Linear) and not any(part in name for part in EXCLUDED)
    }


def magnitude_prune(model: nn.Module, amount: float) -> PruneResult:
    """Zero the ``amount`` fraction of smallest-magnitude prunable weights, one global ranking."""
    check_amount(amount, "magnitude")
    linears = prunable_linears(model)
    if not linears:
        raise ModelError("this model has no linear layers to prune (magnitude pruning works on transformers)")
    names = [f"{name}.weight" for name in linears]
    weights = [linears[name].weight.detach() for name in linears]
    flat = torch.cat([w.abs().flatten() for w in weights])
    count = int(round(amount * flat.numel()))
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[torch.argsort(flat)[:count]] = False  # exact count, ties included
    masks, start = {}, 0
    for name, w in zip(names, weights):
        masks[name] = keep[start : start + w.numel()].view_as(w)
        start += w.numel()
    apply_masks(model, masks)
    per_layer = {name: round(1 - m.float().mean().item(), 4) for name, m in masks.items()}
    return PruneResult(
        "magnitude",
        masks,
        count / flat.numel(),
        {
            "scope": "global",
            "prunable_weights": flat.numel(),
            "pruned_weights": count,
            "per_matrix_sparsity": per_layer,
        },
    )


def sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros in the prunable weights."""
    weights = [m.weight for m in prunable_linears(model).values()]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / max(sum(w.numel() for w in weights), 1)


# -- attention heads ------------------------------------------------------------------------------
@dataclass
class AttentionBlock:
    """One self-attention layer: its projections and head layout."""

    index: int
    module: nn.Module  # holds num_attention_heads / all_head_size, updated by slicing
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    output: nn.Linear  # input = the heads' outputs side by side
    names: dict[str, str]  # projection -> parameter name prefix
    heads: int
    head_dim: int


def attention_blocks(model: nn.Module) -> list[AttentionBlock]:
    """Self-attention layers of a BERT-style encoder (BERT, RoBERTa, MiniLM, ELECTRA: an attention
    module with ``self.query/key/value`` and ``output.dense``)."""
    blocks = []
    for name, module in model.named_modules():
        inner, out = getattr(module, "self", None), getattr(module, "output", None)
        if not all(hasattr(inner, p) for p in ("query", "key", "value", "num_attention_heads")):
            continue
        if not isinstance(getattr(out, "dense", None), nn.Linear):
            continue
        names = {p: f"{name}.self.{p}" for p in ("query", "key", "value")} | {"output": f"{name}.output.dense"}
        blocks.append(
            AttentionBlock(
                len(blocks),
                inner,
                inner.query,
                inner.key,
                inner.value,
                out.dense,
                names,
                inner.num_attention_heads,
                inner.attention_head_size,
            )
        )
    if not blocks:
        arch = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise ModelError(
            f"--prune-method heads: finds the attention heads of BERT-style encoders; "
            f"this model is {arch} (use --prune-method magnitude)"
        )
    return blocks


def head_importance(model: nn.Module, batches, loss_fn) -> torch.Tensor:
    """(layers, heads) importance: |dL/d mask| summed over ``batches``, each layer scaled to unit L2
    norm (Michel et al. 2019, section 4.1 and their code)."""
    blocks = attention_blocks(model)
    masks = torch.ones(len(blocks), blocks[0].heads, requires_grad=True)
    handles = []
    for block in blocks:

        def gate(module, args, row=block.index, dim=block.head_dim):
            (x,) = args  # (B, T, H*D)
            shape = x.shape
            x = x.view(*shape[:-1], -1, dim) * masks[row][:, None]  # (B, T, H, D)
            return (x.view(shape),)

        handles.append(block.output.register_forward_pre_hook(gate))
    importance = torch.zeros(len(blocks), blocks[0].heads)
    was_training = model.training
    model.eval()  # no dropout: the gradient of the model as it will be used
    try:
        for batch in batches:
            loss = loss_fn(model, batch)
            (grad,) = torch.autograd.grad(loss, masks)
            importance += grad.abs()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return importance / importance.norm(dim=1, keepdim=True).clamp(min=1e-20)


def choose_heads(importance: torch.Tensor, amount: float) -> dict[int, list[int]]:
    """The ``amount`` fraction of heads with the lowest importance, keeping one per layer."""
    check_amount(amount, "heads")
    layers, heads = importance.shape
    count = min(int(round(amount * layers * heads)), layers * (heads - 1))
    chosen: dict[int, list[int]] = {}
    for flat in torch.argsort(importance.flatten()).tolist():
        if sum(len(v) for v in chosen.values()) == count:
            break
        layer, head = divmod(flat, heads)
        if len(chosen.get(layer, [])) < heads - 1:
            chosen.setdefault(layer, []).append(head)
    return {layer: sorted(v) for layer, v in sorted(chosen.items())}


def head_masks(model: nn.Module, pruned: dict[int, list[int]]) -> dict[str, torch.Tensor]:
    """Masks that zero the pruned heads: their q/k/v rows (weights and biases) and their columns of
    the output projection. A head whose value rows are zero adds exactly nothing."""
    masks = {}
    for block in attention_blocks(model):
        rows = torch.ones(block.heads, block.head_dim, dtype=torch.bool)
        rows[pruned.get(block.index, [])] = False
        rows = rows.flatten()  # (H*D,)
        for proj in ("query", "key", "value"):
            linear = getattr(block, proj)
            masks[f"{block.names[proj]}.weight"] = rows[:, None].expand_as(linear.weight).clone()
            if linear.bias is not None:
                masks[f"{block.names[proj]}.bias"] = rows.clone()
        masks[f"{block.names['output']}.weight"] = rows[None, :].expand_as(block.output.weight).clone()
    return masks


def prune_heads(model: nn.Module, amount: float, batches, loss_fn) -> PruneResult:
    """Score the heads on ``batches``, zero the least important ``amount`` fraction of them."""
    importance = head_importance(model, batches, loss_fn)
    pruned = choose_heads(importance, amount)
    masks = head_masks(model, pruned)
    apply_masks(model, masks)
    layers, heads = importance.shape
    removed = sum(len(v) for v in pruned.values())
    return PruneResult(
        "heads",
        masks,
        removed / (layers * heads),
        {
            "heads_per_layer": heads,
            "layers": layers,
            "heads_pruned": removed,
            "pruned_heads": {str(k): v for k, v in pruned.items()},
            "importance": [[round(x, 4) for x in row] for row in importance.tolist()],
        },
    )


def slice_heads(model: nn.Module, pruned: dict[int, list[int]]) -> nn.Module:
    """Remove the pruned heads' rows and columns from the tensors, in place (fewer FLOPs; the same
    outputs as the zero-masked model)."""
    for block in attention_blocks(model):
        gone = set(pruned.get(block.index, []))
        kept = [h for h in range(block.heads) if h not in gone]
        index = torch.tensor([h * block.head_dim + d for h in kept for d in range(block.head_dim)])
        for proj in ("query", "key", "value"):
            setattr(block.module, proj, _select(getattr(block, proj), index, dim=0))
        parent = _parent(model, block.names["output"])
        parent.dense = _select(block.output, index, dim=1)
        block.module.num_attention_heads = len(kept)
        block.module.all_head_size = len(kept) * block.head_dim
    return model


def _select(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    weight = linear.weight.detach().index_select(dim, index)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach()[index] if dim == 0 else linear.bias.detach())
    return new


def _parent(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name.rsplit(".", 1)[0])

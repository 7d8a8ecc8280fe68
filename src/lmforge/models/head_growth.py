"""Grow a trained model's output layer when a later training stage brings new labels.

The old labels keep their rows of the head's weights (and their bias entries); the rows of the new
labels start fresh, drawn the way the model initialises a new head (normal, the config's
``initializer_range``). A CRF over the tags grows the same way: the transitions between old tags are
kept, those involving a new tag start at zero, as a fresh CRF's do.
"""

import torch
from torch import nn

from lmforge.errors import ModelError
from lmforge.models.crf import CRF
from lmforge.models.crf_head import attach_crf, find_crf

DEFAULT_STD = 0.02  # transformers' default initializer_range


def output_layer(model: nn.Module, labels: int) -> tuple[str, nn.Linear]:
    """The head: the last linear layer (in registration order) with one output per label. Every
    family's classifier is registered after its encoder (BERT's ``classifier``, Llama's ``score``,
    RoBERTa's ``classifier.out_proj``, the lstm family's ``classifier``)."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == labels]
    if not found:
        raise ModelError(f"cannot find the model's output layer: no linear layer has {labels} outputs (one per label)")
    return found[-1]


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, module)


def grow_output_layer(model: nn.Module, old: int, names: list[str]) -> str:
    """Give ``model`` one output per name of ``names`` (its first ``old`` outputs keep their weights)
    and record the names in its config; returns the grown layer's name."""
    new = len(names)
    if new < old:
        raise ModelError(f"the head cannot shrink from {old} to {new} labels")
    name, layer = output_layer(model, old)
    if new > old:
        grown = nn.Linear(layer.in_features, new, bias=layer.bias is not None)
        grown.to(dtype=layer.weight.dtype, device=layer.weight.device)
        std = float(getattr(getattr(model, "config", None), "initializer_range", DEFAULT_STD) or DEFAULT_STD)
        with torch.no_grad():
            grown.weight.normal_(0.0, std)
            grown.weight[:old] = layer.weight
            if grown.bias is not None and layer.bias is not None:
                grown.bias.zero_()
                grown.bias[:old] = layer.bias
        _set_module(model, name, grown)
    config = getattr(model, "config", None)
    if config is not None:
        config.num_labels = new
        config.id2label = dict(enumerate(names))
        config.label2id = {label: i for i, label in enumerate(names)}
    return name


def grow_crf(model: nn.Module, names: list[str], scheme: str) -> None:
    """A CRF over ``names`` in place of the model's CRF over the first ``n`` of them: transitions
    between the old tags kept, the new tags' at zero; the scheme's constraints rebuilt."""
    old = find_crf(model)
    if old is None:
        return
    n = old.num_tags
    crf: CRF = attach_crf(model, names, scheme)
    with torch.no_grad():
        crf.transitions[:n, :n] = old.transitions
        crf.start_transitions[:n] = old.start_transitions
        crf.end_transitions[:n] = old.end_transitions
    crf.to(old.transitions.device)

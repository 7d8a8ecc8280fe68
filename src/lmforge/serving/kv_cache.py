"""The key/value cache surgery continuous batching needs: drop finished rows, and append the rows
of a newly prefilled batch to a running one (left-padded to one length)."""

import torch
from transformers import DynamicCache


@torch.inference_mode()
def select_rows(cache, index: torch.Tensor) -> None:
    cache.batch_select_indices(index)


def joinable(model) -> bool:
    """Rows can join a running batch when the model's cache is a plain per-layer key/value cache
    (no sliding window, no recurrent state): probed with a one-token forward pass."""
    try:
        with torch.inference_mode():
            out = model(
                input_ids=torch.zeros((1, 1), dtype=torch.long, device=next(model.parameters()).device), use_cache=True
            )
    except Exception:
        return False
    cache = out.past_key_values
    return isinstance(cache, DynamicCache) and all(
        type(layer).__name__ == "DynamicLayer" and isinstance(getattr(layer, "keys", None), torch.Tensor)
        for layer in cache.layers
    )


def _pad_front(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - x.shape[dim]
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)


@torch.inference_mode()
def merge_caches(cache, joining) -> None:
    """Append ``joining``'s rows to ``cache``: keys/values (B, H, T, D) left-padded to one length."""
    for layer, new in zip(cache.layers, joining.layers):
        length = max(layer.keys.shape[2], new.keys.shape[2])
        layer.keys = torch.cat([_pad_front(layer.keys, length, 2), _pad_front(new.keys, length, 2)])
        layer.values = torch.cat([_pad_front(layer.values, length, 2), _pad_front(new.values, length, 2)])


def merge_masks(mask: torch.Tensor, joining: torch.Tensor) -> torch.Tensor:
    length = max(mask.shape[1], joining.shape[1])
    return torch.cat([_pad_front(mask, length, 1), _pad_front(joining, length, 1)])

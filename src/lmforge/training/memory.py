"""Memory: gradient checkpointing (``train.gradient_checkpointing``) and the peak memory a run
records in its summary (``lmforge.json``: ``training.peak_rss_mb``, ``training.cuda_peak_mb``)."""

import resource
import sys

import torch
from transformers import PreTrainedModel

from lmforge.errors import ConfigError


def enable_gradient_checkpointing(model: torch.nn.Module, family: str) -> None:
    """Recompute the transformer's activations in the backward pass instead of keeping them
    (Hugging Face's own checkpointing, non-reentrant, so frozen embeddings and adapters work).
    Families without it are refused with a one-line error."""
    inner = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    if inner is None or not inner.supports_gradient_checkpointing:
        raise ConfigError(
            f"train.gradient_checkpointing: the {family} family has no gradient checkpointing "
            "(transformer models only); remove it"
        )
    if hasattr(inner, "activation_checkpointing_enable"):  # its name since transformers 5.2x
        inner.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if getattr(inner.config, "use_cache", None):
        inner.config.use_cache = False  # a generation cache is recomputed work under checkpointing


def peak_memory(device: torch.device | None) -> dict:
    """This process's peak resident memory in MiB, and the CUDA allocator's peak on a GPU."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    out = {"peak_rss_mb": round(rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024, 1)}
    if device is not None and device.type == "cuda":
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out

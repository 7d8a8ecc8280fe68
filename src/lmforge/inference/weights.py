"""What a generative model's weights compute in on the PyTorch engine: ``--dtype`` of ``generate``,
``chat`` and ``serve``.

- ``float32``: the weights as trained; the reference.
- ``bfloat16``: half the memory; faster where the device computes bf16 natively (CUDA Ampere+, CPUs
  with AVX512-BF16 or AMX).
- ``int8``: bfloat16 with the linear layers' weights in int8 per output channel (``models/
  int8_weights.py``), on the CPU: SmolLM2-135M decodes 2.4x faster at batch 1 than in float32
  (``bench/generate_throughput.py``).
- ``auto``: the fastest candidate the device computes natively whose next-token distributions stay
  close to float32's on probe texts (mean KL divergence per token <= ``MAX_KL`` nats): int8, then
  bfloat16 on a CPU with native bf16; bfloat16 on a GPU that has it; else float32. The choice and
  its measured divergence are logged. SmolLM2-135M measured 0.008 (int8) and 0.002 (bfloat16).

The run folder is never changed: the conversion happens at load time, in memory.
"""

import logging
from itertools import chain

import torch
from torch import nn

from lmforge.errors import ConfigError
from lmforge.models.int8_weights import Int8Linear, cast_weights, to_int8_weights

log = logging.getLogger("lmforge")
DTYPES = ("auto", "float32", "bfloat16", "int8")
MAX_KL = 0.02  # nats per token: a tenth of the divergence a deliberately broken quantization gives
PROBES = [
    "The service was quick and the staff were friendly, so we will come back next week.",
    "Shares fell sharply after the company cut its forecast for the second time this year.",
    "To make a cup of tea, boil the water, then pour it over the leaves and wait three minutes.",
    "def add(a, b):\n    return a + b\n",
    "这家餐厅的菜很好吃，服务也很周到。",
    "Question: What is the capital of France?\nAnswer: Paris",
]


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` (the one the model runs on, not whatever GPU the machine has) computes in
    bfloat16 natively."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def check_dtype(dtype: str, device: torch.device) -> None:
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype}: not one of {', '.join(DTYPES)}")
    if dtype == "int8" and device.type != "cpu":
        raise ConfigError(f"--dtype int8: int8 weights run on the CPU (the model is on {device}); use --dtype bfloat16")


def _log_probs(model: nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each probe's next-token distributions (an encoder-decoder reads it and is fed it back)."""
    twice = bool(getattr(model.config, "is_encoder_decoder", False))
    with torch.inference_mode():
        return [
            model(input_ids=ids, **({"decoder_input_ids": ids} if twice else {})).logits[0].float().log_softmax(-1)
            for ids in batches
        ]


def _divergence(reference: list[torch.Tensor], other: list[torch.Tensor]) -> float:
    """Mean KL(reference || other) per token position."""
    total = sum(float((r.exp() * (r - o)).sum()) for r, o in zip(reference, other))
    return total / max(1, sum(r.shape[0] for r in reference))


def _convert(model: nn.Module, dtype: str) -> None:
    if dtype == "int8":
        to_int8_weights(model)
    else:
        cast_weights(model, getattr(torch, dtype))


def settle_weights(model: nn.Module, tokenizer, requested: str, label: str, peft: bool = False) -> str:
    """Put ``model`` (float32, eval mode) in the dtype asked for; returns the one it runs in.
    ``peft``: LoRA adapters will be put on the model (their layers wrap ``nn.Linear``, so no int8)."""
    device = next(model.parameters()).device
    check_dtype(requested, device)
    if requested == "int8" and peft:
        raise ConfigError("--dtype int8: LoRA adapters need float weights; use --dtype bfloat16")
    if requested != "auto":
        if requested != "float32":
            _convert(model, requested)
        return requested
    if not bf16_native(device):
        return "float32"
    candidates = ["bfloat16"] if device.type != "cpu" or peft else ["int8", "bfloat16"]
    batches = [tokenizer(text, return_tensors="pt").input_ids.to(device) for text in PROBES]
    reference = _log_probs(model, batches)
    state = {name: tensor.detach().clone() for name, tensor in chain(model.named_parameters(), model.named_buffers())}
    for dtype in candidates:
        _convert(model, dtype)
        divergence = _divergence(reference, _log_probs(model, batches))
        if divergence <= MAX_KL:
            log.info("%s: %s weights (KL from float32 %.4f per token on the probe texts)", label, dtype, divergence)
            return dtype
        log.info("%s: not %s (KL from float32 %.4f > %s on the probe texts)", label, dtype, divergence, MAX_KL)
        _restore(model, state)
    return "float32"


def _restore(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Back to the float32 ``nn.Linear`` layers and the parameters and buffers ``state`` holds."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Int8Linear):
                linear = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                setattr(parent, name, linear)
    model.to(torch.float32)
    with torch.no_grad():
        for name, tensor in chain(model.named_parameters(), model.named_buffers()):
            tensor.copy_(state[name])

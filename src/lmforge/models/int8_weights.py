"""Weight-only int8 linear layers for decoding on the CPU: what makes PyTorch's batch-1 generation fast.

Decoding one token is a chain of matrix-vector products, bound by reading the weights; on two cores
a float32 SmolLM2-135M step spends 85 % of its time in ``aten::mm``. ``Int8Linear`` keeps each
weight as int8 rows with one scale per output channel (symmetric, ``W ~= rows * scale``) and, for
up to ``PACKED_ROWS`` input rows (a decoding step, a small batch), multiplies with PyTorch's own
weight-only kernel ``aten._weight_int8pack_mm`` in bfloat16: 2.3x a bfloat16 and 2.5x a float32
product at one row, measured on an AVX512-BF16 EPYC. For more rows (a prompt's prefill) that kernel
is slower than a plain bfloat16 product, so the weight is turned back into the activations' type for
that one call. Activations are never quantized (unlike ``models/int8.py``'s dynamic quantization for
encoders), so no calibration is needed and the error is the weights' rounding only.

The task head (``lm_head``) stays in the model's float type: it is the most sensitive layer, and a
tied head shares its weight with the input embedding. Nothing here is saved: the run folder keeps
its float32 weights, and the layers are built at load time (``inference/weights.py`` decides when).
"""

import torch
from torch import nn
from torch.nn import functional

HEAD_NAMES = ("lm_head", "classifier", "score")
PACKED_ROWS = 32  # up to this many rows the int8 kernel beats a bf16 product (1.9x at 8 rows, 0.6x at 64)
BLOCK = 16  # the kernel reads inputs in blocks of 16 features: other widths crash it (torch 2.13)


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights per output channel; the bias and the output in ``dtype``."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        weight = linear.weight.detach().float()
        # The scales as they will be used (in ``dtype``), and the rows rounded against those: a
        # bfloat16 scale rounded after the fact would scale a whole row by up to 0.4 % off.
        scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).to(dtype)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = linear.in_features % BLOCK == 0
        rows = torch.round(weight / scale.float()[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
        self.register_buffer("weight_int8", rows)
        self.register_buffer("scale", scale)
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype))

    @property
    def weight(self) -> torch.Tensor:
        """The int8 rows: code that reads a linear's ``weight.dtype`` (T5 casts its input to it unless
        it is int8) or ``weight.shape`` sees what is there."""
        return self.weight_int8

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return self.weight_int8.to(dtype) * self.scale.to(dtype)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        small = rows.shape[0] <= PACKED_ROWS and rows.dtype == self.scale.dtype and rows.device.type == "cpu"
        if small and self.packed:
            out = torch.ops.aten._weight_int8pack_mm(rows.contiguous(), self.weight_int8, self.scale)
            if self.bias is not None:
                out = out + self.bias
        else:
            out = functional.linear(rows, self.dequantized(rows.dtype), self.bias)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def cast_weights(model: nn.Module, dtype: torch.dtype) -> None:
    """``model.to(dtype)``, but computed constants (non-persistent float buffers, such as rotary
    embeddings' frequencies) stay as they are: in bfloat16 they would turn far positions by the wrong
    angles (``from_pretrained(dtype=...)`` keeps them in float32 too)."""
    constants = [
        (module, name, buffer)
        for module in model.modules()
        for name, buffer in module.named_buffers(recurse=False)
        if name in module._non_persistent_buffers_set and buffer is not None and buffer.is_floating_point()
    ]
    model.to(dtype)
    for module, name, buffer in constants:
        setattr(module, name, buffer)


def to_int8_weights(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Put ``model`` in ``dtype`` and replace every ``nn.Linear`` but the head by an ``Int8Linear``,
    in place (a layer whose input width the kernel cannot take stays a ``dtype`` one); returns how many
    were replaced."""
    cast_weights(model, dtype)
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and name not in HEAD_NAMES and child.in_features % BLOCK == 0:
                setattr(parent, name, Int8Linear(child, dtype))
                replaced += 1
    return replaced

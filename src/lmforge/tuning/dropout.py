"""Dropout for the adapters' inputs with a cheaper mask on the CPU.

peft puts an ``nn.Dropout`` before every LoRA-family adapter (``tuning.dropout``). On a CPU, torch
draws one 32-bit random number per element for its mask, and at the sizes of an adapter's input
(batch x tokens x hidden) the draws cost more than the adapter's own matrix products: in LoRA SFT of
SmolLM2 (210 adapters, rows of 512 tokens) they were a fifth of the training step. ``CheapDropout``
draws 64-bit integers instead and cuts each into four 15-bit ones, one per element: a quarter of the
draws (half of the generator's 32-bit outputs, and no conversion to floating point; about 3x faster
for the mask here), the same Bernoulli mask in distribution, with ``p`` taken to the nearest
multiple of 1/32,768 (0.05 drops 1,638/32,768 = 0.049988 of the elements) and the kept elements
scaled by the exact inverse of that keep rate, so the output's expectation is the input.

It draws from torch's generator, so a seed fixes it as it fixes ``nn.Dropout`` (with other masks
than ``nn.Dropout``'s for that seed). A dropped element is 0 even where the input is not finite
(``nn.Dropout`` multiplies: NaN); the kept ones carry a NaN or Inf on, so a non-finite input still
makes a non-finite loss. On other devices (CUDA's dropout is a fused kernel) and in evaluation it
is ``nn.Dropout``."""

import torch
from torch import nn

STEPS = 1 << 15  # a draw per element: 15 random bits


class CheapDropout(nn.Dropout):
    """``nn.Dropout(p)`` with the mask drawn four elements to a 64-bit random number on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropped = round(self.p * STEPS)
        if not self.training or x.device.type != "cpu" or not 0 < dropped < STEPS or self.inplace:
            return super().forward(x)
        n = x.numel()
        # random_() on int64 is uniform on [0, 2**63): every 16-bit quarter's low 15 bits are uniform
        draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_()
        bits = torch.bitwise_and(draws.view(torch.int16)[:n].view(x.shape), STEPS - 1)
        return torch.where(bits >= dropped, x * (STEPS / (STEPS - dropped)), 0.0)


def cheapen_dropouts(model: nn.Module) -> int:
    """Put a ``CheapDropout`` in place of every ``nn.Dropout`` of peft's adapter layers
    (``lora_dropout``); returns how many."""
    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if type(dropout) is nn.Dropout:
                dropouts[name] = CheapDropout(dropout.p)
                replaced += 1
    return replaced

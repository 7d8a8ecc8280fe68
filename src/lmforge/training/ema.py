"""An exponential moving average of the trainable weights (``train.ema``; Polyak averaging).

After each optimizer step the average moves toward the weights: ``avg = d * avg + (1 - d) * w``.
The decay starts low and rises to ``train.ema`` -- ``d_t = min(ema, (1 + t) / (10 + t))`` at step
``t`` -- so the first steps' random weights are forgotten quickly. Evaluation, the ``best/``
model and the final ``model/`` use the averaged weights; every evaluation also reports the main
metric of the weights themselves as ``raw_<metric>``, so a run shows what the average bought.

Only parameters that train are averaged (a LoRA run keeps an average of its adapters, not of the
frozen model); buffers and frozen parameters are the model's own. The average is kept in float32
whatever the training dtype, and saved in each checkpoint (``ema.safetensors``) so a resumed run
goes on with the same average.
"""

from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

FILE = "ema.safetensors"


class WeightAverage:
    """The moving average of ``model``'s trainable parameters."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.current_decay()
        for name, p in model.named_parameters():
            avg = self.shadow.get(name)
            if avg is not None:
                avg.mul_(d).add_(p.detach().float(), alpha=1 - d)
        self.updates += 1

    @contextmanager
    @torch.no_grad()
    def applied(self, model: torch.nn.Module):
        """Inside the block ``model`` holds the averaged weights; its own come back after."""
        params = dict(model.named_parameters())
        own = {name: params[name].detach().clone() for name in self.shadow}
        for name, avg in self.shadow.items():
            params[name].copy_(avg.to(params[name].dtype))
        try:
            yield model
        finally:
            for name, weights in own.items():
                params[name].copy_(weights)

    def save(self, folder: Path) -> None:
        tensors = {name: t.contiguous() for name, t in self.shadow.items()}
        save_file(tensors, str(Path(folder) / FILE), metadata={"updates": str(self.updates), "decay": repr(self.decay)})

    def load(self, folder: Path) -> None:
        """Restore the average saved by ``save``; a checkpoint written without ``train.ema``
        starts the average from the restored weights."""
        path = Path(folder) / FILE
        if not path.is_file():
            return
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt") as handle:
                meta = handle.metadata() or {}
                saved = {name: handle.get_tensor(name) for name in handle.keys()}
        except SafetensorError as exc:
            raise ValueError(f"not a readable safetensors file ({exc})") from None
        missing = sorted(set(self.shadow) - set(saved))
        if missing:
            raise ValueError(f"the average lacks {missing[0]} (and {len(missing) - 1} more)")
        for name in self.shadow:
            self.shadow[name] = saved[name].to(self.shadow[name].device, torch.float32)  # a GPU run resumes on the GPU
        self.updates = int(meta.get("updates", 0))

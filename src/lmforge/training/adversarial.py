"""Adversarial training on the input embeddings: ``train.adversarial: {method, epsilon, alpha, steps}``.

Each batch's loss is also taken with its token embeddings moved the way that raises the loss most,
within an L2 ball of radius ``epsilon`` around each example (its tokens together, as Miyato et al.
normalise the whole embedded sequence). The model gets the gradients of both, so it learns to give
the same answer in a neighbourhood of every training text.

The perturbation is added to the output of the model's input embedding module (its family names it:
``ModelFamily.input_embeddings``) by a forward hook that is on for one micro batch only. The
embedding weights are never written, so they are bit for bit what they were after every step (a test
checks it with ``torch.equal``), frozen embeddings (LoRA and the other adapters) are perturbed as
well, and once the step is done nothing of it is left on the model.

- ``fgm`` (Miyato et al. 2017, "Adversarial Training Methods for Semi-Supervised Text
  Classification"): r = epsilon * g / ||g||, g the gradient of the clean loss at the embeddings; the
  parameters get the gradient of L(x) + L(x + r).
- ``pgd`` (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks", as
  NLP fine-tuning uses it): from delta_0 = 0, ``steps`` ascent steps delta_k = P(delta_{k-1} + alpha *
  g_{k-1} / ||g_{k-1}||), P the projection onto the epsilon ball, g_0 from the clean pass; the steps
  in between compute the gradient at delta only, and the parameters get the gradient of
  L(x) + L(x + delta_K).
- ``freelb`` (Zhu et al. 2020, "FreeLB: Enhanced Adversarial Training for Natural Language
  Understanding"): the same ascent, with the parameters' gradients of every point on it averaged,
  "for free" from the passes the ascent makes anyway: (L(x) + L(x + delta_1) + ... + L(x + delta_K))
  / (K + 1). The paper starts from a small random delta_0; starting from 0 makes the clean pass the
  first point.

A batch costs ``steps + 1`` forward and backward passes (FGM: 2). With ``train.rdrop`` the clean pass
is R-Drop's two passes and the adversarial passes use the task's own loss.
"""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from lmforge.config.model_spec import as_spec
from lmforge.config.schema import AdversarialConfig
from lmforge.errors import ConfigError, TrainingError
from lmforge.models.family import FAMILIES
from lmforge.models.unpadded import PACK_KEY
from lmforge.tasks import TASKS, Task

log = logging.getLogger("lmforge")
LossFn = Callable[[nn.Module, dict], torch.Tensor]  # (model, batch) -> the task's loss of the batch


class EmbeddingAdversary:
    """The adversarial passes of a training job. The loop runs each micro batch's clean pass (forward
    and backward, its loss weighted by ``clean_weight``) inside ``watching()``, then calls
    ``backward``, which adds the adversarial gradients."""

    def __init__(self, settings: AdversarialConfig, embeddings: nn.Module, loss: LossFn, accelerator):
        resolved = resolve(settings)
        self.method, self.epsilon = settings.method, settings.epsilon
        self.alpha, self.steps = resolved["alpha"], resolved["steps"]
        self.embeddings, self.loss, self.acc = embeddings, loss, accelerator
        # FreeLB averages the gradients of its K + 1 points, the clean one first; FGM and PGD add one
        # adversarial gradient to the clean one.
        self.clean_weight = 1 / (self.steps + 1) if self.method == "freelb" else 1.0
        self.delta: torch.Tensor | None = None  # what the hook adds to the embedding output

    # -- the hook -----------------------------------------------------------------------------------
    @contextmanager
    def watching(self) -> Iterator[None]:
        """The clean pass runs inside: a zero perturbation joins the embedding output (exactly the
        same values), so the pass's backward fills in the gradient at the embeddings."""
        self.delta = None
        with self._hooked():
            yield

    @contextmanager
    def _hooked(self) -> Iterator[None]:
        handle = self.embeddings.register_forward_hook(self._add_delta)
        try:
            yield
        finally:
            handle.remove()

    def _add_delta(self, module, args, output: torch.Tensor) -> torch.Tensor:
        if self.delta is None:  # the clean pass: a zero leaf whose gradient is the one at the embeddings
            self.delta = torch.zeros_like(output, requires_grad=True)
        elif self.delta.shape != output.shape:
            raise TrainingError(
                f"train.adversarial: the input embeddings gave {tuple(output.shape)} where the batch's clean pass "
                f"gave {tuple(self.delta.shape)}; this model calls its embeddings in a way adversarial training "
                "does not support"
            )
        return output + self.delta

    # -- the adversarial passes ---------------------------------------------------------------------
    def backward(self, model: nn.Module, batch: dict, weight: float) -> torch.Tensor:
        """After the clean pass's backward: the ascent from its gradient and the adversarial passes'
        backward, each loss times ``weight`` (the loop's weight of this micro batch). Returns the
        adversarial loss (FreeLB: the mean over its points after the clean one)."""
        assert self.delta is not None, "watching() ran the clean pass"
        grad = _gradient(self.delta)
        groups = _examples(batch, grad)
        delta = torch.zeros_like(grad)
        losses = []
        for step in range(1, self.steps + 1):
            delta = self._ascend(delta, grad, groups)
            if self.method == "pgd" and step < self.steps:  # PGD's inner steps: the gradient at delta only
                grad = self._gradient_at(model, batch, delta)
                continue
            share = self.clean_weight if self.method == "freelb" else 1.0
            losses.append(self._pass(model, batch, delta, weight * share))
            grad = _gradient(self.delta)  # FreeLB's next step starts from this pass's gradient
        self.delta = None
        return torch.stack(losses).mean()

    def _ascend(self, delta: torch.Tensor, grad: torch.Tensor, groups: "_Groups") -> torch.Tensor:
        """delta + alpha * g / ||g||, projected onto the epsilon ball (norms per example)."""
        step = grad * groups.mask / groups.norms(grad * groups.mask).clamp(min=1e-12)
        delta = delta + self.alpha * step
        return delta * (self.epsilon / groups.norms(delta).clamp(min=self.epsilon))

    def _pass(self, model: nn.Module, batch: dict, delta: torch.Tensor, weight: float) -> torch.Tensor:
        """One forward and backward pass at ``delta``: parameters and ``self.delta`` get gradients."""
        self.delta = delta.detach().requires_grad_()
        with self._hooked():
            with self.acc.autocast():
                loss = self.loss(model, dict(batch))
            self.acc.backward(loss * weight)
        return loss.detach()

    def _gradient_at(self, model: nn.Module, batch: dict, delta: torch.Tensor) -> torch.Tensor:
        """The loss's gradient at the embeddings moved by ``delta``, with no parameter gradient (and
        no gradient synchronisation between processes)."""
        self.delta = delta.detach().requires_grad_()
        several = self.acc.num_processes > 1
        with self._hooked(), self.acc.no_sync(model) if several else nullcontext():
            with self.acc.autocast():
                loss = self.loss(model, dict(batch))
            (grad,) = torch.autograd.grad(loss, self.delta)
        return torch.nan_to_num(grad.detach(), nan=0.0, posinf=0.0, neginf=0.0)


def _gradient(delta: torch.Tensor) -> torch.Tensor:
    """The gradient a backward left at ``delta`` (zeros where none reached it; non-finite values --
    an overflowing fp16 step that the scaler will skip -- as zeros)."""
    if delta.grad is None:
        return torch.zeros_like(delta)
    return torch.nan_to_num(delta.grad.detach(), nan=0.0, posinf=0.0, neginf=0.0)


class _Groups:
    """Which example each position of a (B, T, E) embedding output belongs to, and which positions
    are real tokens (``mask``, (B, T, 1)): a row each in a padded batch, a text's span of the one
    packed row under ``train.padding_free``."""

    def __init__(self, ids: torch.Tensor, count: int, mask: torch.Tensor):
        self.ids, self.count, self.mask = ids, count, mask

    def norms(self, x: torch.Tensor) -> torch.Tensor:
        """The L2 norm of each example's part of ``x`` (B, T, E), spread back to (B, T, 1)."""
        squares = x.float().pow(2).sum(-1).flatten()  # (B*T,)
        per_example = torch.zeros(self.count, device=x.device).index_add_(0, self.ids, squares).sqrt()
        return per_example[self.ids].view(*x.shape[:2], 1).to(x.dtype)


def _examples(batch: dict, like: torch.Tensor) -> _Groups:
    rows, width = like.shape[:2]
    pack = batch.get(PACK_KEY)
    if pack is not None:  # (1, N): the texts' tokens one after another, no padding
        return _Groups(pack.index // pack.width, pack.rows, torch.ones_like(like[..., :1]))
    ids = torch.arange(rows, device=like.device).repeat_interleave(width)
    mask = batch.get("attention_mask")
    real = mask[..., None].to(like.dtype) if mask is not None else torch.ones_like(like[..., :1])
    return _Groups(ids, rows, real)


# -- set-up ---------------------------------------------------------------------------------------------
def resolve(settings: AdversarialConfig) -> dict:
    """The settings with the defaults filled in: FGM is one step of size epsilon; PGD and FreeLB take
    steps of epsilon / steps unless ``alpha`` says otherwise."""
    steps = 1 if settings.method == "fgm" else settings.steps
    alpha = settings.epsilon if settings.method == "fgm" else settings.alpha or settings.epsilon / steps
    return {"method": settings.method, "epsilon": settings.epsilon, "alpha": alpha, "steps": steps}


def training_extras(train) -> dict:
    """What the run's start row (metrics.jsonl) and its record (``training``) say about
    ``train.adversarial`` and ``train.rdrop``; nothing when both are off."""
    extras: dict = {}
    if train.adversarial is not None:
        extras["adversarial"] = resolve(train.adversarial)
    if train.rdrop > 0:
        extras["rdrop"] = train.rdrop
    return extras


def check_adversarial(config, task: Task) -> None:
    """``train.adversarial`` on a task or model family it does not apply to is a config error."""
    if config.train.adversarial is None:
        return
    method = config.train.adversarial.method
    if not task.supports_adversarial:
        takers = [name for name, kind in TASKS.items() if kind.supports_adversarial]
        raise ConfigError(
            f"train.adversarial: {method} is built for {', '.join(takers)}, not task {task.name}; "
            "remove train.adversarial"
        )
    family = as_spec(config.model).family
    if FAMILIES.get(family).input_embeddings is None:
        takers = [name for name, kind in FAMILIES.items() if kind.input_embeddings is not None]
        raise ConfigError(
            f"train.adversarial: the {family} family has no input embeddings to perturb "
            f"(use the {' or '.join(takers)} family)"
        )


def make_adversary(job, accelerator) -> EmbeddingAdversary | None:
    """The job's adversary (None without ``train.adversarial``), hooked to its model's input embeddings."""
    settings = job.config.train.adversarial
    if settings is None:
        return None
    family = FAMILIES.get(job.info["family"])
    assert family.input_embeddings is not None, "check_adversarial refused families without embeddings"
    embeddings = family.input_embeddings(accelerator.unwrap_model(job.model))
    adversary = EmbeddingAdversary(settings, embeddings, job.task.loss, accelerator)
    log.info(
        "adversarial training: %s, epsilon %g%s (%d forward and backward passes per batch)",
        adversary.method,
        adversary.epsilon,
        f", {adversary.steps} steps of {adversary.alpha:g}" if adversary.method != "fgm" else "",
        adversary.steps + 1,
    )
    return adversary

"""R-Drop (Liang et al. 2021, "R-Drop: Regularized Dropout for Neural Networks"): ``train.rdrop: ALPHA``.

Each training batch goes through the model twice, so two dropout masks give two predictions, and the
loss asks them to agree:

    loss = (L1 + L2) / 2 + alpha * (KL(P1 || P2) + KL(P2 || P1)) / 2

L1, L2 are the task's own loss of each pass (with its class weights and label smoothing; a CRF's
sentence log-likelihood), P1, P2 the label distributions (softmax of the logits) of each scored unit
-- an example, a token, or under a CRF a word's emission scores (the CRF's distribution over whole tag
paths is not compared) -- and each KL a mean over those units. The two cross-entropies are averaged,
as in the authors' code, so the loss keeps the scale of one pass and the learning rate its meaning;
the KL is a mean rather than their sum over the batch, so ``alpha`` does not change with the batch
size (and accumulated batches weigh their units as one big batch would).
"""

import logging
from collections.abc import Callable

import torch

from lmforge.errors import ConfigError
from lmforge.tasks import TASKS, Task

log = logging.getLogger("lmforge")


def symmetric_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """(KL(P || Q) + KL(Q || P)) / 2 of the softmax of two (N, L) logits, a mean over the N rows
    (0 when there are none)."""
    if p_logits.shape[0] == 0:
        return p_logits.sum() * 0.0  # keeps the graph (and device) of an empty batch
    p, q = p_logits.float().log_softmax(-1), q_logits.float().log_softmax(-1)  # (N, L)
    kl_pq = (p.exp() * (p - q)).sum(-1)  # (N,)
    kl_qp = (q.exp() * (q - p)).sum(-1)
    return ((kl_pq + kl_qp) / 2).mean()


def rdrop_loss(
    loss1: torch.Tensor, logits1: torch.Tensor, loss2: torch.Tensor, logits2: torch.Tensor, alpha: float
) -> torch.Tensor:
    """The R-Drop loss from each pass's task loss and logits (module docstring)."""
    return (loss1 + loss2) / 2 + alpha * symmetric_kl(logits1, logits2)


class RDropLoss:
    """The training loss of a batch under R-Drop: two passes of ``task.loss_and_logits``."""

    def __init__(self, task: Task, alpha: float):
        self.task, self.alpha = task, alpha

    def __call__(self, model, batch: dict) -> torch.Tensor:
        loss1, logits1 = self.task.loss_and_logits(model, dict(batch))  # each pass consumes its copy
        loss2, logits2 = self.task.loss_and_logits(model, dict(batch))
        return rdrop_loss(loss1, logits1, loss2, logits2, self.alpha)


def training_loss(task: Task, alpha: float) -> Callable[..., torch.Tensor]:
    """The loss the loop takes for each batch: the task's own, or R-Drop's when ``alpha`` > 0."""
    return RDropLoss(task, alpha) if alpha > 0 else task.loss


def check_rdrop(config, task: Task) -> None:
    """``train.rdrop`` on a task that has no per-unit label distribution is a config error."""
    alpha = config.train.rdrop
    if alpha <= 0:
        return
    if not task.supports_rdrop:
        takers = [name for name, kind in TASKS.items() if kind.supports_rdrop]
        raise ConfigError(
            f"train.rdrop: task {task.name} has no label distribution per example or token to compare "
            f"between dropout passes (R-Drop applies to {', '.join(takers)}); set train.rdrop: 0"
        )
    if config.train.dropout == 0:
        log.warning("warning: train.rdrop with train.dropout 0: both passes are the same, so R-Drop adds nothing")

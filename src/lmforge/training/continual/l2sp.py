"""L2-SP (Li, Grandvalet & Davoine 2018, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks", ICML, eq. 3): ``alpha/2 * ||w - w_parent||^2`` over the weights the parent
had, plus ``beta/2 * ||w||^2`` over the new ones (the rows of new labels). The paper uses it in place
of weight decay: set ``train.weight_decay: 0`` to follow it exactly."""

from lmforge.training.continual.base import CONTINUAL_METHODS, ContinualMethod
from lmforge.training.continual.context import StageContext
from lmforge.training.continual.ewc import check_trains_base
from lmforge.training.continual.penalty import QuadraticPenalty, l2sp_penalty


@CONTINUAL_METHODS.register("l2sp")
class L2SP(ContinualMethod):
    name = "l2sp"

    def check(self, config) -> None:
        check_trains_base(config, self.name)

    def penalty(self, stage: StageContext, model) -> QuadraticPenalty:
        return l2sp_penalty(model, stage.parent_shapes, stage.settings.l2sp_alpha, stage.settings.l2sp_beta)

    def summary(self, stage: StageContext) -> dict:
        return {"l2sp_alpha": stage.settings.l2sp_alpha, "l2sp_beta": stage.settings.l2sp_beta}

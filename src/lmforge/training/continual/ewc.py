"""Elastic weight consolidation (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in
neural networks", PNAS): ``lambda/2 * sum_k F_k (theta_k - theta*_k)^2`` with ``theta*`` the parent's
weights and ``F`` the diagonal Fisher information of the earlier stages' data.

The Fisher information of a stage is estimated on that stage's training data with the model it ended
with, when the next stage starts (the same model and data a run's end would use, computed only when a
stage asks for it). Over several stages the Fisher matrices add up and the anchor is the latest
weights: the single-penalty form of Huszár (2018, "Note on the quadratic penalties in elastic weight
consolidation") and of online EWC (Schwarz et al. 2018) without decay. Each EWC stage keeps the sum it
used in ``continual/fisher.safetensors``, and its child adds the next stage's Fisher to it.
"""

import logging

from safetensors.torch import load_file

from lmforge.errors import ConfigError
from lmforge.training.continual.base import CONTINUAL_METHODS, ContinualMethod
from lmforge.training.continual.context import StageContext
from lmforge.training.continual.penalty import QuadraticPenalty, diagonal_fisher, ewc_penalty, pad_to

log = logging.getLogger("lmforge")
FISHER_FILE = "fisher.safetensors"  # in the run folder's continual/
TRAINS_BASE = ("full", "freeze")  # tuning methods that train the weights the penalty holds


def check_trains_base(config, method: str) -> None:
    if config.tuning.method not in TRAINS_BASE:
        raise ConfigError(
            f"continual.method: {method} holds the model's own weights near the parent's, and tuning.method "
            f"{config.tuning.method} trains other weights; use tuning.method full or freeze"
        )
    if config.distributed.strategy != "ddp":
        raise ConfigError(
            f"continual.method: {method} reads whole weights; distributed.strategy {config.distributed.strategy} "
            "shards them (use ddp)"
        )


@CONTINUAL_METHODS.register("ewc")
class Ewc(ContinualMethod):
    name = "ewc"

    def check(self, config) -> None:
        check_trains_base(config, self.name)

    def before_growth(self, stage: StageContext, model, tokenizer, device) -> None:
        previous = stage.previous
        settings = stage.settings
        features = previous.task.encode(
            tokenizer, previous.examples("train", stage.parent_labels), stage.parent_record.max_length
        )
        fisher = diagonal_fisher(
            model,
            previous.task,
            tokenizer,
            features,
            settings.fisher_samples,
            stage.config.train.seed,
            device,
            settings.fisher_batch_size,
        )
        log.info(
            "ewc: Fisher information of stage %d estimated on %d of its %d training examples (%s)",
            previous.number,
            min(settings.fisher_samples, len(features)),
            len(features),
            "one at a time" if settings.fisher_batch_size == 1 else f"in batches of {settings.fisher_batch_size}",
        )
        earlier = stage.parent / "continual" / FISHER_FILE
        if (stage.parent_record.continual or {}).get("method") == self.name and earlier.is_file():
            for name, value in load_file(str(earlier)).items():
                if name in fisher:
                    fisher[name] += pad_to(value.float(), fisher[name].shape)
            stage.facts["fisher_stages"] = list(range(1, stage.number))
        else:
            stage.facts["fisher_stages"] = [previous.number]
        stage.files[FISHER_FILE] = fisher

    def penalty(self, stage: StageContext, model) -> QuadraticPenalty:
        return ewc_penalty(model, stage.files[FISHER_FILE], stage.settings.ewc_lambda)

    def summary(self, stage: StageContext) -> dict:
        return {
            "ewc_lambda": stage.settings.ewc_lambda,
            "fisher_samples": stage.settings.fisher_samples,
            "fisher_batch_size": stage.settings.fisher_batch_size,
            "fisher_stages": stage.facts.get("fisher_stages"),
            "fisher_file": f"continual/{FISHER_FILE}",
        }

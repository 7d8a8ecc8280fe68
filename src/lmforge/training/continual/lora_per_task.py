"""A LoRA adapter per stage over a frozen base (as in parameter-isolation methods; De Lange et al.
2021, "A continual learning survey", section 6): each stage starts from the first stage's pretrained
model (``model`` of stage 1: a bundled alias or a folder) with a fresh head and trains its own LoRA
adapter (``tuning.method: lora``) and its head over its own labels, so no stage can change another's
weights.

The run folder of each stage holds that stage's model (the adapter merged into the base, as every
LoRA run saves it), so a stage's task is predicted with its own run: the task-incremental protocol.
Earlier stages are evaluated with their own runs' models, so backward transfer is zero by
construction and the table shows what the isolation costs in storage and what it keeps."""

from pathlib import Path

import torch

from lmforge.config.model_spec import as_spec
from lmforge.errors import ConfigError
from lmforge.models import LoadedModel, load_model
from lmforge.training.continual.base import CONTINUAL_METHODS, ContinualMethod
from lmforge.training.continual.context import StageContext


@CONTINUAL_METHODS.register("lora_per_task")
class LoraPerTask(ContinualMethod):
    name = "lora_per_task"
    protocol = "task-incremental"
    merges_labels = False  # a model per stage: its head has the stage's own labels

    def check(self, config) -> None:
        if config.tuning.method != "lora":
            raise ConfigError(
                "continual.method: lora_per_task trains a LoRA adapter per stage over the frozen base; "
                f"set tuning.method: lora (not {config.tuning.method})"
            )

    def starting_model(self, stage: StageContext, task, labels, dropout: float | None) -> LoadedModel:
        first = stage.earlier[0]
        spec = as_spec(first.config.model)
        if getattr(spec, "path", None) is None:
            raise ConfigError(
                f"continual.method: lora_per_task needs a pretrained base, and stage 1 ({first.entry['run']}) "
                "built its model from scratch; use another method"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stage.config.train.seed)
            base = load_model(
                spec,
                task.head,
                list(labels.names) if labels is not None else [],
                [],
                dropout=dropout,
                tokenizer_folder=Path(first.entry["run"]) / "model",
            )
        model = task.prepare_model(base.model, labels)
        info = {**base.info, "continued_from": str(stage.parent.resolve())}
        return LoadedModel(model, base.tokenizer, info)

    def stage_model(self, stage: StageContext, number: int) -> Path:
        return Path(stage.earlier[number - 1].entry["run"])

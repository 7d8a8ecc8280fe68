"""A finished run's model with its own data, for exports that change the weights: evaluate on the
run's validation split, and fine-tune for a few steps with some weights held at zero (pruning's
recovery). The data is read from the run's ``config.yaml``, as training read it."""

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.config import load_config
from lmforge.data.batching import epoch_batches
from lmforge.data.examples import limited_sample
from lmforge.data.readers import Problems
from lmforge.errors import DataError, RunFolderError
from lmforge.export.prune import apply_masks
from lmforge.models import load_saved
from lmforge.tasks import get_task
from lmforge.tracking.run_folder import RunFolder
from lmforge.tracking.run_record import RunRecord
from lmforge.training.optim import build_optimizer, build_scheduler

log = logging.getLogger("lmforge")


@dataclass
class RunData:
    """A run's saved model, tokenizer, task and encoded splits."""

    config: object
    record: RunRecord
    task: object
    data: object
    model: torch.nn.Module
    tokenizer: object
    features: dict  # split -> encoded features (train, validation)


def load_run_data(run_dir: str | Path, checkpoint: str = "model") -> RunData:

    run = RunFolder(run_dir)
    record = run.read_record()
    if not run.config.is_file():
        raise RunFolderError(f"{run.path}: no config.yaml, so the run's training data is unknown")
    config = load_config(run.config)
    task = get_task(record.task)
    data = task.load_data(config, Problems(skip=config.data.on_error == "skip"))
    if config.data.train_limit is not None and config.data.train_limit < len(data.train):
        data.train = limited_sample(data.train, config.data.train_limit, config.train.seed)  # as training did
    names = record.label_names
    if data.labels is not None and record.labels is not None and data.labels.names != names:
        raise DataError(f"{run.config}: the data's labels {data.labels.names} are not the run's {names}")
    task.configure(config, data.train, data.labels)
    folder = run.model_dir(checkpoint)
    loaded = load_saved(folder, record)
    model = loaded.model
    model = task.prepare_saved(model, folder, data.labels)
    length = record.max_length
    features = {split: task.encode(loaded.tokenizer, getattr(data, split), length) for split in ("train", "validation")}
    return RunData(config, record, task, data, model.float(), loaded.tokenizer, features)


def evaluate(job: RunData) -> dict:
    """Scalar validation metrics of the model as it is now (empty without a validation split)."""
    if not job.features["validation"]:
        return {}
    result = job.task.evaluate(
        job.model,
        job.tokenizer,
        job.features["validation"],
        job.data.validation,
        2 * job.config.train.batch_size,
        torch.device("cpu"),
        job.data.labels,
    )
    return {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}


def sample_batches(job: RunData, count: int, seed: int = 0):
    """``count`` seeded training batches (dicts of tensors), for scoring or fine-tuning."""

    features = job.features["train"]
    if not features:
        raise DataError("the run has no training examples to score or fine-tune on")
    lengths = [len(f["input_ids"]) for f in features]
    size = job.config.train.batch_size
    epoch = 0
    while count > 0:
        for idx in epoch_batches(lengths, size, job.config.train.seed + seed, epoch)[:count]:
            count -= 1
            yield job.task.collate([features[i] for i in idx], job.tokenizer)
        epoch += 1


def loss_of(task):
    """The task's loss on a batch, without consuming the caller's batch dict."""
    return lambda model, batch: task.loss(model, dict(batch))


def recover(job: RunData, masks: dict, steps: int, lr: float | None = None) -> list[float]:
    """Fine-tune ``steps`` optimizer steps on the training data, re-applying ``masks`` after each
    step so pruned weights stay exactly zero. Returns the losses."""

    cfg = job.config.train
    lr = lr if lr is not None else cfg.lr
    model = job.model
    model.train()
    optimizer = build_optimizer(model, lr, cfg.weight_decay)
    scheduler = build_scheduler(optimizer, 0.1, steps, "linear")
    losses = []
    for step, batch in enumerate(sample_batches(job, steps, seed=1)):
        loss = job.task.loss(model, batch)
        if not math.isfinite(loss.item()):
            raise DataError(f"recovery: non-finite loss at step {step + 1}; lower --recover-lr")
        loss.backward()
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        apply_masks(model, masks)
        losses.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log.info("recovery step %d/%d: loss %.4f", step + 1, steps, sum(losses[-50:]) / len(losses[-50:]))
    model.eval()
    return losses

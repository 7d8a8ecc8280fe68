"""Knowledge distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network") of a
fine-tuned classification run into a smaller student, trained by the normal recipe.

The teacher's logits over the student's training set are computed once (batched, inference mode)
and cached in the output folder; each training feature carries its row, and ``DistilTask`` -- the
student's task with one more loss term -- reads it from the batch:

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

T^2 keeps the soft term's gradients on the scale of the hard one's as T changes (Hinton, section 2).
To show what the teacher adds, the same student (same config, seed, data and steps) is also trained
on the labels alone (alpha = 0); both are normal run folders under the output folder:

    <output>/distilled/   <output>/labels_only/   <output>/distillation.json
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F

from lmforge.config import config_to_dict
from lmforge.errors import ConfigError, DataError, ModelError
from lmforge.inference.predictor import RunPredictor
from lmforge.tasks import Task
from lmforge.tasks.classification import ClassificationTask
from lmforge.tracking.run_folder import RunFolder, write_atomic
from lmforge.tracking.run_record import RunRecord
from lmforge.training.finish import cleanup
from lmforge.training.job import setup
from lmforge.training.loop import run_loop
from lmforge.training.signals import StopRequest

log = logging.getLogger("lmforge")
CACHE = "teacher_logits.safetensors"


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE; logits are (B, C), labels (B,)."""
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student.float() / t, dim=-1),
        F.log_softmax(teacher.float() / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student.float(), labels, weight=weight, label_smoothing=label_smoothing)
    return alpha * t * t * soft + (1 - alpha) * hard


class DistilTask:
    """A classification task whose loss adds the distillation term for batches that carry
    ``teacher_logits``; everything else (data, evaluation, metrics) is the wrapped task's."""

    def __init__(self, task, temperature: float, alpha: float):
        self.task, self.temperature, self.alpha = task, temperature, alpha

    def __getattr__(self, name):
        return getattr(self.task, name)

    def collate(self, features: list[dict], tokenizer) -> dict:
        batch = self.task.collate(features, tokenizer)
        if "teacher_logits" in features[0]:
            batch["teacher_logits"] = torch.tensor([f["teacher_logits"] for f in features])  # (B, C)
        return batch

    def loss(self, model, batch: dict):
        teacher = batch.pop("teacher_logits", None)
        if teacher is None:
            return self.task.loss(model, batch)
        labels = batch.pop("labels")
        logits = model(**batch).logits  # (B, C)
        weight = self.task.class_weights
        return distillation_loss(
            logits,
            teacher,
            labels,
            self.temperature,
            self.alpha,
            weight.to(logits.device) if weight is not None else None,
            self.task.label_smoothing,
        )


# -- the teacher ----------------------------------------------------------------------------------
def teacher_logits(
    teacher_dir: str | Path,
    examples: list,
    label_names: list[str],
    batch_size: int,
    cache: Path | None = None,
    device: str = "auto",
) -> torch.Tensor:
    """(N, C) logits of the teacher run on ``examples`` (run on ``device``, the student's), columns in
    the student's label order; read from ``cache`` when it holds the same teacher and texts."""

    predictor = RunPredictor(teacher_dir, "auto", device)
    if predictor.record.task != "classification":
        raise ModelError(
            f"{teacher_dir}: distillation needs a classification teacher; this is a {predictor.record.task} run"
        )
    missing = [name for name in label_names if name not in predictor.labels.names]
    if missing or len(label_names) != len(predictor.labels.names):
        raise DataError(
            f"{teacher_dir}: the teacher's labels {predictor.labels.names} are not the student's {label_names}"
        )
    key = _cache_key(predictor.folder, examples)
    if cache is not None and cache.is_file():
        from safetensors import safe_open

        with safe_open(str(cache), "pt") as handle:
            if handle.metadata().get("key") == key:
                log.info("teacher logits: read from %s", cache)
                return handle.get_tensor("logits")
    log.info("teacher logits: running %s on %d training texts (once)", predictor.folder, len(examples))
    task = predictor.task
    assert isinstance(task, ClassificationTask)  # the record's task is classification (checked above)
    features = task.encode(predictor.tokenizer, examples, predictor.max_length)
    logits = task.logits(predictor.model, predictor.tokenizer, features, batch_size, predictor.device)
    order = [predictor.labels.names.index(name) for name in label_names]
    logits = logits[:, order].contiguous()  # (N, C)
    if cache is not None:
        from safetensors.torch import save_file

        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({"logits": logits}, str(cache), metadata={"key": key, "teacher": str(predictor.folder)})
    return logits


def _cache_key(folder: Path, examples: list) -> str:
    digest = hashlib.sha256()
    for weights in sorted(folder.glob("*.safetensors")):
        digest.update(f"{weights.name}:{weights.stat().st_size}:{weights.stat().st_mtime_ns}".encode())
    for ex in examples:
        digest.update(f"{ex.text}\x00{ex.text_pair}\x01".encode())
    return digest.hexdigest()


def _finished(config) -> bool:
    """A finished run of exactly this config in ``config.output`` (``resume=true`` reuses it)."""

    run = RunFolder(config.output)
    if not run.meta.is_file():
        return False
    run.check_writable(config_to_dict(config), resume=True, overwrite=False)  # a changed config fails here
    return run.read_record().finished


def _summary(record: RunRecord, config) -> dict:
    return {
        "run": config.output,
        "alpha": config.distil.alpha,
        "results": record.results or {},
        "steps": (record.training or {}).get("steps"),
        "parameters": (record.parameters or {}).get("total"),
        "wall_time_s": (record.training or {}).get("wall_time_s"),
    }


# -- the recipe -----------------------------------------------------------------------------------
@dataclass
class DistilOutcome:
    output: Path
    report: dict
    stopped_by: str | None = None


def distil(teacher_dir: str | Path, config, quiet: bool = False, baseline: bool = True) -> DistilOutcome:
    """Train the student with distillation, then (``baseline``) the same student on labels alone."""

    if config.task != "classification":
        raise ConfigError(f"task: distillation trains classification students; the config says {config.task}")
    if config.train.rdrop > 0:
        raise ConfigError("train.rdrop: lmforge distil has its own loss on the teacher's logits; set train.rdrop: 0")
    teacher = RunFolder(teacher_dir)
    teacher_record = teacher.read_record()
    out = Path(config.output)
    runs = {"distilled": config.model_copy(update={"output": str(out / "distilled")}, deep=True)}
    if baseline:
        plain = config.model_copy(update={"output": str(out / "labels_only")}, deep=True)
        plain.distil.alpha = 0.0
        runs["labels_only"] = plain
    results = {}
    for name, run_config in runs.items():
        if run_config.resume and _finished(run_config):
            log.info("%s: %s is finished with this config; its results are reused", name, run_config.output)
            results[name] = _summary(RunFolder(run_config.output).read_record(), run_config)
            continue
        job = setup(run_config)
        if run_config.distil.alpha > 0:
            logits = teacher_logits(
                teacher.path,
                job.data.train,
                job.data.labels.names,
                run_config.distil.teacher_batch_size,
                out / CACHE,
                run_config.device,
            )
            for feature, row in zip(job.features["train"], logits.tolist()):
                feature["teacher_logits"] = row
            # DistilTask stands in for the Task it wraps (every other attribute is the wrapped task's).
            job.task = cast(Task, DistilTask(job.task, run_config.distil.temperature, run_config.distil.alpha))
        with StopRequest() as stop:
            state = run_loop(job, stop, quiet)
        if stop.requested:
            return DistilOutcome(out, {}, stop.requested)
        cleanup(job, state)
        results[name] = _summary(job.run.read_record(), run_config)
    report = {
        "teacher": {
            "run": str(teacher.path),
            "results": teacher_record.results or {},
            "parameters": (teacher_record.parameters or {}).get("total"),
        },
        "temperature": config.distil.temperature,
        "alpha": config.distil.alpha,
        "student": {
            "model": config.model if isinstance(config.model, str) else config.model.model_dump(),
            "seed": config.train.seed,
        },
        **results,
    }
    write_atomic(out / "distillation.json", json.dumps(report, indent=1, ensure_ascii=False))
    return DistilOutcome(out, report)

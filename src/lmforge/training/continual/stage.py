"""A continual-learning stage from set-up to its end (``lmforge train CONFIG --from RUN``).

``open_stage`` reads the parent run and its lineage, merges the labels (the parent's first, so the
old labels keep their rows of the head) and mixes in what the method replays; ``Stage.load_model``
gives the parent's model with its head grown; ``Stage.start`` measures the model before training on
the new stage and builds the method's penalty; ``Stage.penalty`` is what the loop adds to each loss;
``Stage.finish`` evaluates every stage's validation set with the saved model and completes the
stage matrix (``evaluation/continual.py``).

Earlier stages are evaluated class-incrementally: the one model, predicting over every label it
knows, on each stage's validation set with that stage's gold labels (a method whose ``protocol`` is
task-incremental evaluates each stage with that stage's own model instead).
"""

import json
import logging
from pathlib import Path

import peft
import torch
from safetensors.torch import save_file
from torch import nn

from lmforge.config import JobConfig, config_to_dict
from lmforge.data.examples import LabelSet
from lmforge.data.task_data import TaskData
from lmforge.errors import ConfigError, LmforgeError, ModelError, RunFolderError
from lmforge.evaluation.continual import transfer_metrics
from lmforge.models import LoadedModel, load_model, load_saved
from lmforge.models.transformer import set_dropout
from lmforge.runtime import resolve_device
from lmforge.tasks import Task
from lmforge.tracking.run_folder import RunFolder, write_atomic
from lmforge.tracking.run_record import RunRecord, read_record
from lmforge.training.continual.base import CONTINUAL_METHODS, ContinualMethod
from lmforge.training.continual.context import StageContext
from lmforge.training.continual.lineage import EarlierStage, lineage_of, merge_labels, read_stage, stage_entry
from lmforge.training.continual.penalty import QuadraticPenalty

log = logging.getLogger("lmforge")
FOLDER = "continual"  # in the run folder: the method's files (Fisher information, replayed examples)
LOWER_IS_BETTER = ("loss", "perplexity")


def open_stage(config: JobConfig, task: Task, data: TaskData) -> "Stage | None":
    """The continual stage of a job with ``continual.parent`` (None without): the parent checked,
    ``data`` put in the merged labels, replayed examples added to ``data.train``."""
    settings = config.continual
    if settings.parent is None:
        return None
    method = CONTINUAL_METHODS.get(settings.method)()
    method.check(config)
    parent = Path(settings.parent)
    if not parent.is_dir():
        raise RunFolderError(f"continual.parent: {parent}: no such run folder")
    if parent.resolve() == Path(config.output).resolve():
        raise ConfigError(f"continual.parent: {parent} is this job's output; write the new stage to another folder")
    if "model" in config.model_fields_set:
        log.warning("warning: model is not read under continual.parent: the model is the parent run's")
    try:
        record = read_record(parent)
    except RunFolderError as exc:  # named as the setting that gave the folder, like the other parent errors
        raise RunFolderError(f"continual.parent: {exc}") from None
    _check_parent(config, task, parent, record)
    folder = RunFolder(parent).model_dir(settings.checkpoint)
    lineage = lineage_of(parent, record)
    earlier = [read_stage(entry) for entry in lineage]
    for stage in earlier:
        if not stage.data.validation:
            raise ConfigError(
                f"continual: stage {stage.number} ({stage.entry['run']}) has no validation data to evaluate it on"
            )
    if not data.validation:
        raise ConfigError(
            "continual: the stage matrix is measured on validation data; give data.validation or data.split"
        )
    parent_labels = LabelSet.from_json(record.labels) if record.labels else None
    own = data.labels
    labels, grown = own, 0
    if method.merges_labels and parent_labels is not None and own is not None:
        labels = merge_labels(parent_labels, own)
        grown = len(labels.names) - len(parent_labels.names)
    if own is not None and labels is not None and labels.names != own.names:
        for split in ("train", "validation", "test"):
            task.relabel(getattr(data, split), own, labels)
        data.labels = labels
    context = StageContext(
        config, task, len(lineage) + 1, parent, record, folder, earlier, labels, parent_labels, list(data.train)
    )
    entry = stage_entry(
        context.number, Path(config.output), config_to_dict(config), own.names if own else None, method.name
    )
    replayed = method.replay(context)
    data.train = data.train + replayed
    data.notes.append(
        f"continual: stage {context.number} continues {parent} ({folder.name}/), method {method.name}"
        + (f"; {grown} new label(s): {', '.join(labels.names[-grown:])}" if labels is not None and grown else "")
        + (f"; replaying {len(replayed)} examples of earlier stages" if replayed else "")
    )
    return Stage(context, method, lineage + [entry])


def _check_parent(config: JobConfig, task: Task, parent: Path, record: RunRecord) -> None:
    if record.task != config.task:
        raise ConfigError(
            f"continual.parent: {parent} is a {record.task} run and this job's task is {config.task}; "
            "continue a run of the same task"
        )
    if record.is_prompt_run or record.model.one_pass:
        raise ConfigError(
            f"continual.parent: {parent} has no model that trains by steps ({record.family}); "
            "continue a run of the transformer or lstm family"
        )
    if not record.finished:
        raise RunFolderError(f"continual.parent: {parent}: its training did not finish (resume it first)")
    for key, value in task.head_options().items():
        if key in record.options and record.options[key] != value:
            raise ConfigError(
                f"continual.parent: {parent} was trained with head option {key}={record.options[key]!r} and "
                f"this config gives {value!r}; set it as the parent's"
            )
    metric = stage_metric(config, task)
    if metric not in task.metric_names:
        raise ConfigError(
            f"continual.metric: '{metric}' is not reported for task {task.name} "
            f"(choose from {', '.join(task.metric_names)})"
        )
    matrix_metric = (record.continual or {}).get("metric")
    if matrix_metric is not None and matrix_metric != metric:
        raise ConfigError(
            f"continual.metric: the parent's stage matrix is in {matrix_metric}; keep continual.metric {matrix_metric}"
        )


def stage_metric(config: JobConfig, task: Task) -> str:
    """The metric of the stage matrix: ``continual.metric``, else the task's (``Task.transfer_metric``)."""
    return config.continual.metric or task.transfer_metric or task.default_metric


def _score(task: Task, model, tokenizer, examples: list, labels, config: JobConfig, batch_size: int, device) -> float:
    """The stage metric of ``model`` on ``examples`` (already in ``labels``)."""
    metric = stage_metric(config, task)
    features = task.encode(tokenizer, examples, config.data.max_length)
    result = task.evaluate(model, tokenizer, features, examples, batch_size, device, labels)
    return float(result.metrics[metric])


def _set_dropout(model: nn.Module, rate: float) -> None:
    """``train.dropout`` on a model loaded from a run folder: every dropout module and setting."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = rate
    if getattr(model, "config", None) is not None:
        set_dropout(model.config, rate)


class Stage:
    """One stage of a continual run; ``job.continual`` during training."""

    def __init__(self, context: StageContext, method: ContinualMethod, lineage: list[dict]):
        self.context, self.method, self.lineage = context, method, lineage
        config, task = context.config, context.task
        self.metric = stage_metric(config, task)
        parent = context.parent_record.continual or {}
        self.matrix: list[list[float | None]] = [list(row) for row in parent.get("matrix", [])]
        self.baseline: list[float | None] = list(parent.get("baseline", []))
        self.penalty_fn: QuadraticPenalty | None = None
        self.device = resolve_device(config.device)
        self.batch_size = config.train.eval_batch_size or 2 * config.train.batch_size
        self.finished = False

    # -- set-up -----------------------------------------------------------------------------------
    def load_model(self, dropout: float | None) -> LoadedModel:
        """The model this stage trains: the method's (lora_per_task: the base), else the parent's
        with one output per label, the old labels' rows kept."""
        ctx = self.context
        first_continued = not self.matrix  # the parent is the first stage: its row is measured here
        loaded = self.method.starting_model(ctx, ctx.task, ctx.labels, dropout)
        if loaded is not None:
            if first_continued:
                parent = self._load_parent()
                self._first_row(parent.model, parent.tokenizer)
            return loaded
        parent = self._load_parent()
        model = parent.model
        ctx.parent_shapes = {name: p.shape for name, p in model.named_parameters() if p.requires_grad}
        if first_continued:
            self._first_row(model, parent.tokenizer)
        self.method.before_growth(ctx, model, parent.tokenizer, self.device)
        if ctx.labels is not None and ctx.parent_labels is not None and ctx.labels.names != ctx.parent_labels.names:
            with torch.random.fork_rng(devices=[]):  # the new rows are the same on every run of this config
                torch.manual_seed(ctx.config.train.seed)
                ctx.task.grow_head(model, ctx.parent_labels, ctx.labels)
            log.info(
                "continual: the head grew from %d to %d labels (the old rows kept)",
                len(ctx.parent_labels.names),
                len(ctx.labels.names),
            )
        if dropout is not None:
            _set_dropout(model, dropout)
        info = {**ctx.parent_record.model.to_dict(), "continued_from": str(ctx.parent.resolve())}
        info.pop("parameters", None)
        return LoadedModel(model, parent.tokenizer, info)

    def _load_parent(self) -> LoadedModel:
        ctx = self.context
        loaded = load_saved(ctx.parent_model, ctx.parent_record)
        model = loaded.model
        if loaded.info.get("backend", "torch") != "torch" or not isinstance(model, nn.Module):
            raise ModelError(
                f"continual.parent: {ctx.parent_model} is an exported model; continue the run it came from"
            )
        if isinstance(model, peft.PeftModel):
            raise ModelError(
                f"continual.parent: {ctx.parent_model} was tuned with virtual tokens (prefix/prompt); "
                "continue a run tuned with full, freeze or lora"
            )
        model = ctx.task.prepare_saved(model, ctx.parent_model, ctx.parent_labels).to(self.device)
        return LoadedModel(model, loaded.tokenizer, loaded.info)

    def _first_row(self, model, tokenizer) -> None:
        """The parent is the first stage (an ordinary run): its own row, R[0][0], and the untrained
        model's score on it, b[0]."""
        ctx, first = self.context, self.context.earlier[0]
        examples = first.examples("validation", ctx.parent_labels)
        self.matrix = [[self._scored(first.task, model, tokenizer, examples, ctx.parent_labels)]]
        self.baseline = [self._baseline(first.task, tokenizer, examples, ctx.parent_labels)]

    def _scored(self, task: Task, model, tokenizer, examples: list, labels) -> float:
        return _score(task, model, tokenizer, examples, labels, self.context.config, self.batch_size, self.device)

    def _baseline(self, task: Task, tokenizer, examples: list, labels: LabelSet | None) -> float | None:
        """GEM's b: the first stage's model before any training (a fresh head), on ``examples``."""
        first = self.context.earlier[0]
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(first.config.train.seed)
                fresh = load_model(
                    first.config.model,
                    task.head,
                    list(labels.names) if labels is not None else [],
                    [],
                    tokenizer_folder=Path(first.entry["run"]) / "model",
                )
            model = task.prepare_model(fresh.model, labels).to(self.device)
            return self._scored(task, model, tokenizer, examples, labels)
        except (LmforgeError, OSError) as exc:
            log.warning("continual: no untrained baseline for forward transfer (%s)", str(exc).splitlines()[0])
            return None

    def start(self, model, tokenizer, validation: list) -> None:
        """Before the first step: this stage's validation score of the model as it starts (R[i-1][i]),
        the untrained baseline's, and the method's penalty on the starting weights."""
        ctx = self.context
        before = self._scored(ctx.task, model, tokenizer, validation, ctx.labels)
        model.train()
        for row in self.matrix:
            row += [None] * (ctx.number - 1 - len(row))
        self.matrix[-1].append(before)
        self.baseline.append(self._baseline(ctx.task, tokenizer, validation, ctx.labels))
        self.penalty_fn = self.method.penalty(ctx, model)
        log.info(
            "continual: stage %d starts with validation %s %.4f (untrained model: %s)",
            ctx.number,
            self.metric,
            before,
            "?" if self.baseline[-1] is None else f"{self.baseline[-1]:.4f}",
        )

    def penalty(self) -> torch.Tensor | float:
        """What the loop adds to each micro-batch's loss (0 for methods without a penalty)."""
        return self.penalty_fn() if self.penalty_fn is not None else 0.0

    # -- the end ----------------------------------------------------------------------------------
    def finish(self, folder: Path, record: RunRecord, run_path: Path, validation: list) -> None:
        """Every stage's validation score with the model saved in ``folder`` (this stage's row of the
        matrix), the transfer metrics, the method's files and a ``continual`` line in metrics.jsonl."""
        ctx = self.context
        loaded = load_saved(folder, record)
        model = ctx.task.prepare_saved(loaded.model, folder, ctx.labels).to(self.device)
        row: list[float | None] = [self._earlier_score(s, model, loaded.tokenizer) for s in ctx.earlier]
        row.append(self._scored(ctx.task, model, loaded.tokenizer, validation, ctx.labels))
        for old in self.matrix:
            old += [None] * (len(row) - len(old))
        self.matrix.append(row)
        self.finished = True
        self._write_files(run_path / FOLDER)
        summary = self.summary()
        with open(run_path / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"kind": "continual", "stage": ctx.number, **summary}) + "\n")
        for line in self.lines():
            log.info(line)

    def _earlier_score(self, stage: EarlierStage, model, tokenizer) -> float:
        own = self.method.stage_model(self.context, stage.number)
        if own is None:
            return self._scored(
                stage.task, model, tokenizer, stage.examples("validation", self.context.labels), self.context.labels
            )
        record = read_record(own)
        folder = RunFolder(own).model_dir("auto")
        loaded = load_saved(folder, record)
        labels = LabelSet.from_json(record.labels) if record.labels else None
        other = stage.task.prepare_saved(loaded.model, folder, labels).to(self.device)
        return self._scored(stage.task, other, loaded.tokenizer, stage.examples("validation", labels), labels)

    def _write_files(self, folder: Path) -> None:
        ctx = self.context
        if ctx.files or ctx.facts.get("replayed"):
            folder.mkdir(exist_ok=True)
        for name, tensors in ctx.files.items():
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / name))
        if ctx.facts.get("replayed"):
            write_atomic(folder / "replayed.txt", "".join(f"{where}\n" for where in ctx.facts["replayed"]))

    # -- what the run records ---------------------------------------------------------------------
    def summary(self) -> dict:
        """The matrix and its transfer metrics (final only once ``finish`` added this stage's row)."""
        metrics = transfer_metrics(self.matrix, self.baseline) if self.finished else {}
        return {
            "metric": self.metric,
            "higher_is_better": self.metric not in LOWER_IS_BETTER,
            "protocol": self.method.protocol,
            "matrix": self.matrix,
            "baseline": self.baseline,
            **metrics,
        }

    def record(self) -> dict:
        """``continual`` of the run record: the parent, the lineage, the method and the matrix."""
        ctx = self.context
        return {
            "parent": str(ctx.parent.resolve()),
            "checkpoint": ctx.parent_model.name,
            "method": self.method.name,
            "stage": ctx.number,
            "stages": self.lineage,
            **self.method.summary(ctx),
            **self.summary(),
        }

    def lines(self) -> list[str]:
        """The stage matrix and the transfer metrics, as the run log shows them."""
        header = "after \\ on  " + " ".join(f"{'stage ' + str(j + 1):>9}" for j in range(len(self.matrix)))
        lines = [f"continual ({self.method.name}): {self.metric} on each stage's validation set", header]
        for i, row in enumerate(self.matrix):
            cells = " ".join(f"{'-' if v is None else f'{v:.4f}':>9}" for v in row)
            lines.append(f"{'stage ' + str(i + 1):<11} {cells}")
        metrics = transfer_metrics(self.matrix, self.baseline)
        shown = {k: "-" if v is None else f"{v:.4f}" if k == "average" else f"{v:+.4f}" for k, v in metrics.items()}
        lines.append(f"average {shown['average']}  backward transfer {shown['bwt']}  forward transfer {shown['fwt']}")
        return lines

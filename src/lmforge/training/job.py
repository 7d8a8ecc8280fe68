"""Training set-up: everything a user can get wrong (config, data, model path, output folder) is
checked here, before anything is written; then the job -- task, data, features, model, optimiser,
accelerator and run folder -- is ready for the loop (``loop.py``) or the one-pass fit
(``one_pass.py``)."""

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import peft
import torch
import transformers
from accelerate.utils import DistributedType

from lmforge import __version__
from lmforge.augment.models import augmenter_for
from lmforge.augment.pipeline import AUGMENT_SAMPLES, Augmenter, check_steps
from lmforge.config import JobConfig, config_to_dict
from lmforge.data.batching import epoch_batches, padding_share
from lmforge.data.examples import limited_sample
from lmforge.data.readers import Problems
from lmforge.data.task_data import TaskData
from lmforge.errors import ConfigError, LmforgeError
from lmforge.inference.precision import FP32, InferencePrecision, inference_precision
from lmforge.masking.data import mask_task_data
from lmforge.models import load_model
from lmforge.models.one_pass import is_one_pass
from lmforge.paths import cache_root
from lmforge.runtime import quiet_libraries, set_seed, set_threads
from lmforge.tasks import Task, get_task
from lmforge.tokenization.unknown import unknown_rate
from lmforge.tracking.external import Trackers
from lmforge.tracking.metrics_log import MetricsLog
from lmforge.tracking.run_folder import RunFolder, write_atomic
from lmforge.tracking.run_record import ModelRecord, RunRecord
from lmforge.training.adversarial import check_adversarial
from lmforge.training.checkpoint import list_checkpoints
from lmforge.training.continual import Stage, open_stage
from lmforge.training.distributed import (
    SPARSE_MIN_ROWS,
    EmbeddingRows,
    from_main,
    log_global_batch,
    make_accelerator,
    start_processes,
    world_size,
)
from lmforge.training.early_stopping import EarlyStopping
from lmforge.training.ema import WeightAverage
from lmforge.training.memory import enable_gradient_checkpointing
from lmforge.training.optim import build_optimizer, build_scheduler
from lmforge.training.precision import DecisionCache, PrecisionChoice, choose_precision, native_candidate
from lmforge.training.rdrop import check_rdrop
from lmforge.tuning import apply_tuning, count_parameters
from lmforge.tuning.setfit import check_data as check_setfit_data

if TYPE_CHECKING:
    from accelerate import Accelerator

log = logging.getLogger("lmforge")
MEASURED_TOKENS = 512  # see measured_rows

UNKNOWN_WARN = 0.03


@dataclass
class TrainState:
    """Where the loop is; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    examples_seen: int = 0
    stopped_early: bool = False
    elapsed_s: float = 0.0
    early: dict = field(default_factory=dict)
    # train.batch_size x processes when the state was saved (0: a checkpoint from before 0.2): a
    # resumed run must cut the epoch into the same batches, however many processes it runs in.
    micro_batch: int = 0


@dataclass
class Job:
    """Everything ``setup`` prepared for the loop."""

    config: JobConfig
    task: Task
    data: TaskData
    run: RunFolder
    model: torch.nn.Module
    tokenizer: Any  # a Hugging Face tokenizer, or a model family's own
    info: dict
    features: dict
    # The four below are set by ``setup`` for every job that reaches the loop; a one-pass job
    # (n-gram models) has only a tracker.
    accelerator: "Accelerator | None" = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    total_steps: int = 0
    steps_per_epoch: int = 0
    tracker: EarlyStopping | None = None
    ema: WeightAverage | None = None
    embedding_rows: EmbeddingRows | None = None  # ddp: embedding gradients reduced row-wise
    precision: dict | None = None  # PrecisionChoice.to_json(): what the steps computed in, and why
    # what validation passes compute in: as `lmforge eval` of the saved model on this device would
    evaluation: InferencePrecision = FP32
    batches: str | None = None  # the task's line on its training batches (padded or packed, and why)
    # (step, EvalResult) of the validation evaluation at the last step, in ``evaluation``, by the
    # only process: the end of the run reuses it when that step is the best (no second pass)
    final_validation: tuple[int, Any] | None = None
    # (step, model) of a model with adapters folded in (export_model) that the validation at that last
    # step evaluated: the run saves it as it is (the weights evaluated, and no second copy to merge)
    exported: tuple[int, Any] | None = None
    trackers: Any = None  # tracking/external.py's Trackers of the main process (W&B, MLflow): open_trackers
    augmenter: Augmenter | None = None  # data.augment: features["train"] is epoch ``features_epoch``'s
    features_epoch: int = 0
    continual: Stage | None = None  # continual.parent: this continual stage (training/continual/)


# -- setup --------------------------------------------------------------------------------------
def setup(config: JobConfig) -> Job:
    quiet_libraries()
    task = get_task(config.task)
    _check_metric(config, task)
    check_adversarial(config, task)
    check_rdrop(config, task)
    check_steps(config.data.augment, config.task)
    run = RunFolder(config.output)
    resolved = config_to_dict(config)
    run.check_writable(resolved, config.resume, config.overwrite)
    problems = Problems(skip=config.data.on_error == "skip")
    data = task.load_data(config, problems)
    limit_training_data(config, data)
    stage = open_stage(config, task, data)  # continual.parent: labels merged, replay mixed in; else None
    check_method_data(config, data)  # before a model loads
    if config.data.mask is not None:  # personal data out before a tokenizer or a model sees the texts
        mask_task_data(config.data.mask, data, config.device)
    for note in data.notes:
        log.info(note)
    if problems.skipped:
        log.warning(
            "warning: skipped %d bad row(s) (data.on_error: skip); the first: %s",
            problems.skipped,
            problems.first_skipped,
        )
    set_threads(config.train.threads)
    set_seed(config.train.seed)
    resuming = config.resume and bool(list_checkpoints(run.checkpoints))
    if stage is not None:  # the parent's model, tokenizer and head (grown to the merged labels)
        loaded = stage.load_model(config.train.dropout)
    else:
        loaded = load_model(
            config.model,
            task.head,
            data.labels.names,
            _texts(data.train),
            dropout=config.train.dropout,
            tokenizer_folder=run.model if resuming else None,
        )
    task.configure(config, data.train, data.labels)
    augmenter = augmenter_for(config, data, loaded.model, loaded.tokenizer, run.path / "augment")
    train = data.train
    if augmenter is not None:
        train, stats = augmenter.epoch(0)
        log.info(stats.line(0, len(data.train)))
    if is_one_pass(loaded.model):
        if world_size() > 1:
            raise ConfigError(
                f"the {loaded.info.get('family', 'ngram')} family learns in one pass in one process; "
                "train it without --processes or torchrun"
            )
        if config.train.ema is not None:
            raise ConfigError(
                f"train.ema: the {loaded.info.get('family', 'ngram')} family learns in one pass, "
                "with no steps to average; remove train.ema"
            )
        # Families that learn in one pass (n-gram models) read the examples themselves: no
        # features, optimizer or accelerator; ``training/one_pass.py`` takes it from here.
        return Job(
            config,
            task,
            data,
            run,
            loaded.model,
            loaded.tokenizer,
            loaded.info,
            {"train": train, "validation": data.validation, "test": data.test},
            tracker=tracker_for(config, task),
            augmenter=augmenter,
        )
    if stage is None:  # a continued model has what prepare_model adds (its CRF) already
        loaded.model = task.prepare_model(loaded.model, data.labels)
    features = {
        split: task.encode(loaded.tokenizer, examples, config.data.max_length)
        for split, examples in (("train", train), ("validation", data.validation), ("test", data.test))
    }
    _warn_unknown(loaded, features["train"], config)
    task.fit_baseline(features["train"], len(loaded.tokenizer))
    processes = start_processes(config)
    log_global_batch(config, processes.num_processes)
    steps_per_epoch, total_steps = _count_steps(config.train, features["train"], processes)
    if config.train.gradient_checkpointing:
        enable_gradient_checkpointing(loaded.model, loaded.info.get("family", "?"))
    model = apply_tuning(loaded.model, config.tuning, config.task, total_steps)
    padding = _padding(config, features["train"], processes.num_processes)
    batches = task.prepare_training(model, config, padding)
    if batches:
        log.info(batches)
    precision = _resumed_precision(run, config) if resuming else None
    if precision is None:
        precision = _choose_precision(config, task, model, loaded.tokenizer, features["train"], processes)
    else:
        log.info("precision %s (%s)", precision.used, precision.reason)
    accelerator = make_accelerator(config, precision.accelerate_name)
    job = Job(
        config,
        task,
        data,
        run,
        model,
        loaded.tokenizer,
        loaded.info,
        features,
        accelerator,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
    )
    job.precision = precision.to_json()
    job.evaluation = inference_precision("auto", precision.used, accelerator.device)
    if job.evaluation.used != "fp32":
        log.info("evaluation in %s (%s)", job.evaluation.used, job.evaluation.reason)
    job.batches = batches
    job.augmenter = augmenter
    _prepare_optimisation(job)
    if stage is not None:  # measured before training; the penalty anchored on the starting weights
        stage.start(accelerator.unwrap_model(job.model), job.tokenizer, data.validation)
        job.continual = stage
    _prepare_folder(job, resolved, resuming)
    return job


def limit_training_data(config: JobConfig, data) -> None:
    """``data.train_limit``: the seeded (class-balanced) draw of the training examples."""
    if config.data.train_limit is not None and config.data.train_limit < len(data.train):
        data.train = limited_sample(data.train, config.data.train_limit, config.train.seed)
        data.notes.append(f"data.train_limit: training on {len(data.train)} examples (seed {config.train.seed})")


def check_method_data(config: JobConfig, data) -> None:
    """What the tuning method needs of the training data (SetFit: pairs, templated examples)."""
    if config.tuning.method == "setfit":
        check_setfit_data(
            [ex.label_id for ex in data.train],
            data.labels.names,
            config.tuning.label_templates,
            any(ex.text_pair is not None for ex in data.train),
        )


def _padding(config: JobConfig, train_features: list[dict], processes: int) -> float:
    """The share of tokens padding adds to the first epoch's batches (the first process's: the same
    figure, and so the same choice, on every process)."""
    lengths = [len(f["input_ids"]) for f in train_features]
    cfg = config.train
    return padding_share(
        lengths, epoch_batches(lengths, cfg.batch_size, cfg.seed, 0, cfg.group_by_length, processes, 0)
    )


def measured_rows(batch: list[dict]) -> list[dict]:
    """The rows of the first training batch that ``auto`` times: from the first, while they hold
    at most ``MEASURED_TOKENS`` tokens (always one). Whole batches of long rows made the measurement
    cost as much as the training of a short run (SmolLM2 SFT, 2 rows of 512 tokens: 26 s for 8
    steps' 35 s); the speed ratio of the arithmetic is the same on fewer rows of the same length."""
    rows: list[dict] = []
    tokens = 0
    for row in batch:
        tokens += len(row.get("input_ids", ()))
        if rows and tokens > MEASURED_TOKENS:
            break
        rows.append(row)
    return rows


def _resumed_precision(run: RunFolder, config: JobConfig) -> PrecisionChoice | None:
    """A resumed ``train.precision: auto`` run computes in what it chose at its start (recorded in
    its ``lmforge.json``), not in what a new measurement picks now: a machine busier or idler than
    then could choose the other, and the resumed steps would differ from the uninterrupted run's.
    None when the precision is explicit or the record has no choice (a run from before this)."""
    if config.train.precision != "auto":
        return None
    try:
        training = run.read_record().training or {}
    except LmforgeError:
        return None
    chosen = training.get("precision") or {}
    if chosen.get("used") not in ("fp32", "bf16", "fp16"):
        return None
    return PrecisionChoice(chosen["used"], f"resumed: the choice of the run's start ({chosen.get('reason', '')})")


def _choose_precision(config: JobConfig, task, model, tokenizer, train_features, processes) -> PrecisionChoice:
    """``train.precision`` resolved on the main process (``auto`` times a step of the first training
    batch) and shared with the others, then logged."""
    device = processes.device

    rows = measured_rows(train_features[: config.train.batch_size])

    def loss_of_batch(m):
        batch = task.collate(rows, tokenizer)
        return task.loss(m, {k: v.to(device) for k, v in batch.items()})

    choice = None
    if processes.is_main_process:
        needs_model = config.train.precision == "auto" and native_candidate(device)[0] is not None
        cache = (
            DecisionCache(cache_root() / "precision", device, model, task.collate(rows, tokenizer), config.task)
            if needs_model
            else None
        )
        choice = cache.get() if cache is not None else None
        if choice is None:
            if needs_model:
                model.to(device)
            choice = choose_precision(config.train.precision, device, model, loss_of_batch)
            if cache is not None and choice.timings_ms:
                cache.put(choice)
    choice = from_main(processes, choice)
    log.info("precision %s (%s)", choice.used, choice.reason)
    return choice


def _texts(examples) -> list[str]:
    texts = [ex.text for ex in examples]
    return texts + [ex.text_pair for ex in examples if ex.text_pair]


def _check_metric(config: JobConfig, task) -> None:
    early = config.train.early_stopping
    if early is not None and early.metric is not None and early.metric not in task.metric_names:
        raise ConfigError(
            f"train.early_stopping.metric: '{early.metric}' is not reported for task "
            f"{task.name} (choose from {', '.join(task.metric_names)})"
        )


def _warn_unknown(loaded, train_features, config) -> None:
    rate = unknown_rate(loaded.tokenizer, [f["input_ids"] for f in train_features])
    if rate > UNKNOWN_WARN:
        log.warning(
            "warning: %.1f%% of the training tokens are unknown to the tokenizer of model "
            "'%s', so the model cannot read much of this text; use a model whose vocabulary "
            "covers it, e.g. a from-scratch transformer with a vocabulary built from your "
            "data (model: {family: transformer, arch: bert, layers: 4, hidden: 256, heads: 4})",
            100 * rate,
            loaded.info.get("source", "?"),
        )


def _count_steps(cfg, train_features: list[dict], accelerator) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) of this job."""
    batches = epoch_batches(
        [len(f["input_ids"]) for f in train_features],
        cfg.batch_size,
        cfg.seed,
        0,
        cfg.group_by_length,
        accelerator.num_processes,
        accelerator.process_index,
    )
    per_epoch = math.ceil(len(batches) / cfg.grad_accum)
    total = per_epoch * cfg.epochs
    return per_epoch, min(total, cfg.max_steps) if cfg.max_steps is not None else total


def _prepare_optimisation(job: Job) -> None:
    cfg, accelerator = job.config.train, job.accelerator
    assert accelerator is not None, "setup() creates the accelerator first"
    optimizer = build_optimizer(job.model, cfg.lr, cfg.weight_decay)
    job.scheduler = build_scheduler(optimizer, cfg.warmup, job.total_steps, cfg.scheduler)
    if (
        accelerator.num_processes > 1
        and accelerator.distributed_type in (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
        and job.config.distributed.embedding_rows != "never"
    ):
        smallest = SPARSE_MIN_ROWS if job.config.distributed.embedding_rows == "auto" else 1
        job.embedding_rows = EmbeddingRows.attach(job.model, accelerator.num_processes, accelerator.device, smallest)
    job.model, job.optimizer = accelerator.prepare(job.model, optimizer)
    job.tracker = tracker_for(job.config, job.task)
    if cfg.ema is not None:
        job.ema = WeightAverage(accelerator.unwrap_model(job.model), cfg.ema)
    trainable, total = count_parameters(job.model)
    job.info["parameters"] = {"trainable": trainable, "total": total}
    log.info(
        "tuning %s: %s of %s parameters trainable (%.2f%%)",
        job.config.tuning.method,
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / max(total, 1),
    )


def tracker_for(config: JobConfig, task) -> EarlyStopping:
    """The best-model tracker (and early stopping) on the configured or the task's main metric."""
    early = config.train.early_stopping
    metric = early.metric if early and early.metric else task.default_metric
    mode = early.mode if early and early.mode else ("min" if metric in ("loss", "perplexity") else "max")
    return EarlyStopping(metric, mode, early.patience if early else None, early.min_delta if early else 0.0)


def _prepare_folder(job: Job, resolved: dict, resuming: bool) -> None:
    assert job.accelerator is not None, "setup() creates the accelerator first"
    run, main = job.run, job.accelerator.is_main_process
    if not main:
        return
    if job.config.overwrite and run.path.exists() and not job.config.resume:
        set_aside(job)
    open_trackers(job)  # before anything is written: a tracker refusing to start leaves no half-made run
    run.write_config(resolved)
    if not resuming:
        # The tokenizer is saved first: a resumed from-scratch run must not retrain it.
        job.tokenizer.save_pretrained(run.model)
    write_task_files(job)
    if job.augmenter is not None and job.augmenter.samples:
        rows = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in job.augmenter.samples)
        write_atomic(run.path / AUGMENT_SAMPLES, rows)
    run.write_record(run_record(job, finished=False, training={"precision": job.precision}))  # read on resume


def set_aside(job: Job) -> None:
    """``overwrite=true``: the previous run moves aside (RunFolder.set_aside) and is named."""
    previous = job.run.set_aside(job.task.run_files().keys())
    if previous is not None:
        log.info(
            "overwrite=true: the run that was in %s is kept in %s until this run's first checkpoint; "
            "files lmforge did not write stay where they are",
            job.run.path,
            previous.name,
        )


def write_task_files(job: Job) -> None:
    """Files a task keeps in the run folder for ``lmforge eval`` (NER: the training entities)."""
    for name, text in job.task.run_files().items():
        write_atomic(job.run.path / name, text)


def run_record(job: Job, finished: bool, **outcome) -> RunRecord:
    """The run record of ``job``; ``outcome`` sets the fields known at the end (best, training,
    results)."""
    return RunRecord(
        task=job.config.task,
        head=job.task.head,
        model=ModelRecord.model_validate(job.info),
        labels=job.data.labels.to_json() if job.data.labels is not None else None,
        max_length=job.config.data.max_length,
        fields=job.config.data.fields.model_dump(),
        tuning=job.config.tuning.method,
        parameters=job.info.get("parameters"),
        head_options=job.task.head_options() or None,
        continual=job.continual.record() if job.continual is not None else None,
        finished=finished,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        lmforge_version=__version__,
        versions={"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        **outcome,
    )


def open_trackers(job: Job) -> Trackers:
    """The config's external trackers (W&B, MLflow) of the main process, opened once."""
    if job.trackers is None:
        # setfit keeps no checkpoints: its resume=true starts again, as a new tracked run
        resume = job.config.resume and job.config.tuning.method != "setfit"
        job.trackers = Trackers(job.config.tracking, job.run.path, config_to_dict(job.config), resume)
    return job.trackers


def open_metrics(job: Job, resume_step: int | None) -> MetricsLog:
    """The metrics log of the main process, with TensorBoard and the config's other trackers."""
    tracking = job.config.tracking
    open_trackers(job)
    events = job.run.events if "tensorboard" in tracking else None
    return MetricsLog(job.run.metrics, events, resume_step, mirror=job.trackers)

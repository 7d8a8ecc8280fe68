"""The training recipe: setup -> train -> checkpoint -> cleanup, as one visible script.

Everything a user can get wrong (config, data, model path, output folder) is checked in ``setup``
before anything is written; the loop itself is plain PyTorch with Accelerate handling devices,
mixed precision and distributed processes.
"""

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from lmforge import __version__
from lmforge.config import JobConfig, config_to_dict
from lmforge.data.batching import epoch_batches
from lmforge.data.examples import limited_sample
from lmforge.data.readers import Problems
from lmforge.errors import ConfigError, RunFolderError, TrainingError
from lmforge.models import load_model
from lmforge.models.one_pass import is_one_pass
from lmforge.runtime import quiet_libraries, set_seed, set_threads
from lmforge.tasks import get_task
from lmforge.tokenization.unknown import unknown_rate
from lmforge.tracking.metrics_log import MetricsLog
from lmforge.tracking.run_folder import RunFolder
from lmforge.training.checkpoint import list_checkpoints, load_checkpoint, prune_checkpoints, rng_state, save_checkpoint
from lmforge.training.early_stopping import EarlyStopping
from lmforge.training.ema import WeightAverage
from lmforge.training.optim import build_optimizer, build_scheduler
from lmforge.training.progress import Progress
from lmforge.training.signals import StopRequest
from lmforge.tuning import apply_tuning, count_parameters, export_model, is_peft
from lmforge.tuning.registry import after_optimizer_step

log = logging.getLogger("lmforge")
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


@dataclass
class Job:
    """Everything ``setup`` prepared for the loop."""

    config: JobConfig
    task: object
    data: object
    run: RunFolder
    model: torch.nn.Module
    tokenizer: object
    info: dict
    features: dict
    accelerator: object = None
    optimizer: object = None
    scheduler: object = None
    total_steps: int = 0
    steps_per_epoch: int = 0
    tracker: EarlyStopping = None
    ema: WeightAverage | None = None


@dataclass
class TrainOutcome:
    run: RunFolder
    state: TrainState
    stopped_by: str | None  # the signal that stopped the run before its end, if any


def train(config: JobConfig, quiet: bool = False) -> TrainOutcome:
    """Run a training job end to end."""
    job = setup(config)
    if is_one_pass(job.model):
        from lmforge.training.one_pass import run_one_pass

        return TrainOutcome(job.run, run_one_pass(job), None)
    with StopRequest() as stop:
        state = run_loop(job, stop, quiet)
    if not stop.requested:
        cleanup(job, state)
    return TrainOutcome(job.run, state, stop.requested)


# -- setup --------------------------------------------------------------------------------------
def setup(config: JobConfig) -> Job:
    quiet_libraries()
    task = get_task(config.task)
    _check_metric(config, task)
    run = RunFolder(config.output)
    resolved = config_to_dict(config)
    run.check_writable(resolved, config.resume, config.overwrite)
    problems = Problems(skip=config.data.on_error == "skip")
    data = task.load_data(config, problems)
    if config.data.train_limit is not None and config.data.train_limit < len(data.train):
        data.train = limited_sample(data.train, config.data.train_limit, config.train.seed)
        data.notes.append(f"data.train_limit: training on {len(data.train)} examples (seed {config.train.seed})")
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
    loaded = load_model(
        config.model,
        task.head,
        data.labels.names,
        _texts(data.train),
        dropout=config.train.dropout,
        tokenizer_folder=run.model if resuming else None,
    )
    task.configure(config, data.train, data.labels)
    if is_one_pass(loaded.model):
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
            {"train": data.train, "validation": data.validation, "test": data.test},
            tracker=tracker_for(config, task),
        )
    loaded.model = task.prepare_model(loaded.model, data.labels)
    features = {
        split: task.encode(loaded.tokenizer, examples, config.train.max_length)
        for split, examples in (("train", data.train), ("validation", data.validation), ("test", data.test))
    }
    _warn_unknown(loaded, features["train"], config)
    task.fit_baseline(features["train"], len(loaded.tokenizer))
    accelerator = _accelerator(config.train)
    steps_per_epoch, total_steps = _count_steps(config.train, features["train"], accelerator)
    model = apply_tuning(loaded.model, config.tuning, config.task, total_steps)
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
    _prepare_optimisation(job)
    _prepare_folder(job, resolved, resuming)
    return job


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


def _accelerator(cfg):
    from accelerate import Accelerator

    return Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())


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
    cfg = job.config.train
    optimizer = build_optimizer(job.model, cfg.lr, cfg.weight_decay)
    job.scheduler = build_scheduler(optimizer, cfg.warmup, job.total_steps, cfg.scheduler)
    job.model, job.optimizer = job.accelerator.prepare(job.model, optimizer)
    job.tracker = tracker_for(job.config, job.task)
    if cfg.ema is not None:
        job.ema = WeightAverage(job.accelerator.unwrap_model(job.model), cfg.ema)
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
    run, main = job.run, job.accelerator.is_main_process
    if not main:
        return
    if job.config.overwrite and run.path.exists() and not job.config.resume:
        run.clear()
    run.write_config(resolved)
    if not resuming:
        # The tokenizer is saved first: a resumed from-scratch run must not retrain it.
        job.tokenizer.save_pretrained(run.model)
    write_task_files(job)
    run.write_meta(_meta(job, finished=False))


def write_task_files(job: Job) -> None:
    """Files a task keeps in the run folder for ``lmforge eval`` (NER: the training entities)."""
    from lmforge.tracking.run_folder import write_atomic

    for name, text in job.task.run_files().items():
        write_atomic(job.run.path / name, text)


def _meta(job: Job, finished: bool, extra: dict | None = None) -> dict:
    import peft
    import transformers

    meta = {
        "lmforge_version": __version__,
        "task": job.config.task,
        "head": job.task.head,
        "labels": job.data.labels.to_json() if job.data.labels is not None else None,
        "model": job.info,
        "parameters": job.info.get("parameters"),
        "tuning": job.config.tuning.method,
        "max_length": job.config.train.max_length,
        "fields": job.config.data.fields.model_dump(),
        "finished": finished,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }
    meta.update(job.task.meta())
    meta.update(extra or {})
    return meta


# -- train --------------------------------------------------------------------------------------
def run_loop(job: Job, stop: StopRequest, quiet: bool) -> TrainState:
    cfg, acc = job.config.train, job.accelerator
    state = _resume(job) if job.config.resume else TrainState()
    if state.early:
        job.tracker.load_state_dict(state.early)
    metrics = (
        MetricsLog(job.run.metrics, job.run.events, state.step if job.config.resume else None)
        if acc.is_main_process
        else None
    )
    if metrics and not job.config.resume:
        metrics.write(
            {
                "kind": "start",
                "step": 0,
                "examples": len(job.features["train"]),
                "steps": job.total_steps,
                "parameters": job.info["parameters"],
            }
        )
    lengths = [len(f["input_ids"]) for f in job.features["train"]]
    progress = Progress(job.total_steps, state.step, disabled=quiet or not acc.is_main_process)
    loop = _Loop(job, state, metrics, progress, stop)
    try:
        while state.epoch < cfg.epochs and not loop.finished:
            batches = epoch_batches(
                lengths,
                cfg.batch_size,
                cfg.seed,
                state.epoch,
                cfg.group_by_length,
                acc.num_processes,
                acc.process_index,
            )
            loop.run_epoch(batches)
            if stop.requested:
                break
            if state.batch_in_epoch >= len(batches):
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                if cfg.eval_every == "epoch" and not state.stopped_early:
                    loop.evaluate_and_save()
        if not stop.requested and loop.last_eval_step != state.step and not state.stopped_early:
            loop.evaluate_and_save()  # the end of training is always evaluated
    finally:
        progress.close()
    if stop.requested and not loop.saved_at_stop:
        loop.save(rng=None)
        log.warning(
            "stopped by %s at step %d; checkpoint saved. Continue with: lmforge train CONFIG resume=true",
            stop.requested,
            state.step,
        )
    if metrics:
        metrics.close()
    return state


def _resume(job: Job) -> TrainState:
    found = list_checkpoints(job.run.checkpoints)
    if not found:
        log.warning("resume=true but %s has no complete checkpoint: starting from the beginning", job.run.checkpoints)
        return TrainState()
    saved = load_checkpoint(found[-1], job.accelerator.unwrap_model(job.model), job.optimizer, job.scheduler)
    if job.ema is not None:
        job.ema = WeightAverage(job.accelerator.unwrap_model(job.model), job.config.train.ema)
        try:
            job.ema.load(found[-1])
        except (OSError, ValueError) as exc:
            raise RunFolderError(
                f"{found[-1]}: cannot resume the weight average ({str(exc).splitlines()[0]})"
            ) from None
    log.info("resuming from %s (epoch %d, step %d)", found[-1].name, saved["epoch"], saved["step"])
    return TrainState(**saved)


class _Loop:
    """The inner loop and the things it does at step boundaries."""

    def __init__(self, job: Job, state: TrainState, metrics, progress, stop):
        self.job, self.state, self.metrics, self.progress, self.stop = job, state, metrics, progress, stop
        self.cfg = job.config.train
        self.finished = state.stopped_early or (
            job.config.train.max_steps is not None and state.step >= job.total_steps
        )
        self.saved_at_stop = False
        self.last_eval_step = state.step if job.config.resume else -1
        self.window_loss, self.window_n, self.window_examples = 0.0, 0, 0
        self.window_start = time.perf_counter()
        self.last_grad_norm = None

    def run_epoch(self, batches: list[list[int]]) -> None:
        job, state, cfg, acc = self.job, self.state, self.cfg, self.job.accelerator
        features = job.features["train"]
        job.model.train()
        position = state.batch_in_epoch
        while position < len(batches) and not self.finished:
            group = batches[position : position + cfg.grad_accum]
            rng_at_start = rng_state()
            for i, idx in enumerate(group):
                batch = job.task.collate([features[j] for j in idx], job.tokenizer)
                batch = {k: v.to(acc.device) for k, v in batch.items()}
                sync = i == len(group) - 1
                with acc.no_sync(job.model) if not sync and acc.num_processes > 1 else _nullcontext():
                    with acc.autocast():
                        loss = job.task.loss(job.model, batch)
                    if not torch.isfinite(loss):
                        self._non_finite(loss, rng_at_start)
                    acc.backward(loss / len(group))
                self.window_loss += loss.item()
                self.window_n += 1
                self.window_examples += len(idx) * acc.num_processes
            self._optimizer_step()
            position += len(group)
            state.batch_in_epoch = position
            state.examples_seen += sum(len(idx) for idx in group) * acc.num_processes
            self._after_step()
            if self.stop.requested:
                self.save(rng=None)
                self.saved_at_stop = True
                return

    def _optimizer_step(self) -> None:
        job, acc = self.job, self.job.accelerator
        if self.cfg.max_grad_norm is not None:
            norm = acc.clip_grad_norm_(job.model.parameters(), self.cfg.max_grad_norm)
            self.last_grad_norm = float(norm)
        job.optimizer.step()
        after_optimizer_step(acc.unwrap_model(job.model), self.state.step + 1)
        job.scheduler.step()
        job.optimizer.zero_grad(set_to_none=True)
        if job.ema is not None:
            job.ema.update(acc.unwrap_model(job.model))
        self.state.step += 1

    def _after_step(self) -> None:
        state, cfg = self.state, self.cfg
        if state.step % cfg.log_every == 0 or state.step == self.job.total_steps:
            self._log_train()
        self.progress.update(state.step, self.job.scheduler.get_last_lr()[0])
        if isinstance(cfg.eval_every, int) and state.step % cfg.eval_every == 0:
            self.evaluate_and_save()
        elif cfg.save_every and state.step % cfg.save_every == 0:
            paused = time.perf_counter()
            self.save(rng=None)
            self.window_start += time.perf_counter() - paused
        if state.step >= self.job.total_steps:
            self.finished = True

    def _log_train(self) -> None:
        now = time.perf_counter()
        elapsed = now - self.window_start
        row = {
            "kind": "train",
            "step": self.state.step,
            "epoch": round(self._epoch_float(), 4),
            "loss": self.window_loss / max(self.window_n, 1),
            "lr": self.job.scheduler.get_last_lr()[0],
            "examples_per_s": self.window_examples / elapsed if elapsed > 0 else None,
            "elapsed_s": round(self.state.elapsed_s + elapsed, 3),
        }
        if self.last_grad_norm is not None:
            row["grad_norm"] = self.last_grad_norm
        self.state.elapsed_s += elapsed
        self.progress.show_loss(row["loss"], row["examples_per_s"])
        if self.metrics:
            self.metrics.write(row)
        self.window_loss, self.window_n, self.window_examples, self.window_start = 0.0, 0, 0, now

    def _epoch_float(self) -> float:
        per_epoch = max(self.job.steps_per_epoch, 1)
        return self.state.epoch + min(self.state.batch_in_epoch / max(per_epoch * self.cfg.grad_accum, 1), 1.0)

    def evaluate_and_save(self) -> None:
        # Evaluation and saving are not training time: the speed window skips them.
        paused = time.perf_counter()
        job, state = self.job, self.state
        self.last_eval_step = state.step
        if job.features["validation"]:
            scalars = self._validation_scalars()
            if self.metrics:
                self.metrics.write(
                    {
                        "kind": "eval",
                        "split": "validation",
                        "step": state.step,
                        "epoch": round(self._epoch_float(), 4),
                        **scalars,
                    }
                )
            value = scalars.get(job.tracker.metric)
            if job.tracker.update(value, state.step):
                self._save_best()
            self.progress.note(f"{job.tracker.metric}={value:.4f}" if value is not None else "")
            if job.tracker.should_stop:
                log.info(
                    "early stopping at step %d: %s has not improved for %d evaluations (best %.4f at step %d)",
                    state.step,
                    job.tracker.metric,
                    job.tracker.patience,
                    job.tracker.best,
                    job.tracker.best_step,
                )
                state.stopped_early = True
                self.finished = True
            job.model.train()
        self.save(rng=None)
        self.window_start += time.perf_counter() - paused

    def _validation_scalars(self) -> dict:
        """Validation metrics of the model -- of its weight average under ``train.ema``, with the
        main metric of the weights themselves beside them as ``raw_<metric>``."""
        job = self.job
        model = job.accelerator.unwrap_model(job.model)

        def scalars() -> dict:
            result = job.task.evaluate(
                model,
                job.tokenizer,
                job.features["validation"],
                job.data.validation,
                self._eval_batch(),
                job.accelerator.device,
                job.data.labels,
            )
            return {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}

        if job.ema is None:
            return scalars()
        metric = job.tracker.metric
        raw = scalars().get(metric)
        with job.ema.applied(model):
            averaged = scalars()
        if raw is not None:
            averaged[f"raw_{metric}"] = raw
        return averaged

    def _eval_batch(self) -> int:
        return self.cfg.eval_batch_size or 2 * self.cfg.batch_size

    def _save_best(self) -> None:
        if not self.job.accelerator.is_main_process:
            return
        with _averaged(self.job):
            save_model_folder(self.job, self.job.run.best)

    def save(self, rng) -> None:
        job, state = self.job, self.state
        state.early = job.tracker.state_dict()
        if not job.accelerator.is_main_process:
            return
        folder = job.run.checkpoints / f"step-{state.step}"
        save_checkpoint(
            folder,
            job.accelerator.unwrap_model(job.model),
            job.optimizer,
            job.scheduler,
            state.__dict__.copy(),
            rng,
            extra=job.ema.save if job.ema is not None else None,
        )
        prune_checkpoints(job.run.checkpoints, self.cfg.keep_checkpoints)

    def _non_finite(self, loss, rng_at_start) -> None:
        job = self.job
        # Parameters are still those of the last good step: checkpoint them, with the RNG as it
        # was when this step began, so the checkpoint resumes exactly before the bad batch.
        job.optimizer.zero_grad(set_to_none=True)
        self.save(rng=rng_at_start)
        raise TrainingError(
            f"non-finite loss ({loss.item()}) at step {self.state.step + 1}, epoch "
            f"{self.state.epoch + 1}; the last good state is in "
            f"{job.run.checkpoints}/step-{self.state.step}. Lower train.lr, set "
            f"train.max_grad_norm, or check the data"
        )


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- cleanup ------------------------------------------------------------------------------------
def _averaged(job: Job):
    """The model holds its weight average inside this block (``train.ema``), else its own weights."""
    if job.ema is None:
        return _nullcontext()
    return job.ema.applied(job.accelerator.unwrap_model(job.model))


def save_model_folder(job: Job, folder: Path) -> None:
    """Save a plain Hugging Face model (adapters merged) plus tokenizer, atomically."""
    import os
    import shutil

    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model = job.accelerator.unwrap_model(job.model)
    export_model(model).save_pretrained(tmp, safe_serialization=True)
    job.tokenizer.save_pretrained(tmp)
    if is_peft(model):
        import warnings

        with warnings.catch_warnings():
            # AdaLoRA prunes some matrices to rank 0 on purpose; peft mistakes that for unsaved shards.
            warnings.filterwarnings("ignore", message=".*have invalid shape.*")
            model.save_pretrained(tmp / "adapter", safe_serialization=True)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def cleanup(job: Job, state: TrainState) -> None:
    """Save the final model, evaluate the best one on validation and test, write the report."""
    if not job.accelerator.is_main_process:
        return
    run = job.run
    with _averaged(job):
        save_model_folder(job, run.model)
    which = "best" if (run.best / "config.json").is_file() else "model"
    results, predictions = evaluate_splits(job, run.model_dir(which))
    write_results(job, state, which, results, predictions)


def evaluate_splits(job: Job, folder: Path) -> tuple[dict, list[dict]]:
    """Metrics per split (validation, test) and prediction rows of the model saved in ``folder``."""
    from lmforge.inference.evaluate import evaluate_saved

    results, predictions = {}, []
    for split in ("validation", "test"):
        if job.features[split]:
            result = evaluate_saved(
                folder,
                job.task,
                job.data.labels,
                job.features[split],
                getattr(job.data, split),
                2 * job.config.train.batch_size,
                meta={"head": job.task.head, "model": job.info},
            )
            results[split] = result.metrics
            predictions += [{"split": split, **row} for row in result.predictions]
    return results, predictions


def write_results(job: Job, state: TrainState, which: str, results: dict, predictions: list[dict]) -> None:
    """The end of a run: ``final`` metrics lines, ``eval_results.json``, ``predictions.jsonl``, the
    finished ``lmforge.json`` and ``report.html``."""
    from lmforge.tracking.report import write_report
    from lmforge.tracking.run_folder import write_atomic, write_predictions

    run = job.run
    with open(run.metrics, "a", encoding="utf-8") as handle:
        for split, metrics in results.items():
            scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            handle.write(
                json.dumps({"kind": "final", "split": split, "checkpoint": which, "step": state.step, **scalars}) + "\n"
            )
    write_atomic(run.results, json.dumps(results, indent=1, ensure_ascii=False))
    write_predictions(run.predictions, predictions)
    tracker = job.tracker
    run.write_meta(
        _meta(
            job,
            finished=True,
            extra={
                "best": {
                    "metric": tracker.metric,
                    "value": tracker.best,
                    "step": tracker.best_step,
                    "checkpoint": which,
                },
                "training": {
                    "steps": state.step,
                    "epochs_completed": state.epoch,
                    "wall_time_s": round(state.elapsed_s, 2),
                    "stopped_early": state.stopped_early,
                    "examples_seen": state.examples_seen,
                },
                "results": {
                    split: {k: v for k, v in m.items() if isinstance(v, (int, float))} for split, m in results.items()
                },
            },
        )
    )
    write_report(run.path)
    for split, metrics in results.items():
        shown = [k for k in ("accuracy", "f1", "macro_f1", "perplexity") if isinstance(metrics.get(k), (int, float))]
        log.info("%s (%s model): %s", split, which, ", ".join(f"{k} {metrics[k]:.4f}" for k in shown))

"""The training loop: plain PyTorch over Accelerate -- accumulation, clipping, evaluation and early
stopping, checkpoints, resume, EMA, SIGTERM -- from a ready ``Job`` (``job.py``) to its last step."""

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate.utils import DistributedType

from lmforge.data.batching import epoch_batches
from lmforge.errors import RunFolderError, TrainingError
from lmforge.tracking.metrics_log import STOPPED_ROW
from lmforge.training.adversarial import make_adversary, training_extras
from lmforge.training.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    verify_checkpoint,
)
from lmforge.training.distributed import from_main, mean_over_processes, sums_over_processes
from lmforge.training.ema import WeightAverage
from lmforge.training.job import Job, TrainState, open_metrics
from lmforge.training.precision import full_precision
from lmforge.training.progress import Progress
from lmforge.training.rdrop import training_loss
from lmforge.training.saving import averaged, save_model_folder
from lmforge.training.signals import StopRequest
from lmforge.tuning import after_optimizer_step, export_model, folds_in, is_peft

log = logging.getLogger("lmforge")

# (step, validation metrics, final): final is True at the run's last evaluation (its end, or early
# stopping), whose metrics are the run's result.
OnEvaluation = Callable[[int, dict, bool], None]


# -- train --------------------------------------------------------------------------------------
def run_loop(job: Job, stop: StopRequest, quiet: bool, on_evaluation: OnEvaluation | None = None) -> TrainState:
    """Train ``job`` to its end (or a stop request); ``on_evaluation(step, metrics, final)`` is called
    after each validation (a search's pruner listens there, and may stop the run by raising)."""
    cfg, acc, tracker = job.config.train, job.accelerator, job.tracker
    assert acc is not None and tracker is not None, "setup() prepares the accelerator and the tracker"
    state = _resume(job) if job.config.resume else TrainState()
    if state.early:
        tracker.load_state_dict(state.early)
    metrics = open_metrics(job, state.step if job.config.resume else None) if acc.is_main_process else None
    if metrics and not job.config.resume:
        metrics.write(
            {
                "kind": "start",
                "step": 0,
                "examples": len(job.features["train"]),
                "steps": job.total_steps,
                "parameters": job.info["parameters"],
                **training_extras(cfg),
            }
        )
    if job.augmenter is not None:
        _augmented_epoch(job, state.epoch, state.step, metrics)
    lengths = [len(f["input_ids"]) for f in job.features["train"]]
    progress = Progress(job.total_steps, state.step, disabled=quiet or not acc.is_main_process)
    loop = _Loop(job, state, metrics, progress, stop, on_evaluation)
    try:
        while state.epoch < cfg.epochs and not loop.finished:
            if job.augmenter is not None and job.features_epoch != state.epoch:
                _augmented_epoch(job, state.epoch, state.step, metrics)
                lengths = [len(f["input_ids"]) for f in job.features["train"]]
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
        if stop.requested:
            metrics.write({"kind": STOPPED_ROW, "step": state.step, "signal": stop.requested})
        metrics.close()
        if stop.requested:
            job.trackers.finish(None, exit_code=1)  # a resumed run continues the same tracked run
    return state


def _augmented_epoch(job: Job, epoch: int, step: int, metrics) -> None:
    """``data.augment``: this epoch's training features (the originals and their new copies),
    logged and counted in metrics.jsonl."""
    assert job.augmenter is not None, "called only under data.augment"
    if job.features_epoch != epoch:
        examples, stats = job.augmenter.epoch(epoch)
        log.info(stats.line(epoch, len(job.data.train)))
        job.features["train"] = job.task.encode(job.tokenizer, examples, job.config.data.max_length)
        job.features_epoch = epoch
    else:
        stats = job.augmenter.last_stats
    if metrics:
        metrics.write(
            {
                "kind": "augment",
                "step": step,
                "epoch": epoch,
                "examples": len(job.features["train"]),
                "made": dict(stats.made),
                "changed": dict(stats.changed),
            }
        )


def _resume(job: Job) -> TrainState:
    found = list_checkpoints(job.run.checkpoints)
    if not found:
        log.warning("resume=true but %s has no complete checkpoint: starting from the beginning", job.run.checkpoints)
        return TrainState()
    acc = job.accelerator
    assert acc is not None, "setup() creates the accelerator"
    skipped = []
    for folder in reversed(found):  # the newest that verifies and loads
        why = verify_checkpoint(folder)
        if why is None:
            try:
                saved = _load(job, folder)
                break
            except RunFolderError as exc:
                why = str(exc)
        log.warning("warning: checkpoint %s cannot be used (%s): trying an older one", folder.name, why)
        skipped.append(folder.name)
    else:
        raise RunFolderError(
            f"cannot resume {job.run.path}: none of its checkpoints verifies ({', '.join(skipped)}); "
            "start again with overwrite=true"
        )
    log.info("resuming from %s (epoch %d, step %d)", folder.name, saved["epoch"], saved["step"])
    state = TrainState(**saved)
    _check_batches(state, job.config.train.batch_size, acc.num_processes)
    return state


def _load(job: Job, folder: Path) -> dict:
    acc, ema_decay = job.accelerator, job.config.train.ema
    assert acc is not None, "setup() creates the accelerator"
    saved = load_checkpoint(folder, acc.unwrap_model(job.model), job.optimizer, job.scheduler)
    if job.ema is not None:
        assert ema_decay is not None, "a weight average exists only under train.ema"
        job.ema = WeightAverage(acc.unwrap_model(job.model), ema_decay)
        try:
            job.ema.load(folder)
        except (OSError, ValueError) as exc:
            raise RunFolderError(f"{folder}: cannot resume the weight average ({str(exc).splitlines()[0]})") from None
    return saved


def frozen_source(job: Job) -> str | None:
    """Where a pretrained model's frozen weights come from, when it has any (LoRA and the other
    adapters, ``tuning.method: freeze``): its checkpoints leave them out (``save_checkpoint``). None
    for a model made from scratch (its weights come from the seed, not a folder), a fully trained one,
    and a model sharded by FSDP or DeepSpeed (whose state dicts gather weights their own way)."""
    source = job.info.get("source")
    if source in (None, "scratch") or job.config.distributed.strategy != "ddp":
        return None
    assert job.accelerator is not None, "setup() creates the accelerator"
    if all(p.requires_grad for p in job.accelerator.unwrap_model(job.model).parameters()):
        return None
    return str(job.info.get("source_path") or source)


def _check_batches(state: TrainState, batch_size: int, processes: int) -> None:
    """A checkpoint taken with N processes resumes with M when each step still takes the same
    examples: train.batch_size x processes must be what it was."""
    now = batch_size * processes
    if state.micro_batch and state.micro_batch != now:
        raise RunFolderError(
            f"cannot resume: the checkpoint was taken with {state.micro_batch} examples per batch over all "
            f"processes, and train.batch_size {batch_size} x {processes} process(es) is {now}: set "
            f"train.batch_size so that train.batch_size x processes is {state.micro_batch} again"
        )


class _Loop:
    """The inner loop and the things it does at step boundaries."""

    def __init__(self, job: Job, state: TrainState, metrics, progress, stop, on_evaluation=None):
        self.job, self.state, self.metrics, self.progress, self.stop = job, state, metrics, progress, stop
        self.on_evaluation = on_evaluation
        self.cfg = job.config.train
        # ``setup`` prepared these for every job that reaches the loop (one-pass jobs never do).
        assert job.accelerator is not None and job.optimizer is not None and job.scheduler is not None
        assert job.tracker is not None
        self.acc, self.optimizer, self.scheduler = job.accelerator, job.optimizer, job.scheduler
        self.tracker = job.tracker
        self.finished = state.stopped_early or (
            job.config.train.max_steps is not None and state.step >= job.total_steps
        )
        self.saved_at_stop = False
        self.last_eval_step = state.step if job.config.resume else -1
        self.window_loss, self.window_n, self.window_examples = 0.0, 0, 0
        self.window_start = time.perf_counter()
        self.last_grad_norm: float | None = None
        # DeepSpeed's engine divides each loss by the accumulation steps itself
        self.loss_scale = self.cfg.grad_accum if self.acc.distributed_type == DistributedType.DEEPSPEED else 1
        # The task's loss, or R-Drop's (train.rdrop); train.adversarial adds passes on perturbed embeddings.
        self.loss_of = training_loss(job.task, self.cfg.rdrop)
        self.adversary = make_adversary(job, self.acc)
        self.clean_weight = self.adversary.clean_weight if self.adversary else 1.0

    def run_epoch(self, batches: list[list[int]]) -> None:
        job, state, cfg, acc = self.job, self.state, self.cfg, self.acc
        features = job.features["train"]
        job.model.train()
        position = state.batch_in_epoch
        while position < len(batches) and not self.finished:
            group = batches[position : position + cfg.grad_accum]
            rng_at_start = rng_state()
            # Each micro batch's mean loss is weighted by its units (examples, or scored tokens)
            # over the units of the whole global batch, on every process: accumulated and
            # data-parallel steps then take the gradient one big batch would.
            micro = [job.task.collate([features[j] for j in idx], job.tokenizer) for idx in group]
            units = [job.task.loss_units(batch) for batch in micro]
            # the stop request travels with the units: every process stops after the same step (a
            # signal reaches the processes at slightly different times; one that stopped alone
            # would leave the others waiting in an all-reduce of a process that has gone)
            total, stopping = sums_over_processes(acc, [sum(units), int(self.stop.requested is not None)])
            scale = acc.num_processes * self.loss_scale / max(total, 1)
            for i, (idx, batch) in enumerate(zip(group, micro)):
                batch = {k: v.to(acc.device) for k, v in batch.items()}
                sync = i == len(group) - 1
                with acc.no_sync(job.model) if not sync and acc.num_processes > 1 else nullcontext():
                    with self.adversary.watching() if self.adversary else nullcontext():
                        with acc.autocast():
                            loss = self.loss_of(job.model, dict(batch))
                        if job.continual is not None:  # ewc, l2sp: a penalty, weighed 1 per global batch
                            loss = loss + job.continual.penalty() / self.clean_weight
                        if not torch.isfinite(loss):
                            self._non_finite(loss, rng_at_start)
                        acc.backward(loss * (units[i] * scale * self.clean_weight))
                    if self.adversary is not None:
                        perturbed = self.adversary.backward(job.model, batch, units[i] * scale)
                        if not torch.isfinite(perturbed):
                            self._non_finite(perturbed, rng_at_start)
                self.window_loss += loss.item() * units[i]
                self.window_n += units[i]
                self.window_examples += len(idx) * acc.num_processes
            self._optimizer_step()
            position += len(group)
            state.batch_in_epoch = position
            state.examples_seen += sum(len(idx) for idx in group) * acc.num_processes
            self._after_step()
            # one process stops as soon as it is asked; several stop after the step where they agreed
            if stopping or (acc.num_processes == 1 and self.stop.requested):
                self.stop.requested = self.stop.requested or "SIGTERM"
                self.save(rng=None)
                self.saved_at_stop = True
                return

    def _optimizer_step(self) -> None:
        job, acc = self.job, self.acc
        if job.embedding_rows is not None:
            job.embedding_rows.reduce()
        if self.cfg.max_grad_norm is not None:
            norm = acc.clip_grad_norm_(job.model.parameters(), self.cfg.max_grad_norm)
            self.last_grad_norm = float(norm)
        self.optimizer.step()
        after_optimizer_step(acc.unwrap_model(job.model), self.state.step + 1)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if job.ema is not None:
            job.ema.update(acc.unwrap_model(job.model))
        self.state.step += 1

    def _after_step(self) -> None:
        state, cfg = self.state, self.cfg
        if state.step % cfg.log_every == 0 or state.step == self.job.total_steps:
            self._log_train()
        self.progress.update(state.step, self.scheduler.get_last_lr()[0])
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
            "loss": mean_over_processes(self.acc, self.window_loss, self.window_n),
            "lr": self.scheduler.get_last_lr()[0],
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
        job, state, tracker = self.job, self.state, self.tracker
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
            value = scalars.get(tracker.metric)
            if tracker.update(value, state.step):
                self._save_best()
            if self.on_evaluation is not None:
                final = state.step >= job.total_steps or tracker.should_stop
                self.on_evaluation(state.step, scalars, final)
            self.progress.note(f"{tracker.metric}={value:.4f}" if value is not None else "")
            if tracker.should_stop:
                log.info(
                    "early stopping at step %d: %s has not improved for %d evaluations (best %.4f at step %d)",
                    state.step,
                    tracker.metric,
                    tracker.patience,
                    tracker.best,
                    tracker.best_step,
                )
                state.stopped_early = True
                self.finished = True
            job.model.train()
        self.save(rng=None)
        self.window_start += time.perf_counter() - paused

    def _validation_scalars(self) -> dict:
        """Validation metrics of the model -- of its weight average under ``train.ema``, with the
        main metric of the weights themselves beside them as ``raw_<metric>``."""
        # Every row once: the main process evaluates, the others wait for its numbers. Sharded
        # weights (fsdp, deepspeed) need every process in each forward pass: all evaluate there.
        everyone = self.acc.num_processes == 1 or self.job.config.distributed.strategy != "ddp"
        return from_main(self.acc, self._evaluate_here() if everyone or self.acc.is_main_process else None)

    def _evaluate_here(self) -> dict:
        job = self.job
        model = self.acc.unwrap_model(job.model)
        # Every validation pass computes as `lmforge eval` of the saved model would on this device
        # (job.evaluation: the training precision where the device computes it natively, else fp32),
        # so the evaluation at the last step, in one process, of the weights as they are saved is the
        # saved model's: the end of the run reuses it when this step is the best. Adapters that fold
        # into the weights compute otherwise folded: the last step evaluates the folded copy the run
        # then saves (one validation pass at the end, not two).
        last = self.acc.num_processes == 1 and self.state.step >= job.total_steps
        fold = last and job.ema is None and folds_in(model)
        final = last and (fold or not is_peft(model))

        def scalars() -> dict:
            target = model
            if fold:
                target = export_model(model).eval()
            with full_precision(model), job.evaluation.autocast():
                result = job.task.evaluate(
                    target,
                    job.tokenizer,
                    job.features["validation"],
                    job.data.validation,
                    self._eval_batch(),
                    self.acc.device,
                    job.data.labels,
                )
            if fold:  # kept for saving, in the host's memory: an accelerator's goes back to training state
                job.exported = (self.state.step, target.to("cpu"))
            if final:  # under train.ema the last call is the averaged weights', the ones saved
                job.final_validation = (self.state.step, result)
            return {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}

        if job.ema is None:
            return scalars()
        metric = self.tracker.metric
        raw = scalars().get(metric)
        with job.ema.applied(model):
            averaged = scalars()
        if raw is not None:
            averaged[f"raw_{metric}"] = raw
        return averaged

    def _eval_batch(self) -> int:
        return self.cfg.eval_batch_size or 2 * self.cfg.batch_size

    def _save_best(self) -> None:
        if not self.acc.is_main_process:
            return
        with averaged(self.job):
            save_model_folder(self.job, self.job.run.best, self.state.step)

    def save(self, rng) -> None:
        job, state = self.job, self.state
        state.early = self.tracker.state_dict()
        state.micro_batch = self.cfg.batch_size * self.acc.num_processes
        if not self.acc.is_main_process:
            return
        folder = job.run.checkpoints / f"step-{state.step}"
        save_checkpoint(
            folder,
            self.acc.unwrap_model(job.model),
            self.optimizer,
            self.scheduler,
            state.__dict__.copy(),
            rng,
            extra=job.ema.save if job.ema is not None else None,
            # the last step's optimizer state: written only to be dropped when the run ends (0.2-1 s)
            optimizer_state=self.cfg.keep_optimizer or state.step < job.total_steps,
            frozen_from=frozen_source(job),
        )
        prune_checkpoints(job.run.checkpoints, self.cfg.keep_checkpoints)
        job.run.drop_previous()  # the new run can continue on its own: the run it overwrote goes

    def _non_finite(self, loss, rng_at_start) -> None:
        job = self.job
        # Parameters are still those of the last good step: checkpoint them, with the RNG as it
        # was when this step began, so the checkpoint resumes exactly before the bad batch.
        self.optimizer.zero_grad(set_to_none=True)
        self.save(rng=rng_at_start)
        raise TrainingError(
            f"non-finite loss ({loss.item()}) at step {self.state.step + 1}, epoch "
            f"{self.state.epoch + 1}; the last good state is in "
            f"{job.run.checkpoints}/step-{self.state.step}. Lower train.lr, set "
            f"train.max_grad_norm, or check the data"
        )

"""The SetFit recipe (Tunstall et al., 2022): setup (``job.py``) -> contrastive phase -> head fit ->
save -> evaluate the saved model -> report. ``tuning.method: setfit`` runs it instead of the loop.

1. Contrastive phase: pairs of the labelled examples (``tuning/setfit.py``'s ``make_pairs``:
   ``tuning.pair_iterations`` rounds, each pairing every example with one of its label and one of
   another), ``train.epochs`` passes over them in batches of ``train.batch_size`` pairs; the body
   learns to put same-label texts close (cosine 1) and different-label texts apart (cosine 0) in
   the space of its mean-pooled sentence embeddings, with AdamW at ``train.lr`` and the usual
   warm-up and decay.
2. Head: logistic regression (scikit-learn, L2, C = 1, as the paper) on the frozen, normalized
   embeddings of the labelled examples, copied into the model's linear head. A closed-form fit
   needs no learning rate or epochs of its own, and on a few dozen examples it converges exactly
   where a torch head trained with the job's fine-tuning rate would still be moving.

With ``tuning.label_templates: K``, K examples per label made from ``tuning.template`` and the
label's name ("This sentence is positive.") join the labelled examples in both phases (SetFit's
templated examples): the encoder's own sense of the label names anchors the few examples.

The model is saved as any run's (``model/``, a ``transformers`` folder), then every split is
evaluated from that folder, the path ``lmforge eval`` takes, so the run's reported predictions are
the saved model's. There are no checkpoints (the whole run takes a minute or two): ``resume=true``
runs it again, and a stop (SIGTERM) ends it without a model.
"""

import logging
import math
import random
import time

import torch

from lmforge.data.batching import inference_batches, pad_features
from lmforge.data.examples import TextExample
from lmforge.errors import ConfigError
from lmforge.models.mean_pooled import MeanPooledBertForSequenceClassification
from lmforge.tracking.metrics_log import STOPPED_ROW
from lmforge.training.distributed import world_size
from lmforge.training.finish import evaluate_splits, write_results
from lmforge.training.job import Job, TrainState, open_metrics
from lmforge.training.loop import OnEvaluation
from lmforge.training.optim import build_scheduler
from lmforge.training.progress import Progress
from lmforge.training.saving import save_model_folder
from lmforge.training.signals import StopRequest
from lmforge.tuning.setfit import make_pairs, pair_loss

log = logging.getLogger("lmforge")
HEAD_C = 1.0  # inverse L2 strength of the head (scikit-learn's default, which SetFit keeps)


def run_setfit(job: Job, stop: StopRequest, quiet: bool, on_evaluation: OnEvaluation | None = None) -> TrainState:
    """Train ``job`` by the SetFit recipe to a finished run folder (or a stop request)."""
    if world_size() > 1:
        raise ConfigError("tuning.method=setfit trains in one process; run it without --processes or torchrun")
    acc, cfg = job.accelerator, job.config.train
    assert acc is not None and job.optimizer is not None, "setup() prepares the accelerator and the optimizer"
    model = acc.unwrap_model(job.model)
    assert isinstance(model, MeanPooledBertForSequenceClassification), "tuning/setfit.py builds it"
    features = job.features["train"] + templated_features(job)
    pairs = make_pairs([f["label"] for f in features], job.config.tuning.pair_iterations, cfg.seed)
    per_epoch = math.ceil(len(pairs) / (cfg.batch_size * cfg.grad_accum))
    total = min(per_epoch * cfg.epochs, cfg.max_steps or per_epoch * cfg.epochs)
    scheduler = build_scheduler(job.optimizer, cfg.warmup, total, cfg.scheduler)
    # a resume runs the recipe again from its start: what an earlier, stopped run logged goes
    metrics = open_metrics(job, -1 if job.config.resume else None)
    metrics.write({"kind": "start", "step": 0, "examples": len(features), "pairs": len(pairs), "steps": total})
    _log_plan(job, pairs, len(features), total)
    state = TrainState()
    started = time.perf_counter()
    _contrastive(job, model, features, pairs, total, scheduler, metrics, stop, quiet, state)
    if stop.requested:
        metrics.write({"kind": STOPPED_ROW, "step": state.step, "signal": stop.requested})
        metrics.close()
        if job.trackers is not None:
            job.trackers.finish(None, exit_code=1)  # the tracked run ends as failed, not left running
        log.warning("stopped by %s at step %d: setfit keeps no checkpoints", stop.requested, state.step)
        return state
    accuracy = fit_head(model, features, job.tokenizer, cfg.seed, acc.device, cfg.eval_batch_size or 64)
    state.elapsed_s = round(time.perf_counter() - started, 3)
    log.info("setfit head: logistic regression on %d embeddings, training accuracy %.4f", len(features), accuracy)
    save_model_folder(job, job.run.model)
    _finish(job, state, metrics, on_evaluation)
    return state


def templated_features(job: Job) -> list[dict]:
    """``tuning.label_templates`` copies per label of ``tuning.template`` with the label's name
    ("This sentence is positive."), encoded as labelled examples: the label names' meaning, as the
    encoder already knows it, joins the few examples (SetFit's templated examples)."""
    tuning = job.config.tuning
    if not tuning.label_templates:
        return []
    assert job.data.labels is not None, "classification data has labels"
    examples = [
        TextExample(text=tuning.template.format(label=name), label=name, where="tuning.template", label_id=i)
        for i, name in enumerate(job.data.labels.names)
        for _ in range(tuning.label_templates)
    ]
    return job.task.encode(job.tokenizer, examples, job.config.data.max_length)


def _log_plan(job: Job, pairs: list, examples: int, total: int) -> None:
    cfg, tuning = job.config.train, job.config.tuning
    positive = sum(1 for *_, t in pairs if t > 0.5)
    templated = f" ({tuning.label_templates} templated per label)" if tuning.label_templates else ""
    log.info(
        "setfit: %d pairs (%d same label, %d different) from %d examples%s, %d round(s); %d step(s) of %d pair(s)",
        len(pairs),
        positive,
        len(pairs) - positive,
        examples,
        templated,
        tuning.pair_iterations,
        total,
        cfg.batch_size * cfg.grad_accum,
    )


def _finish(job: Job, state: TrainState, metrics, on_evaluation: OnEvaluation | None) -> None:
    """Evaluate every split from the saved ``model/`` (the path ``lmforge eval`` takes), then write
    the run's results, record and report."""
    results, predictions = evaluate_splits(job, job.run.model)
    tracker = job.tracker
    assert tracker is not None, "setup() creates the tracker"
    for split, result in results.items():
        scalars = {k: v for k, v in result.items() if isinstance(v, (int, float))}
        metrics.write({"kind": "eval", "split": split, "step": state.step, "epoch": state.epoch, **scalars})
        if split == "validation":
            tracker.update(scalars.get(tracker.metric), state.step)
            if on_evaluation is not None:
                on_evaluation(state.step, scalars, True)
    metrics.close()
    write_results(job, state, "model", results, predictions)


def _contrastive(
    job: Job, model, features, pairs, total: int, scheduler, metrics, stop, quiet: bool, state: TrainState
) -> None:
    """The contrastive phase: ``total`` optimizer steps over the pairs of ``features`` (an epoch is
    one pass over the pairs)."""
    acc, cfg, optimizer = job.accelerator, job.config.train, job.optimizer
    assert acc is not None and optimizer is not None
    pad = job.tokenizer.pad_token_id or 0
    progress = Progress(total, 0, disabled=quiet)
    window, count, window_start = 0.0, 0, time.perf_counter()
    model.train()
    try:
        while state.step < total and not stop.requested:
            order = pairs if state.epoch == 0 else _shuffled(pairs, cfg.seed + state.epoch)
            for start in range(0, len(order), cfg.batch_size * cfg.grad_accum):
                group = order[start : start + cfg.batch_size * cfg.grad_accum]
                for micro in range(0, len(group), cfg.batch_size):
                    chunk = group[micro : micro + cfg.batch_size]
                    left, right = (_batch([features[p[k]] for p in chunk], pad, acc.device) for k in (0, 1))
                    targets = torch.tensor([p[2] for p in chunk], device=acc.device)
                    with acc.autocast():
                        loss = pair_loss(model, left, right, targets)
                    acc.backward(loss * (len(chunk) / len(group)))
                    window, count = window + loss.item() * len(chunk), count + len(chunk)
                if cfg.max_grad_norm is not None:
                    acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.examples_seen += len(group)
                progress.update(state.step, scheduler.get_last_lr()[0])
                if state.step % cfg.log_every == 0 or state.step == total:
                    now = time.perf_counter()
                    metrics.write(
                        {
                            "kind": "train",
                            "step": state.step,
                            "epoch": round(state.epoch + (start + len(group)) / len(order), 4),
                            "loss": window / max(count, 1),
                            "lr": scheduler.get_last_lr()[0],
                            "examples_per_s": count / (now - window_start) if now > window_start else None,
                        }
                    )
                    window, count, window_start = 0.0, 0, now
                if state.step >= total or stop.requested:
                    break
            state.epoch += 1
    finally:
        progress.close()


def _shuffled(pairs: list, seed: int) -> list:
    order = list(pairs)
    random.Random(seed).shuffle(order)
    return order


def _batch(rows: list[dict], pad: int, device) -> dict:
    batch = pad_features(rows, pad)
    batch.pop("labels", None)
    return {k: v.to(device) for k, v in batch.items()}


@torch.inference_mode()
def embeddings(model: MeanPooledBertForSequenceClassification, features: list[dict], pad: int, device, batch_size: int):
    """(N, C) unit sentence embeddings of ``features``, in input order (eval mode: no dropout)."""
    model.eval()
    out = torch.zeros((len(features), model.config.hidden_size))
    for idx in inference_batches([len(f["input_ids"]) for f in features], batch_size):
        out[idx] = model.embed(**_batch([features[i] for i in idx], pad, device)).float().cpu()
    return out


def fit_head(
    model: MeanPooledBertForSequenceClassification, features: list[dict], tokenizer, seed: int, device, batch_size: int
) -> float:
    """Fit the logistic-regression head on the frozen embeddings of ``features`` and copy it into
    ``model.classifier``; the training accuracy. Two labels: scikit-learn's one weight vector w
    becomes the rows -w/2, +w/2 (the same probabilities under softmax)."""
    x = embeddings(model, features, tokenizer.pad_token_id or 0, device, batch_size).numpy()
    y = [f["label"] for f in features]
    from sklearn.linear_model import LogisticRegression  # 0.8 s to import: only where a SetFit head is fitted

    head = LogisticRegression(C=HEAD_C, max_iter=1000, random_state=seed).fit(x, y)
    weight = torch.zeros_like(model.classifier.weight)  # (labels, C)
    bias = torch.zeros_like(model.classifier.bias)  # (labels,)
    coef = torch.tensor(head.coef_, dtype=weight.dtype)
    intercept = torch.tensor(head.intercept_, dtype=bias.dtype)
    classes = [int(c) for c in head.classes_]
    if len(classes) == 2:
        coef, intercept = torch.cat([-coef / 2, coef / 2]), torch.cat([-intercept / 2, intercept / 2])
    with torch.no_grad():
        # a label without training examples keeps a zero row and a bias e^20 times below: never predicted
        bias.fill_(float(intercept.min()) - 20.0)
        weight[classes] = coef.to(weight.device)
        bias[classes] = intercept.to(bias.device)
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(bias)
    return float(head.score(x, y))

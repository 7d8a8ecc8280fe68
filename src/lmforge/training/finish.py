"""The end of a run: the final (or averaged) model saved, every split evaluated with the best
checkpoint, ``eval_results.json``, ``predictions.jsonl``, the finished run record and the report."""

import json
import logging
from pathlib import Path

from lmforge.inference.evaluate import evaluate_saved
from lmforge.tracking.report import write_report
from lmforge.tracking.run_folder import write_atomic, write_predictions
from lmforge.training.adversarial import training_extras
from lmforge.training.checkpoint import drop_optimizer_states
from lmforge.training.job import Job, TrainState, run_record
from lmforge.training.memory import peak_memory
from lmforge.training.saving import averaged, same_as, save_model_folder

log = logging.getLogger("lmforge")


# -- cleanup ------------------------------------------------------------------------------------
def cleanup(job: Job, state: TrainState) -> None:
    """Save the final model, evaluate the best one on validation and test, write the report."""
    assert job.accelerator is not None, "setup() creates the accelerator"
    if not job.accelerator.is_main_process:
        return
    run = job.run
    tracker = job.tracker
    if tracker is not None and tracker.best_step == state.step and (run.best / "config.json").is_file():
        same_as(run.best, run.model)  # best/ was saved from these weights at this step
    else:
        with averaged(job):
            save_model_folder(job, run.model, state.step)
    job.exported = None  # saved: the folded copy's memory goes back
    which = "best" if (run.best / "config.json").is_file() else "model"
    results, predictions = evaluate_splits(job, run.model_dir(which), final_validation(job, state, which))
    if job.continual is not None:  # every stage's validation set: this stage's row of the stage matrix
        job.continual.finish(run.model_dir(which), run_record(job, finished=False), run.path, job.data.validation)
    write_results(job, state, which, results, predictions)
    if not job.config.train.keep_optimizer:
        freed = drop_optimizer_states(run.checkpoints)
        if freed:
            log.info(
                "dropped the optimizer's state from the checkpoints (%.0f MB; train.keep_optimizer: true keeps it)",
                freed / 2**20,
            )


def final_validation(job: Job, state: TrainState, which: str):
    """The loop's evaluation of the last step (in ``job.evaluation``) when the ``best`` checkpoint holds
    exactly those weights: the validation result of the saved model without a second pass."""
    done = job.final_validation
    tracker = job.tracker
    if done is None or which != "best" or tracker is None:
        return None
    step, result = done
    return result if step == state.step == tracker.best_step else None


def evaluate_splits(job: Job, folder: Path, validation=None) -> tuple[dict, list[dict]]:
    """Metrics per split (validation, test) and prediction rows of the model saved in ``folder``;
    ``validation``: that split's EvalResult already computed on the same weights."""
    results, predictions = {}, []
    for split in ("validation", "test"):
        if job.features[split]:
            result = (
                validation
                if split == "validation" and validation is not None
                else evaluate_saved(
                    folder,
                    job.task,
                    job.data.labels,
                    job.features[split],
                    getattr(job.data, split),
                    job.config.train.eval_batch_size or 2 * job.config.train.batch_size,
                    run_record(job, finished=False),
                    device=job.config.device,
                    precision=job.evaluation.used,
                )
            )
            results[split] = result.metrics
            predictions += [{"split": split, **row} for row in result.predictions]
    return results, predictions


def write_results(job: Job, state: TrainState, which: str, results: dict, predictions: list[dict]) -> None:
    """The end of a run: ``final`` metrics lines, ``eval_results.json``, ``predictions.jsonl``, the
    finished ``lmforge.json`` and ``report.html``."""

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
    assert tracker is not None, "setup() creates the tracker"
    run.write_record(
        run_record(
            job,
            finished=True,
            best={"metric": tracker.metric, "value": tracker.best, "step": tracker.best_step, "checkpoint": which},
            training={
                "steps": state.step,
                "epochs_completed": state.epoch,
                "wall_time_s": round(state.elapsed_s, 2),
                "stopped_early": state.stopped_early,
                "examples_seen": state.examples_seen,
                "precision": job.precision,
                "eval_precision": {"used": job.evaluation.used, "reason": job.evaluation.reason},
                "batches": job.batches,
                **training_extras(job.config.train),
                **peak_memory(job.accelerator.device if job.accelerator is not None else None),
            },
            results={
                split: {k: v for k, v in m.items() if isinstance(v, (int, float))} for split, m in results.items()
            },
        )
    )
    run.drop_previous()  # an overwritten run, kept aside until now (a run with no checkpoint ends here)
    write_report(run.path)
    if job.trackers is not None:
        final = [{"kind": "final", "split": split, **metrics} for split, metrics in results.items()]
        for row in final:
            job.trackers.log(row)
        job.trackers.finish(run.model_dir(which))
    for split, metrics in results.items():
        shown = [k for k in ("accuracy", "f1", "macro_f1", "perplexity") if isinstance(metrics.get(k), (int, float))]
        log.info(
            "%s (%s model): %s",
            split,
            "best" if which == "best" else "final",
            ", ".join(f"{k} {metrics[k]:.4f}" for k in shown),
        )

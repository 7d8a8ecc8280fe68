"""The one-pass recipe: setup (done by ``recipe.setup``) -> fit -> save -> evaluate -> report, for
models that learn in one call over the data (``lmforge.models.one_pass``: the n-gram family).

There are no epochs, checkpoints or optimizer state, so there is nothing to resume: ``resume=true``
fits again. The run folder is the same as the PyTorch loop's -- ``config.yaml``, ``lmforge.json``,
``model/``, ``metrics.jsonl`` (one ``train`` line for the fit, one ``eval`` line per split and the
``final`` lines), ``eval_results.json``, ``predictions.jsonl`` and ``report.html`` -- and the
evaluation loads the saved ``model/`` back, the path ``lmforge eval`` takes.
"""

import logging
import time
from pathlib import Path
from typing import cast

from lmforge.config import config_to_dict
from lmforge.models.one_pass import OnePassModel
from lmforge.tracking.run_folder import replace_folder, staging_folder
from lmforge.training.finish import evaluate_splits, write_results
from lmforge.training.job import Job, TrainState, open_metrics, open_trackers, run_record, set_aside, write_task_files

log = logging.getLogger("lmforge")


def run_one_pass(job: Job) -> TrainState:
    run, train = job.run, job.data.train
    model = cast(OnePassModel, job.model)  # ``setup`` sends only one-pass models (is_one_pass) here
    if run.path.exists():
        # ``setup`` let through only an empty folder, overwrite=true or resume=true of the same
        # config; with nothing to resume, each of them starts afresh (the run before kept aside
        # until this one is written).
        set_aside(job)
    open_trackers(job)  # before anything is written (training/job.py's _prepare_folder)
    run.write_config(config_to_dict(job.config))
    write_task_files(job)
    run.write_record(run_record(job, finished=False))
    metrics = open_metrics(job, None)
    metrics.write({"kind": "start", "step": 0, "examples": len(train), "steps": 1})
    log.info("fitting %s (%s) on %d examples in one pass", job.info.get("family"), job.info.get("arch"), len(train))
    started = time.perf_counter()
    model.fit(job.task, job.data)
    elapsed = time.perf_counter() - started
    count = model.parameter_count()
    job.info["parameters"] = {"trainable": count, "total": count}
    metrics.write(
        {
            "kind": "train",
            "step": 1,
            "epoch": 1.0,
            "elapsed_s": round(elapsed, 3),
            "examples_per_s": len(train) / elapsed if elapsed > 0 else None,
        }
    )
    log.info("fitted in %.1f s: %s learned values", elapsed, f"{count:,}")
    save_atomic(model, run.model)
    results, predictions = evaluate_splits(job, run.model)
    for split, result in results.items():
        scalars = {k: v for k, v in result.items() if isinstance(v, (int, float))}
        metrics.write({"kind": "eval", "split": split, "step": 1, "epoch": 1.0, **scalars})
        if split == "validation":
            assert job.tracker is not None, "setup() creates the tracker"
            job.tracker.update(scalars.get(job.tracker.metric), 1)
    metrics.close()
    state = TrainState(step=1, epoch=1, examples_seen=len(train), elapsed_s=round(elapsed, 3))
    write_results(job, state, "model", results, predictions)
    return state


def save_atomic(model, folder: Path) -> None:
    """Save into a temporary folder, then rename it into place (a crash never leaves half a model)."""
    tmp = staging_folder(folder)
    model.save(tmp)
    replace_folder(tmp, folder)

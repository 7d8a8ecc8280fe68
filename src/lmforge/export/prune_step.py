"""Pruning a run's model end to end: load it with its training data, prune (``prune.py``), recover
(``recovery.py``), report the validation metrics at each stage, and write the result -- as a folder
(``prune_run``) or as a variant of the export pipeline (the ``prune`` step)."""

import json
import os
import shutil
import time
from pathlib import Path

from lmforge.errors import ConfigError, LmforgeError, ModelError
from lmforge.export.base import STEPS, ExportStep
from lmforge.export.prune import check_amount, magnitude_prune, prune_heads, sparsity
from lmforge.export.recovery import evaluate, load_run_data, loss_of, recover, sample_batches


# -- a run's model --------------------------------------------------------------------------------
def prune_model(
    job,
    amount: float,
    method: str = "magnitude",
    recover_steps: int = 0,
    recover_lr: float | None = None,
    score_batches: int = 32,
) -> dict:
    """Prune ``job.model`` (an ``export.recovery.RunData``) in place, optionally recover, and
    report the validation metrics before, after pruning and after recovery."""
    check_amount(amount, method)
    if recover_steps < 0:
        raise ConfigError(f"--recover-steps {recover_steps}: must be 0 or more")
    report = {"method": method, "amount": amount, "validation": {"before": evaluate(job)}}
    if method == "magnitude":
        result = magnitude_prune(job.model, amount)
    else:
        batches = list(sample_batches(job, score_batches))
        result = prune_heads(job.model, amount, batches, loss_of(job.task))
    report["validation"]["pruned"] = evaluate(job)
    if recover_steps:
        losses = recover(job, result.masks, recover_steps, recover_lr)
        report["recovery"] = {
            "steps": recover_steps,
            "lr": recover_lr or job.config.train.lr,
            "first_loss": losses[0],
            "last_loss": losses[-1],
        }
        report["validation"]["recovered"] = evaluate(job)
    params = dict(job.model.named_parameters())
    kept = all(bool((params[n][~m.to(params[n].device)] == 0).all()) for n, m in result.masks.items())
    report.update(
        {"sparsity": result.sparsity, "weight_sparsity": sparsity(job.model), "mask_kept": kept, **result.details}
    )
    return report


def prune_run(
    run_dir,
    output,
    amount: float,
    method: str = "magnitude",
    recover_steps: int = 0,
    checkpoint: str = "model",
    recover_lr: float | None = None,
    score_batches: int = 32,
) -> dict:
    """Prune a run's model and write a plain safetensors folder with ``lmforge_export.json``."""
    check_amount(amount, method)
    out = Path(output)
    if out.exists() and any(out.iterdir()):
        raise LmforgeError(f"{out}: output folder exists and is not empty")
    start = time.perf_counter()
    job = load_run_data(run_dir, checkpoint)
    report = {
        "run": str(run_dir),
        **prune_model(job, amount, method, recover_steps, recover_lr, score_batches),
        "seconds": round(time.perf_counter() - start, 1),
        "output": str(out),
    }
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    job.model.save_pretrained(tmp, safe_serialization=True)
    job.tokenizer.save_pretrained(tmp)
    (tmp / "lmforge_export.json").write_text(json.dumps(report, indent=1))
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return report


# -- the export pipeline's step -------------------------------------------------------------------
def check_prune(context) -> None:
    """Refuse a bad ``--prune`` before any step runs."""
    options = context.options
    check_amount(options["prune"], options.get("prune_method") or "magnitude")
    if (options.get("recover_steps") or 0) < 0:
        raise ConfigError(f"--recover-steps {options['recover_steps']}: must be 0 or more")
    if context.record.family != "transformer":
        raise ModelError(f"--prune: prunes transformer models; this run's model family is {context.record.family}")


def prune_step(current, context):
    """``--prune FRACTION``: the pruned (and recovered) model as a variant (a run folder)."""
    options = context.options
    method = options.get("prune_method") or "magnitude"
    job = load_run_data(current.folder, current.checkpoint)
    report = prune_model(job, options["prune"], method, options.get("recover_steps") or 0, options.get("recover_lr"))
    name = f"pruned {method} {options['prune']:g}" + (
        f" +{options['recover_steps']} steps" if options.get("recover_steps") else ""
    )
    variant, model_dir = context.new_variant(name, current.format, current, prune=report)
    job.model.save_pretrained(model_dir, safe_serialization=True)
    job.tokenizer.save_pretrained(model_dir)
    variant.notes = {"sparsity": round(report["sparsity"], 4), "mask_kept": report["mask_kept"]}
    return variant


def add_arguments(p) -> None:
    """The flags that ask for the prune step."""
    p.add_argument(
        "--prune",
        type=float,
        metavar="FRACTION",
        help="prune this fraction (e.g. 0.3) of the backbone's linear weights (--prune-method magnitude: "
        "one global threshold; embeddings, pooler and head kept) or of the attention heads (heads)",
    )
    p.add_argument(
        "--prune-method",
        choices=["magnitude", "heads"],
        default="magnitude",
        help="magnitude: unstructured, by |weight|; heads: whole heads by importance (Michel et al. 2019)",
    )
    p.add_argument(
        "--recover-steps",
        type=int,
        default=0,
        metavar="N",
        help="--prune: then fine-tune N steps on the run's training data, pruned weights held at zero",
    )
    p.add_argument("--recover-lr", type=float, help="--recover-steps: learning rate (default: the run's train.lr)")


STEPS.register(
    "prune",
    ExportStep("prune", 20, add_arguments, lambda o: o.get("prune") is not None, prune_step, check_prune),
)

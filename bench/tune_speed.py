"""Hyperparameter search: ``lmforge tune`` against the Hugging Face Trainer's
``hyperparameter_search`` (Optuna backend), the same search on the same rows, in one run.

Both sides search the same space with the same Optuna pieces and fine-tune the same bundled model
(MiniLM-L6, 22.7M parameters; the Hugging Face side loads the same local folder with
``AutoModelForSequenceClassification``) on the same seeded SST-2 training subset, and score every
evaluation on the full SST-2 dev set (872 sentences):

* space: ``train.lr`` log-uniform in [--lr-low, --lr-high], ``train.batch_size`` in {16, 32}; epochs
  fixed (--epochs); everything else at lmforge's defaults, which the baseline is given too (AdamW,
  weight decay 0.01, linear schedule with a 6% warm-up, gradient clipping at 1.0, seed 42);
* Optuna: ``TPESampler(seed=0)`` and ``MedianPruner(n_startup_trials=2)`` on both sides (what
  ``tune.sampler: tpe`` and ``tune.pruner: median`` make); the parameters are suggested in the same
  order, so the sampler proposes the same values to both until the trials' results differ;
* evaluation every K optimizer steps on both sides, K = half an epoch at batch size 16 (a whole
  epoch at 32), and at the end of training; each evaluation is reported to the pruner at its
  optimizer step. lmforge does this itself (``train.eval_every: K``); the baseline gets ``eval_strategy="steps"``,
  ``eval_steps=K``, a ``compute_metrics`` with accuracy as the objective, and a callback that also
  evaluates the last step;
* the baseline is a skilled user's strongest setting: dynamic padding (``DataCollatorWithPadding``),
  ``group_by_length=True``, the same ``max_length``, no checkpoints saved, ``model_init`` loading
  the model per trial, the pruner passed through ``hyperparameter_search(..., pruner=...)`` (its
  Optuna backend hands extra arguments to ``optuna.create_study``);
* the same number of torch threads (--threads, default: torch's) and the same device (--device,
  default cpu: lmforge's ``device``, the Trainer's ``use_cpu`` or its one visible GPU; on a GPU both
  train in fp32) on both sides.

Reported for each side: the wall time of the whole search (lmforge: the ``lmforge tune`` command,
start-up and ``report.html`` included; the baseline: tokenising, building the ``Trainer`` and
``hyperparameter_search``), the best dev accuracy among complete trials (on both sides the best of
a trial's evaluations, as reported to the pruner; the baseline's own objective, a trial's last
evaluation, is printed too), the trials pruned; and the dev accuracy of one ``lmforge train`` run
with the default config (lr 5e-5, batch 32, the same epochs), untuned. lmforge optimises
``tune.metric: accuracy``, the baseline's objective. The machine's load
(``uptime``) is printed before and after each side, since absolute times move with it.

    python bench/tune_speed.py --trials 2 --train-rows 200     # smoke run
    python bench/tune_speed.py                                 # 12 trials on 2,000 rows a side
    python bench/tune_speed.py --train-rows 400 --threads 1    # docs/benchmarks.md (2026-12-05): 40 min, shared 2 cores
    python bench/tune_speed.py --device cuda                   # both sides on the GPU

The last line printed is ``ratio: X.XX`` = baseline wall time / lmforge wall time.
"""

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import optuna
import torch

from _common import (
    add_data_dir,
    add_device_arg,
    lmforge_device,
    resolve_device,
    run_and_report,
    select_rows,
)
from classification_throughput import read_tsv, write_tsv
from distributed_scaling import load

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/sst2"
HF_SIDE = "HF Trainer.hyperparameter_search (optuna)"
BATCH_SIZES = [16, 32]
DEFAULT_LR, DEFAULT_BATCH = 5e-5, 32  # lmforge's train.lr and train.batch_size defaults
SAMPLER_SEED, TRAIN_SEED = 0, 42  # tune.seed and train.seed defaults


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_dir(parser, DEFAULT_DATA, "SST-2 train.tsv and dev.tsv")
    add_device_arg(parser)
    parser.add_argument("--trials", type=int, default=12, help="trials a side (default: %(default)s)")
    parser.add_argument(
        "--train-rows", type=int, default=2000, help="training rows, seeded sample (default: %(default)s)"
    )
    parser.add_argument("--epochs", type=int, default=2, help="epochs of every trial (default: %(default)s)")
    parser.add_argument("--lr-low", type=float, default=1e-5, help="lower end of the lr range (default: %(default)s)")
    parser.add_argument("--lr-high", type=float, default=5e-4, help="upper end of the lr range (default: %(default)s)")
    parser.add_argument("--max-length", type=int, default=66, help="as examples/sst2.yaml (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads, both sides")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where the runs go (default: a temporary folder, removed at the end)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    parser.add_argument("--skip-hf", action="store_true", help="debugging: run lmforge only")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.train_rows < max(BATCH_SIZES):
        parser.error(f"--trials must be >= 1 and --train-rows >= {max(BATCH_SIZES)}")
    args.device, args.device_label = resolve_device(args.device)
    return args


def eval_steps(train_rows: int) -> int:
    """K: half an epoch at the smallest batch size, in optimizer steps. Every dev evaluation costs as
    much as training on a few hundred rows, so the larger batch evaluates once an epoch, not twice."""
    return math.ceil(math.ceil(train_rows / min(BATCH_SIZES)) / 2)


def study_figures(study: optuna.Study) -> dict:
    """Trials, states, values and times of a finished study, the same way for both sides."""
    states = optuna.trial.TrialState
    complete = study.get_trials(deepcopy=False, states=(states.COMPLETE,))
    trials = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "lr": t.params.get("train.lr"),
            "batch_size": t.params.get("train.batch_size"),
            "value": t.value,
            "best_eval": max(t.intermediate_values.values(), default=None),
            "evaluations": len(t.intermediate_values),
            "seconds": t.duration.total_seconds() if t.duration else None,
        }
        for t in study.get_trials(deepcopy=False)
    ]
    return {
        "trials": trials,
        "complete": len(complete),
        "pruned": len(study.get_trials(deepcopy=False, states=(states.PRUNED,))),
        "failed": len(study.get_trials(deepcopy=False, states=(states.FAIL,))),
        "best_objective": study.best_value if complete else None,
        "best_accuracy": max((t["best_eval"] for t in trials if t["state"] == "complete"), default=None),
    }


# -- lmforge ------------------------------------------------------------------------------------
def write_config(args, out: Path) -> Path:
    """The job with its tune: section; its output is the default-config run."""
    q = json.dumps  # JSON strings are YAML strings: paths with any character survive
    config = out / "sst2_tune.yaml"
    config.write_text(
        "task: classification\n"
        "data:\n"
        f"  train: {q(str(out / 'train.tsv'))}\n"
        f"  validation: {{path: {q(str(args.data_dir / 'dev.tsv'))}, fields: {{text: content, label: label}}}}\n"
        "  fields: {text: sentence, label: label}\n"
        "  label_names: [negative, positive]\n"
        f"  max_length: {args.max_length}\n"
        "model: minilm\n"
        f"train: {{epochs: {args.epochs}, eval_every: {eval_steps(args.train_rows)}, threads: {args.threads}}}\n"
        f"output: {q(str(out / 'default'))}\n"
        "tune:\n"
        f"  space: {{train.lr: {{low: {args.lr_low:.3e}, high: {args.lr_high:.3e}, log: true}}, "
        f"train.batch_size: {BATCH_SIZES}}}\n"
        "  metric: accuracy\n"  # the baseline's objective (lmforge's default is macro_f1)
        "  sampler: tpe\n"
        "  pruner: median\n"
        f"  seed: {SAMPLER_SEED}\n"
        f"  output: {q(str(out / 'study'))}\n",
        encoding="utf-8",
    )
    return config


def lmforge(*argv: str) -> tuple[float, str, str]:
    """Run ``lmforge ARGV``; its wall time and the load before and after."""
    before = load()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lmforge", *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: lmforge {' '.join(argv)} failed:\n{done.stderr.strip()[-3000:]}")
    return seconds, before, load()


def run_default(args, config: Path, out: Path) -> dict:
    seconds, before, after = lmforge("train", str(config), *lmforge_device(args.device), "overwrite=true", "--quiet")
    meta = json.loads((out / "default" / "lmforge.json").read_text(encoding="utf-8"))
    return {
        "wall_s": seconds,
        "accuracy": meta["results"]["validation"]["accuracy"],
        "load_before": before,
        "load_after": after,
    }


def run_lmforge(args, config: Path, out: Path) -> dict:
    seconds, before, after = lmforge(
        "tune", str(config), *lmforge_device(args.device), "--trials", str(args.trials), "--quiet"
    )
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{out / 'study' / 'study.db'}")
    return {"wall_s": seconds, "load_before": before, "load_after": after, **study_figures(study)}


# -- Hugging Face Trainer baseline --------------------------------------------------------------
def run_hf(args, train_rows, dev_rows, out: Path) -> dict:
    import numpy as np
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback

    from lmforge.models.bundled import bundled_path

    class EvaluateLastStep(TrainerCallback):
        """``eval_strategy="steps"`` skips the last step unless K divides it; lmforge evaluates it."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_evaluate = True

    def model_init():
        return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)

    def hp_space(trial):  # the same names and order as lmforge's tune.space
        return {
            "learning_rate": trial.suggest_float("train.lr", args.lr_low, args.lr_high, log=True),
            "per_device_train_batch_size": trial.suggest_categorical("train.batch_size", BATCH_SIZES),
        }

    def accuracy(prediction) -> dict:
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # the "classifier newly initialised" note, per trial
    transformers.logging.disable_progress_bar()  # "Loading weights", per trial
    before = load()
    start = time.perf_counter()
    folder = bundled_path("minilm")
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def encode(rows):
        enc = tokenizer([text for _, text in rows], truncation=True, max_length=args.max_length)
        return [{**{k: v[i] for k, v in enc.items()}, "labels": label} for i, (label, _) in enumerate(rows)]

    # transformers 5 folds warmup_ratio into warmup_steps (a float < 1 is a fraction).
    fields = TrainingArguments.__dataclass_fields__
    warmup = "warmup_ratio" if "warmup_ratio" in fields else "warmup_steps"
    # transformers 5 renamed group_by_length=True to train_sampling_strategy="group_by_length".
    grouping = (
        {"train_sampling_strategy": "group_by_length"}
        if "train_sampling_strategy" in fields
        else {"group_by_length": True}
    )
    training_args = TrainingArguments(
        output_dir=str(out / "hf"),
        num_train_epochs=args.epochs,
        learning_rate=DEFAULT_LR,
        per_device_train_batch_size=DEFAULT_BATCH,
        per_device_eval_batch_size=2 * DEFAULT_BATCH,
        weight_decay=0.01,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        seed=TRAIN_SEED,
        eval_strategy="steps",
        eval_steps=eval_steps(args.train_rows),
        save_strategy="no",
        report_to=[],
        logging_steps=10**9,
        disable_tqdm=True,
        use_cpu=args.device == "cpu",
        dataloader_num_workers=0,
        **{warmup: 0.06},
        **grouping,
    )
    trainer = Trainer(
        model_init=model_init,
        args=training_args,
        train_dataset=encode(train_rows),
        eval_dataset=encode(dev_rows),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
        callbacks=[EvaluateLastStep()],
    )
    trainer.remove_callback(PrinterCallback)
    storage = optuna.storages.InMemoryStorage()  # to read the trials back afterwards
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trainer.hyperparameter_search(
        hp_space=hp_space,
        compute_objective=lambda metrics: metrics["eval_accuracy"],
        n_trials=args.trials,
        direction="maximize",
        backend="optuna",
        sampler=optuna.samplers.TPESampler(seed=SAMPLER_SEED),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        storage=storage,
        study_name="hf",
    )
    seconds = time.perf_counter() - start
    study = optuna.load_study(study_name="hf", storage=storage)
    return {"wall_s": seconds, "load_before": before, "load_after": load(), **study_figures(study)}


# -- report -------------------------------------------------------------------------------------
def _pct(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, float) else "-"


def report(results: dict) -> list[str]:
    lines = [
        "| side | wall time, all trials | best dev accuracy | trials complete / pruned / failed |",
        "|---|---:|---:|---:|",
    ]
    for name in ("lmforge tune", HF_SIDE):
        if name in results:
            r = results[name]
            lines.append(
                f"| {name} | {r['wall_s']:.0f} s | {_pct(r['best_accuracy'])} | "
                f"{r['complete']} / {r['pruned']} / {r['failed']} |"
            )
    d = results["default config"]
    lines.append(
        f"| lmforge train, default config (lr {DEFAULT_LR}, batch {DEFAULT_BATCH}) | {d['wall_s']:.0f} s | "
        f"{_pct(d['accuracy'])} | untuned |"
    )
    lines += [
        "",
        "| side | trial | lr | batch | state | evaluations | best evaluation | objective | seconds |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for name in ("lmforge tune", HF_SIDE):
        for t in results.get(name, {}).get("trials", []):
            lines.append(
                f"| {name.split()[0]} | {t['number']} | {t['lr']:.3g} | {t['batch_size']} | {t['state']} | "
                f"{t['evaluations']} | {_pct(t['best_eval'])} | {_pct(t['value'])} | {t['seconds'] or 0:.0f} |"
            )
    lines.append("")
    for name, r in results.items():
        lines.append(f"{name}: load average before {r['load_before']}, after {r['load_after']}")
    if HF_SIDE in results:
        lines.append(
            f"{HF_SIDE}: best objective (a trial's last evaluation) {_pct(results[HF_SIDE]['best_objective'])}"
        )
        return lines + [f"ratio: {tune_ratio(results):.2f}"]
    return lines + ["ratio: n/a (baseline skipped)"]


def tune_ratio(results: dict) -> float | None:
    if HF_SIDE not in results:
        return None
    return results[HF_SIDE]["wall_s"] / results["lmforge tune"]["wall_s"]


def run(args, out: Path) -> dict:
    train_rows = select_rows(read_tsv(args.data_dir / "train.tsv"), args.train_rows, TRAIN_SEED)
    dev_rows = read_tsv(args.data_dir / "dev.tsv")
    write_tsv(train_rows, out / "train.tsv", "sentence")
    config = write_config(args, out)
    print(f"command: python {shlex.join(sys.argv)}")
    print(
        f"SST-2: {len(train_rows):,} train rows, {len(dev_rows)} dev rows; minilm, {args.epochs} epochs, "
        f"lr log-uniform [{args.lr_low:g}, {args.lr_high:g}], batch {BATCH_SIZES}, evaluation every "
        f"{eval_steps(args.train_rows)} steps; {args.trials} trials a side; device {args.device_label}, "
        f"{args.threads} torch threads; {os.cpu_count()} cores; load {load()}",
        flush=True,
    )
    device = " ".join(lmforge_device(args.device))
    print(f"lmforge: lmforge train {config} {device}; lmforge tune {config} {device} --trials {args.trials}")
    results = {"default config": run_default(args, config, out)}
    print(f"default config done: {results['default config']['wall_s']:.0f} s", flush=True)
    results["lmforge tune"] = run_lmforge(args, config, out)
    print(f"lmforge tune done: {results['lmforge tune']['wall_s']:.0f} s", flush=True)
    if not args.skip_hf:
        results[HF_SIDE] = run_hf(args, train_rows, dev_rows, out)
        print(f"HF done: {results[HF_SIDE]['wall_s']:.0f} s", flush=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    return {"settings": settings, "results": results}


def main(argv=None) -> int:
    return run_and_report(parse_args(argv), "SST-2", ("train.tsv", "dev.tsv"), run, report, tune_ratio)


if __name__ == "__main__":
    sys.exit(main())

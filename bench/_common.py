"""What every benchmark script shares: seeded row selection, the baseline's ``TrainingArguments``,
the headline ratio, and the run-then-report main routine."""

import json
import random
import sys
import tempfile
from pathlib import Path

import torch

HF_NAME = "HF Trainer (padding=max_length)"


def add_training_args(parser, lr: float, batch_size: int) -> None:
    """The hyperparameters both sides share, and the output options, of every benchmark."""
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--warmup", type=float, default=0.06, help="warm-up fraction of the steps")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where the runs go (default: a temporary folder, removed at the end)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    parser.add_argument("--skip-hf", action="store_true", help="debugging: run lmforge only")


def select_rows(rows: list, n: int | None, seed: int) -> list:
    """The first ``n`` rows (all if None) after a seeded shuffle."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:n] if n is not None else rows


def training_arguments(args, out: Path):
    """The baseline's settings: the same optimisation as lmforge, every other Trainer default."""
    from transformers import TrainingArguments

    # transformers 5 folds warmup_ratio into warmup_steps (a float < 1 is a fraction).
    warmup = (
        {"warmup_ratio": args.warmup}
        if "warmup_ratio" in TrainingArguments.__dataclass_fields__
        else {"warmup_steps": args.warmup}
    )
    return TrainingArguments(
        output_dir=str(out),
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        weight_decay=args.weight_decay,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        seed=args.seed,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10**9,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        **warmup,
    )


def ratio(results: dict, key: str = "samples_per_s", baseline: str = HF_NAME) -> float | None:
    """lmforge's ``key`` (samples/s by default) / the baseline's."""
    if baseline not in results:
        return None
    return results["lmforge"][key] / results[baseline][key]


def run_and_report(args, what: str, files: tuple[str, ...], run, report, ratio_of=ratio) -> int:
    """Check the data, run in ``--output-dir`` (or a temporary folder), write ``--json``, print the
    report; its last line is ``ratio: X``."""
    missing = [name for name in files if not (args.data_dir / name).is_file()]
    if missing:
        print(
            f"error: {what} data not found: {args.data_dir} has no {' or '.join(missing)} "
            f"(give the folder with --data-dir)",
            file=sys.stderr,
        )
        return 2
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        summary = run(args, args.output_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
            summary = run(args, Path(tmp))
    summary["ratio"] = ratio_of(summary["results"])
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print("\n".join(report(summary["results"])))
    return 0

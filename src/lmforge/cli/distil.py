"""``lmforge distil TEACHER --student CONFIG [key=value ...]``: a smaller student taught by a
classification run, beside the same student trained on labels alone."""

import argparse
import sys

from lmforge.cli.common import config_overrides
from lmforge.config import load_config
from lmforge.training.distil import distil

METRICS = ("accuracy", "macro_f1")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("teacher", help="a fine-tuned classification run folder (the teacher)")
    # nargs="+": the overrides follow the config, as in `lmforge distil RUN --student CONFIG k=v ...`
    p.add_argument(
        "--student",
        required=True,
        nargs="+",
        metavar=("CONFIG", "KEY=VALUE"),
        help="the student's YAML config (data, model, training; distil.*), then its overrides",
    )
    p.add_argument(
        "--no-baseline", action="store_true", help="do not also train the same student on labels alone (the comparison)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoints")
    p.add_argument("--overwrite", action="store_true", help="replace different runs in the output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")


def run(args: argparse.Namespace) -> int:
    path, args.overrides = args.student[0], args.student[1:]
    config = load_config(path, config_overrides(args))
    outcome = distil(args.teacher, config, quiet=args.quiet, baseline=not args.no_baseline)
    if outcome.stopped_by:
        print(
            f"stopped by {outcome.stopped_by}; continue with: lmforge distil {args.teacher} "
            f"--student {' '.join(args.student)} --resume",
            file=sys.stderr,
        )
        return 130 if outcome.stopped_by == "SIGINT" else 0
    report = outcome.report
    print(f"{'model':<14} {'parameters':>12} {'val accuracy':>13} {'val macro_f1':>13}")
    rows = [("teacher", report["teacher"])] + [(k, report[k]) for k in ("distilled", "labels_only") if k in report]
    for name, row in rows:
        val = row["results"].get("validation", {})
        cells = [f"{val[k]:>13.4f}" if isinstance(val.get(k), float) else f"{'-':>13}" for k in METRICS]
        print(f"{name:<14} {row.get('parameters') or 0:>12,} {' '.join(cells)}")
    print(f"report: {outcome.output / 'distillation.json'}")
    return 0

"""``lmforge runs [DIR]``: the run folders under DIR (default ``runs``) in one table: task, model,
tuning, status (done, running, stopped), steps, time and the validation metrics; ``--sort METRIC``
puts the best first, ``--json`` prints the rows for scripts."""

import argparse
from pathlib import Path

from lmforge.tracking.runs_table import as_json, list_runs, table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", default="runs", help="where the run folders are (default: runs)")
    p.add_argument("--sort", metavar="METRIC", help="best first by this metric (e.g. accuracy, f1, perplexity)")
    p.add_argument("--task", help="only runs of this task (classification, token_classification, causal_lm, ...)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(args: argparse.Namespace) -> int:
    root = Path(args.dir).expanduser()
    rows = list_runs(root, args.sort, args.task)
    if args.json:
        print(as_json(rows))
    elif not rows:
        print(f"no run folders under {root}")
    else:
        print(table(rows, args.sort))
    return 0

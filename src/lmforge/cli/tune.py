"""``lmforge tune CONFIG --trials N [--timeout S] [--jobs J]``: a hyperparameter search (Optuna) over
the config's ``tune.space``; each trial is a run folder in the study folder, the best config is
written as ``best.yaml``."""

import argparse
import sys

from lmforge.cli.common import OVERRIDES_HELP, config_overrides
from lmforge.errors import ConfigError
from lmforge.search.study import (
    STOPPED_EXIT,
    StudyStopped,
    ended,
    finish,
    open_study,
    prepare,
    retrain_best,
    run_trials,
    run_workers,
    shown,
    trials_table,
)
from lmforge.tracking.run_folder import RunFolder
from lmforge.training.signals import StopRequest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a train (or prompt) config with a tune: {space: ...} section")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--trials", type=int, default=20, help="trials the study should hold in all (default 20)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--jobs", type=int, default=1, help="run trials in J processes, the cores split between them")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="then train the best config on train + validation (STUDY/retrained), measured on data.test",
    )
    p.add_argument("--quiet", action="store_true", help="warnings only")
    # one of the --jobs J processes: INDEX:TRIALS (its sampler seed offset and its share of the trials)
    p.add_argument("--worker", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.trials < 1:
        raise ConfigError(f"--trials: {args.trials}; give 1 or more")
    if args.jobs < 1:
        raise ConfigError(f"--jobs: {args.jobs}; give 1 or more")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout: {args.timeout}; give a number of seconds above 0")
    overrides = config_overrides(args)
    search = prepare(args.config, overrides)  # every error a user can make, before any trial
    if args.worker:
        index, share = (int(part) for part in args.worker.split(":"))
        search.worker = index
        try:
            run_trials(search, args.trials, args.timeout, more=share)
        except StudyStopped:
            return STOPPED_EXIT
        return 0
    search.folder.mkdir(parents=True, exist_ok=True)
    study = open_study(search)
    done = ended(study)
    if done:
        print(f"study {search.folder}: {done} trial(s) already ended; running up to {args.trials} in all")
    stopped_by = None
    try:
        if args.jobs > 1:
            run_workers(search, [args.config, *overrides], args.trials, args.timeout, args.jobs)
        else:
            run_trials(search, args.trials, args.timeout, quiet=True)
    except StudyStopped as stop:
        stopped_by = stop.signal
    with StopRequest() as late:  # a stop now waits for the report: the study folder stays whole
        study = open_study(search)
        summary = finish(search, study)
        _print(study, summary, search, stopped=bool(stopped_by or late.requested))
    stopped_by = stopped_by or late.requested
    if stopped_by:
        print(
            f"stopped by {stopped_by} with {ended(study)} of {args.trials} trial(s) ended; the trial it cut "
            f"short does not count. Continue with the same command",
            file=sys.stderr,
        )
        return STOPPED_EXIT
    if args.retrain:
        folder = retrain_best(search, study, quiet=args.quiet)
        results = RunFolder(folder).read_record().results or {}
        shown_results = ", ".join(
            f"{split} {search.metric} {m[search.metric]:.4f}" for split, m in results.items() if search.metric in m
        )
        print(f"retrained on train + validation: {folder}" + (f" ({shown_results})" if shown_results else ""))
    return 0


def _print(study, summary: dict, search, stopped: bool) -> None:
    rows = trials_table(study)
    keys = [d.key for d in search.dims]
    table = [["trial", "state", search.metric, *keys]]
    for row in rows:
        value = f"{row['value']:.4f}" if isinstance(row["value"], float) else "-"
        table.append([str(row["trial"]), row["state"], value, *(shown(row[k]) if k in row else "-" for k in keys)])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:  # the state left-aligned, numbers to the right
        cells = [cell.ljust(w) if i == 1 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))]
        print("  ".join(cells).rstrip())
    counts = ", ".join(f"{n} {state}" for state, n in summary["trials"].items() if n)
    print(f"study: {summary['study']} ({counts})")
    if "best_trial" in summary:
        print(
            f"best: trial {summary['best_trial']}, validation {search.metric} {summary['best_value']:.4f}; "
            f"config: {search.folder / 'best.yaml'}\nreport: {search.folder / 'report.html'}"
        )
    elif not stopped:
        print("no trial completed: see the trials' run folders for why", file=sys.stderr)

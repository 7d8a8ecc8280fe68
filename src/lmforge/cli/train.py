"""``lmforge train CONFIG [key=value ...]``: fine-tune or pre-train a model into a run folder."""

import argparse
import os
import sys

from lmforge.cli.train_args import add_arguments, again, argv_again, overrides, parent
from lmforge.config import load_config
from lmforge.errors import ConfigError
from lmforge.runtime import LAUNCHED_ENV
from lmforge.training.launcher import launch, refuse_several, world_size
from lmforge.training.recipe import train

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, overrides(args))  # a bad config fails here, once
    processes = getattr(args, "processes", 1)
    if processes < 1:
        raise ConfigError(f"--processes: {processes}; give 1 or more")
    if processes > 1 or world_size() > 1:
        refuse_several(config)
    if processes > 1 and world_size() == 1:
        return launch(processes, argv_again(args))
    outcome = train(config, quiet=args.quiet)
    if not outcome.main:
        return 0
    if outcome.stopped_by:
        command = f"lmforge train {again(args.config, args.overrides + parent(args))}{_processes_flag()} resume=true"
        if outcome.checkpointed:
            print(
                f"stopped by {outcome.stopped_by}: checkpoint saved in {outcome.run.checkpoints}; continue with: {command}",
                file=sys.stderr,
            )
        else:  # tuning.method=setfit: no checkpoints, resume=true runs it again from its start
            print(
                f"stopped by {outcome.stopped_by}: no checkpoint (tuning.method={config.tuning.method} keeps none); start again with: {command}",
                file=sys.stderr,
            )
        # not finished, so not 0 (a script's `lmforge train && lmforge export` must not go on): 128 +
        # the signal, as a shell reports it, checkpointed or not, in one process or several
        return 130 if outcome.stopped_by == "SIGINT" else 143
    print(f"run folder: {outcome.run.path}\nreport: {outcome.run.report}")
    return 0


def _processes_flag() -> str:
    """`` --processes N`` when ``lmforge train --processes N`` started this process, else nothing."""
    launched = os.environ.get(LAUNCHED_ENV)
    return f" --processes {launched}" if launched else ""

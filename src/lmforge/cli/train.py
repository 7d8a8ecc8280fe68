"""``lmforge train CONFIG [key=value ...]``: fine-tune or pre-train a model into a run folder."""

import argparse
import shlex
import sys

from lmforge.cli.common import OVERRIDES_HELP, config_overrides
from lmforge.config import load_config
from lmforge.errors import ConfigError
from lmforge.training.distributed import launch, world_size
from lmforge.training.recipe import train


def add_arguments(p: argparse.ArgumentParser, config: bool = True) -> None:
    if config:
        p.add_argument("config", help="the job's YAML config")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a different run in the output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    if config:
        p.add_argument(
            "--processes",
            type=int,
            default=1,
            metavar="N",
            help="train data-parallel in N local processes (gloo on CPU, NCCL on GPU); the same as "
            "torchrun --standalone --nproc_per_node N -m lmforge train ...",
        )
        p.add_argument(
            "--from",
            dest="from_run",
            metavar="RUN",
            help="continue the finished run RUN on this config's data (continual learning; the same as "
            "continual.parent=RUN): its model, tokenizer and head, grown for new labels",
        )


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, _overrides(args))  # a bad config fails here, once
    processes = getattr(args, "processes", 1)
    if processes < 1:
        raise ConfigError(f"--processes: {processes}; give 1 or more")
    if processes > 1 and world_size() == 1:
        return launch(processes, _argv_again(args))
    outcome = train(config, quiet=args.quiet)
    if not outcome.main:
        return 0
    if outcome.stopped_by:
        print(
            f"stopped by {outcome.stopped_by}: checkpoint saved in {outcome.run.checkpoints}; "
            f"continue with: lmforge train {_again(args.config, args.overrides + _parent(args))} resume=true",
            file=sys.stderr,
        )
        return 130 if outcome.stopped_by == "SIGINT" else 0
    print(f"run folder: {outcome.run.path}\nreport: {outcome.run.report}")
    return 0


def _overrides(args: argparse.Namespace) -> list[str]:
    """The overrides, with ``--from RUN`` as ``continual.parent=RUN``."""
    return config_overrides(args) + _parent(args)


def _parent(args: argparse.Namespace) -> list[str]:
    parent = getattr(args, "from_run", None)
    return [f"continual.parent={parent}"] if parent else []


def _argv_again(args: argparse.Namespace) -> list[str]:
    """This command line without ``--processes``: what each launched process runs."""
    flags = [f"--{name}" for name in ("resume", "overwrite", "quiet") if getattr(args, name)]
    parent = ["--from", args.from_run] if getattr(args, "from_run", None) else []
    return ["train", args.config, *args.overrides, *flags, *parent]


def _again(config: str, overrides: list[str]) -> str:
    """The config and the overrides it ran with (not resume/overwrite), quoted for a shell: the
    same run again, e.g. to resume it into the same output folder."""
    kept = [o for o in overrides if not o.startswith(("resume=", "overwrite="))]
    return " ".join(shlex.quote(part) for part in [config, *kept])

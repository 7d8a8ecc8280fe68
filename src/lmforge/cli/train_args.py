"""The arguments of ``lmforge train`` and the command lines it derives from them, apart from the
training stack: ``train_launch.py`` (``--processes N``) uses them without importing it."""

import argparse
import shlex
from pathlib import Path

from lmforge.cli.common import OVERRIDES_HELP, config_overrides
from lmforge.errors import ConfigError


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


def overrides(args: argparse.Namespace) -> list[str]:
    """The overrides, with ``--from RUN`` as ``continual.parent=RUN``."""
    return config_overrides(args) + parent(args)


def parent(args: argparse.Namespace) -> list[str]:
    """``--from RUN`` as an override (it wins over the config file's ``continual.parent``); an
    override of ``continual.parent`` on the same command line that names another run is refused."""
    run = getattr(args, "from_run", None)
    if not run:
        return []
    for given in getattr(args, "overrides", None) or []:
        key, _, value = given.partition("=")
        named = value.strip().strip("'\"")
        if key.strip() == "continual.parent" and _folder(named) != _folder(run):
            raise ConfigError(f"--from {run} and {given}: two parents given; keep one")
    return [f"continual.parent={run}"]


def _folder(path: str) -> Path:
    """A folder as one place, however it is written (relative, with ./, a trailing / or ~)."""
    return Path(path).expanduser().resolve()


def argv_again(args: argparse.Namespace) -> list[str]:
    """This command line without ``--processes``: what each launched process runs."""
    flags = [f"--{name}" for name in ("resume", "overwrite", "quiet") if getattr(args, name)]
    parent = ["--from", args.from_run] if getattr(args, "from_run", None) else []
    return ["train", args.config, *args.overrides, *flags, *parent]


def again(config: str, overrides: list[str]) -> str:
    """The config and the overrides it ran with (not resume/overwrite), quoted for a shell: the
    same run again, e.g. to resume it into the same output folder."""
    kept = [o for o in overrides if not o.startswith(("resume=", "overwrite="))]
    return " ".join(shlex.quote(part) for part in [config, *kept])

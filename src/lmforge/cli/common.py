"""Arguments and helpers several commands share: config overrides, run folders, NER decoding options."""

import argparse
import math
from pathlib import Path

from lmforge.config.schema import Fields
from lmforge.errors import DataError

OVERRIDES_HELP = "config overrides, e.g. train.lr=3e-5 tuning.method=lora"
CHECKPOINTS = ("auto", "best", "model")
DEVICE_HELP = "auto | cpu | cuda | cuda:N"
COMBINE_HELP = (
    "how --ensemble members combine: mean (average their probabilities; default) or "
    "vote (NER: keep the entity spans more than half the members predict; classification: "
    "the label most members choose)"
)


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The command's ``key=value`` overrides, with ``--resume`` / ``--overwrite`` as overrides too."""
    extra = list(args.overrides)
    if getattr(args, "resume", False):
        extra.append("resume=true")
    if getattr(args, "overwrite", False):
        extra.append("overwrite=true")
    return extra


def add_output_arguments(p: argparse.ArgumentParser, help_text: str, required: bool = False) -> None:
    """``--output FILE`` and ``--overwrite`` (an existing file is replaced only when asked)."""
    p.add_argument("--output", required=required, help=help_text)
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")


def output_file(args: argparse.Namespace, inputs: tuple[str | None, ...] = (), flag: str = "output") -> Path | None:
    """``--output`` (or ``--FLAG``) checked before any work: its folder exists, it is not one of
    ``inputs``, and an existing file is replaced only with ``--overwrite`` (lmforge never replaces a
    file it was not asked to)."""
    given = getattr(args, flag)
    if not given:
        return None
    target, name = Path(given), f"--{flag}"
    if any(i and Path(i).resolve() == target.resolve() for i in inputs):
        raise DataError(f"{name} {target}: would overwrite the input")
    if target.is_dir():
        raise DataError(f"{name} {target}: is a folder; give a file name")
    if not target.parent.is_dir():
        raise DataError(f"{name} {target}: no such folder {target.parent}")
    if target.exists() and not args.overwrite:
        raise DataError(f"{name} {target}: already exists; give --overwrite to replace it")
    return target


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """A finished run to read (``eval``, ``predict``): the folder, its checkpoint and data fields."""
    p.add_argument("run", help="a run folder written by lmforge train")
    p.add_argument(
        "--checkpoint",
        choices=list(CHECKPOINTS),
        default="auto",
        help="best checkpoint, final model, or auto (best if present)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--text-field", help="column with the text (default: the run's data.fields.text)")
    p.add_argument("--text-pair-field", dest="text_pair_field", help="column with the second text")
    add_device_argument(p)


def add_precision_argument(p: argparse.ArgumentParser) -> None:
    """``--precision``: what a saved model's forward passes compute in (``lmforge.inference.precision``)."""
    p.add_argument(
        "--precision",
        choices=[
            "auto",
            "fp32",
            "bf16",
            "fp16",
        ],  # lmforge.inference.precision.INFERENCE_PRECISIONS (no torch import here)
        default="auto",
        help="auto: the precision the run trained in where this device computes it natively (bf16 on "
        "CPUs with AMX or AVX512-BF16, as the run's own validation figures were computed), else fp32",
    )


def add_device_argument(p: argparse.ArgumentParser, from_config: bool = False) -> None:
    """``--device``: where the models run. A command that takes a config defaults to its ``device``
    key (None here: no override); one that reads a run folder runs where this machine can (auto), not
    where the run was trained. The value is checked by ``resolve_device``: one line, not a usage error."""
    default = "the config's `device`, else auto" if from_config else "auto: CUDA when there is one"
    p.add_argument(
        "--device",
        default=None if from_config else "auto",
        metavar="DEVICE",
        help=f"{DEVICE_HELP} (default: {default})",
    )


def add_ensemble_arguments(p: argparse.ArgumentParser, ensemble_help: str) -> None:
    p.add_argument("--ensemble", nargs="+", metavar="RUN", help=ensemble_help)
    p.add_argument("--combine", choices=("mean", "vote"), default="mean", help=COMBINE_HELP)


def check_combine(args: argparse.Namespace) -> None:
    if args.combine != "mean" and not args.ensemble:
        raise DataError("--combine: combines the runs of --ensemble; give --ensemble RUN2 ...")


def fields_of(args: argparse.Namespace, predictor) -> Fields:
    """The run's data fields, with ``--text-field`` (and the like) given on the command line."""
    fields = dict(predictor.record.fields or {})
    for key in ("text", "text_pair", "label"):
        value = getattr(args, f"{key}_field", None)
        if value is not None:
            fields[key] = value
    return Fields(**fields)


def set_entity_bias(args: argparse.Namespace, predictor) -> None:
    """``--entity-bias`` / ``--tune-entity-bias`` onto the task that decodes (NER runs only)."""
    bias, tune = getattr(args, "entity_bias", 0.0), getattr(args, "tune_entity_bias", False)
    if not bias and not tune:
        return
    flag = "--tune-entity-bias" if tune else "--entity-bias"
    if bias and tune:
        raise DataError("give --entity-bias B or --tune-entity-bias, not both (tuning chooses B)")
    if not math.isfinite(bias):
        raise DataError(f"--entity-bias {bias}: give a finite number (e.g. 0.5)")
    task = predictor.record.task
    if task != "token_classification":
        raise DataError(f"{flag}: only token_classification runs decode tags; {args.run} is a {task} run")
    members = getattr(predictor, "members", [predictor])
    one_pass = next((m for m in members if m.one_pass), None)
    if one_pass is not None:
        raise DataError(
            f"{flag}: the ngram family's tagger ({one_pass.run.path}) decodes in one pass and takes no bias"
        )
    predictor.task.entity_bias, predictor.task.tune_entity_bias = bias, tune

"""The ``lmforge`` command: a table of command -> module, and one-line errors for users.

Each command is one module of this package with ``add_arguments(parser)`` and ``run(args) -> int``.
"""

import argparse
import importlib
import os
import sys

from lmforge.errors import LmforgeError
from lmforge.runtime import (
    LAUNCHED_ENV,
    keep_freed_memory,
    process_rank,
    quiet_libraries,
    record_error,
    setup_logging,
)

# command -> (module in lmforge.cli, one-line help). A command's module is imported only when that
# command is given: start-up time -- `lmforge --help` needs no torch, and a command loads only the
# libraries it uses.
COMMANDS = {
    "train": ("train", "fine-tune or pre-train a model from a YAML config"),
    "tune": ("tune", "search hyperparameters with Optuna over the config's tune.space; best.yaml in the study folder"),
    "demo": ("demo", "fine-tune MiniLM on BBC News (bundled) into runs/demo"),
    "eval": ("eval", "metrics of a run on a labelled file"),
    "predict": ("predict", "predict with a run: --text or --input FILE"),
    "validate": ("validate", "check a config and read all its data, without training"),
    "runs": ("runs", "list the run folders under a folder: task, model, status, metrics (--sort METRIC)"),
    "explain": (
        "explain",
        "token attributions (captum) of a run's predictions: classification, NER entities, generated text",
    ),
    "generate": ("generate", "generate text from a prompt with a causal LM"),
    "export": ("export", "export a run's model (--merge, --quantize int8, --onnx), each variant re-evaluated"),
    "prompt": (
        "prompt",
        "no training: classify (label likelihoods or similarity), tag entities or generate, zero/few-shot",
    ),
    "compare": (
        "compare",
        "train or prompt several candidates on the same split: quality, size, speed, memory, a recommendation",
    ),
    "distil": (
        "distil",
        "distil a classification run into a smaller student (Hinton et al. 2015), beside the same "
        "student trained on labels alone",
    ),
    "augment": (
        "augment",
        "write a config's training set with its data.augment copies (synonyms, swaps, mentions, paraphrases)",
    ),
    "attack": (
        "attack",
        "word-substitution attack on a classification run: accuracy under attack, success rate, flips",
    ),
    "mask": ("mask", "mask personal data in a file: e-mails, phones, Chinese IDs, bank cards, IPs, names (--ner RUN)"),
    "serve": ("serve", "serve runs over HTTP: task routes and an OpenAI-compatible API"),
    "chat": ("chat", "talk with a causal LM, turn by turn (streams; /reset, /exit)"),
    "ui": ("ui", "web dashboard and playground: runs, curves, comparisons, a playground, training jobs"),
}


def command_module(name: str, module: str | None = None):
    """The module behind command ``name`` (imported now), or the module ``module`` of this package
    that stands in for it."""
    return importlib.import_module(f"lmforge.cli.{module or COMMANDS[name][0]}")


def build_parser(command: str | None = None, module_name: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command name, with the arguments of ``command`` only (the one to run),
    from its module or from ``module_name``."""
    parser = argparse.ArgumentParser(prog="lmforge", description="Train, evaluate and use language models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = command_module(name, module_name)
            module.add_arguments(p)
            p.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The command is the first word: the top-level parser has no options but --help.
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = _parse(build_parser(command if command in COMMANDS else None, _stand_in(command, argv)), argv)
        quiet_libraries()
        keep_freed_memory()
        setup_logging(getattr(args, "quiet", False) or getattr(args, "json", False))
        return args.handler(args)
    except LmforgeError as exc:  # a missing extra (serve: fastapi) is one too
        # Under torchrun the launcher reports this process's message too; lmforge's own launcher
        # (--processes) prints it alone, once, naming the process.
        if not record_error(str(exc)) or not os.environ.get(LAUNCHED_ENV):
            print(f"lmforge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        if "LOCAL_RANK" not in os.environ or not _peer_failed(exc):
            raise
        # Another process of this distributed job failed first: the launcher reports its message.
        print(f"lmforge: process {process_rank()} stopped: another process failed", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130


def _stand_in(command: str | None, argv: list[str]) -> str | None:
    """``train_launch`` for ``train ... --processes N`` (N > 1) outside a launched job: it starts the
    processes without importing the training stack first. Any other spelling (an abbreviated flag)
    reaches ``train``, which launches too, only later."""
    if command != "train" or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return None
    for i, word in enumerate(argv):
        value = word.partition("=")[2] if word.startswith("--processes=") else None
        if word == "--processes" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None and value.isdigit() and int(value) > 1:
            return "train_launch"
    return None


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, where config overrides (KEY=VALUE) may also follow the options:
    ``lmforge train job.yaml --processes 2 train.lr=1e-4`` (argparse alone takes the positional
    overrides only before the first option)."""
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list):
        late = [a for a in extra if not a.startswith("-") and "=" in a]
        args.overrides += late
        extra = [a for a in extra if a not in late]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _peer_failed(exc: Exception) -> bool:
    """Whether ``exc`` is a collective operation broken by another process's exit."""
    text = str(exc)
    return type(exc).__name__ in ("DistBackendError", "DistNetworkError") or "closed by peer" in text


if __name__ == "__main__":
    sys.exit(main())

"""``lmforge prompt CONFIG``: zero/few-shot with no training, scored like a trained run."""

import argparse

from lmforge.cli.common import OVERRIDES_HELP, add_device_argument
from lmforge.config import load_config
from lmforge.prompting.prompt_run import headline, run_prompt
from lmforge.runtime import resolve_device

# flag -> the prompt.* setting it overrides
PROMPT_FLAGS = {
    "shots": "prompt.shots",
    "model": "prompt.model",
    "selection": "prompt.selection",
    "method": "prompt.method",
    "limit": "prompt.limit",
    "engine": "prompt.engine",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "config",
        help="a classification, token_classification, seq2seq or instruction (causal_lm) "
        "config (data as for train; prompt.* options)",
    )
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--shots", type=int, help="in-context examples per text (prompt.shots)")
    p.add_argument("--model", help="causal LM or encoder (prompt.model; default smollm2)")
    p.add_argument("--selection", choices=["random", "balanced", "nearest"], help="prompt.selection")
    p.add_argument("--method", choices=["likelihood", "similarity"], help="prompt.method")
    p.add_argument("--limit", type=int, help="prompt on a seeded sample of N evaluation rows (prompt.limit)")
    p.add_argument(
        "--engine",
        choices=["auto", "torch", "llama_cpp"],
        help="causal LMs (prompt.engine; default torch): llama_cpp runs GGUF models; auto picks it for them",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a run in the output folder")
    add_device_argument(p, from_config=True)
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    extra = list(args.overrides)
    if args.device is not None:
        resolve_device(args.device)  # one line naming the accepted values, before the config loads
        extra.append(f"device={args.device}")
    for flag, key in PROMPT_FLAGS.items():
        if getattr(args, flag) is not None:
            extra.append(f"{key}={getattr(args, flag)}")
    if args.overwrite:
        extra.append("overwrite=true")
    config = load_config(args.config, extra)
    outcome = run_prompt(config, quiet=args.quiet)
    print(f"run folder: {outcome.run_dir}")
    for split, metrics in outcome.results.items():
        print(f"{split}: {headline(metrics, config.task)}")
    print(f"report: {outcome.run_dir}/report.html")
    return 0

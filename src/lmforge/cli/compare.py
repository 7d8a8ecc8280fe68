"""``lmforge compare CONFIG``: train or prompt several candidates on the same split and recommend one."""

import argparse

from lmforge.cli.common import OVERRIDES_HELP, add_device_argument
from lmforge.runtime import resolve_device
from lmforge.selection.compare_run import run_compare


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the job's config (data, task, training settings every candidate shares)")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument(
        "--models",
        help="candidates, comma-separated: families (ngram, lstm, transformer), aliases "
        "(minilm), folders, prompt, similarity; ':lora', ':8shot', ':key=value' modify one "
        "(default: the small families and the config's model)",
    )
    p.add_argument("--shots", help="learning curve: labelled examples per run, e.g. 0,8,32,128,all")
    p.add_argument("--max-shots", type=int, default=32, help="--shots: most in-context examples a prompt gets")
    p.add_argument(
        "--min-steps",
        type=int,
        default=50,
        help="--shots: a candidate trained on N examples takes at least this many optimizer steps "
        "(more epochs over its N examples)",
    )
    p.add_argument("--budget", help="e.g. latency_ms=20,memory_mb=1500 (also p95_ms, size_mb)")
    p.add_argument("--metric", help="quality metric (default: macro_f1; entity f1 for NER)")
    p.add_argument(
        "--limit",
        type=int,
        help="prompt candidates classify a seeded sample of N evaluation rows; all candidates are scored on those rows",
    )
    p.add_argument("--output", help="folder for the comparison (default: the config's output/compare)")
    p.add_argument("--overwrite", action="store_true", help="redo candidates whose runs already exist")
    add_device_argument(p, from_config=True)
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.device is not None:  # every candidate trains, prompts and is timed there
        resolve_device(args.device)
        overrides.append(f"device={args.device}")
    summary = run_compare(
        args.config,
        overrides,
        args.models,
        args.shots,
        args.budget,
        args.output,
        args.limit,
        args.max_shots,
        args.metric,
        args.overwrite,
        args.quiet,
        args.min_steps,
    )
    print(summary["table"], end="")
    if summary.get("curve"):
        print(f"\nlearning curve ({summary['metric']} by labelled examples):")
        print(summary["curve"], end="")
    print(f"\n{summary['recommendation']['text']}")
    print(f"report: {summary['folder']}/report.html")
    failed = [r["candidate"] for r in summary["rows"] if "error" in r]
    return 1 if failed and len(failed) == len(summary["rows"]) else 0

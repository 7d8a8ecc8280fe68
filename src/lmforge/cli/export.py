"""``lmforge export RUN --merge --quantize int8 --onnx ...``: export a run's model, each variant
re-evaluated; the flags of each step come from the step registry (``export/pipeline.py``)."""

import argparse
import json
import sys

import torch

from lmforge.cli.common import CHECKPOINTS, add_device_argument
from lmforge.export.compare import markdown
from lmforge.export.pipeline import add_step_arguments, run_export


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder written by lmforge train")
    add_step_arguments(p)  # one flag set per registered step: --merge, --onnx, --quantize, ...
    p.add_argument(
        "--output",
        help="folder to write, itself a run folder for predict/eval/serve "
        "(must not exist or be empty; default: RUN/export)",
    )
    p.add_argument(
        "--eval-data", help="labelled file every variant is evaluated on (default: the run's validation data)"
    )
    p.add_argument(
        "--onnx-weight-type",
        choices=["qint8", "quint8"],
        help="--onnx --quantize int8: weight type of ONNX Runtime's quantization (default qint8)",
    )
    p.add_argument(
        "--checkpoint",
        choices=list(CHECKPOINTS),
        default="auto",
        help="best checkpoint, final model, or auto (best if present)",
    )
    p.add_argument("--threads", type=int, help="CPU threads for every variant's timings (default: all cores)")
    add_device_argument(p)  # the PyTorch variants' evaluation and timings; ONNX and int8 run on the CPU
    p.add_argument("--json", action="store_true", help="print the comparison as one JSON object")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)  # ONNX Runtime sessions take the same number
    summary = run_export(args.run, vars(args), log=_quiet if args.json else lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    print(markdown(summary["rows"]), end="")
    for row in summary["rows"][1:]:
        if "max_logit_difference" in row:
            print(f"{row['model']}: merged and unmerged logits agree within {row['max_logit_difference']:.1e}")
        if "parity_max_difference" in row:
            print(
                f"{row['model']}: ONNX Runtime and PyTorch agree within {row['parity_max_difference']:.1e} "
                f"on {row['parity_shapes']} batch shapes"
            )
    print(f"output: {summary['output']} (a run folder: lmforge predict/eval/serve take it)")
    print(f"report: {summary['output']}/report.html")
    return 0


def _quiet(*_) -> None:
    pass

"""Training precision: fp32 against bf16 autocast (and fp16 on a GPU), the same run otherwise.

Each side fine-tunes the same model (the bundled MiniLM-L6 by default) on the same SST-2 rows with
the same seed and hyperparameters, ``train.precision`` alone changing; each run's saved weights (fp32
either way) are evaluated on the SST-2 dev rows in fp32 (``lmforge eval --precision fp32``). Samples/s is
``training.examples_seen / training.wall_time_s`` of the run's ``lmforge.json`` (the training loop
only). What ``train.precision: auto`` would choose on this machine is printed too.

    python bench/precision.py                       # CPU: 2,000 rows, 1 epoch a side
    python bench/precision.py --device cuda         # a GPU: also fp16 with loss scaling

On a CPU without AMX or AVX512-BF16 the bf16 side is emulated, and slower: it still measures the
accuracy bf16 training keeps. The last line is ``ratio: X.XX`` = samples/s in bf16 / samples/s in fp32.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from _common import run_and_report, select_rows
from classification_throughput import read_tsv, write_tsv
from distributed_scaling import load
from lmforge.runtime import resolve_device
from lmforge.training.precision import native_candidate

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/sst2"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder with SST-2 train.tsv and dev.tsv")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    parser.add_argument("--model", default="minilm", help="the config's model (default: %(default)s)")
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--dev-rows", type=int, default=872, help="dev rows evaluated at the end (872: all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output-dir", type=Path, default=None, help="where the runs go (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    try:
        args.torch_device = resolve_device(args.device)
    except Exception as exc:
        parser.error(f"--device {args.device}: {exc}")
    return args


def run_side(args, precision: str, out: Path) -> dict:
    q = json.dumps  # JSON strings are YAML strings
    config = out.parent / f"job-{precision}.yaml"
    threads = f", threads: {args.threads}" if args.threads else ""
    config.write_text(
        "task: classification\n"
        f"data: {{train: {q(str(out.parent / 'train.tsv'))}, validation: {q(str(out.parent / 'dev.tsv'))},\n"
        f"       fields: {{text: sentence, label: label}}, max_length: {args.max_length}}}\n"
        f"model: {args.model}\n"
        f"train: {{epochs: {args.epochs}, batch_size: {args.batch_size}, lr: {args.lr}, seed: {args.seed}, "
        f"precision: {precision}{threads}}}\n"
        f"device: {args.device}\noutput: {q(str(out))}\noverwrite: true\n",
        encoding="utf-8",
    )
    before = load()
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "lmforge", "train", str(config), "--quiet"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"error: {precision}: lmforge train failed:\n{done.stderr.strip()}")
    total = time.perf_counter() - start
    training = json.loads((out / "lmforge.json").read_text(encoding="utf-8"))["training"]
    # The run's own validation figures are computed in its training precision where the CPU or GPU
    # computes it natively (lmforge.inference.precision); the comparison is of the saved weights.
    command = ["eval", str(out), "--data", str(out.parent / "dev.tsv"), "--precision", "fp32", "--json"]
    scored = subprocess.run(
        [sys.executable, "-m", "lmforge", *command, "--device", args.device], capture_output=True, text=True
    )
    if scored.returncode != 0:
        raise SystemExit(f"error: {precision}: lmforge eval failed:\n{scored.stderr.strip()}")
    return {
        "samples_per_s": training["examples_seen"] / training["wall_time_s"],
        "loop_s": training["wall_time_s"],
        "total_s": total,
        "accuracy": json.loads(scored.stdout)["accuracy"],
        "peak_rss_mb": training.get("peak_rss_mb"),
        "cuda_peak_mb": training.get("cuda_peak_mb"),
        "load_before": before,
        "load_after": load(),
    }


def run(args, out: Path) -> dict:
    write_tsv(
        select_rows(read_tsv(args.data_dir / "train.tsv"), args.train_rows, args.seed), out / "train.tsv", "sentence"
    )
    write_tsv(select_rows(read_tsv(args.data_dir / "dev.tsv"), args.dev_rows, args.seed), out / "dev.tsv", "sentence")
    candidate, why = native_candidate(args.torch_device)
    sides = ["fp32", "bf16"] + (["fp16"] if args.torch_device.type == "cuda" else [])
    if args.torch_device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        sides.remove("bf16")
    print(
        f"SST-2: {args.train_rows:,} train rows x {args.epochs} epoch(s), {args.dev_rows} dev rows; model "
        f"{args.model}, device {args.device}; {os.cpu_count()} cores; native reduced precision here: "
        f"{candidate or 'none'} ({why}); load before: {load()}",
        flush=True,
    )
    results = {}
    for precision in sides:
        results[precision] = run_side(args, precision, out / f"run-{precision}")
        print(f"{precision} done: {results[precision]['loop_s']:.1f} s training loop", flush=True)
    settings = {k: str(v) for k, v in vars(args).items()}
    return {"settings": settings, "results": results}


def speedup(results: dict) -> float:
    reduced = "bf16" if "bf16" in results else "fp16"
    return results[reduced]["samples_per_s"] / results["fp32"]["samples_per_s"]


def report(results: dict) -> list[str]:
    lines = [
        "| precision | train samples/s | loop (s) | dev accuracy | vs fp32 (pt) | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base = results["fp32"]["accuracy"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['samples_per_s']:.1f} | {r['loop_s']:.1f} | {r['accuracy']:.4f} | "
            f"{100 * (r['accuracy'] - base):+.2f} | {r['peak_rss_mb']} |"
        )
    lines.append("")
    lines += [f"{n}: load average before {r['load_before']}, after {r['load_after']}" for n, r in results.items()]
    return lines + [f"ratio: {speedup(results):.2f}"]


def main(argv=None) -> int:
    return run_and_report(parse_args(argv), "SST-2", ("train.tsv", "dev.tsv"), run, report, speedup)


if __name__ == "__main__":
    sys.exit(main())

"""Data-parallel scaling: training samples/s of one process against two, on the same work.

Both sides fine-tune the same model (the bundled MiniLM-L6 by default) on exactly the same SST-2 rows
-- ``--steps`` global batches of ``--batch-size`` rows, one epoch -- with the same hyperparameters,
seed and global batch, one CPU thread per process:

* 1 process: ``lmforge train ... train.batch_size=B train.threads=1``;
* 2 processes: ``lmforge train ... --processes 2 train.batch_size=B/2 train.threads=1`` (torch's
  elastic launcher, gloo on CPU, NCCL on GPU), so each optimizer step takes the same B rows.

Samples/s is ``training.examples_seen / training.wall_time_s`` from the run's ``lmforge.json``: the
training loop alone, gradient all-reduce included (no start-up, data reading, tokenisation, model
loading, evaluation or saving). The end-to-end time of each ``lmforge train`` command is printed too,
for information, with the machine's load (``uptime``) before and after each side, since the two
processes compete for the same cores as anything else running.

    python bench/distributed_scaling.py                   # 40 steps of 32 rows, each side twice: ~12 minutes on 2 cores
    python bench/distributed_scaling.py --device cuda     # two GPUs, one a process
    python bench/distributed_scaling.py --batch-size 64 --grad-accum 4 --steps 10   # steps of 256 rows, 4 micro-batches each
    python bench/distributed_scaling.py --batch-size 128 --steps 20 --ceiling      # and the machine's own limit

With ``--ceiling`` the script also runs two single-process jobs side by side, each with half the
global batch and no communication between them: the samples/s two busy cores give at all on this
machine (a core running alone may run faster than two running at once, and they share caches and
memory), the most any data-parallel run could reach. It is printed for context, with the share of it
that two processes reach.

Each side runs ``--repeats`` times, the sides alternating, and its fastest run counts (a slower run
measures the machine's other work, not lmforge; every run's figure is printed). The last line printed
is ``ratio: X.XX`` = samples/s with 2 processes / samples/s with 1.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from _common import add_data_dir, run_and_report, select_rows
from classification_throughput import read_tsv, write_tsv

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/sst2"
SIDES = {"1 process": 1, "2 processes": 2}
CEILING = "2 single processes side by side (no communication)"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_dir(parser, DEFAULT_DATA, "SST-2 train.tsv and dev.tsv")
    parser.add_argument("--device", default="cpu", help="the config's device: cpu | cuda (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps a side (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="global batch: split between the processes (default: %(default)s)"
    )
    parser.add_argument(
        "--grad-accum",
        type=int,
        default=1,
        help="micro-batches a process accumulates per optimizer step (train.grad_accum); the global batch "
        "of a step is then --batch-size x this (default: %(default)s)",
    )
    parser.add_argument("--model", default="minilm", help="the config's model (default: %(default)s)")
    parser.add_argument("--dev-rows", type=int, default=200, help="dev rows evaluated at the end (not timed)")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where the runs go (default: a temporary folder, removed at the end)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="runs a side, alternating; each side's fastest counts (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also run two single-process jobs side by side with no communication (context, not the ratio)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for both sides, e.g. distributed.gradient_compression=fp16 (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.grad_accum < 1:
        parser.error(f"--grad-accum {args.grad_accum}: give 1 or more")
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: give 1 or more")
    if args.batch_size % 2:
        parser.error(f"--batch-size {args.batch_size}: give an even number (it is split between 2 processes)")
    if args.device.startswith("cuda") and torch.cuda.device_count() < 2:
        parser.error(f"--device {args.device}: 2 processes need 2 GPUs, torch sees {torch.cuda.device_count()}")
    return args


def load() -> str:
    """The machine's load averages, as ``uptime`` prints them."""
    line = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return line.split("load average:")[-1].strip() if "load average" in line else line


def write_config(args, out: Path) -> Path:
    """The job both sides run: everything but the per-process batch and the output folder."""
    q = json.dumps  # JSON strings are YAML strings: paths with any character survive
    config = out / "job.yaml"
    config.write_text(
        "task: classification\n"
        f"data: {{train: {q(str(out / 'train.tsv'))}, validation: {q(str(out / 'dev.tsv'))},\n"
        f"       fields: {{text: sentence, label: label}}, max_length: {args.max_length}}}\n"
        f"model: {args.model}\n"
        f"train: {{epochs: 1, max_steps: {args.steps}, lr: {args.lr}, seed: {args.seed}, eval_every: epoch, threads: 1,\n"
        f"        grad_accum: {args.grad_accum}}}\n"
        f"device: {args.device}\n",
        encoding="utf-8",
    )
    return config


def train_command(args, batch: int, out: Path, config: Path) -> list[str]:
    command = [sys.executable, "-m", "lmforge", "train", str(config), "overwrite=true"]
    return command + [f"train.batch_size={batch}", f"output={json.dumps(str(out))}", *args.set, "--quiet"]


def run_side(args, processes: int, config: Path, out: Path) -> dict:
    """``processes`` == 0: two single-process jobs side by side (``--ceiling``), else one job."""
    alone = processes == 0
    batch = args.batch_size // max(processes, 2 if alone else 1)
    outs = [out / "a", out / "b"] if alone else [out]
    commands = [train_command(args, batch, folder, config) for folder in outs]
    if alone and args.device.startswith("cuda"):  # a GPU each, as the data-parallel processes have
        commands = [[*c[:-1], f"device=cuda:{i}", c[-1]] for i, c in enumerate(commands)]
    if processes > 1:
        commands[0] += ["--processes", str(processes)]
    before = load()
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    jobs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for c in commands]
    errors = [job.communicate()[1] for job in jobs]
    total = time.perf_counter() - start
    for job, error in zip(jobs, errors):
        if job.returncode != 0:
            raise SystemExit(
                f"error: {processes or 'side by side'} process(es): lmforge train failed:\n{error.strip()}"
            )
    metas = [json.loads((folder / "lmforge.json").read_text(encoding="utf-8")) for folder in outs]
    trainings = [meta["training"] for meta in metas]
    return {
        "processes": processes,
        "batch_per_process": batch,
        "samples_per_s": sum(t["examples_seen"] / t["wall_time_s"] for t in trainings),
        "loop_s": max(t["wall_time_s"] for t in trainings),
        "total_s": total,
        "examples_seen": sum(t["examples_seen"] for t in trainings),
        "steps": trainings[0]["steps"],
        "accuracy": metas[0]["results"]["validation"]["accuracy"],
        "load_before": before,
        "load_after": load(),
    }


def run(args, out: Path) -> dict:
    per_step = args.batch_size * args.grad_accum
    train_rows = select_rows(read_tsv(args.data_dir / "train.tsv"), args.steps * per_step, args.seed)
    dev_rows = select_rows(read_tsv(args.data_dir / "dev.tsv"), args.dev_rows, args.seed)
    write_tsv(train_rows, out / "train.tsv", "sentence")
    write_tsv(dev_rows, out / "dev.tsv", "sentence")
    config = write_config(args, out)
    print(
        f"SST-2: {len(train_rows):,} train rows ({args.steps} steps of a global batch of {per_step}"
        f"{f' = {args.grad_accum} micro-batches of {args.batch_size}' if args.grad_accum > 1 else ''}), "
        f"{len(dev_rows)} dev rows; model {args.model}, device {args.device}, 1 thread a process; "
        f"{os.cpu_count()} cores; load before: {load()}",
        flush=True,
    )
    results: dict = {}
    sides = {**SIDES, CEILING: 0} if args.ceiling else SIDES
    for attempt in range(1, args.repeats + 1):
        for name, processes in sides.items():  # the sides alternate: a slow spell of the machine hits both
            result = run_side(args, processes, config, out / f"run-{processes}")
            print(f"{name}, run {attempt}: {result['loop_s']:.1f} s training loop", flush=True)
            seen = results[name]["samples_per_s_runs"] if name in results else []
            if name not in results or result["samples_per_s"] > results[name]["samples_per_s"]:
                results[name] = result
            results[name]["samples_per_s_runs"] = [*seen, result["samples_per_s"]]
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    return {"settings": settings, "results": results}


def scaling(results: dict) -> float:
    return results["2 processes"]["samples_per_s"] / results["1 process"]["samples_per_s"]


def report(results: dict) -> list[str]:
    lines = [
        "| side | batch per process | train samples/s (fastest run) | every run | train loop time (s) | dev accuracy |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for name, r in results.items():
        runs = ", ".join(f"{x:.1f}" for x in r.get("samples_per_s_runs", [r["samples_per_s"]]))
        lines.append(
            f"| {name} | {r['batch_per_process']} | {r['samples_per_s']:.1f} | {runs} | {r['loop_s']:.1f} "
            f"| {r['accuracy']:.4f} |"
        )
    lines.append("")
    for name, r in results.items():
        lines.append(
            f"{name}: {r['steps']} steps, {r['examples_seen']:,} training examples; end-to-end {r['total_s']:.1f} s "
            f"(start-up, load, tokenise, train, evaluate); load average before {r['load_before']}, "
            f"after {r['load_after']}"
        )
    if CEILING in results:
        ceiling, one = results[CEILING]["samples_per_s"], results["1 process"]["samples_per_s"]
        lines.append(
            f"ceiling: two busy cores give {ceiling / one:.2f}x one process's samples/s with no communication at all; "
            f"2 processes reach {100 * results['2 processes']['samples_per_s'] / ceiling:.0f}% of that"
        )
    return lines + [f"ratio: {scaling(results):.2f}"]


def main(argv=None) -> int:
    return run_and_report(parse_args(argv), "SST-2", ("train.tsv", "dev.tsv"), run, report, scaling)


if __name__ == "__main__":
    sys.exit(main())

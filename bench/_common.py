"""What every benchmark script shares: the ``--device`` option, seeded row selection, the baseline's
``TrainingArguments``, the headline ratio, each side in its own process, and the run-then-report main
routine."""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lmforge.runtime import DEVICE_SPEC, keep_freed_memory

# The Trainer as the Hugging Face examples configure it by default for these tasks, and the Trainer
# as a skilled user configures it (each batch padded to its longest text, batches of similar
# lengths, its fused AdamW): the headline ratio is always against the stronger of the two.
HF_PADDED = "HF Trainer (padding=max_length)"
HF_STRONG = "HF Trainer (dynamic padding, group_by_length)"
# The same, in bf16 autocast: run where lmforge's ``train.precision: auto`` may train in bf16 (a CPU with
# AMX or AVX512-BF16), so that a gain from bf16 is never counted as lmforge's own.
HF_STRONG_BF16 = "HF Trainer (dynamic padding, group_by_length, bf16)"


def add_device_arg(parser, cpu_only: str | None = None) -> None:
    """``--device auto | cpu | cuda | cuda:N``, default ``cpu`` (the device of the published figures).
    ``cpu_only``: why this script's comparison runs on the CPU only (``resolve_device`` refuses CUDA)."""
    where = f"cpu only here: {cpu_only}" if cpu_only else "where both sides run"
    parser.add_argument(
        "--device", default="cpu", metavar="DEVICE", help=f"auto | cpu | cuda | cuda:N: {where} (default: %(default)s)"
    )


def _refuse(message: str):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def resolve_device(spec: str, cpu_only: str | None = None) -> tuple[str, str]:
    """The device both sides run on, as torch and lmforge's ``device`` spell it (``cpu`` or ``cuda:0``),
    and how the results' header names it; a one-line error (exit 2) when it cannot be had.

    A GPU is made the only one this process sees (``CUDA_VISIBLE_DEVICES``, set before CUDA starts;
    servers a bench starts inherit it): the HF Trainer takes ``cuda:0`` and spreads over every GPU it
    sees (``DataParallel``), so that is how it and lmforge end up on the same single GPU. ``auto`` is
    the first visible GPU, or the CPU where there is none (and always where ``cpu_only``)."""
    if not DEVICE_SPEC.fullmatch(spec or ""):
        _refuse(f"--device {spec!r}: give auto, cpu, cuda or cuda:N (N: a GPU's 0-based index)")
    if spec == "cpu" or (spec == "auto" and cpu_only):
        return "cpu", "cpu"
    if cpu_only:
        _refuse(f"--device {spec}: {cpu_only}; run it with --device cpu")
    index = int(spec.split(":", 1)[1]) if ":" in spec else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    entries = [e.strip() for e in visible.split(",") if e.strip()] if visible is not None else None
    if entries is not None and index >= len(entries):
        _refuse(f"--device {spec}: CUDA_VISIBLE_DEVICES={visible} shows {len(entries)} GPU(s) (0-based)")
    previous = visible
    os.environ["CUDA_VISIBLE_DEVICES"] = entries[index] if entries is not None else str(index)
    if not torch.cuda.is_available():
        if previous is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous
        if spec == "auto":
            return "cpu", "cpu (auto: no CUDA device)"
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        _refuse(f"--device {spec}: torch ({torch.__version__}, {build}) sees no such CUDA device; use --device cpu")
    if torch.cuda.device_count() != 1:  # CUDA had started before: the narrowing came too late
        _refuse(f"--device {spec}: CUDA started before the bench could keep to one GPU; set CUDA_VISIBLE_DEVICES")
    gpu = f"{torch.cuda.get_device_name(0)}, CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}"
    return "cuda:0", f"{spec} ({gpu})"


def lmforge_device(device: str) -> list[str]:
    """lmforge's config overrides for a resolved ``device``: the device, and on a GPU ``fp32`` (its
    ``train.precision: auto`` would take bf16 autocast there, and the Trainer baseline trains in fp32)."""
    return [f"device={device}"] + (["train.precision=fp32"] if device != "cpu" else [])


def synchronize(device: str) -> None:
    """Wait for the GPU's queued work (before reading a clock); nothing on the CPU."""
    if device != "cpu":
        torch.cuda.synchronize()


def add_training_args(parser, lr: float, batch_size: int) -> None:
    """The hyperparameters both sides share, and the output options, of every benchmark."""
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--warmup", type=float, default=0.06, help="warm-up fraction of the steps")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=42)
    add_output_args(parser)
    parser.add_argument("--skip-hf", action="store_true", help="debugging: run lmforge only")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every side in this one process, each timed from its call (quicker; the sides after "
        "the first find libraries imported and kernels warm)",
    )
    parser.add_argument("--side", help=argparse.SUPPRESS)  # internal: run only this side, here
    parser.add_argument("--side-dir", type=Path, help=argparse.SUPPRESS)  # internal: its folder
    add_device_arg(parser)


def keep_argv(args, argv) -> None:
    """Remember the command line, for the processes that run each side with the same options."""
    args.argv = list(sys.argv[1:] if argv is None else argv)


TRAINER_FOLDERS = {HF_STRONG: "hf-trainer", HF_STRONG_BF16: "hf-bf16", HF_PADDED: "hf-padded"}


def encoder_sides(lmforge_side, trainer_side) -> dict:
    """The sides of an encoder benchmark: lmforge, and the Trainer as ``trainer_side(strong, bf16)``
    makes it (``strong``: dynamic padding and length-grouped batches)."""
    return {
        "lmforge": lmforge_side,
        HF_STRONG: trainer_side(True, False),
        HF_STRONG_BF16: trainer_side(True, True),
        HF_PADDED: trainer_side(False, False),
    }


def run_trainer_sides(script: str, args, out: Path, sides: dict, results: dict) -> None:
    """The Trainer baselines into ``results``: the strong one, in bf16 too where lmforge may train in
    bf16, and the padded one with ``--padded-baseline``."""
    if args.skip_hf:
        return
    baselines = [HF_STRONG] + [HF_STRONG_BF16] * (reduced_precision(args.device) == "bf16")
    for name in baselines + [HF_PADDED] * args.padded_baseline:
        results[name] = run_side(script, args, name, out / TRAINER_FOLDERS[name], sides[name])
        print(f"{name} done: {results[name]['loop_s']:.1f} s training loop", flush=True)


def end_to_end_note(sides: dict) -> str:
    """What the end-to-end column measured."""
    if all("in_process_s" in r for r in sides.values()):
        return "end-to-end = each side's own process, launch to exit: imports, load, tokenise, train, evaluate"
    return "end-to-end = load, tokenise, train, evaluate, every side in one process"


def run_side(script: str, args, name: str, out: Path, compute, extra: tuple[str, ...] = ()) -> dict:
    """Side ``name``'s results, from ``compute(args, out)``.

    By default the side runs in a fresh Python process (``script`` with the same options and
    ``--side NAME``), so each side pays its own start-up (imports, first kernels) and none inherits
    the warm state of the one before; its ``total_s`` is then that process's wall time from launch to
    exit -- start-up, reading, tokenising, training, evaluating and writing: what a user waits for.
    ``extra``: more options for that process (what an earlier side decided). ``--in-process``:
    ``compute`` runs here, timed from its call."""
    out.mkdir(parents=True, exist_ok=True)
    if args.in_process:
        return compute(args, out)
    command = [sys.executable, script, *args.argv, *extra, "--side", name, "--side-dir", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, check=False)
    total = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{name}: its process exited with status {done.returncode}")
    side = json.loads((out / "side.json").read_text(encoding="utf-8"))
    side["in_process_s"], side["total_s"] = side["total_s"], total
    return side


def add_data_dir(parser, default: Path, holds: str) -> None:
    """``--data-dir``: the folder that ``holds`` the benchmark's files."""
    parser.add_argument("--data-dir", type=Path, default=default, help=f"folder with {holds} (default: %(default)s)")


def closing_lines(sides: dict, quality: str, difference: str, key: str = "samples_per_s") -> list[str]:
    """The strongest baseline, the quality difference against it (``difference``: the formatted
    lmforge - baseline value of ``quality``), the end-to-end ratio and, last, ``ratio: X``."""
    best = strongest(sides, key)
    if best is None:
        return ["ratio: n/a (baseline skipped)"]
    return [
        f"strongest baseline: {best}",
        f"{quality} difference (lmforge - strongest baseline): {difference}",
        f"end-to-end ratio: {end_to_end_ratio(sides, best):.2f}",
        f"ratio: {ratio(sides, key, best):.2f}",
    ]


def add_output_args(parser) -> None:
    """``--output-dir`` (keep the runs) and ``--json`` (write the results), for every benchmark."""
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where the runs go (default: a temporary folder, removed at the end)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")


def select_rows(rows: list, n: int | None, seed: int) -> list:
    """The first ``n`` rows (all if None) after a seeded shuffle."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:n] if n is not None else rows


def reduced_precision(device: str) -> str | None:
    """``bf16`` where lmforge's ``train.precision: auto`` may choose it for the bench's lmforge side
    (the CPU computes bf16 natively; on a GPU the bench keeps lmforge in fp32), else None."""
    from lmforge.training.precision import cpu_has_native_bf16

    return "bf16" if device == "cpu" and cpu_has_native_bf16() else None


def training_overrides(args, threads: int, out: Path) -> list[str]:
    """lmforge's side of the hyperparameters every training benchmark shares with its baseline."""
    return [
        f"train.epochs={args.epochs}",
        f"train.lr={args.lr}",
        f"train.batch_size={args.batch_size}",
        f"data.max_length={args.max_length}",
        f"train.warmup={args.warmup}",
        f"train.weight_decay={args.weight_decay}",
        "train.max_grad_norm=1.0",
        "train.scheduler=linear",
        f"train.seed={args.seed}",
        f"train.threads={threads}",
        f"output={json.dumps(str(out))}",  # a JSON string is a YAML string: any path survives
        "overwrite=true",
        *lmforge_device(args.device),
    ]


def train_lmforge(overrides: list[str]) -> tuple[Path, float, dict]:
    """Run ``lmforge train`` in this process with these config overrides: (run folder, seconds the
    whole call took -- reading, training, evaluating, writing --, the run's ``lmforge.json``)."""
    from lmforge.config import load_config
    from lmforge.training.recipe import train

    config = load_config(None, overrides)
    start = time.perf_counter()
    outcome = train(config, quiet=True)
    total = time.perf_counter() - start
    return outcome.run.path, total, json.loads((outcome.run.path / "lmforge.json").read_text(encoding="utf-8"))


def run_precision(run_folder: Path) -> str:
    """What a finished lmforge run trained in (``fp32`` | ``bf16`` | ``fp16``), from its record."""
    meta = json.loads((run_folder / "lmforge.json").read_text(encoding="utf-8"))
    return (meta["training"].get("precision") or {}).get("used", "fp32")


def training_arguments(args, out: Path, group_by_length: bool = False, bf16: bool = False, kind=None, **extra):
    """The baseline's settings: the same optimisation and device (``args.device``, resolved) as
    lmforge, every other Trainer default (fp32 unless ``bf16``: then bf16 autocast; its AdamW is the
    fused ``adamw_torch_fused``). ``group_by_length``: draw batches of similar lengths
    (``LengthGroupedSampler``). ``kind``: the arguments class (default ``TrainingArguments``; TRL's
    ``SFTConfig`` extends it), ``extra``: its own settings."""
    from transformers import TrainingArguments

    kind = kind or TrainingArguments
    # transformers 5 folds warmup_ratio into warmup_steps (a float < 1 is a fraction).
    warmup = (
        {"warmup_ratio": args.warmup}
        if "warmup_ratio" in TrainingArguments.__dataclass_fields__
        else {"warmup_steps": args.warmup}
    )
    return kind(
        output_dir=str(out),
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        weight_decay=args.weight_decay,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        seed=args.seed,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10**9,
        disable_tqdm=True,
        use_cpu=args.device == "cpu",  # else CUDA: the one GPU resolve_device left visible
        dataloader_num_workers=0,
        optim="adamw_torch_fused",
        bf16=bf16,
        **({"train_sampling_strategy": "group_by_length"} if group_by_length else {}),
        **warmup,
        **extra,
    )


def add_baseline_args(parser) -> None:
    """``--padded-baseline``: also run the Trainer padded to max_length (slow; for context)."""
    parser.add_argument(
        "--padded-baseline",
        action="store_true",
        help="also run the Trainer with padding=max_length, as the Hugging Face examples do by default "
        "(for context: several times slower; the ratio is against the strongest baseline either way)",
    )


def strongest(results: dict, key: str = "samples_per_s") -> str | None:
    """The name of the fastest baseline in ``results`` (every entry but lmforge's), None if none ran."""
    baselines = [name for name in results if name != "lmforge" and not name.startswith("_")]
    return max(baselines, key=lambda name: results[name][key]) if baselines else None


def ratio(results: dict, key: str = "samples_per_s", baseline: str | None = None) -> float | None:
    """lmforge's ``key`` (samples/s by default) / the strongest baseline's (or ``baseline``'s)."""
    baseline = baseline or strongest(results, key)
    if baseline is None or baseline not in results:
        return None
    return results["lmforge"][key] / results[baseline][key]


def end_to_end_ratio(results: dict, baseline: str | None = None) -> float | None:
    """The baseline's end-to-end seconds / lmforge's (> 1: lmforge is done sooner)."""
    baseline = baseline or strongest(results)
    if baseline is None:
        return None
    return results[baseline]["total_s"] / results["lmforge"]["total_s"]


# -- hardware efficiency ------------------------------------------------------------------------
def matmul_ceiling(device: str, seconds: float = 3.0, size: int = 1024, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of ``dtype`` matrix multiplication on ``device`` with the current torch threads: the
    best of repeated ``size`` x ``size`` products for about ``seconds`` (the ceiling a training step
    can approach; measured, not a datasheet figure)."""
    import time

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        synchronize(device)
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start))
    return best


def encoder_training_flops(config, tokens: int, mean_length: float) -> float:
    """Model FLOPs of training an encoder on ``tokens`` real (unpadded) tokens: 6 per weight of the
    layers per token (forward 2, backward 4) plus attention's scores and mixing (12 x layers x hidden x
    length per token). Padding is not counted: this is useful work, the same for every side."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    inner = getattr(config, "intermediate_size", 4 * hidden)
    per_layer = 4 * hidden * hidden + 2 * hidden * inner
    return tokens * (6 * layers * per_layer + 12 * layers * hidden * mean_length)


def ceilings(device: str, results: dict) -> dict[str, float]:
    """The measured matmul ceiling of each precision the sides trained in (``fp32`` always)."""
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    used = {"fp32"} | {r.get("precision", "fp32") for name, r in results.items() if not name.startswith("_")}
    return {name: matmul_ceiling(device, dtype=dtypes[name]) for name in sorted(used)}


def efficiency_lines(results: dict, flops: float, ceiling: dict[str, float]) -> list[str]:
    """Achieved model FLOP/s of each side's training loop and its share of the measured ceiling of
    the precision it trained in."""
    lines = [
        "matmul ceiling (measured in this run): "
        + ", ".join(f"{name} {value / 1e9:.1f} GFLOP/s" for name, value in ceiling.items())
    ]
    for name, r in results.items():
        achieved = flops / r["loop_s"]
        precision = r.get("precision", "fp32")
        share = 100 * achieved / ceiling[precision]
        lines.append(
            f"{name} ({precision}): {achieved / 1e9:.1f} GFLOP/s of model FLOPs, {share:.1f}% of the {precision} ceiling"
        )
    return lines


def run_and_report(args, what: str, files: tuple[str, ...], run, report, ratio_of=ratio, sides=None) -> int:
    """Check the data, run in ``--output-dir`` (or a temporary folder), write ``--json``, print the
    report; its last line is ``ratio: X``. In a side's own process (``--side NAME``, see
    ``run_side``): run ``sides[NAME]`` only and write its results to its folder's ``side.json``."""
    if getattr(args, "side", None) is not None:
        # lmforge keeps freed memory for the next step (lmforge.runtime.keep_freed_memory, 6-9% on
        # these models); the baselines get the same allocator setting, so the gain is not lmforge's
        keep_freed_memory()
        result = sides[args.side](args, args.side_dir)
        (args.side_dir / "side.json").write_text(json.dumps(result), encoding="utf-8")
        return 0
    missing = [name for name in files if not (args.data_dir / name).is_file()]
    if missing:
        print(
            f"error: {what} data not found: {args.data_dir} has no {' or '.join(missing)} "
            f"(give the folder with --data-dir)",
            file=sys.stderr,
        )
        return 2
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        summary = run(args, args.output_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
            summary = run(args, Path(tmp))
    summary["ratio"] = ratio_of(summary["results"])
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print("\n".join(report(summary["results"])))
    return 0

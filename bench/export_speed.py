"""Export speed and quality: a fine-tuned MiniLM classifier (SST-2) as PyTorch fp32, ONNX fp32, ONNX
int8 (two weight types) and PyTorch int8, each loaded the way ``lmforge predict`` loads it.

The variants are made by ``lmforge export``'s own steps (``--onnx``, ``--quantize int8``, the ONNX
one with ``--onnx-weight-type qint8`` and ``quint8``) from one run, then every variant gets

* SST-2 dev accuracy (all 872 sentences) through ``RunPredictor.evaluate``;
* size on disk of its model folder and its parameters;
* latency p50 at batch 1 on short inputs (dev sentences of at most 32 tokens), through
  ``RunPredictor.predict`` -- tokenisation included, as a user calls it. The variants are timed in
  turn on each sentence (the order rotates), so load from other processes falls on all of them
  alike; the model call alone (pre-tokenised) is shown too;
* throughput at batch 32 on dev sentences (all lengths), the median of three interleaved rounds.

Both sides run with the same number of threads (``--threads``, default 1: the cores of this
machine are shared with other jobs, and one thread per side keeps the comparison stable; OpenMP
teams of two under a full machine made PyTorch 5-20x slower in our runs while ONNX Runtime suffered
less, which would flatter ONNX).

Every variant runs on the CPU: ONNX Runtime (lmforge's ``onnxruntime``, CPU provider) and the int8
kernels have no GPU path, so ``--device`` takes ``cpu`` (the default) or ``auto`` (the CPU here) and
refuses CUDA rather than time PyTorch on a GPU against the baseline on the CPU.

    python bench/export_speed.py --quick        # ~5 min: 100 latency sentences, 128 throughput sentences
    python bench/export_speed.py --json results.json

The last line is ``ratio: X`` = PyTorch fp32 p50 latency / ONNX fp32 p50 latency (batch 1, <= 32 tokens).
"""

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from _common import add_device_arg, resolve_device, run_and_report

DEFAULT_RUN = Path("/work/runs/sst2_minilm")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/sst2"
BASE = "PyTorch fp32"
ONNX = "ONNX fp32"
CPU_ONLY = "the ONNX Runtime and int8 variants run on the CPU only (lmforge loads them there)"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="a finished SST-2 classification run")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder with SST-2 dev.tsv")
    parser.add_argument("--quick", action="store_true", help="fewer timed sentences: about 5 minutes")
    parser.add_argument("--latency-texts", type=int, default=300)
    parser.add_argument("--throughput-texts", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=None, help="keep the exported folders here")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    add_device_arg(parser, cpu_only=CPU_ONLY)
    args = parser.parse_args(argv)
    args.device, args.device_label = resolve_device(args.device, cpu_only=CPU_ONLY)
    if args.quick:
        args.latency_texts, args.throughput_texts = 100, 128
    return args


def cpu_flags() -> str:
    try:
        flags = set(
            next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
        )
    except (OSError, StopIteration):
        return "unknown"
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8") if f in flags]
    return " ".join(shown) or "no AVX2"


def build_variants(run: Path, out: Path, samples: list[str]) -> dict:
    """name -> Variant, made by lmforge export's own steps."""
    from lmforge.export.base import ExportContext, Variant
    from lmforge.export.onnx_export import check_onnx, onnx_step
    from lmforge.export.quantize import quantize_step
    from lmforge.tracking.run_folder import RunFolder

    context = ExportContext(run, RunFolder(run).read_record(), {"checkpoint": "auto", "quantize": "int8"}, out, samples)
    check_onnx(context)
    variants = {BASE: Variant(BASE, run, "auto", "torch")}
    started = time.perf_counter()
    onnx = onnx_step(variants[BASE], context)
    context.steps_done.append("onnx")
    print(
        f"ONNX export + parity check: {time.perf_counter() - started:.1f} s, max difference "
        f"{onnx.notes['parity_max_difference']:.1e}",
        flush=True,
    )
    variants[ONNX] = onnx
    for weight, name in (("qint8", "ONNX int8 (U8S8)"), ("quint8", "ONNX int8 (U8U8)")):
        context.options["onnx_weight_type"] = weight
        variants[name] = quantize_step(onnx, context)
        context.steps_done.append(name)
    variants["PyTorch int8"] = quantize_step(variants[BASE], context)
    return variants


def read_dev(path: Path) -> list[str]:
    import csv

    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [row["content"] for row in reader]


def model_call_p50(predictors: dict, short: list[str]) -> dict:
    """p50 ms of the model call alone (pre-tokenised, batch 1), the variants in turn on each text."""
    names, ms = list(predictors), {n: [] for n in predictors}
    for i, text in enumerate(short):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            p = predictors[name]
            encoded = p.tokenizer([text], return_tensors="pt", return_token_type_ids=False)
            with torch.inference_mode():
                started = time.perf_counter()
                p.model(**encoded)
                ms[name].append(1000 * (time.perf_counter() - started))
    return {n: statistics.median(v) for n, v in ms.items()}


def run(args, out: Path) -> dict:
    from lmforge.config.schema import Fields
    from lmforge.export.compare import count_parameters, interleaved_timings, predict_fn
    from lmforge.inference.predictor import RunPredictor
    from lmforge.selection.measure import folder_size

    torch.set_num_threads(args.threads)
    dev_tsv = args.data_dir / "dev.tsv"
    texts = read_dev(dev_tsv)
    started = time.perf_counter()
    variants = build_variants(args.run, out, texts[:64])
    print(
        f"variants built in {time.perf_counter() - started:.1f} s; device {args.device_label}; CPU: {cpu_flags()}; "
        f"{args.threads} thread(s)",
        flush=True,
    )
    predictors = {name: RunPredictor(v.folder, v.checkpoint, args.device) for name, v in variants.items()}
    tokenizer = predictors[BASE].tokenizer
    rng = random.Random(args.seed)
    short = [t for t in texts if len(tokenizer(t)["input_ids"]) <= 32]
    short = rng.sample(short, min(args.latency_texts, len(short)))
    batch = rng.sample(texts, min(args.throughput_texts, len(texts)))
    results = {}
    for name, p in predictors.items():
        metrics = p.evaluate(str(dev_tsv), Fields(text="content", label="label")).metrics
        results[name] = {
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
            "size_bytes": folder_size(p.folder),
            "parameters": count_parameters(p.model),
        }
        print(f"{name}: accuracy {metrics['accuracy']:.4f}", flush=True)
    predicts = {name: predict_fn(p) for name, p in predictors.items()}
    # Short inputs for latency, all lengths for throughput: two passes of the same interleaved timer.
    latency = interleaved_timings(predicts, short, args.seed, latency_texts=len(short), throughput_texts=32, rounds=1)
    speed = interleaved_timings(predicts, batch, args.seed, latency_texts=0, throughput_texts=len(batch))
    calls = model_call_p50(predictors, short)
    for name in results:
        results[name].update(
            {
                "latency_p50_ms": latency[name]["latency_p50_ms"],
                "model_call_p50_ms": calls[name],
                "throughput_per_s": speed[name]["throughput_per_s"],
            }
        )
    return {
        "results": results,
        "cpu": cpu_flags(),
        "device": args.device_label,
        "threads": args.threads,
        "latency_texts": len(short),
        "throughput_texts": len(batch),
        "notes": {n: v.notes for n, v in variants.items()},
    }


def headline(results: dict) -> float:
    return results[BASE]["latency_p50_ms"] / results[ONNX]["latency_p50_ms"]


def report(results: dict) -> list[str]:
    base = results[BASE]
    lines = [
        "| variant | SST-2 dev accuracy | Δ points | size MB | size × | parameters | p50 ms, batch 1 (≤32 tokens) "
        "| speed-up | model call p50 ms | texts/s, batch 32 | throughput × |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['accuracy']:.4f} | {100 * (r['accuracy'] - base['accuracy']):+.2f} | "
            f"{r['size_bytes'] / 1e6:.1f} | {r['size_bytes'] / base['size_bytes']:.2f} | {r['parameters']:,} | "
            f"{r['latency_p50_ms']:.2f} | {base['latency_p50_ms'] / r['latency_p50_ms']:.2f} | "
            f"{r['model_call_p50_ms']:.2f} | {r['throughput_per_s']:.1f} | "
            f"{r['throughput_per_s'] / base['throughput_per_s']:.2f} |"
        )
    return lines + [f"ratio: {headline(results):.2f}"]


def main(argv=None) -> int:
    args = parse_args(argv)
    if not (args.run / "lmforge.json").is_file():
        print(
            f"error: {args.run} is not a finished run (train one: lmforge train examples/sst2.yaml output={args.run})",
            file=sys.stderr,
        )
        return 2
    return run_and_report(args, "SST-2", ("dev.tsv",), run, report, ratio_of=headline)


if __name__ == "__main__":
    sys.exit(main())

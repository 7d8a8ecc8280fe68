"""Training throughput and accuracy: lmforge vs a plain Hugging Face ``Trainer``, in one run.

Both sides fine-tune the same bundled model (MiniLM-L6, 22.7M parameters) on exactly the same SST-2
rows with the same hyperparameters (AdamW, lr, batch size, epochs, linear schedule with the same
warm-up fraction, weight decay, gradient clipping at 1.0, seed, CPU threads) on the same device
(``--device``, default cpu: lmforge's ``device``, the Trainer's ``use_cpu`` or its one visible GPU;
on a GPU both train in fp32), then report

* train samples/s -- training examples / time of the pure training loop. For lmforge that is
  ``training.wall_time_s`` from the run's ``lmforge.json`` (the loop only: no data reading,
  tokenisation, model loading, evaluation or saving); for the baseline it is the wall time of
  ``trainer.train()`` alone (data are tokenised and the model is loaded before, and evaluation runs
  after). The end-to-end time of each side is printed too: each side runs in a fresh Python
  process of its own, timed from launch to exit (imports, reading, tokenising, loading, training,
  evaluating, writing), so no side starts with the libraries, kernels or caches another warmed
  (``--in-process``: all in this process, each timed from its call);
* dev accuracy -- on the full SST-2 dev set (872 sentences).

What differs is how batches are built, which is the point of the comparison:

* lmforge pads each batch only to its longest text (dynamic padding) and groups texts of similar
  length into a batch (shuffled mega-batches sorted by length);
* the baseline is the Trainer as a skilled user sets it up: ``DataCollatorWithPadding`` (each batch
  padded to its longest text), ``train_sampling_strategy="group_by_length"`` (its
  ``LengthGroupedSampler``), the fused AdamW (``adamw_torch_fused``), the same torch threads; where
  lmforge's ``train.precision: auto`` may train in bf16 (a CPU with AMX or AVX512-BF16) that Trainer
  runs a second time in bf16 autocast (``bf16=True``), so a gain from bf16 is not counted as lmforge's;
* with ``--padded-baseline`` the Trainer as the Hugging Face text-classification example runs it by
  default (``pad_to_max_length``: every text padded to 128 tokens, random batches) is timed too, for
  context. It is several times slower on SST-2's short texts, and never the ratio's denominator
  unless it is the faster.

Each side's achieved model FLOP/s (6 per weight per real token plus attention; padding not counted)
is printed with its share of the matrix-multiply rate of the precision it trained in, measured in the
same run.

    python bench/classification_throughput.py --quick            # 3,000 train rows, a few minutes
    python bench/classification_throughput.py --json results.json  # full train set (67,349 rows)
    python bench/classification_throughput.py --quick --device cuda  # both sides on the GPU

The last line printed is ``ratio: X.XX`` = lmforge samples/s / the strongest baseline's samples/s
(training loop); the end-to-end ratio (load, tokenise, train, evaluate) is printed just above it.
"""

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch

from _common import (
    add_baseline_args,
    add_data_dir,
    add_training_args,
    ceilings,
    closing_lines,
    efficiency_lines,
    encoder_sides,
    encoder_training_flops,
    end_to_end_note,
    keep_argv,
    resolve_device,
    run_and_report,
    run_precision,
    run_side,
    run_trainer_sides,
    select_rows,
    strongest,
    train_lmforge,
    training_arguments,
    training_overrides,
)

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/sst2"
QUICK_TRAIN_ROWS = 3000


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_dir(parser, DEFAULT_DATA, "SST-2 train.tsv and dev.tsv")
    parser.add_argument(
        "--quick", action="store_true", help=f"train on {QUICK_TRAIN_ROWS:,} rows (full dev set): a few minutes on CPU"
    )
    parser.add_argument(
        "--train-rows", type=int, default=None, help="train on the first N rows after a seeded shuffle (default: all)"
    )
    add_training_args(parser, lr=5e-5, batch_size=32)
    add_baseline_args(parser)
    args = parser.parse_args(argv)
    if args.quick and args.train_rows is None:
        args.train_rows = QUICK_TRAIN_ROWS
    args.device, args.device_label = resolve_device(args.device)
    keep_argv(args, argv)
    return args


# -- data ---------------------------------------------------------------------------------------
def read_tsv(path: Path) -> list[tuple[int, str]]:
    """(label, text) rows of a GLUE-style TSV with a header row; TSVs here never quote."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [(int(label), text) for label, text in reader]


def write_tsv(rows: list[tuple[int, str]], path: Path, text_column: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(f"label\t{text_column}\n")
        handle.writelines(f"{label}\t{text}\n" for label, text in rows)


# -- lmforge ------------------------------------------------------------------------------------
def run_lmforge(train_tsv: Path, dev_tsv: Path, args, threads: int, out: Path) -> dict:
    q = json.dumps  # JSON strings are YAML strings: paths with any character survive
    overrides = [
        "task=classification",
        "model=minilm",
        f"data.train={q(str(train_tsv))}",
        "data.fields.text=sentence",
        "data.fields.label=label",
        f"data.validation.path={q(str(dev_tsv))}",
        "data.validation.fields.text=content",
        "data.validation.fields.label=label",
        "train.eval_every=epoch",
        *training_overrides(args, threads, out),
    ]
    path, total, meta = train_lmforge(overrides)
    loop = meta["training"]["wall_time_s"]
    seen = meta["training"]["examples_seen"]
    return {
        "samples_per_s": seen / loop,
        "loop_s": loop,
        "total_s": total,
        "examples_seen": seen,
        "accuracy": meta["results"]["validation"]["accuracy"],
        "precision": run_precision(path),
    }


# -- Hugging Face Trainer baseline --------------------------------------------------------------
class EncodedDataset(torch.utils.data.Dataset):
    """Pre-tokenised tensors (padded to max_length), one dict per example, labels included."""

    def __init__(self, encoded: dict, labels: list[int]):
        self.tensors = dict(encoded)
        self.tensors["labels"] = torch.tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.tensors["labels"])

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.tensors.items()}


def encode(tokenizer, rows: list[tuple[int, str]], max_length: int) -> EncodedDataset:
    encoded = tokenizer(
        [text for _, text in rows], padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    )
    return EncodedDataset(encoded, [label for label, _ in rows])


def encode_unpadded(tokenizer, rows: list[tuple[int, str]], max_length: int) -> list[dict]:
    """One dict of lists per example, unpadded: ``DataCollatorWithPadding`` pads each batch, and
    ``LengthGroupedSampler`` reads the lengths from ``input_ids``."""
    encoded = tokenizer([text for _, text in rows], truncation=True, max_length=max_length)
    keys = list(encoded.keys())
    return [{key: encoded[key][i] for key in keys} | {"labels": label} for i, (label, _) in enumerate(rows)]


@torch.inference_mode()
def accuracy(model, dataset: EncodedDataset, batch_size: int) -> float:
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(dataset), batch_size):
        batch = {k: v[start : start + batch_size].to(device) for k, v in dataset.tensors.items()}
        labels = batch.pop("labels")
        correct += (model(**batch).logits.argmax(-1) == labels).sum().item()
    return correct / len(dataset)


def run_hf(train_rows, dev_rows, args, threads: int, out: Path, strong: bool, bf16: bool = False) -> dict:
    """The Trainer baseline: ``strong`` = dynamic padding and length-grouped batches, else every text
    padded to max_length as the Hugging Face example does; ``bf16``: bf16 autocast."""
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        default_data_collator,
    )
    from transformers.trainer_callback import PrinterCallback

    from lmforge.models.bundled import bundled_path

    start_total = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    folder = bundled_path("minilm")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the "classifier newly initialised" load report
    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    finally:
        transformers.logging.set_verbosity(verbosity)
    if strong:
        train_set = encode_unpadded(tokenizer, train_rows, args.max_length)
        collator = DataCollatorWithPadding(tokenizer)
    else:
        train_set = encode(tokenizer, train_rows, args.max_length)
        collator = default_data_collator
    trainer = Trainer(
        model=model,
        args=training_arguments(args, out, group_by_length=strong, bf16=bf16),
        train_dataset=train_set,
        processing_class=tokenizer,
        data_collator=collator,
    )
    trainer.remove_callback(PrinterCallback)  # output only: keeps the final metrics dict quiet
    start = time.perf_counter()
    trainer.train()
    loop = time.perf_counter() - start
    acc = accuracy(trainer.model, encode(tokenizer, dev_rows, args.max_length), 2 * args.batch_size)
    seen = len(train_set) * args.epochs
    return {
        "samples_per_s": seen / loop,
        "loop_s": loop,
        "total_s": time.perf_counter() - start_total,
        "examples_seen": seen,
        "accuracy": acc,
        "precision": "bf16" if bf16 else "fp32",
    }


# -- report -------------------------------------------------------------------------------------
def training_flops(rows: list[tuple[int, str]], args) -> float:
    """Model FLOPs of one side's training loop over these rows and epochs (real tokens only)."""
    from transformers import AutoConfig

    from lmforge.models.bundled import bundled_path

    mean = mean_tokens(rows, args.max_length)
    return encoder_training_flops(
        AutoConfig.from_pretrained(bundled_path("minilm")), round(mean * len(rows)) * args.epochs, mean
    )


def mean_tokens(rows: list[tuple[int, str]], max_length: int) -> float:
    """Average tokenised length (truncated, unpadded) of the training texts."""
    from transformers import AutoTokenizer

    from lmforge.models.bundled import bundled_path

    tokenizer = AutoTokenizer.from_pretrained(bundled_path("minilm"))
    ids = tokenizer([text for _, text in rows], truncation=True, max_length=max_length)["input_ids"]
    return sum(map(len, ids)) / max(len(ids), 1)


def report(results: dict) -> list[str]:
    lines = [
        "| side | precision | train samples/s | train loop time (s) | end-to-end (s) | dev accuracy |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if name.startswith("_"):
            continue
        lines.append(
            f"| {name} | {r['precision']} | {r['samples_per_s']:.1f} | {r['loop_s']:.1f} | {r['total_s']:.1f} | {r['accuracy']:.4f} |"
        )
    sides = {name: r for name, r in results.items() if not name.startswith("_")}
    lines.append(f"({sides['lmforge']['examples_seen']:,} training examples a side; {end_to_end_note(sides)})")
    work = results.get("_work")
    if work:
        lines += efficiency_lines(sides, work["flops"], work["ceiling"])
    best = strongest(sides)
    points = 100 * (sides["lmforge"]["accuracy"] - sides[best]["accuracy"]) if best else 0.0
    return lines + closing_lines(sides, "accuracy", f"{points:+.2f} points")


def rows(args) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The benchmark's (train, dev) rows."""
    return select_rows(read_tsv(args.data_dir / "train.tsv"), args.train_rows, args.seed), read_tsv(
        args.data_dir / "dev.tsv"
    )


def lmforge_side(args, out: Path) -> dict:
    """lmforge on the training file ``run`` wrote beside the side's folder, and the dev file."""
    return run_lmforge(out.parent / "train.tsv", args.data_dir / "dev.tsv", args, torch.get_num_threads(), out / "run")


def trainer_side(strong: bool, bf16: bool):
    def side(args, out: Path) -> dict:
        train_rows, dev_rows = rows(args)
        return run_hf(train_rows, dev_rows, args, torch.get_num_threads(), out, strong=strong, bf16=bf16)

    return side


SIDES = encoder_sides(lmforge_side, trainer_side)


def run(args, out: Path) -> dict:
    train_rows, dev_rows = rows(args)
    train_tsv = out / "train.tsv"
    write_tsv(train_rows, train_tsv, "sentence")
    threads = torch.get_num_threads()
    print(
        f"SST-2: {len(train_rows):,} train rows, {len(dev_rows):,} dev rows, mean "
        f"{mean_tokens(train_rows, args.max_length):.1f} tokens per training text "
        f"(max_length {args.max_length}); {args.epochs} epoch(s), lr {args.lr}, batch "
        f"{args.batch_size}, seed {args.seed}, {threads} torch threads; device {args.device_label}",
        flush=True,
    )
    results = {"lmforge": run_side(__file__, args, "lmforge", out / "lmforge", SIDES["lmforge"])}
    print(f"lmforge done: {results['lmforge']['loop_s']:.1f} s training loop", flush=True)
    run_trainer_sides(__file__, args, out, SIDES, results)
    results["_work"] = {"flops": training_flops(train_rows, args), "ceiling": ceilings(args.device, results)}
    return {
        "settings": {
            "train_rows": len(train_rows),
            "dev_rows": len(dev_rows),
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "warmup": args.warmup,
            "weight_decay": args.weight_decay,
            "seed": args.seed,
            "threads": threads,
            "device": args.device_label,
        },
        "results": results,
    }


def main(argv=None) -> int:
    return run_and_report(parse_args(argv), "SST-2", ("train.tsv", "dev.tsv"), run, report, sides=SIDES)


if __name__ == "__main__":
    sys.exit(main())

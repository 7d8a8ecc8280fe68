"""NER training throughput and entity F1: lmforge vs a plain Hugging Face ``Trainer``, in one run.

Both sides fine-tune the same bundled model (MiniLM-L6, 22.7M parameters) with a token
classification head on exactly the same CoNLL-2003 English sentences with the same hyperparameters
(AdamW, lr, batch size, epochs, linear schedule with the same warm-up fraction, weight decay,
gradient clipping at 1.0, seed, CPU threads), on the same device (``--device``, default cpu:
lmforge's ``device``, the Trainer's ``use_cpu`` or its one visible GPU; on a GPU both train in fp32)
and with the same label order (``tag_set(types, "bio")``, types sorted), then report

* train sentences/s -- training sentences x epochs / time of the pure training loop. For lmforge
  the time is ``training.wall_time_s`` from the run's ``lmforge.json`` (the loop only: no data
  reading, tokenisation, model loading, evaluation or saving); for the baseline it is the wall time
  of ``trainer.train()`` alone (data are tokenised and the model is loaded before, and evaluation
  runs after). lmforge counts subword windows as examples (``training.examples_seen``): a sentence
  longer than ``max_length`` subwords becomes several windows. At max_length 128 that is about one
  CoNLL sentence in 14,000, but sentences, not windows, are counted on both sides so a split
  sentence cannot inflate lmforge's figure. The end-to-end time of each side is printed too: each
  side runs in a fresh Python process of its own, timed from launch to exit (imports, reading,
  tokenising, loading, training, evaluating, writing), so no side starts with the libraries, kernels
  or caches another warmed (``--in-process``: all in this process, each timed from its call);
* validation entity F1 -- exact-match micro F1 (CoNLL-2003, seqeval) from
  ``lmforge.evaluation.ner.entity_metrics`` on both sides, over the file's BIO tags. lmforge's is
  ``results.validation.f1`` of its run; the baseline's is computed here the way lmforge predicts:
  per word, the argmax tag at its first subword; words cut off by truncation count as ``O``
  (lmforge cuts nothing: long sentences become overlapping windows).

What differs is how batches are built, which is the point of the comparison:

* lmforge pads each batch only to its longest sentence (dynamic padding) and groups sentences of
  similar length into a batch (shuffled mega-batches sorted by length);
* the baseline is the Hugging Face token-classification example as a skilled user runs it:
  ``tokenizer(words, is_split_into_words=True, truncation=True, max_length=128)``, the label on
  each word's first subword and -100 elsewhere, ``DataCollatorForTokenClassification`` (each batch
  padded to its longest sentence), ``train_sampling_strategy="group_by_length"``, the fused AdamW;
  where lmforge's ``train.precision: auto`` may train in bf16 (a CPU with AMX or AVX512-BF16) that
  Trainer runs a second time in bf16 autocast (``bf16=True``), and the ratio is against the faster;
* with ``--padded-baseline`` the same with ``pad_to_max_length`` and random batches is timed too,
  for context (it is never the ratio's denominator unless it is the faster).

Each side's achieved model FLOP/s (6 per weight per real token plus attention; padding not counted)
is printed with its share of the matrix-multiply rate of the precision it trained in, measured in the
same run.

CoNLL-2003 sentences are short (about 18 subwords on average). With more than one epoch lmforge reports the validation F1 of its
best epoch (chosen on validation) and the baseline that of its last one: compare F1 at 1 epoch.

    python bench/ner_throughput.py --quick                # 2,000 train sentences, full validation set
    python bench/ner_throughput.py --json results.json    # full train set (14,041 sentences)
    python bench/ner_throughput.py --quick --device cuda  # both sides on the GPU

The last line printed is ``ratio: X.XX`` = lmforge sentences/s / the strongest baseline's (training
loop); the end-to-end ratio (load, tokenise, train, evaluate) is printed just above it.
"""

import argparse
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
    efficiency_lines,
    encoder_sides,
    encoder_training_flops,
    end_to_end_note,
    end_to_end_ratio,
    keep_argv,
    ratio,
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

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/conll2003"
QUICK_TRAIN_ROWS = 2000
QUICK_EVAL_ROWS = None  # None: the full validation set (3,250 sentences)
TARGET_RATIO, TARGET_F1_POINTS = 1.5, 0.5
IGNORE = -100

Sentence = list[tuple[str, str]]  # (word, BIO tag) per word


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_dir(parser, DEFAULT_DATA, "CoNLL-2003 train.txt and valid.txt")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"train on {QUICK_TRAIN_ROWS:,} sentences (full validation set): about five minutes on a 2-core CPU",
    )
    parser.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help="train on the first N sentences after a seeded shuffle (default: all)",
    )
    parser.add_argument(
        "--eval-rows",
        type=int,
        default=None,
        help="evaluate on the first N validation sentences after a seeded shuffle (default: all)",
    )
    add_training_args(parser, lr=2e-4, batch_size=16)
    add_baseline_args(parser)
    args = parser.parse_args(argv)
    if args.quick and args.train_rows is None:
        args.train_rows = QUICK_TRAIN_ROWS
    if args.quick and args.eval_rows is None:
        args.eval_rows = QUICK_EVAL_ROWS
    args.device, args.device_label = resolve_device(args.device)
    keep_argv(args, argv)
    return args


# -- data ---------------------------------------------------------------------------------------
def read_conll(path: Path) -> list[Sentence]:
    """Sentences of a CoNLL file: ``word ... tag`` per line, a blank line between sentences,
    ``-DOCSTART-`` lines skipped. The tag is the last column."""
    sentences, current = [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            cells = line.split()
            if not cells or cells[0] == "-DOCSTART-":
                if current:
                    sentences.append(current)
                current = []
                continue
            current.append((cells[0], cells[-1]))
    if current:
        sentences.append(current)
    return sentences


def write_conll(sentences: list[Sentence], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for sentence in sentences:
            handle.writelines(f"{word} {tag}\n" for word, tag in sentence)
            handle.write("\n")


def label_names(train: list[Sentence]) -> list[str]:
    """lmforge's label order: ``O``, then B-/I- per entity type seen in training, types sorted."""
    from lmforge.data.tagging import tag_set

    return tag_set({tag[2:] for sentence in train for _, tag in sentence if tag != "O"}, "bio")


# -- lmforge ------------------------------------------------------------------------------------
def run_lmforge(train_file: Path, valid_file: Path, n_train: int, args, threads: int, out: Path) -> dict:
    q = json.dumps  # JSON strings are YAML strings: paths with any character survive
    overrides = [
        "task=token_classification",
        "model=minilm",
        f"data.train={q(str(train_file))}",
        f"data.validation={q(str(valid_file))}",
        "data.tag_scheme=bio",
        "data.output_scheme=bio",
        "train.eval_every=epoch",
        *training_overrides(args, threads, out),
    ]
    path, total, meta = train_lmforge(overrides)
    loop = meta["training"]["wall_time_s"]
    seen = n_train * args.epochs  # sentences, not windows (see the module docstring)
    return {
        "samples_per_s": seen / loop,
        "loop_s": loop,
        "total_s": total,
        "examples_seen": seen,
        "windows_seen": meta["training"]["examples_seen"],
        "f1": meta["results"]["validation"]["f1"],
        "labels": meta["labels"]["names"],
        "precision": run_precision(path),
    }


# -- Hugging Face Trainer baseline --------------------------------------------------------------
def encode(
    tokenizer, sentences: list[Sentence], label_index: dict[str, int], max_length: int, pad: bool = True
) -> list[dict]:
    """The HF token-classification example (``pad``: with ``pad_to_max_length``, else unpadded for
    ``DataCollatorForTokenClassification``): each word's tag on its first subword, -100 on the others
    and on special and padding tokens."""
    encoded = tokenizer(
        [[word for word, _ in s] for s in sentences],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        padding="max_length" if pad else False,
    )
    features = []
    for i, sentence in enumerate(sentences):
        labels, previous = [], None
        for word in encoded.word_ids(i):
            first = word is not None and word != previous
            labels.append(label_index[sentence[word][1]] if first else IGNORE)
            previous = word
        features.append({key: encoded[key][i] for key in encoded.keys()} | {"labels": labels})
    return features


@torch.inference_mode()
def predict_tags(
    model, features: list[dict], sentences: list[Sentence], names: list[str], batch_size: int
) -> list[list[str]]:
    """Per sentence, the argmax tag at each word's first subword; words truncation cut off are O.

    Batches are sorted by length and cut to their longest sentence: attention masks out padding,
    so the scores are those of the max_length-padded inputs, computed faster (evaluation is not
    part of the timed loop either way).
    """
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(features)), key=lambda i: -sum(features[i]["attention_mask"]))
    preds: list[list[str] | None] = [None] * len(features)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(sum(features[i]["attention_mask"]) for i in idx)
        batch = {
            key: torch.tensor([features[i][key][:width] for i in idx], device=device)
            for key in features[idx[0]]
            if key != "labels"
        }
        best = model(**batch).logits.argmax(-1).cpu()  # (B, T)
        for row, i in enumerate(idx):
            tags = ["O"] * len(sentences[i])
            # Gold labels mark each kept word's first subword, in word order.
            heads = [p for p, label in enumerate(features[i]["labels"][:width]) if label != IGNORE]
            for word, pos in enumerate(heads):
                tags[word] = names[int(best[row, pos])]
            preds[i] = tags
    return preds


def run_hf(
    train: list[Sentence],
    valid: list[Sentence],
    names: list[str],
    args,
    threads: int,
    out: Path,
    strong: bool,
    bf16: bool = False,
) -> dict:
    """The Trainer baseline: ``strong`` = dynamic padding and length-grouped batches, else every
    sentence padded to max_length and random batches (the example's ``pad_to_max_length``);
    ``bf16``: bf16 autocast."""
    import transformers
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification, Trainer
    from transformers.trainer_callback import PrinterCallback

    from lmforge.evaluation.ner import entity_metrics
    from lmforge.models.bundled import bundled_path

    start_total = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    folder = bundled_path("minilm")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the "classifier newly initialised" load report
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            folder,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    index = {name: i for i, name in enumerate(names)}
    train_set = encode(tokenizer, train, index, args.max_length, pad=not strong)
    valid_set = encode(tokenizer, valid, index, args.max_length)  # cut to each batch's longest below
    trainer = Trainer(
        model=model,
        args=training_arguments(args, out, group_by_length=strong, bf16=bf16),
        train_dataset=train_set,
        processing_class=tokenizer,
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    trainer.remove_callback(PrinterCallback)  # output only: keeps the final metrics dict quiet
    start = time.perf_counter()
    trainer.train()
    loop = time.perf_counter() - start
    pred = predict_tags(trainer.model, valid_set, valid, names, 2 * args.batch_size)
    gold = [[tag for _, tag in s] for s in valid]
    seen = len(train_set) * args.epochs
    return {
        "samples_per_s": seen / loop,
        "loop_s": loop,
        "total_s": time.perf_counter() - start_total,
        "examples_seen": seen,
        "f1": entity_metrics(gold, pred, "bio")["f1"],
        "precision": "bf16" if bf16 else "fp32",
    }


# -- report -------------------------------------------------------------------------------------
def subword_stats(sentences: list[Sentence], max_length: int) -> tuple[float, int]:
    """Mean subwords per training sentence (with [CLS]/[SEP], untruncated) and how many exceed
    ``max_length``."""
    from transformers import AutoTokenizer

    from lmforge.models.bundled import bundled_path

    tokenizer = AutoTokenizer.from_pretrained(bundled_path("minilm"))
    ids = tokenizer([[word for word, _ in s] for s in sentences], is_split_into_words=True)["input_ids"]
    lengths = list(map(len, ids))
    return sum(lengths) / max(len(lengths), 1), sum(n > max_length for n in lengths)


def report(results: dict) -> list[str]:
    sides = {name: r for name, r in results.items() if not name.startswith("_")}
    lines = [
        "| side | precision | train sentences/s | train loop time (s) | end-to-end (s) | validation entity F1 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, r in sides.items():
        lines.append(
            f"| {name} | {r['precision']} | {r['samples_per_s']:.1f} | {r['loop_s']:.1f} | {r['total_s']:.1f} | {r['f1']:.4f} |"
        )
    lm = sides["lmforge"]
    lines.append(
        f"({lm['examples_seen']:,} training sentences a side, {lm['windows_seen']:,} subword windows for lmforge; "
        f"{end_to_end_note(sides)})"
    )
    work = results.get("_work")
    if work:
        lines += efficiency_lines(sides, work["flops"], work["ceiling"])
    best = strongest(sides)
    if best is None:
        return lines + ["ratio: n/a (baseline skipped)"]
    points = 100 * (lm["f1"] - sides[best]["f1"])
    speedup = ratio(sides)
    met = speedup >= TARGET_RATIO and points >= -TARGET_F1_POINTS
    lines.append(f"strongest baseline: {best}")
    lines.append(f"F1 difference (lmforge - strongest baseline): {points:+.2f} points")
    lines.append(
        f"target (>= {TARGET_RATIO:.1f}x sentences/s at F1 no more than {TARGET_F1_POINTS} point below): "
        f"{'met' if met else 'NOT met'} ({speedup:.2f}x, {points:+.2f} points)"
    )
    lines.append(f"end-to-end ratio: {end_to_end_ratio(sides):.2f}")
    return lines + [f"ratio: {speedup:.2f}"]


def sentences(args) -> tuple[list[Sentence], list[Sentence]]:
    """The benchmark's (train, validation) sentences."""
    train = select_rows(read_conll(args.data_dir / "train.txt"), args.train_rows, args.seed)
    valid = read_conll(args.data_dir / "valid.txt")
    if args.eval_rows is not None:
        valid = select_rows(valid, args.eval_rows, args.seed)
    return train, valid


def lmforge_side(args, out: Path) -> dict:
    """lmforge on the files ``run`` wrote beside the side's folder."""
    train_file, valid_file = out.parent / "train.txt", out.parent / "valid.txt"
    n_train = sum(1 for _ in read_conll(train_file))
    return run_lmforge(train_file, valid_file, n_train, args, torch.get_num_threads(), out / "run")


def trainer_side(strong: bool, bf16: bool):
    def side(args, out: Path) -> dict:
        train, valid = sentences(args)
        return run_hf(train, valid, label_names(train), args, torch.get_num_threads(), out, strong=strong, bf16=bf16)

    return side


SIDES = encoder_sides(lmforge_side, trainer_side)


def run(args, out: Path) -> dict:
    train, valid = sentences(args)
    # Both sides read the same files' sentences: lmforge these copies, the baseline the lists.
    train_file, valid_file = out / "train.txt", out / "valid.txt"
    write_conll(train, train_file)
    write_conll(valid, valid_file)
    names = label_names(train)
    threads = torch.get_num_threads()
    mean, long = subword_stats(train, args.max_length)
    print(
        f"CoNLL-2003: {len(train):,} train sentences, {len(valid):,} validation sentences, mean "
        f"{mean:.1f} subwords per training sentence ({long} over max_length {args.max_length}); "
        f"{args.epochs} epoch(s), lr {args.lr}, batch {args.batch_size}, seed {args.seed}, "
        f"{threads} torch threads; device {args.device_label}",
        flush=True,
    )
    results = {"lmforge": run_side(__file__, args, "lmforge", out / "lmforge", SIDES["lmforge"])}
    if results["lmforge"].pop("labels") != names:
        raise RuntimeError(f"lmforge's label order differs from the baseline's {names}")
    print(f"lmforge done: {results['lmforge']['loop_s']:.1f} s training loop", flush=True)
    run_trainer_sides(__file__, args, out, SIDES, results)
    from transformers import AutoConfig

    from lmforge.models.bundled import bundled_path

    tokens = round(mean * len(train)) * args.epochs  # real subwords (untruncated: ~1 in 14,000 is cut)
    config = AutoConfig.from_pretrained(bundled_path("minilm"))
    results["_work"] = {
        "flops": encoder_training_flops(config, tokens, mean),
        "ceiling": ceilings(args.device, results),
    }
    return {
        "settings": {
            "train_rows": len(train),
            "eval_rows": len(valid),
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "warmup": args.warmup,
            "weight_decay": args.weight_decay,
            "seed": args.seed,
            "threads": threads,
            "device": args.device_label,
            "labels": names,
        },
        "results": results,
    }


def main(argv=None) -> int:
    return run_and_report(parse_args(argv), "CoNLL-2003", ("train.txt", "valid.txt"), run, report, sides=SIDES)


if __name__ == "__main__":
    sys.exit(main())

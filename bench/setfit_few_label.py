"""Few labels on SST-2: SetFit (``tuning.method: setfit``) against plain fine-tuning of the same
bundled MiniLM, on the same labelled examples.

For K labelled sentences per class (``--per-class``, default 8 and 16) and each seed (``--seeds``,
default 1 2 3), ``data.train_limit = 2K`` draws the labelled examples class-balanced from the 67,349
SST-2 training rows with ``train.seed`` (lmforge's own draw, the one ``compare --shots`` makes), and
each method is scored on the whole dev set (872 sentences), its run evaluated from its saved folder:

- ``setfit``: the paper's recipe (Tunstall et al. 2022) as lmforge's defaults have it: 20 rounds of
  pairs, one epoch at lr 2e-5 in batches of 16 pairs, cosine-similarity loss on the mean-pooled
  embeddings, logistic-regression head (``examples/sst2_setfit.yaml`` with
  ``tuning.label_templates=0``);
- ``setfit + templates``: the same with 32 templated examples per label ("This sentence is
  positive.") beside the labelled ones -- ``examples/sst2_setfit.yaml`` as shipped;
- ``plain fine-tuning``: the full model with its classification head, lmforge's defaults (lr 5e-5,
  batch 32) for at least 50 optimizer steps, evaluated 5 times on dev, best kept -- what
  ``compare --shots`` does for a training candidate (``--plain-per-class``, default 16 only).

Every run is its own ``lmforge train`` process with ``train.threads`` (``--threads``, default 1).

``--pool`` picks what the labelled examples are drawn from. ``phrases`` (the default) is GLUE's
training file as it is: every phrase of every parse tree of the treebank's training sentences, most
of them fragments ("the greatest", "a"), each with its own label. ``sentences`` keeps the rows that
are no part of another row -- the 6,886 whole training sentences, the sentence-level SST-2 the SetFit
paper draws from (its 6,920 less the sentences GLUE dropped) and what a user labelling a few texts
would have -- written to ``sentences.tsv`` in the output folder.

    python bench/setfit_few_label.py                               # the docs/few-label.md table (~1 h here)
    python bench/setfit_few_label.py --per-class 8 --seeds 1 --plain-per-class   # one run of each SetFit
    python bench/setfit_few_label.py --pool sentences               # whole sentences, not phrases

The last line is ``ratio: X`` = mean dev accuracy of ``examples/sst2_setfit.yaml`` (setfit +
templates) at 16 per class / mean dev accuracy of plain fine-tuning at 16 per class.
"""

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import add_data_dir, add_output_args, run_and_report

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared/data/sst2"
CONFIG = ROOT / "examples/sst2_setfit.yaml"
METHODS = {
    "setfit": ["tuning.label_templates=0"],
    "setfit + templates": [],  # the example config as shipped
    # lmforge's train defaults, as compare --shots trains a candidate on 2K examples (>= 50 steps)
    "plain fine-tuning": [
        "tuning.method=full",
        "train.lr=5e-5",
        "train.batch_size=32",
        "train.warmup=0.06",
    ],
}
HEADLINE, BASELINE = "setfit + templates", "plain fine-tuning"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_dir(parser, DEFAULT_DATA, "SST-2 train.tsv and dev.tsv")
    parser.add_argument("--per-class", type=int, nargs="+", default=[8, 16], help="labelled sentences per class")
    parser.add_argument(
        "--plain-per-class", type=int, nargs="*", default=[16], help="the same for plain fine-tuning (none: skip it)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="draws of the labelled examples")
    parser.add_argument("--threads", type=int, default=1, help="train.threads of every run")
    parser.add_argument(
        "--pool",
        choices=("phrases", "sentences"),
        default="phrases",
        help="draw the labelled examples from every training row, or from the whole sentences only",
    )
    add_output_args(parser)
    return parser.parse_args(argv)


def plain_steps(examples: int, batch: int = 32, min_steps: int = 50) -> list[str]:
    """compare --shots's few-label schedule: at least ``min_steps`` steps, evaluated about 5 times."""
    per_epoch = math.ceil(examples / batch)
    epochs = math.ceil(min_steps / per_epoch)
    return [f"train.epochs={epochs}", f"train.eval_every={max(per_epoch, epochs * per_epoch // 5)}"]


def whole_sentences(train: Path, dest: Path) -> int:
    """Write the rows of SST-2's ``train`` that are not a run of words of another row -- the whole
    sentences whose phrases the rest are -- to ``dest`` (same columns); how many."""
    header, *lines = train.read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t", 1) for line in lines]
    texts = {text.strip() for _, text in rows}
    parts = set()
    for text in texts:
        words = text.split()
        for n in range(1, len(words)):
            parts.update(run for i in range(len(words) - n + 1) if (run := " ".join(words[i : i + n])) in texts)
    kept = [f"{label}\t{text}" for label, text in rows if text.strip() not in parts]
    dest.write_text("\n".join([header, *kept]) + "\n", encoding="utf-8")
    return len(kept)


def training_file(args, out: Path) -> Path:
    """The file the labelled examples are drawn from (``--pool``)."""
    if args.pool == "phrases":
        return args.data_dir / "train.tsv"
    dest = out / "sentences.tsv"
    if not dest.exists():
        print(f"{whole_sentences(args.data_dir / 'train.tsv', dest)} whole sentences -> {dest}", flush=True)
    return dest


def train_one(args, out: Path, method: str, per_class: int, seed: int) -> dict:
    run = out / f"{method.replace(' ', '').replace('+', '_')}-k{per_class}-s{seed}"
    overrides = [
        f"data.train={training_file(args, out)}",
        f"data.validation.path={args.data_dir / 'dev.tsv'}",
        f"data.train_limit={2 * per_class}",
        f"train.seed={seed}",
        f"train.threads={args.threads}",
        f"output={json.dumps(str(run))}",
        "overwrite=true",
        *METHODS[method],
    ]
    if method == BASELINE:
        overrides += plain_steps(2 * per_class)
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "lmforge", "train", str(CONFIG), *overrides, "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    results = json.loads((run / "eval_results.json").read_text(encoding="utf-8"))["validation"]
    record = json.loads((run / "lmforge.json").read_text(encoding="utf-8"))
    row = {
        "method": method,
        "pool": args.pool,
        "per_class": per_class,
        "seed": seed,
        "accuracy": results["accuracy"],
        "macro_f1": results["macro_f1"],
        "train_s": record["training"]["wall_time_s"],
        "job_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def run(args, out: Path) -> dict:
    rows = []
    for per_class in sorted(set(args.per_class) | set(args.plain_per_class or [])):
        for method in METHODS:
            wanted = args.plain_per_class or [] if method == BASELINE else args.per_class
            if per_class in wanted:
                rows += [train_one(args, out, method, per_class, seed) for seed in args.seeds]
    return {"command": " ".join(sys.argv), "results": summarize(rows), "rows": rows}


def summarize(rows: list[dict]) -> dict:
    """(method, per class) -> accuracies, mean, sample standard deviation, mean training seconds."""
    out: dict = {}
    for row in rows:
        out.setdefault(f"{row['method']} @ {row['per_class']}", []).append(row)
    return {
        key: {
            "method": group[0]["method"],
            "pool": group[0]["pool"],
            "per_class": group[0]["per_class"],
            "accuracy": [r["accuracy"] for r in group],
            "mean": statistics.mean(r["accuracy"] for r in group),
            "stdev": statistics.stdev([r["accuracy"] for r in group]) if len(group) > 1 else 0.0,
            "train_s": statistics.mean(r["train_s"] for r in group),
        }
        for key, group in out.items()
    }


def report(results: dict) -> list[str]:
    pools = sorted({cell["pool"] for cell in results.values()})
    lines = [
        "",
        f"labelled examples drawn from SST-2's training {' and '.join(pools)}",
        "",
        "| method | labelled per class | dev accuracy by seed | mean ± sd | train s (mean) |",
        "|---|---:|---|---:|---:|",
    ]
    for cell in sorted(results.values(), key=lambda c: (c["per_class"], list(METHODS).index(c["method"]))):
        seeds = " / ".join(f"{100 * a:.1f}" for a in cell["accuracy"])
        lines.append(
            f"| {cell['method']} | {cell['per_class']} | {seeds} | {100 * cell['mean']:.1f} ± {100 * cell['stdev']:.1f} "
            f"| {cell['train_s']:.0f} |"
        )
    value = headline_ratio(results)
    lines.append(f"ratio: {value:.2f}" if value is not None else "ratio: n/a (no plain fine-tuning at 16 per class)")
    return lines


def headline_ratio(results: dict) -> float | None:
    setfit, plain = results.get(f"{HEADLINE} @ 16"), results.get(f"{BASELINE} @ 16")
    return setfit["mean"] / plain["mean"] if setfit and plain else None


if __name__ == "__main__":
    sys.exit(run_and_report(parse_args(), "SST-2", ("train.tsv", "dev.tsv"), run, report, headline_ratio))

"""N-gram text classification: ``lmforge train`` (n-gram family) against the same model written
directly in scikit-learn, in one run.

Both sides build the same model on the same SST-2 rows: TF-IDF of word 1-2-grams and of
character 2-5-grams inside words (sublinear tf, smoothed idf, n-grams in at least 2 texts, each
block L2-normalised), then logistic regression (C 1, lbfgs, up to 1,000 iterations). The baseline
is what a skilled scikit-learn user writes: ``make_union`` of two ``TfidfVectorizer`` and a
``LogisticRegression`` in a ``Pipeline``, fitted with one ``fit`` call -- once with the two
vectorizers in one process (``n_jobs=1``) and once fitted in parallel (``n_jobs=2``); the ratio is
taken against the faster.

Reported per side: training examples per second of the fit alone (featurise + optimise; lmforge: the
run's ``training.wall_time_s``), the end-to-end time (lmforge: the whole ``train`` call -- reading
the files, fitting, evaluating, writing the run folder, report and predictions; baseline: reading
the files, fitting, predicting the dev set and scoring it), and dev accuracy, which must agree.

    python bench/ngram_throughput.py --quick     # 10,000 training rows
    python bench/ngram_throughput.py             # all 67,349 SST-2 training rows

The last line printed is ``ratio: X.XX`` = lmforge examples/s / strongest baseline examples/s.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from _common import (
    add_data_dir,
    add_output_args,
    closing_lines,
    run_and_report,
    select_rows,
    strongest,
    train_lmforge,
)
from classification_throughput import read_tsv, write_tsv

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/sst2"
QUICK_TRAIN_ROWS = 10_000


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_dir(parser, DEFAULT_DATA, "SST-2 train.tsv and dev.tsv")
    parser.add_argument("--quick", action="store_true", help=f"train on {QUICK_TRAIN_ROWS:,} rows (full dev set)")
    parser.add_argument("--train-rows", type=int, default=None, help="the first N rows after a seeded shuffle")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-baseline", action="store_true", help="run lmforge alone")
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.quick and args.train_rows is None:
        args.train_rows = QUICK_TRAIN_ROWS
    return args


def run_lmforge(train_tsv: Path, dev_tsv: Path, out: Path) -> dict:
    _, total, meta = train_lmforge(
        [
            "task=classification",
            "model={family: ngram}",
            f"data.train={json.dumps(str(train_tsv))}",
            "data.fields.text=sentence",
            f"data.validation.path={json.dumps(str(dev_tsv))}",
            "data.validation.fields.text=content",
            f"output={json.dumps(str(out))}",
            "overwrite=true",
        ]
    )
    fit = meta["training"]["wall_time_s"]
    rows = meta["training"]["examples_seen"]
    return {
        "samples_per_s": rows / fit,
        "fit_s": fit,
        "total_s": total,
        "rows": rows,
        "accuracy": meta["results"]["validation"]["accuracy"],
    }


def run_sklearn(train_tsv: Path, dev_tsv: Path, jobs: int) -> dict:
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    from lmforge.models.ngram.features import WORD_PATTERN  # the same words a side

    start_total = time.perf_counter()
    train_rows, dev_rows = read_tsv(train_tsv), read_tsv(dev_tsv)
    texts, labels = [t for _, t in train_rows], np.array([y for y, _ in train_rows])
    common = dict(min_df=2, sublinear_tf=True, lowercase=True, dtype=np.float32)
    model = make_pipeline(
        make_union(
            TfidfVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=WORD_PATTERN, **common),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), **common),
            n_jobs=jobs,
        ),
        LogisticRegression(C=1.0, max_iter=1000),
    )
    start = time.perf_counter()
    model.fit(texts, labels)
    fit = time.perf_counter() - start
    predicted = model.predict([t for _, t in dev_rows])
    accuracy = float(np.mean(predicted == np.array([y for y, _ in dev_rows])))
    return {
        "samples_per_s": len(texts) / fit,
        "fit_s": fit,
        "total_s": time.perf_counter() - start_total,
        "rows": len(texts),
        "accuracy": accuracy,
    }


def report(results: dict) -> list[str]:
    lines = ["| side | train examples/s | fit (s) | end to end (s) | dev accuracy |", "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['samples_per_s']:,.0f} | {r['fit_s']:.2f} | {r['total_s']:.2f} | {r['accuracy']:.4f} |"
        )
    best = strongest(results)
    points = 100 * (results["lmforge"]["accuracy"] - results[best]["accuracy"]) if best else 0.0
    return lines + closing_lines(results, "accuracy", f"{points:+.2f} points")


def run(args, out: Path) -> dict:
    train_rows = select_rows(read_tsv(args.data_dir / "train.tsv"), args.train_rows, args.seed)
    train_tsv, dev_tsv = out / "train.tsv", args.data_dir / "dev.tsv"
    write_tsv(train_rows, train_tsv, "sentence")
    print(f"SST-2: {len(train_rows):,} train rows, dev {dev_tsv}; the same TF-IDF + logistic regression a side")
    results = {"lmforge": run_lmforge(train_tsv, dev_tsv, out / "lmforge-run")}
    if not args.skip_baseline:
        for jobs in (1, 2):
            results[f"scikit-learn pipeline (n_jobs={jobs})"] = run_sklearn(train_tsv, dev_tsv, jobs)
    return {"settings": {"train_rows": len(train_rows), "seed": args.seed}, "results": results}


def main(argv=None) -> int:
    return run_and_report(parse_args(argv), "SST-2", ("train.tsv", "dev.tsv"), run, report)


if __name__ == "__main__":
    sys.exit(main())

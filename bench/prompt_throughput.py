"""Label scoring speed for prompting: lmforge's scorer against the naive loop, in one run.

Both sides score the same SST-2 dev sentences with the bundled SmolLM2-135M-Instruct, as
``lmforge prompt`` builds them (chat template, ``--shots`` balanced examples from SST-2 train,
verbalizers "negative"/"positive"). lmforge runs the prefix every prompt shares (instruction and
examples) once, the rest of each prompt once (batched, left-padded, on a copy of the shared KV
cache), and scores every verbalizer from it (continuations on a copy of the prompt's cache); the
baseline is the loop a user would write: one forward pass of prompt + verbalizer per (text,
label). Both run the same model on the same device (``--device``, default cpu: the scorer's
``LikelihoodClassifier(..., device)``; both scoring functions return their scores on the CPU, so the
clock stops after the GPU's work). Reported: texts per second and whether the two pick the same
labels (they must; the log-likelihoods agree to float precision).

    python bench/prompt_throughput.py --quick     # 24 sentences, 4-shot
    python bench/prompt_throughput.py             # 96 sentences, 4-shot
    python bench/prompt_throughput.py --device cuda

The last line printed is ``ratio: X.XX`` = lmforge texts/s / naive texts/s.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from _common import add_device_arg, resolve_device

ROOT = Path(__file__).resolve().parents[1]


def load(data_dir: Path, n: int):
    def rows(name, column):
        lines = (data_dir / name).read_text(encoding="utf-8").splitlines()
        header = lines[0].split("\t")
        return [(r[header.index(column)], int(r[header.index("label")])) for r in (x.split("\t") for x in lines[1:])]

    return rows("train.tsv", "sentence"), rows("dev.tsv", "content")[:n]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="24 sentences")
    parser.add_argument("--texts", type=int)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "sst2")
    parser.add_argument("--json", type=Path)
    add_device_arg(parser)
    args = parser.parse_args(argv)
    device, device_label = resolve_device(args.device)
    if not (args.data_dir / "dev.tsv").is_file():
        print(f"error: SST-2 not found in {args.data_dir} (give the folder with --data-dir)", file=sys.stderr)
        return 2
    from lmforge.prompting.prompt_run import LikelihoodClassifier
    from lmforge.prompting.scoring import score_labels, score_labels_naive
    from lmforge.prompting.selection import fixed_examples
    from lmforge.prompting.templates import PromptTemplate
    from lmforge.runtime import quiet_libraries

    quiet_libraries()
    train, dev = load(args.data_dir, args.texts or (24 if args.quick else 96))
    template = PromptTemplate(
        ["negative", "positive"],
        "en",
        "Is the sentiment of this movie review negative or positive? Answer with one of: {answers}.",
        "Review: {text}",
    )
    scorer = LikelihoodClassifier("smollm2", device)
    shots = [train[i] for i in fixed_examples([label for _, label in train], args.shots, "balanced", 0)]
    prompts = [scorer.prompt_ids(template, text, shots) for text, _ in dev]
    answers = scorer.answer_ids(template)
    score_labels(scorer.gen.model, prompts[:2], answers, scorer.pad, args.batch_size)  # warm up
    started = time.perf_counter()
    fast, _ = score_labels(scorer.gen.model, prompts, answers, scorer.pad, args.batch_size)
    fast_s = time.perf_counter() - started
    started = time.perf_counter()
    slow = score_labels_naive(scorer.gen.model, prompts, answers)
    slow_s = time.perf_counter() - started
    same = int((fast.argmax(-1) == slow.argmax(-1)).sum())
    gap = float((fast - slow).abs().max())
    accuracy = sum(int(p) == label for p, (_, label) in zip(fast.argmax(-1), dev)) / len(dev)
    results = {
        "texts": len(dev),
        "shots": args.shots,
        "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
        "lmforge_texts_per_s": len(dev) / fast_s,
        "naive_texts_per_s": len(dev) / slow_s,
        "same_labels": same,
        "max_abs_loglik_gap": gap,
        "accuracy": accuracy,
        "device": device_label,
    }
    ratio = results["lmforge_texts_per_s"] / results["naive_texts_per_s"]
    results["ratio"] = ratio
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(
        f"{len(dev)} SST-2 dev texts, {args.shots}-shot, {results['prompt_tokens_mean']:.0f} prompt tokens on "
        f"average, smollm2 (float32), device {device_label}"
    )
    print("| side | texts/s | seconds |")
    print("|---|---:|---:|")
    print(f"| lmforge (shared prompt, batched) | {results['lmforge_texts_per_s']:.2f} | {fast_s:.1f} |")
    print(f"| naive (prompt + verbalizer per label) | {results['naive_texts_per_s']:.2f} | {slow_s:.1f} |")
    print(f"same labels: {same}/{len(dev)}; max |log-likelihood gap| {gap:.2e}; accuracy {accuracy:.3f}")
    print(f"ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

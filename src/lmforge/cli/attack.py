"""``lmforge attack RUN --data FILE``: a greedy word-substitution attack on a classification run
(synonyms within ``--budget`` words, meaning kept by a sentence-similarity floor): clean accuracy,
accuracy under attack, attack success rate and the texts whose label flipped."""

import argparse
import json
import random
from pathlib import Path

from lmforge.cli.common import add_output_arguments, add_run_arguments, fields_of, output_file
from lmforge.config.schema import DataConfig, DataSource
from lmforge.data.readers import Problems
from lmforge.errors import DataError
from lmforge.inference.predictor import RunPredictor
from lmforge.robustness.attack import WordSubstitutionAttack, summary
from lmforge.tracking.run_folder import write_atomic


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--label-field", help="column with the label (default: the run's data.fields.label)")
    p.add_argument("--data", required=True, help="a labelled file in the run's format")
    p.add_argument("--budget", type=int, default=4, help="the most words changed in one text (default 4)")
    p.add_argument(
        "--source",
        default="auto",
        help="synonyms: auto (wordnet for English, cilin for Chinese), wordnet, cilin, embedding (the run's "
        "own input embeddings) or a file of synonym groups",
    )
    p.add_argument(
        "--min-similarity",
        type=float,
        default=0.8,
        help="English: the changed text's cosine similarity to the original under MiniLM, at least (0: off)",
    )
    p.add_argument("--limit", type=int, help="attack a seeded sample of N rows")
    p.add_argument("--seed", type=int, default=0)
    add_output_arguments(p, "write every text's result here (.jsonl)")


FIGURES = [  # (printed as, summary key, decimals)
    ("clean accuracy", "clean_accuracy", 4),
    ("accuracy under attack", "attacked_accuracy", 4),
    ("attack success rate", "attack_success_rate", 4),
    ("words changed (flips)", "words_changed", 4),
    ("queries per text", "queries_per_text", 1),
]


def run(args: argparse.Namespace) -> int:
    if args.budget < 1:
        raise DataError("--budget must be at least 1")
    if not 0 <= args.min_similarity <= 1:
        raise DataError("--min-similarity must be between 0 and 1")
    if args.limit is not None and args.limit < 1:
        raise DataError(f"--limit {args.limit}: give 1 or more rows")
    if args.output and Path(args.output).suffix.lower() != ".jsonl":
        raise DataError(f"--output {args.output}: write a .jsonl file")
    target = output_file(args, (args.data,))
    predictor = RunPredictor(args.run, args.checkpoint, args.device)
    attack = WordSubstitutionAttack(
        predictor, args.source, args.budget, args.min_similarity, batch_size=args.batch_size
    )
    fields = fields_of(args, predictor)
    if args.label_field:
        fields = fields.model_copy(update={"label": args.label_field})
    data = DataConfig(fields=fields, **predictor.task.read_options())
    examples = predictor.task.read_labelled(DataSource(path=args.data), data, predictor.labels, Problems())
    if not examples:
        raise DataError(f"{args.data}: no labelled rows to attack")
    if args.limit is not None and args.limit < len(examples):
        keep = sorted(random.Random(args.seed).sample(range(len(examples)), args.limit))
        examples = [examples[i] for i in keep]
    names = predictor.labels.names
    results = attack.run([ex.text for ex in examples], [names[ex.label_id] for ex in examples])
    figures = summary(results)
    print(f"attack on {args.run}: {figures['count']} texts of {args.data}, budget {args.budget} words")
    for label, key, digits in FIGURES:
        value = figures[key]
        print(f"  {label:<23} {'n/a' if value is None else f'{value:.{digits}f}'}")
    if figures["attack_success_rate"] is None:
        print("  (no text was classified right, so none was attacked)")
    for r in [r for r in results if r.flipped][:5]:
        print(f"  flip: {r.gold} -> {r.adversarial_label}: {r.adversarial!r} (was {r.text!r})")
    if target is not None:
        rows = [{"summary": figures}] + [r.to_json() for r in results]
        write_atomic(target, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        print(f"results: {args.output}")
    return 0

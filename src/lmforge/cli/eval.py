"""``lmforge eval RUN --data FILE``: a run's (or an ensemble's, or a prompt run's) metrics on a
labelled file. The task words the report (``Task.count_phrase``, ``report_lines``, ``sample_lines``)."""

import argparse
import json

from lmforge.cli.common import (
    add_ensemble_arguments,
    add_precision_argument,
    add_run_arguments,
    check_combine,
    fields_of,
    set_entity_bias,
)
from lmforge.inference.ensemble import EnsemblePredictor
from lmforge.inference.predictor import RunPredictor
from lmforge.prompting.prompt_run import evaluate_run
from lmforge.runtime import resolve_device
from lmforge.tasks import Task, get_task
from lmforge.tracking.run_folder import RunFolder


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    add_precision_argument(p)
    p.add_argument("--data", required=True, help="labelled data file (.jsonl .json .csv .tsv)")
    p.add_argument("--label-field", help="column with the label (default: the run's data.fields.label)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--limit", type=int, help="evaluate on the first N rows of the file only")
    add_ensemble_arguments(
        p,
        "classification and NER: evaluate RUN together with these runs, averaging their "
        "probabilities (each member is scored alone too)",
    )
    p.add_argument(
        "--entity-bias",
        type=float,
        default=0.0,
        metavar="B",
        help="NER: add B to the log-score of every tag but O before decoding (B > 0 trades precision for recall)",
    )
    p.add_argument(
        "--tune-entity-bias",
        action="store_true",
        help="NER: tune the entity bias by two-fold cross-validation on --data (even and odd "
        "sentences; each half is scored with the bias best on the other) and report it",
    )
    p.add_argument(
        "--generate",
        type=int,
        default=32,
        metavar="N",
        help="SFT runs: generate replies to the first N conversations and score them with "
        "BLEU/ROUGE/exact match (0: perplexity only; default %(default)s)",
    )
    p.add_argument("--max-new-tokens", type=int, default=128, help="SFT runs: longest generated reply")


def run(args: argparse.Namespace) -> int:
    resolve_device(args.device)  # a wrong --device is one line before anything loads
    record = RunFolder(args.run).read_record()
    if record.is_prompt_run:
        return _prompt_run(args, get_task(record.task))
    if args.ensemble:
        return _ensemble(args)
    check_combine(args)
    predictor = RunPredictor(args.run, args.checkpoint, args.device, args.precision)
    set_entity_bias(args, predictor)
    predictor.task.set_generation(args.generate, args.max_new_tokens)
    result = predictor.evaluate(args.data, fields_of(args, predictor), args.batch_size, args.limit)
    if args.json:
        return _print_json(result.metrics)
    print(f"{args.data}: {predictor.task.count_phrase(result.metrics)}, model {predictor.folder}")
    _print_report(predictor.task, result.metrics, result.predictions)
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    predictors = [RunPredictor(run, args.checkpoint, args.device, args.precision) for run in [args.run, *args.ensemble]]
    ensemble = EnsemblePredictor(predictors, args.combine)
    set_entity_bias(args, ensemble)
    metrics = ensemble.evaluate(args.data, fields_of(args, predictors[0]), args.batch_size, args.limit).metrics
    if args.json:
        return _print_json(metrics)
    task = ensemble.task
    how = "probabilities averaged" if args.combine == "mean" else f"{task.predicts} voted"
    print(f"{args.data}: {task.count_phrase(metrics)}, an ensemble of {len(predictors)} runs ({how})")
    for member in metrics["members"]:
        print(f"  member {member['run']}: {task.default_metric} {member[task.default_metric]:.4f}")
    _print_report(task, metrics)
    return 0


def _prompt_run(args: argparse.Namespace, task: Task) -> int:
    metrics = evaluate_run(args.run, args.data, args.limit, args.text_field, args.label_field, args.device)
    if args.json:
        return _print_json(metrics)
    print(f"{args.data}: {task.count_phrase(metrics)}, prompted (no training) from {args.run}")
    _print_report(task, metrics)
    return 0


def _print_report(task: Task, metrics: dict, predictions: list[dict] = ()) -> None:
    for line in task.report_lines(metrics) + task.sample_lines(list(predictions)):
        print(line)


def _print_json(metrics: dict) -> int:
    print(json.dumps(metrics, ensure_ascii=False))
    return 0

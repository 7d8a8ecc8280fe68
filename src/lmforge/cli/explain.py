"""``lmforge explain RUN --text ... | --input FILE``: token attributions of a run's predictions
(classification: per class; NER: per predicted entity; causal LM runs and bundled LMs: which prompt
tokens drove the continuation), by captum. Coloured tokens in the terminal, ``--json`` rows,
``--output FILE`` (JSONL), ``--html FILE`` (heat maps, attention maps), and ``--faithfulness``:
deletion curves against random orders on the texts of ``--input``."""

import argparse
import json
import sys
from pathlib import Path

from lmforge.cli.common import add_output_arguments, add_run_arguments, fields_of, output_file
from lmforge.config.schema import DataConfig, DataSource
from lmforge.data.examples import read_text_examples
from lmforge.data.readers import Problems
from lmforge.errors import DataError
from lmforge.explain.attribution import METHOD_HELP, METHODS, Attribution
from lmforge.explain.faithfulness import deletion_curves
from lmforge.explain.open import open_explainer
from lmforge.explain.render import feature_lines, html_page, summary_line, terminal_line
from lmforge.tracking.run_folder import write_atomic, write_predictions


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--text", action="append", help="a text (or a prompt, for a language model) to explain; repeatable")
    p.add_argument("--text-pair", help="classification of text pairs: the second text (with one --text)")
    p.add_argument("--input", help="file of texts (.jsonl .json .csv .tsv .txt), read with the run's data fields")
    p.add_argument("--input-format", metavar="FORMAT", help="read --input with this data reader (as data.format)")
    p.add_argument("--limit", type=int, metavar="N", help="the first N texts of --input only")
    p.add_argument(
        "--method",
        choices=METHODS,
        help="; ".join(f"{k}: {v}" for k, v in METHOD_HELP.items()) + " (default: integrated_gradients; "
        "n-gram runs: occlusion, beside their feature weights)",
    )
    p.add_argument(
        "--target",
        help="classification: the label to explain (default: the predicted one); "
        "language models: the continuation to explain (default: the greedy reply)",
    )
    p.add_argument("--entity", help="NER: the entity (its text) to explain (default: every predicted entity)")
    p.add_argument("--steps", type=int, default=50, help="Integrated Gradients: interpolation steps (default 50)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="language models: length of the greedy reply")
    p.add_argument("--json", action="store_true", help="print one JSON row per explanation")
    add_output_arguments(p, "write the explanations here as JSONL (--overwrite: and --html)")
    p.add_argument("--html", metavar="FILE", help="write an HTML page of heat maps (and attention maps) here")
    p.add_argument(
        "--faithfulness",
        action="store_true",
        help="classification: deletion curves of --method's order against random orders on the --input texts",
    )
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto", help="colour the terminal tokens")


def _check(args: argparse.Namespace) -> None:
    if bool(args.text) == bool(args.input):
        raise DataError("explain: give --text (one or more) or --input FILE, not both")
    if args.text_pair is not None and (not args.text or len(args.text) != 1):
        raise DataError("explain: --text-pair goes with exactly one --text")
    if args.faithfulness and not args.input:
        raise DataError("explain --faithfulness: give --input FILE with the texts to measure on")
    if args.steps < 2:
        raise DataError(f"--steps {args.steps}: Integrated Gradients needs at least 2 steps")
    if args.limit is not None and args.limit < 1:
        raise DataError(f"--limit {args.limit}: must be at least 1")
    for flag in ("output", "html"):
        output_file(args, (args.input,), flag)


def _texts(args: argparse.Namespace, predictor) -> tuple[list[str], list[str] | None]:
    if args.text:
        return list(args.text), [args.text_pair] if args.text_pair is not None else None
    fields = fields_of(args, predictor) if predictor is not None else None
    data = DataConfig(fields=fields) if fields is not None else DataConfig()
    examples = read_text_examples(
        DataSource(path=args.input, format=args.input_format, limit=args.limit), data, Problems(), need_label=False
    )
    if not examples:
        raise DataError(f"{args.input}: no texts to explain")
    pairs = [ex.text_pair for ex in examples] if examples[0].text_pair is not None else None
    return [ex.text for ex in examples], pairs


def run(args: argparse.Namespace) -> int:
    _check(args)
    opened = open_explainer(args.run, args.checkpoint, args.device)
    if args.faithfulness and opened.task != "classification":
        raise DataError("explain: --faithfulness is for classification runs")
    texts, pairs = _texts(args, opened.predictor)
    if args.faithfulness:
        return _faithfulness(args, opened.explainer, texts, pairs)
    found = [
        a
        for i, text in enumerate(texts)
        for a in opened.explain(
            text,
            args.method,
            args.target,
            pair=pairs[i] if pairs else None,
            entity=args.entity,
            steps=args.steps,
            max_new_tokens=args.max_new_tokens,
        )
    ]
    _show(args, found)
    return 0


def _show(args: argparse.Namespace, found: list[Attribution]) -> None:
    if args.output:
        write_predictions(Path(args.output), [a.as_json() for a in found])
    if args.html:
        write_atomic(Path(args.html), html_page(found, f"lmforge explain {args.run}"))
    if args.json:
        for a in found:
            print(json.dumps(a.as_json(), ensure_ascii=False))
    elif not args.output:
        colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
        if not found:
            print("nothing to explain (no entity was found)")
        for a in found:
            print(summary_line(a))
            print("  " + terminal_line(a, colour))
            for line in feature_lines(a):
                print(line)
    for flag, what in (("output", f"{len(found)} explanations"), ("html", "heat maps")):
        if getattr(args, flag):
            print(f"{what} written to {getattr(args, flag)}", file=sys.stderr if args.json else sys.stdout)


def _faithfulness(args, explainer, texts, pairs) -> int:
    curves = deletion_curves(explainer, texts, pairs, args.method, steps=args.steps)
    if args.output:
        write_atomic(Path(args.output), json.dumps(curves.as_json(), indent=2) + "\n")
    if args.json:
        print(json.dumps(curves.as_json()))
    else:
        print("\n".join(curves.lines()))
    return 0

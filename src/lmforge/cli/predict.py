"""``lmforge predict RUN --text ... | --input FILE``: labels (classification) or entities (NER) as JSONL."""

import argparse
import json
from pathlib import Path

from lmforge.cli.common import (
    add_ensemble_arguments,
    add_output_arguments,
    add_precision_argument,
    add_run_arguments,
    check_combine,
    fields_of,
    output_file,
    set_entity_bias,
)
from lmforge.config.schema import DataConfig, DataSource
from lmforge.data.examples import read_rows, read_text_examples
from lmforge.data.readers import Problems
from lmforge.data.tagged import read_tagged
from lmforge.errors import DataError
from lmforge.inference.ensemble import EnsemblePredictor
from lmforge.inference.predictor import RunPredictor
from lmforge.tracking.run_folder import write_predictions

# Readers that yield sentences already split into tokens (a token a row), not rows with a text field.
TAGGED_INPUT_FORMATS = ("conll", "peoples_daily")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    add_precision_argument(p)
    p.add_argument("--text", action="append", help="a text to classify or tag (repeatable)")
    p.add_argument(
        "--input",
        help="file of texts (.jsonl .json .csv .tsv .txt; NER also .conll), or "
        "package:NAME/PATH for a file an installed package ships",
    )
    p.add_argument(
        "--input-format",
        metavar="FORMAT",
        help="read --input with this data reader instead of by its suffix (as data.format; "
        "NER: conll or peoples_daily, whose sentences are tagged as they are split)",
    )
    add_output_arguments(p, "write predictions here as JSONL (default: stdout)")
    p.add_argument("--top-k", type=int, default=3, help="label probabilities to list per row")
    add_ensemble_arguments(p, "predict with RUN and these runs as one ensemble (probabilities averaged)")
    p.add_argument(
        "--entity-bias",
        type=float,
        default=0.0,
        metavar="B",
        help="NER: add B to the log-score of every tag but O before decoding (e.g. the "
        "whole_data_bias that eval --tune-entity-bias reports)",
    )


def run(args: argparse.Namespace) -> int:
    if bool(args.text) == bool(args.input):
        raise DataError("predict: give --text (one or more) or --input FILE, not both")
    if args.input_format and not args.input:
        raise DataError("predict: --input-format reads --input FILE; --text needs no reader")
    output_file(args, (args.input,))
    predictor = RunPredictor(args.run, args.checkpoint, args.device, args.precision)
    check_combine(args)
    if args.ensemble:
        predictor = EnsemblePredictor(
            [predictor] + [RunPredictor(r, args.checkpoint, args.device, args.precision) for r in args.ensemble],
            args.combine,
        )
    set_entity_bias(args, predictor)
    task = predictor.record.task
    if task not in ("classification", "token_classification"):
        raise DataError(
            f"{args.run}: predict works on classification and token_classification runs; "
            f"this is a {task} run (use lmforge eval, or fine-tune from its model folder)"
        )
    out = _predict_entities(args, predictor) if task == "token_classification" else _predict_labels(args, predictor)
    if args.output:
        write_predictions(Path(args.output), out)
        print(f"{len(out)} predictions written to {args.output}")
    else:
        for row in out:
            print(json.dumps(row, ensure_ascii=False))
    return 0


def _predict_labels(args: argparse.Namespace, predictor) -> list[dict]:
    if args.text:
        texts, pairs, extra = list(args.text), None, [{} for _ in args.text]
    else:
        fields = fields_of(args, predictor)
        examples = read_text_examples(
            DataSource(path=args.input, format=args.input_format),
            DataConfig(fields=fields),
            Problems(),
            need_label=False,
        )
        texts = [ex.text for ex in examples]
        pairs = [ex.text_pair for ex in examples] if fields.text_pair is not None else None
        extra = [{"where": ex.where} for ex in examples]
    rows = predictor.predict(texts, pairs, args.batch_size, args.top_k)
    return [{"text": t, **row, **e} for t, row, e in zip(texts, rows, extra)]


def _predict_entities(args: argparse.Namespace, predictor) -> list[dict]:
    """Entities of raw texts (character offsets) or of pre-split sentences (token offsets): --text,
    or --input with a `text` or `tokens` field (.jsonl .json .csv .tsv; .txt: a text per line;
    .conll: a token per line; --input-format names a reader, e.g. peoples_daily). Rows of tokens
    come out as ``tokens`` + ``tags``, and raw texts as ``text`` + ``entities``: either is a training
    file as it stands, so a run's (or an ensemble's) predictions on unlabelled text can be trained on
    (self-training)."""
    if args.text:
        rows = predictor.predict_entities(texts=list(args.text), batch_size=args.batch_size)
        return [{"text": t, **r} for t, r in zip(args.text, rows)]
    fields = fields_of(args, predictor)
    source = DataSource(path=args.input, format=args.input_format)
    if args.input_format in TAGGED_INPUT_FORMATS or (
        args.input_format is None and Path(args.input).suffix.lower() in (".conll", ".conllu")
    ):
        sentences = read_tagged(source, DataConfig(fields=fields), Problems(), need_tags=False)
        rows = predictor.predict_entities(tokens=[s.tokens for s in sentences], batch_size=args.batch_size)
        return [{"tokens": s.tokens, **r, "where": s.where} for s, r in zip(sentences, rows)]
    texts, tokens, where = [], [], []
    for place, row, f in read_rows(source, DataConfig(fields=fields), Problems()):
        value = row.get(f.tokens)
        if isinstance(value, list):
            tokens.append([str(t) for t in value])
        elif f.text in row:
            texts.append(str(row[f.text]))
        else:
            raise DataError(f"{place}: no '{f.text}' or '{f.tokens}' field (set --text-field)")
        where.append(place)
    if texts and tokens:
        raise DataError(f"{args.input}: mixes rows with '{fields.text}' and rows with '{fields.tokens}'")
    if tokens:
        rows = predictor.predict_entities(tokens=tokens, batch_size=args.batch_size)
        return [{"tokens": t, **r, "where": w} for t, r, w in zip(tokens, rows, where)]
    rows = predictor.predict_entities(texts=texts, batch_size=args.batch_size)
    return [{"text": t, **r, "where": w} for t, r, w in zip(texts, rows, where)]

"""The functions behind each CLI command: parse nothing, print results, raise ``LmforgeError``."""

import json
import logging
import math
import sys
from pathlib import Path

from lmforge.errors import DataError, LmforgeError

log = logging.getLogger("lmforge")
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def _overrides(args) -> list[str]:
    extra = list(args.overrides)
    if getattr(args, "resume", False):
        extra.append("resume=true")
    if getattr(args, "overwrite", False):
        extra.append("overwrite=true")
    return extra


def _again(config: str, overrides: list[str]) -> str:
    """The config and the overrides it ran with (not resume/overwrite), quoted for a shell: the
    same run again, e.g. to resume it into the same output folder."""
    import shlex

    kept = [o for o in overrides if not o.startswith(("resume=", "overwrite="))]
    return " ".join(shlex.quote(part) for part in [config, *kept])


def cmd_train(args) -> int:
    from lmforge.config import load_config
    from lmforge.training.recipe import train

    config = load_config(args.config, _overrides(args))
    outcome = train(config, quiet=args.quiet)
    if outcome.stopped_by:
        print(
            f"stopped by {outcome.stopped_by}: checkpoint saved in {outcome.run.checkpoints}; "
            f"continue with: lmforge train {_again(args.config, args.overrides)} resume=true",
            file=sys.stderr,
        )
        return 130 if outcome.stopped_by == "SIGINT" else 0
    print(f"run folder: {outcome.run.path}\nreport: {outcome.run.report}")
    return 0


def cmd_demo(args) -> int:
    args.config = str(DEMO_CONFIG)
    return cmd_train(args)


def cmd_validate(args) -> int:
    from lmforge.config import load_config
    from lmforge.config.loader import config_to_dict
    from lmforge.data.readers import Problems
    from lmforge.models.registry import as_spec
    from lmforge.models.transformer import resolve_source
    from lmforge.tasks import get_task
    from lmforge.tracking.run_folder import RunFolder

    config = load_config(args.config, _overrides(args))
    problems = Problems(collect=True, skip=config.data.on_error == "skip")
    task = get_task(config.task)
    data = task.load_data(config, problems)
    spec = as_spec(config.model)
    checks = [
        lambda: resolve_source(spec.path) if spec.path is not None else None,
        lambda: RunFolder(config.output).check_writable(config_to_dict(config), config.resume, config.overwrite),
    ]
    for check in checks:
        try:
            check()
        except LmforgeError as exc:
            problems.report(str(exc))
    if problems.items:
        for item in problems.items:
            print(f"problem: {item}")
        raise DataError(f"{args.config}: {len(problems.items)} problem(s) found")
    if problems.skipped:
        print(f"skipped {problems.skipped} bad row(s) (data.on_error: skip); the first: {problems.first_skipped}")
    labels = ", ".join(data.labels.names[:10]) + (" ..." if len(data.labels.names) > 10 else "")
    label_part = f"; {len(data.labels.names)} labels ({labels})" if data.labels.names else ""
    print(
        f"{args.config}: ok -- {len(data.train)} train, {len(data.validation)} validation, "
        f"{len(data.test)} test examples{label_part}"
    )
    for note in data.notes:  # what training would log about the data (tag scheme, repairs, ...)
        print(f"note: {note}")
    return 0


def _fields(args, predictor):
    from lmforge.config.schema import Fields

    fields = dict(predictor.meta.get("fields") or {})
    for key in ("text", "text_pair", "label"):
        value = getattr(args, f"{key}_field", None)
        if value is not None:
            fields[key] = value
    return Fields(**fields)


def _decoding_options(args, predictor) -> None:
    """``--entity-bias`` / ``--tune-entity-bias`` onto the task that decodes (NER runs only)."""
    bias, tune = getattr(args, "entity_bias", 0.0), getattr(args, "tune_entity_bias", False)
    if not bias and not tune:
        return
    flag = "--tune-entity-bias" if tune else "--entity-bias"
    if bias and tune:
        raise DataError("give --entity-bias B or --tune-entity-bias, not both (tuning chooses B)")
    if not math.isfinite(bias):
        raise DataError(f"--entity-bias {bias}: give a finite number (e.g. 0.5)")
    if predictor.meta["task"] != "token_classification":
        raise DataError(
            f"{flag}: only token_classification runs decode tags; {args.run} is a {predictor.meta['task']} run"
        )
    members = getattr(predictor, "members", [predictor])
    one_pass = next((m for m in members if m.one_pass), None)
    if one_pass is not None:
        raise DataError(
            f"{flag}: the ngram family's tagger ({one_pass.run.path}) decodes in one pass and takes no bias"
        )
    predictor.task.entity_bias, predictor.task.tune_entity_bias = bias, tune


def cmd_eval(args) -> int:
    from lmforge.inference.predictor import RunPredictor
    from lmforge.tracking.run_folder import RunFolder

    if RunFolder(args.run).read_meta().get("model", {}).get("family") == "prompt":
        return _eval_prompt_run(args)
    if args.ensemble:
        return _eval_ensemble(args)
    if args.combine != "mean":
        raise DataError("--combine: combines the runs of --ensemble; give --ensemble RUN2 ...")
    predictor = RunPredictor(args.run, args.checkpoint)
    _decoding_options(args, predictor)
    predictor.task.set_generation(args.generate, args.max_new_tokens)
    result = predictor.evaluate(args.data, _fields(args, predictor), args.batch_size, args.limit)
    metrics = result.metrics
    if args.json:
        print(json.dumps(metrics, ensure_ascii=False))
        return 0
    if "per_type" in metrics:
        return _print_entity_metrics(args, predictor, metrics)
    if "per_class" not in metrics:
        print(f"{args.data}: model {predictor.folder}")
        for key, value in metrics.items():
            print(f"  {key:<16} {value:.4f}" if isinstance(value, float) else f"  {key:<16} {value}")
        for row in result.predictions[:3]:
            print(
                f"  sample: {row['where']}\n    reference: {row['reference'][:200]!r}\n"
                f"    generated: {row['generated'][:200]!r}"
            )
        return 0
    print(f"{args.data}: {metrics['count']} examples, model {predictor.folder}")
    _print_class_metrics(metrics)
    return 0


def _eval_ensemble(args) -> int:
    from lmforge.inference.ensemble import EnsemblePredictor
    from lmforge.inference.predictor import RunPredictor

    predictors = [RunPredictor(run, args.checkpoint) for run in [args.run, *args.ensemble]]
    ensemble = EnsemblePredictor(predictors, args.combine)
    _decoding_options(args, ensemble)
    metrics = ensemble.evaluate(args.data, _fields(args, predictors[0]), args.batch_size, args.limit).metrics
    if args.json:
        print(json.dumps(metrics, ensure_ascii=False))
        return 0
    headline = "f1" if "per_type" in metrics else "macro_f1"
    print(
        f"{args.data}: {metrics['count']} {'sentences' if 'per_type' in metrics else 'examples'}, "
        f"an ensemble of {len(predictors)} runs "
        f"({'probabilities averaged' if args.combine != 'vote' else 'entity spans voted' if 'per_type' in metrics else 'labels voted'})"
    )
    for member in metrics["members"]:
        print(f"  member {member['run']}: {headline} {member[headline]:.4f}")
    if "per_type" in metrics:
        return _print_entity_table(metrics)
    _print_class_metrics(metrics)
    return 0


def _eval_prompt_run(args) -> int:
    from lmforge.prompting.recipe import evaluate_run

    metrics = evaluate_run(args.run, args.data, args.limit, args.text_field, args.label_field)
    if args.json:
        print(json.dumps(metrics, ensure_ascii=False))
        return 0
    print(f"{args.data}: {metrics['count']} examples, prompted (no training) from {args.run}")
    if "per_type" in metrics:
        return _print_entity_table(metrics)
    if "rougeL" in metrics:
        from lmforge.prompting.recipe import headline

        print("  " + headline(metrics))
        return 0
    _print_class_metrics(metrics)
    if "calibrated" in metrics:
        print("  calibrated: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics["calibrated"].items()))
    return 0


def _print_class_metrics(metrics: dict) -> None:
    for key in ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall", "loss"):
        if key in metrics:
            print(f"  {key:<16} {metrics[key]:.4f}")
    print(f"  {'label':<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for name, row in metrics["per_class"].items():
        print(f"  {name[:20]:<20} {row['precision']:>9.4f} {row['recall']:>9.4f} {row['f1']:>9.4f} {row['support']:>8}")
    print("  confusion matrix (rows: true, columns: predicted):")
    for name, row in zip(metrics["labels"], metrics["confusion_matrix"]):
        print(f"  {name[:20]:<20} " + " ".join(f"{v:>6}" for v in row))


def _print_entity_metrics(args, predictor, metrics: dict) -> int:
    print(f"{args.data}: {metrics['count']} sentences, {metrics['entities']} entities, model {predictor.folder}")
    return _print_entity_table(metrics)


def _print_entity_table(metrics: dict) -> int:
    for key in ("f1", "precision", "recall", "macro_f1", "token_accuracy", "loss"):
        if key in metrics:
            print(f"  {key:<16} {metrics[key]:.4f}")
    tuning = metrics.get("entity_bias") or {}
    for fold in tuning.get("folds", []):
        print(
            f"  entity bias {fold['bias']:+.2f} tuned on the {fold['tuned_on']}: held-out f1 "
            f"{fold['held_out_f1']:.4f} (no bias {fold['held_out_f1_no_bias']:.4f})"
        )
    if "whole_data_bias" in tuning:
        print(
            f"  entity bias best on all of it: {tuning['whole_data_bias']:+.2f} (f1 {tuning['whole_data_f1']:.4f}, "
            f"tuned; no bias {tuning['no_bias_f1']:.4f}); the f1 above is cross-validated"
        )
    print(f"  {'type':<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for name, row in metrics["per_type"].items():
        print(f"  {name[:20]:<20} {row['precision']:>9.4f} {row['recall']:>9.4f} {row['f1']:>9.4f} {row['support']:>8}")
    if metrics.get("confusions"):
        print("  most frequent errors (gold -> predicted):")
        for row in metrics["confusions"]:
            print(f"  {row['gold']:>20} -> {row['pred']:<24} {row['count']:>6}")
    return 0


def cmd_predict(args) -> int:
    from lmforge.inference.predictor import RunPredictor
    from lmforge.tracking.run_folder import write_predictions

    if bool(args.text) == bool(args.input):
        raise DataError("predict: give --text (one or more) or --input FILE, not both")
    if args.input_format and not args.input:
        raise DataError("predict: --input-format reads --input FILE; --text needs no reader")
    if args.input and args.output and Path(args.input).resolve() == Path(args.output).resolve():
        raise DataError(f"--output {args.output}: would overwrite the input file")
    predictor = RunPredictor(args.run, args.checkpoint)
    if args.ensemble:
        from lmforge.inference.ensemble import EnsemblePredictor

        predictor = EnsemblePredictor(
            [predictor] + [RunPredictor(r, args.checkpoint) for r in args.ensemble], args.combine
        )
    elif args.combine != "mean":
        raise DataError("--combine: combines the runs of --ensemble; give --ensemble RUN2 ...")
    _decoding_options(args, predictor)
    if predictor.meta["task"] not in ("classification", "token_classification"):
        raise DataError(
            f"{args.run}: predict works on classification and token_classification runs; "
            f"this is a {predictor.meta['task']} run (use lmforge eval, or fine-tune from "
            f"its model folder)"
        )
    if predictor.meta["task"] == "token_classification":
        out = _predict_entities(args, predictor)
    else:
        out = _predict_labels(args, predictor)
    if args.output:
        write_predictions(Path(args.output), out)
        print(f"{len(out)} predictions written to {args.output}")
    else:
        for row in out:
            print(json.dumps(row, ensure_ascii=False))
    return 0


def _predict_labels(args, predictor) -> list[dict]:
    from lmforge.config.schema import DataConfig, DataSource
    from lmforge.data.examples import read_text_examples
    from lmforge.data.readers import Problems

    if args.text:
        texts, pairs, extra = list(args.text), None, [{} for _ in args.text]
    else:
        fields = _fields(args, predictor)
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


# Readers that yield sentences already split into tokens (a token a row), not rows with a text field.
TAGGED_INPUT_FORMATS = ("conll", "peoples_daily")


def _predict_entities(args, predictor) -> list[dict]:
    """Entities of raw texts (character offsets) or of pre-split sentences (token offsets): --text,
    or --input with a `text` or `tokens` field (.jsonl .json .csv .tsv; .txt: a text per line;
    .conll: a token per line; --input-format names a reader, e.g. peoples_daily). Rows of tokens
    come out as ``tokens`` + ``tags``, and raw texts as ``text`` + ``entities``: either is a training
    file as it stands, so a run's (or an ensemble's) predictions on unlabelled text can be trained on
    (self-training)."""
    from lmforge.config.schema import DataConfig, DataSource
    from lmforge.data.examples import read_rows
    from lmforge.data.readers import Problems
    from lmforge.data.tagged import read_tagged

    if args.text:
        rows = predictor.predict_entities(texts=list(args.text), batch_size=args.batch_size)
        return [{"text": t, **r} for t, r in zip(args.text, rows)]
    fields = _fields(args, predictor)
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


def _generation_options(args):
    from lmforge.models.decoding import GenerationOptions

    return GenerationOptions(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_beams=args.num_beams,
        repetition_penalty=args.repetition_penalty,
        stop=list(args.stop),
        seed=args.seed,
    )


def _with_system(system: str | None, messages: list[dict]) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + messages


def cmd_generate(args) -> int:
    from lmforge.inference.generator import open_generator

    options = _generation_options(args)
    options.check()
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    generator = open_generator(args.model, args.checkpoint, args.threads)
    if args.system and not args.raw:
        prompt = _with_system(args.system, [{"role": "user", "content": prompt}])
    stream = None if (args.no_stream or args.json) else (lambda piece: print(piece, end="", flush=True))
    result = generator.generate(prompt, options, raw=args.raw, stream=stream)
    if args.json:
        print(
            json.dumps(
                {
                    "text": result.text,
                    "prompt_tokens": result.prompt_tokens,
                    "new_tokens": result.new_tokens,
                    "stopped_by": result.stopped_by,
                    "seconds": round(result.seconds, 3),
                    "tokens_per_s": round(result.tokens_per_s, 2),
                },
                ensure_ascii=False,
            )
        )
    else:
        print("" if stream else result.text)
        log.info(
            "%d new tokens in %.1f s (%.1f tokens/s), stopped by %s",
            result.new_tokens,
            result.seconds,
            result.tokens_per_s,
            result.stopped_by,
        )
    return 0


def cmd_chat(args) -> int:
    """Read a line, stream the reply, keep the conversation; /reset forgets it, /exit or EOF ends."""
    from lmforge.inference.generator import open_generator

    options = _generation_options(args)
    options.check()
    generator = open_generator(args.model, args.checkpoint, args.threads)
    history: list[dict] = []
    print(f"chatting with {args.model} (/reset forgets the conversation, /exit ends)", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if line.strip() in ("/exit", "/quit"):
            return 0
        if line.strip() == "/reset":
            history = []
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        try:
            result = generator.generate(
                _with_system(args.system, history), options, stream=lambda piece: print(piece, end="", flush=True)
            )
        except DataError as exc:  # e.g. the conversation outgrew the context
            history.pop()
            print(f"lmforge: {exc} (/reset to start over)", file=sys.stderr)
            continue
        print()
        history.append({"role": "assistant", "content": result.text})


def cmd_export(args) -> int:
    from lmforge.export.compare import markdown
    from lmforge.export.pipeline import run_export

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # ONNX Runtime sessions take the same number
    quiet = lambda *_: None  # noqa: E731
    summary = run_export(args.run, vars(args), log=quiet if args.json else lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    print(markdown(summary["rows"]), end="")
    for row in summary["rows"][1:]:
        if "max_logit_difference" in row:
            print(f"{row['model']}: merged and unmerged logits agree within {row['max_logit_difference']:.1e}")
        if "parity_max_difference" in row:
            print(
                f"{row['model']}: ONNX Runtime and PyTorch agree within {row['parity_max_difference']:.1e} "
                f"on {row['parity_shapes']} batch shapes"
            )
    print(f"output: {summary['output']} (a run folder: lmforge predict/eval/serve take it)")
    print(f"report: {summary['output']}/report.html")
    return 0


def cmd_distil(args) -> int:
    from lmforge.config import load_config
    from lmforge.training.distil import distil

    path, args.overrides = args.student[0], args.student[1:]
    config = load_config(path, _overrides(args))
    outcome = distil(args.teacher, config, quiet=args.quiet, baseline=not args.no_baseline)
    if outcome.stopped_by:
        print(
            f"stopped by {outcome.stopped_by}; continue with: lmforge distil {args.teacher} "
            f"--student {' '.join(args.student)} --resume",
            file=sys.stderr,
        )
        return 130 if outcome.stopped_by == "SIGINT" else 0
    report = outcome.report
    print(f"{'model':<14} {'parameters':>12} {'val accuracy':>13} {'val macro_f1':>13}")
    rows = [("teacher", report["teacher"])] + [(k, report[k]) for k in ("distilled", "labels_only") if k in report]
    for name, row in rows:
        val = row["results"].get("validation", {})
        cells = [
            f"{val[k]:>13.4f}" if isinstance(val.get(k), float) else f"{'-':>13}" for k in ("accuracy", "macro_f1")
        ]
        print(f"{name:<14} {row.get('parameters') or 0:>12,} {' '.join(cells)}")
    print(f"report: {outcome.output / 'distillation.json'}")
    return 0


def cmd_serve(args) -> int:
    import os

    from lmforge.serving.server import serve
    from lmforge.serving.settings import ServeSettings

    settings = ServeSettings(
        sources=args.models,
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get("LMFORGE_API_KEY") or None,
        allow_insecure=args.allow_insecure,
        workers=args.workers,
        max_body_bytes=args.max_body_bytes,
        max_inputs=args.max_inputs,
        max_input_tokens=args.max_input_tokens,
        max_n=args.max_n,
        max_stop=args.max_stop,
        default_max_tokens=args.default_max_tokens,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        max_generation_batch=args.max_generation_batch,
        max_queue=args.max_queue,
        drain_timeout=args.drain_timeout,
        threads=args.threads,
        checkpoint=args.checkpoint,
        dtype=args.dtype,
        entity_bias=args.entity_bias,
        combine=args.combine,
    )
    return serve(settings)


def cmd_prompt(args) -> int:
    from lmforge.config import load_config
    from lmforge.prompting.recipe import headline, run_prompt

    extra = list(args.overrides)
    for flag, key in (
        ("shots", "prompt.shots"),
        ("model", "prompt.model"),
        ("selection", "prompt.selection"),
        ("method", "prompt.method"),
        ("limit", "prompt.limit"),
    ):
        if getattr(args, flag) is not None:
            extra.append(f"{key}={getattr(args, flag)}")
    if args.overwrite:
        extra.append("overwrite=true")
    config = load_config(args.config, extra)
    outcome = run_prompt(config, quiet=args.quiet)
    print(f"run folder: {outcome.run_dir}")
    for split, metrics in outcome.results.items():
        print(f"{split}: {headline(metrics)}")
    print(f"report: {outcome.run_dir}/report.html")
    return 0


def cmd_compare(args) -> int:
    from lmforge.selection.recipe import run_compare

    summary = run_compare(
        args.config,
        list(args.overrides),
        args.models,
        args.shots,
        args.budget,
        args.output,
        args.limit,
        args.max_shots,
        args.metric,
        args.overwrite,
        args.quiet,
        args.min_steps,
    )
    print(summary["table"], end="")
    if summary.get("curve"):
        print(f"\nlearning curve ({summary['metric']} by labelled examples):")
        print(summary["curve"], end="")
    print(f"\n{summary['recommendation']['text']}")
    print(f"report: {summary['folder']}/report.html")
    failed = [r["candidate"] for r in summary["rows"] if "error" in r]
    return 1 if failed and len(failed) == len(summary["rows"]) else 0

"""The ``lmforge`` command: a table of command -> function, and one-line errors for users."""

import argparse
import sys

from lmforge.cli import commands
from lmforge.errors import LmforgeError

OVERRIDES_HELP = "config overrides, e.g. train.lr=3e-5 tuning.method=lora"


def _train_args(p: argparse.ArgumentParser, config: bool = True) -> None:
    if config:
        p.add_argument("config", help="the job's YAML config")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a different run in the output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder written by lmforge train")
    p.add_argument(
        "--checkpoint",
        choices=["auto", "best", "model"],
        default="auto",
        help="best checkpoint, final model, or auto (best if present)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--text-field", help="column with the text (default: the run's data.fields.text)")
    p.add_argument("--text-pair-field", dest="text_pair_field", help="column with the second text")


def _eval_args(p):
    _run_args(p)
    p.add_argument("--data", required=True, help="labelled data file (.jsonl .json .csv .tsv)")
    p.add_argument("--label-field", help="column with the label (default: the run's data.fields.label)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--limit", type=int, help="evaluate on the first N rows of the file only")
    p.add_argument(
        "--ensemble",
        nargs="+",
        metavar="RUN",
        help="classification and NER: evaluate RUN together with these runs, averaging their "
        "probabilities (each member is scored alone too)",
    )
    p.add_argument(
        "--combine",
        choices=("mean", "vote"),
        default="mean",
        help="how --ensemble members combine: mean (average their probabilities; default) or "
        "vote (NER: keep the entity spans more than half the members predict; classification: "
        "the label most members choose)",
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


def _predict_args(p):
    _run_args(p)
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
    p.add_argument("--output", help="write predictions here as JSONL (default: stdout)")
    p.add_argument("--top-k", type=int, default=3, help="label probabilities to list per row")
    p.add_argument(
        "--ensemble",
        nargs="+",
        metavar="RUN",
        help="predict with RUN and these runs as one ensemble (probabilities averaged)",
    )
    p.add_argument(
        "--combine",
        choices=("mean", "vote"),
        default="mean",
        help="how --ensemble members combine: mean (average their probabilities; default) or "
        "vote (NER: keep the entity spans more than half the members predict; classification: "
        "the label most members choose)",
    )
    p.add_argument(
        "--entity-bias",
        type=float,
        default=0.0,
        metavar="B",
        help="NER: add B to the log-score of every tag but O before decoding (e.g. the "
        "whole_data_bias that eval --tune-entity-bias reports)",
    )


def _validate_args(p):
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)


def _generation_args(p):
    p.add_argument("model", help="a causal_lm run folder, a bundled alias (smollm2) or a local model folder")
    p.add_argument(
        "--checkpoint",
        choices=["auto", "best", "model"],
        default="auto",
        help="run folders: best checkpoint, final model, or auto (best if present)",
    )
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, help="sampling temperature (default: greedy decoding)")
    p.add_argument("--top-p", type=float, help="nucleus sampling: smallest set of tokens with this much probability")
    p.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    p.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams")
    p.add_argument("--repetition-penalty", type=float, help="e.g. 1.1: discourage repeating tokens")
    p.add_argument("--stop", action="append", default=[], help="stop when this text appears (repeatable)")
    p.add_argument("--seed", type=int, help="seed for sampling")
    p.add_argument("--system", help="system message (chat template models)")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")


def _generate_args(p):
    _generation_args(p)
    p.add_argument("prompt", help="the prompt ('-' reads it from standard input)")
    p.add_argument("--raw", action="store_true", help="continue the prompt as is, without the chat template")
    p.add_argument("--no-stream", action="store_true", help="print the text when it is complete")
    p.add_argument("--json", action="store_true", help="print one JSON object (text, token counts, speed)")


def _export_args(p):
    from lmforge.export.pipeline import add_step_arguments

    p.add_argument("run", help="a run folder written by lmforge train")
    add_step_arguments(p)  # one flag set per registered step: --merge, --onnx, --quantize, ...
    p.add_argument(
        "--output",
        help="folder to write, itself a run folder for predict/eval/serve "
        "(must not exist or be empty; default: RUN/export)",
    )
    p.add_argument(
        "--eval-data", help="labelled file every variant is evaluated on (default: the run's validation data)"
    )
    p.add_argument(
        "--onnx-weight-type",
        choices=["qint8", "quint8"],
        help="--onnx --quantize int8: weight type of ONNX Runtime's quantization (default qint8)",
    )
    p.add_argument(
        "--checkpoint",
        choices=["auto", "best", "model"],
        default="auto",
        help="best checkpoint, final model, or auto (best if present)",
    )
    p.add_argument("--threads", type=int, help="CPU threads for every variant's timings (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the comparison as one JSON object")


def _serve_args(p):
    from lmforge.serving.settings import ServeSettings

    d = ServeSettings()
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="run folder, bundled alias (minilm, smollm2) or model folder; NAME=PATH names it; "
        "RUN1+RUN2[+...] serves classification or NER runs as one ensemble",
    )
    p.add_argument("--host", default=d.host, help="address to bind (default %(default)s; others need --api-key)")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument(
        "--api-key", help="require 'Authorization: Bearer KEY' on every route but /health (default: $LMFORGE_API_KEY)"
    )
    p.add_argument("--allow-insecure", action="store_true", help="allow a non-loopback host without a key")
    p.add_argument("--workers", type=int, default=d.workers, help="server processes, each with the models")
    p.add_argument("--checkpoint", choices=["auto", "best", "model"], default=d.checkpoint)
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default=d.dtype,
        help="encoder routes: auto = bfloat16 where the hardware has it and the model answers the same",
    )
    p.add_argument(
        "--entity-bias",
        type=float,
        default=d.entity_bias,
        metavar="B",
        help="NER models: add B to the log-score of every tag but O before decoding, as predict --entity-bias does",
    )
    p.add_argument(
        "--combine",
        choices=("mean", "vote"),
        default=d.combine,
        help="ensembles (RUN1+RUN2): mean (average their probabilities; default) or vote (NER: "
        "the entity spans more than half the members predict; classification: the label most "
        "members choose)",
    )
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    p.add_argument("--max-inputs", type=int, default=d.max_inputs, help="texts or prompts per request")
    p.add_argument("--max-input-tokens", type=int, help="longest encoder input (default: the model's)")
    p.add_argument("--max-n", type=int, default=d.max_n, help="most completions per prompt")
    p.add_argument("--max-stop", type=int, default=d.max_stop, help="most stop strings per request")
    p.add_argument(
        "--default-max-tokens",
        type=int,
        default=d.default_max_tokens,
        help="chat reply length when the request gives no max_tokens",
    )
    p.add_argument("--max-batch", type=int, help="encoder routes: inputs per batch (default: 8 on CPU, 32 on GPU)")
    p.add_argument(
        "--batch-wait-ms", type=float, default=d.batch_wait_ms, help="encoder routes: how long a batch waits to fill"
    )
    p.add_argument(
        "--max-generation-batch", type=int, default=d.max_generation_batch, help="sequences decoded together"
    )
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="waiting requests per model before 429")
    p.add_argument(
        "--drain-timeout", type=float, default=d.drain_timeout, help="seconds to finish in-flight requests on SIGTERM"
    )


def _prompt_args(p):
    p.add_argument(
        "config",
        help="a classification, token_classification, seq2seq or instruction (causal_lm) "
        "config (data as for train; prompt.* options)",
    )
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--shots", type=int, help="in-context examples per text (prompt.shots)")
    p.add_argument("--model", help="causal LM or encoder (prompt.model; default smollm2)")
    p.add_argument("--selection", choices=["random", "balanced", "nearest"], help="prompt.selection")
    p.add_argument("--method", choices=["likelihood", "similarity"], help="prompt.method")
    p.add_argument("--limit", type=int, help="prompt on a seeded sample of N evaluation rows (prompt.limit)")
    p.add_argument("--overwrite", action="store_true", help="replace a run in the output folder")
    p.add_argument("--quiet", action="store_true")


def _compare_args(p):
    p.add_argument("config", help="the job's config (data, task, training settings every candidate shares)")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument(
        "--models",
        help="candidates, comma-separated: families (ngram, lstm, transformer), aliases "
        "(minilm), folders, prompt, similarity; ':lora', ':8shot', ':key=value' modify one "
        "(default: the small families and the config's model)",
    )
    p.add_argument("--shots", help="learning curve: labelled examples per run, e.g. 0,8,32,128,all")
    p.add_argument("--max-shots", type=int, default=32, help="--shots: most in-context examples a prompt gets")
    p.add_argument(
        "--min-steps",
        type=int,
        default=50,
        help="--shots: a candidate trained on N examples takes at least this many optimizer steps "
        "(more epochs over its N examples)",
    )
    p.add_argument("--budget", help="e.g. latency_ms=20,memory_mb=1500 (also p95_ms, size_mb)")
    p.add_argument("--metric", help="quality metric (default: macro_f1; entity f1 for NER)")
    p.add_argument(
        "--limit",
        type=int,
        help="prompt candidates classify a seeded sample of N evaluation rows; all candidates are scored on those rows",
    )
    p.add_argument("--output", help="folder for the comparison (default: the config's output/compare)")
    p.add_argument("--overwrite", action="store_true", help="redo candidates whose runs already exist")
    p.add_argument("--quiet", action="store_true")


def _distil_args(p):
    p.add_argument("teacher", help="a fine-tuned classification run folder (the teacher)")
    # nargs="+": the overrides follow the config, as in `lmforge distil RUN --student CONFIG k=v ...`
    p.add_argument(
        "--student",
        required=True,
        nargs="+",
        metavar=("CONFIG", "KEY=VALUE"),
        help="the student's YAML config (data, model, training; distil.*), then its overrides",
    )
    p.add_argument(
        "--no-baseline", action="store_true", help="do not also train the same student on labels alone (the comparison)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoints")
    p.add_argument("--overwrite", action="store_true", help="replace different runs in the output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")


# command -> (help, argument builder, function)
COMMANDS = {
    "train": ("fine-tune or pre-train a model from a YAML config", _train_args, commands.cmd_train),
    "demo": (
        "fine-tune MiniLM on BBC News (bundled) into runs/demo",
        lambda p: _train_args(p, config=False),
        commands.cmd_demo,
    ),
    "eval": ("metrics of a run on a labelled file", _eval_args, commands.cmd_eval),
    "predict": ("predict with a run: --text or --input FILE", _predict_args, commands.cmd_predict),
    "validate": ("check a config and read all its data, without training", _validate_args, commands.cmd_validate),
    "generate": ("generate text from a prompt with a causal LM", _generate_args, commands.cmd_generate),
    "export": (
        "export a run's model (--merge, --quantize int8, --onnx), each variant re-evaluated",
        _export_args,
        commands.cmd_export,
    ),
    "prompt": (
        "no training: classify (label likelihoods or similarity), tag entities or generate, zero/few-shot",
        _prompt_args,
        commands.cmd_prompt,
    ),
    "compare": (
        "train or prompt several candidates on the same split: quality, size, speed, memory, a recommendation",
        _compare_args,
        commands.cmd_compare,
    ),
    "distil": (
        "distil a classification run into a smaller student (Hinton et al. 2015), beside the same "
        "student trained on labels alone",
        _distil_args,
        commands.cmd_distil,
    ),
    "serve": ("serve runs over HTTP: task routes and an OpenAI-compatible API", _serve_args, commands.cmd_serve),
    "chat": ("talk with a causal LM, turn by turn (streams; /reset, /exit)", _generation_args, commands.cmd_chat),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge", description="Train, evaluate and use language models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, fn) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(fn=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    from lmforge.runtime import quiet_libraries, setup_logging

    args = build_parser().parse_args(argv)
    quiet_libraries()
    setup_logging(getattr(args, "quiet", False) or getattr(args, "json", False))
    try:
        return args.fn(args)
    except LmforgeError as exc:
        print(f"lmforge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

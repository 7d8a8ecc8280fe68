"""``lmforge generate MODEL PROMPT``: one reply from a causal LM (or seq2seq run), streamed.

The decoding flags (``--max-new-tokens``, ``--temperature``, ...) are ``GenerationOptions``' fields;
``chat`` takes the same ones.
"""

import argparse
import json
import logging
import sys

from lmforge.cli.common import CHECKPOINTS, add_device_argument
from lmforge.cli.flags import add_dataclass_arguments, dataclass_from_args
from lmforge.inference.generator import open_generator
from lmforge.inference.llama_cpp import ENGINES
from lmforge.inference.weights import DTYPES
from lmforge.models.decoding import GenerationOptions
from lmforge.runtime import set_threads

log = logging.getLogger("lmforge")

# Help for GenerationOptions' fields (the dataclass, in lmforge.models, carries none).
GENERATION_HELP = {
    "temperature": "sampling temperature (default: greedy decoding)",
    "top_p": "nucleus sampling: smallest set of tokens with this much probability",
    "top_k": "sample among the k most likely tokens",
    "num_beams": "beam search with this many beams",
    "repetition_penalty": "e.g. 1.1: discourage repeating tokens",
    "stop": "stop when this text appears (repeatable)",
    "seed": "seed for sampling",
}


def add_generation_arguments(p: argparse.ArgumentParser) -> None:
    """The model and how it decodes: shared by ``generate`` and ``chat``."""
    p.add_argument("model", help="a causal_lm run folder, a bundled alias (smollm2) or a local model folder")
    p.add_argument(
        "--checkpoint",
        choices=list(CHECKPOINTS),
        default="auto",
        help="run folders: best checkpoint, final model, or auto (best if present)",
    )
    add_dataclass_arguments(p, GenerationOptions, defaults={"max_new_tokens": 256}, helps=GENERATION_HELP)
    p.add_argument("--system", help="system message (chat template models)")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="auto (default): llama.cpp for GGUF models (the bundled smollm2, export --gguf output) when "
        "installed, else PyTorch",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="PyTorch engine: what the weights compute in; auto (default) = int8 weights, else bfloat16, where "
        "the hardware computes bf16 natively and the model answers like float32 on probe texts, else float32",
    )
    p.add_argument(
        "--prompt-lookup",
        type=int,
        default=0,
        metavar="N",
        help="PyTorch engine: speculative decoding by prompt lookup, up to N tokens a step (default 0: off); "
        "pays where the reply copies the prompt (rewriting, quoting)",
    )
    add_device_argument(p)


def generation_options(args: argparse.Namespace) -> GenerationOptions:
    options = dataclass_from_args(GenerationOptions, args)
    options.check()
    return options


def with_system(system: str | None, messages: list[dict]) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + messages


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_generation_arguments(p)
    p.add_argument("prompt", help="the prompt ('-' reads it from standard input)")
    p.add_argument("--raw", action="store_true", help="continue the prompt as is, without the chat template")
    p.add_argument("--no-stream", action="store_true", help="print the text when it is complete")
    p.add_argument("--json", action="store_true", help="print one JSON object (text, token counts, speed)")


def run(args: argparse.Namespace) -> int:
    options = generation_options(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    set_threads(args.threads)
    generator = open_generator(
        args.model, args.checkpoint, args.device, args.engine, args.dtype, prompt_lookup=args.prompt_lookup
    )
    if args.system and not args.raw:
        prompt = with_system(args.system, [{"role": "user", "content": prompt}])
    stream = None if (args.no_stream or args.json) else (lambda piece: print(piece, end="", flush=True))
    result = generator.generate(prompt, options, raw=args.raw, stream=stream)
    if args.json:
        fields = {
            "text": result.text,
            "prompt_tokens": result.prompt_tokens,
            "new_tokens": result.new_tokens,
            "stopped_by": result.stopped_by,
            "seconds": round(result.seconds, 3),
            "tokens_per_s": round(result.tokens_per_s, 2),
        }
        print(json.dumps(fields, ensure_ascii=False))
        return 0
    print("" if stream else result.text)
    log.info(
        "%d new tokens in %.1f s (%.1f tokens/s), stopped by %s",
        result.new_tokens,
        result.seconds,
        result.tokens_per_s,
        result.stopped_by,
    )
    return 0

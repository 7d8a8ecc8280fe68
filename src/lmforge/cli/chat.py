"""``lmforge chat MODEL``: talk with a causal LM turn by turn; /reset forgets, /exit or EOF ends."""

import argparse
import sys

from lmforge.cli.generate import add_generation_arguments, generation_options, with_system
from lmforge.errors import DataError
from lmforge.inference.generator import open_generator
from lmforge.runtime import set_threads


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_generation_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Read a line, stream the reply, keep the conversation; /reset forgets it, /exit or EOF ends."""
    options = generation_options(args)
    set_threads(args.threads)
    generator = open_generator(
        args.model, args.checkpoint, args.device, args.engine, args.dtype, prompt_lookup=args.prompt_lookup
    )
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
                with_system(args.system, history), options, stream=lambda piece: print(piece, end="", flush=True)
            )
        except DataError as exc:  # e.g. the conversation outgrew the context
            history.pop()
            print(f"lmforge: {exc} (/reset to start over)", file=sys.stderr)
            continue
        print()
        history.append({"role": "assistant", "content": result.text})

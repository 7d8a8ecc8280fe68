"""Bits per character of a causal_lm run reported only as perplexity per token (older runs, e.g. the
README's from-scratch Llama): rebuild the run's validation split and tokenizer from its config and
count what its perplexity averaged over.

    python bench/lm_bits_per_char.py examples/corpus_llama_scratch.yaml --perplexity 336

The split is the config's (``data.split`` with ``train.seed``), the tokenizer a byte-level BPE
trained on the training documents as a from-scratch transformer trains it, the tokens and characters
those ``causal_lm`` scores (blocks of ``data.max_length``; a block's first token is not a target;
end-of-text counts as one character). Then bits per character = ln(perplexity) x tokens / characters
/ ln 2, the figure an n-gram run (``lmforge train examples/corpus_kneser_ney.yaml``) reports as
``bits_per_char``.

It runs no model (a tokenizer and counting, on the CPU): ``--device`` takes ``cpu`` (the default) or
``auto`` and refuses CUDA, as every bench script's option does where there is nothing to move.
"""

import argparse
import json
import math

from _common import add_device_arg, resolve_device
from lmforge.config import load_config
from lmforge.data.readers import Problems
from lmforge.tasks import get_task
from lmforge.tasks.causal_lm import target_characters, text_blocks
from lmforge.tokenization.bpe import train_bpe

CPU_ONLY = "it runs no model, only a tokenizer and counts"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--perplexity", type=float, required=True, help="the run's validation perplexity per token")
    add_device_arg(parser, cpu_only=CPU_ONLY)
    args = parser.parse_args()
    _, device_label = resolve_device(args.device, cpu_only=CPU_ONLY)
    config = load_config(args.config, [])
    data = get_task("causal_lm").load_data(config, Problems())
    tokenizer = train_bpe([ex.text for ex in data.train], vocab_size=config.model.vocab_size)
    blocks = text_blocks(tokenizer, data.validation, config.data.max_length)
    tokens = sum(len(b["labels"]) - 1 for b in blocks)
    characters = target_characters(tokenizer, blocks)
    print(
        json.dumps(
            {
                "documents": len(data.validation),
                "tokens": tokens,
                "characters": characters,
                "characters_per_token": round(characters / tokens, 4),
                "perplexity": args.perplexity,
                "bits_per_char": round(math.log(args.perplexity) * tokens / characters / math.log(2), 4),
                "device": device_label,
            }
        )
    )


if __name__ == "__main__":
    main()

"""Build a byte-level BPE tokenizer (GPT-2 style) from the user's texts, for causal LMs built from
scratch.

Byte-level means every string can be encoded -- no unknown token, whatever the language -- and
decoding gives back the exact text. ``<|endoftext|>`` is the beginning, end and padding token, as in
GPT-2; ``<|im_start|>`` and ``<|im_end|>`` are single tokens so the ChatML template (the default for
models without a template of their own) costs one token per marker.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
CHAT_MARKERS = ["<|im_start|>", "<|im_end|>"]


def train_bpe(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS] + CHAT_MARKERS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS, additional_special_tokens=CHAT_MARKERS
    )

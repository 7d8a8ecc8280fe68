"""Bits per character: hand-computed values, and the characters the causal LM's targets cover."""

import math

import pytest

from lmforge.data.examples import TextExample
from lmforge.evaluation.language_model import bits_per_char, char_perplexity, text_characters
from lmforge.tasks.causal_lm import CausalLMTask, target_characters
from lmforge.tokenization.bpe import train_bpe


def test_bits_per_char_by_hand():
    # A uniform choice among 4 symbols per character is 2 bits: 10 characters, 10 * ln 4 nats.
    assert bits_per_char(10 * math.log(4), 10) == pytest.approx(2.0)
    assert char_perplexity(10 * math.log(4), 10) == pytest.approx(4.0)
    assert char_perplexity(7.0, 5) == pytest.approx(2 ** bits_per_char(7.0, 5))
    assert math.isnan(bits_per_char(1.0, 0))
    assert text_characters(["abc", "de"]) == 7 and text_characters(["abc", "de"], end_marker=False) == 5


def test_target_characters_are_the_text_after_each_block_start():
    texts = ["the cat sat on the mat", "a dog, a bird and a tree"]
    tokenizer = train_bpe(texts * 10, vocab_size=280)
    features = CausalLMTask().encode(tokenizer, [TextExample(t) for t in texts], 1000)
    assert len(features) == 1  # one block: only its first token is unscored
    first = tokenizer.decode(features[0]["input_ids"][:1])
    assert target_characters(tokenizer, features) == text_characters(texts) - len(first)

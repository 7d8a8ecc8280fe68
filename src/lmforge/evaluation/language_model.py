"""Language-model figures that do not depend on the tokenizer, as pure functions.

Perplexity per token cannot be compared between models whose tokens differ (an 8k BPE, a character
vocabulary, an n-gram model's words): a model with longer tokens makes fewer, harder predictions.
The total negative log-likelihood of the same text can: divided by the text's characters it is
bits per character (Graves, 2013; the figure the Hutter prize and enwik8/text8 results use), and
``2 ** bits_per_char`` is the per-character perplexity.
"""

import math


def bits_per_char(nll_nats: float, characters: int) -> float:
    """Total negative log-likelihood of a text (natural log, summed over every prediction) in bits
    per character of that text."""
    if characters <= 0:
        return math.nan
    return nll_nats / math.log(2) / characters


def char_perplexity(nll_nats: float, characters: int) -> float:
    """Perplexity per character: ``exp(nll / characters) == 2 ** bits_per_char``."""
    if characters <= 0:
        return math.nan
    return math.exp(min(nll_nats / characters, 50))


def text_characters(texts: list[str], end_marker: bool = True) -> int:
    """Characters of the documents a model scores, counting each document's end (the end-of-text
    token a language model predicts) as one character, like a newline, when ``end_marker``."""
    return sum(len(t) for t in texts) + (len(texts) if end_marker else 0)

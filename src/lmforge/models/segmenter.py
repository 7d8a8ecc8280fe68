"""Segmenter features for the character tagger: where jieba's part-of-speech segmenter puts each
character, and what it calls the word.

The lexicon features (``model.lexicon``) show every dictionary word through a character; a segmenter
makes one choice among them, and its hidden Markov model also cuts out words no dictionary has and
tags them — often a new person name (``nr``) or place (``ns``), the very entities a tagger trained
on one corpus misses. Each character gets a one-hot vector over (its place in the chosen word:
Begin, Middle, End, Single) x (the word's tag), beside its embedding: the tagger learns how far to
trust the segmenter. On MSRA's development split, 95% of the entities that training never shows
begin and end at edges of jieba's words.

The model sees token ids, not text, so the vocabulary's characters are kept as a buffer of code
points (saved in ``model.safetensors`` with the weights); a token that is not one character (a
special token, a longer WordPiece) is a placeholder the segmenter reads as a symbol. Segmenting is
Python work (MSRA dev, 130k characters, takes about 3 s); each sentence's features are cached, so training pays
for it once, not once an epoch. The cache keeps ids and features as packed arrays (measured with
tracemalloc: about 470 bytes for a 47-character sentence, so MSRA train's 47k sentences take about
22 MB and a full cache under 100 MB), least recently used first out.
"""

from array import array
from collections import OrderedDict

import torch
from torch import nn

from lmforge._optional import require

SETS = ("B", "M", "E", "S")
# jieba.posseg's tags by frequency on MSRA dev (n noun, x punctuation, uj 的, nr person, ns place, ...)
TAGS = ("n", "x", "v", "uj", "m", "d", "p", "r", "vn", "c", "a", "nr", "ns", "f", "l", "ul", "t", "i", "nz",
        "nt", "b", "j", "u", "s", "ad", "q", "uv", "zg", "uz", "ng", "nrt", "z", "an", "k", "ud", "mq", "y",
        "ug", "vg", "nrfg", "eng", "df", "rz", "vd", "h", "g", "tg", "ag", "o", "dg", "e", "rr", "vq")
PLACEHOLDER = "\u25a1"  # what a token that is not a single character reads as
CACHE_SIZE = 200_000   # sentences whose features are kept


def _posseg():
    require("jieba", purpose="model.segmenter: jieba")
    import jieba
    import jieba.posseg

    jieba.setLogLevel(60)
    return jieba.posseg


def segmenter_tags() -> list[str]:
    """The tags the features distinguish: those jieba's segmenter gave on MSRA's development split,
    most frequent first, then ``other`` (the list is saved with the model)."""
    return list(TAGS) + ["other"]


def token_codepoints(tokens: list[str]) -> torch.Tensor:
    """(V,) code point of each vocabulary token that is one character (a ``##`` continuation too),
    else the placeholder's."""
    out = []
    for token in tokens:
        text = token[2:] if token.startswith("##") and len(token) > 2 else token
        out.append(ord(text) if len(text) == 1 else ord(PLACEHOLDER))
    return torch.tensor(out, dtype=torch.int32)


class SegmenterFeatures(nn.Module):
    """(B, T) token ids -> (B, T, 4 * tags) one-hot (place in jieba's word, the word's tag)."""

    def __init__(self, vocab_size: int, tags: list[str]):
        super().__init__()
        self.tags = list(tags)
        self.index = {t: i for i, t in enumerate(self.tags)}
        self.register_buffer("codepoints", torch.full((vocab_size,), ord(PLACEHOLDER), dtype=torch.int32))
        self._cache: OrderedDict = OrderedDict()
        self._posseg = None
        self._chars: list[str] | None = None

    @property
    def width(self) -> int:
        return len(SETS) * len(self.tags)

    def load(self, codepoints: torch.Tensor) -> None:
        self.codepoints.copy_(codepoints)
        self._chars, self._cache = None, OrderedDict()

    def features(self, ids: list[int]) -> list[int]:
        """The feature index of each token of one sentence."""
        key = array("i", ids).tobytes()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit.tolist()
        if self._posseg is None:
            self._posseg = _posseg()
        if self._chars is None:
            self._chars = [chr(c) for c in self.codepoints.tolist()]
        text = "".join(self._chars[i] for i in ids)
        other, out = self.index["other"], []
        for word, tag in self._posseg.lcut(text):
            t = self.index.get(tag, other)
            n = len(word)
            places = [3] if n == 1 else [0] + [1] * (n - 2) + [2]
            out.extend(s * len(self.tags) + t for s in places)
        out = out[:len(ids)] + [other] * (len(ids) - len(out))   # jieba keeps every character; be safe
        self._cache[key] = array("H", out)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        B, T = input_ids.shape
        lengths = attention_mask.sum(1).tolist()
        b_idx, t_idx, f_idx = [], [], []
        for b, (row, n) in enumerate(zip(input_ids.tolist(), lengths)):
            for t, f in enumerate(self.features(row[:n])):
                b_idx.append(b)
                t_idx.append(t)
                f_idx.append(f)
        out = torch.zeros(B, T, self.width, device=input_ids.device)
        if b_idx:
            out[torch.tensor(b_idx), torch.tensor(t_idx), torch.tensor(f_idx)] = 1.0
        return out

"""An n-gram language model with interpolated Kneser-Ney smoothing (Kneser & Ney, 1995; Chen &
Goodman, 1998, "An Empirical Study of Smoothing Techniques for Language Modeling", sections 2.7 and
3), with the modified discounts of Chen & Goodman by default.

For the highest order, a(g) is the count of the n-gram g; for a lower order it is g's continuation
count N1+(. g), the number of distinct words seen before it -- except for n-grams that start at the
beginning of a sequence (they have no word before them), which keep their counts, as in KenLM.
With h a context and w a word,

    P(w | h) = max(a(h w) - D(a(h w)), 0) / a(h .)  +  gamma(h) * P(w | h minus its first word)
    gamma(h) = (D1 N1(h .) + D2 N2(h .) + D3+ N3+(h .)) / a(h .)

where a(h .) is the sum of a(h x) over the words x, and Nk(h .) counts the words x with
a(h x) = k (N3+: at least 3). An unseen context passes the lower order's probability through; the
order-1 model interpolates with the uniform distribution over the vocabulary, so every word,
``</s>`` and ``<unk>`` included, has a probability and they sum to one. Modified discounts, per
order, from the counts of counts n1..n4 of a: Y = n1 / (n1 + 2 n2), D1 = 1 - 2Y n2/n1,
D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3. ``discount=d`` uses one discount d everywhere (the original
interpolated Kneser-Ney).

Inside, a token id is one character of a ``str`` (``chr(id)``), so an n-gram or a context is a short
string: compact dictionary keys and cheap slicing, for words and characters alike.
"""

import math
from collections import Counter

import numpy as np
from sklearn.base import BaseEstimator

EOS, UNK, BOS = "</s>", "<unk>", "<s>"
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # counts of counts too thin to estimate from (tiny data)


def modified_discounts(counts_of_counts: Counter) -> tuple[float, float, float]:
    """Chen & Goodman's D1, D2, D3+ from n1..n4 (each kept inside (0, k])."""
    n1, n2, n3, n4 = (counts_of_counts.get(k, 0) for k in (1, 2, 3, 4))
    if not (n1 and n2 and n3 and n4):
        return FALLBACK_DISCOUNTS
    y = n1 / (n1 + 2 * n2)
    raw = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    return tuple(min(d, k) if d > 0 else FALLBACK_DISCOUNTS[k - 1] for k, d in enumerate(raw, 1))


class KneserNeyLM(BaseEstimator):
    """An ``order``-gram model of token sequences (lists of strings: words or characters).

    Tokens seen fewer than ``min_count`` times in training become ``<unk>``. ``vocabulary_`` lists
    the predictable tokens (``</s>`` first, then ``<unk>``, then the rest by frequency); ``tables_[k]``
    maps each context of k tokens to {next token id: a}; ``stats_[k]`` maps it to (a(h .), gamma
    numerator); ``discounts_[k]`` are the discounts of order k+1."""

    def __init__(self, order: int = 3, discount: float | None = None, min_count: int = 1):
        self.order, self.discount, self.min_count = order, discount, min_count

    # -- training --------------------------------------------------------------------------------
    def fit(self, sequences, y=None):
        if self.order < 1:
            raise ValueError(f"order must be at least 1, got {self.order}")
        frequency = Counter(token for sequence in sequences for token in sequence)
        kept = sorted(
            (t for t, c in frequency.items() if c >= self.min_count and t not in (EOS, UNK, BOS)),
            key=lambda t: (-frequency[t], t),
        )
        self.vocabulary_ = [EOS, UNK, *kept]
        self._index()
        raw = Counter()
        for sequence in sequences:
            ids = self.encode(sequence)
            for i in range(self.order - 1, len(ids)):
                raw[ids[i - self.order + 1 : i + 1]] += 1
        self.unigram_counts_ = self._unigram_counts(raw)
        self.set_counts(self._adjusted_counts(raw))
        return self

    def _index(self) -> None:
        if len(self.vocabulary_) >= 0x110000:  # ids are characters, and BOS takes one more
            raise ValueError(f"{len(self.vocabulary_):,} distinct tokens: too many to index; raise min_count")
        self.index_ = {token: i for i, token in enumerate(self.vocabulary_)}
        self.bos_ = chr(len(self.vocabulary_))

    def encode(self, tokens, end: bool = True) -> str:
        """Token ids as one string, after order-1 beginning marks, with ``</s>`` at the end."""
        unk = self.index_[UNK]
        ids = "".join(chr(self.index_.get(t, unk)) for t in tokens) + (chr(0) if end else "")
        return self.bos_ * (self.order - 1) + ids

    def _unigram_counts(self, raw: Counter) -> np.ndarray:
        counts = np.zeros(len(self.vocabulary_), dtype=np.int64)
        for gram, c in raw.items():
            counts[ord(gram[-1])] += c
        return counts

    def _adjusted_counts(self, raw: Counter) -> list[dict[str, int]]:
        """a(g) per order: counts for the highest order and for n-grams that start at a beginning
        mark, continuation counts N1+(. g) otherwise."""
        adjusted = [dict() for _ in range(self.order)]
        adjusted[-1] = dict(raw)
        for k in range(self.order - 1, 0, -1):  # from the (k+1)-grams to the k-grams
            lower = adjusted[k - 1]
            for gram, c in adjusted[k].items():
                suffix = gram[1:]
                # Only a beginning mark stands before a beginning mark, so ``gram`` starts with
                # one too and its a is its count: the suffix's count is the sum of those.
                lower[suffix] = lower.get(suffix, 0) + (c if suffix[0] == self.bos_ else 1)
        return adjusted

    def set_counts(self, adjusted: list[dict[str, int]]) -> None:
        """Build the tables, context statistics and discounts from the a(g) of every order."""
        self.tables_, self.stats_, self.discounts_ = [], [], []
        self._unigram = None
        for grams in adjusted:
            table: dict[str, dict[int, int]] = {}
            for gram, a in grams.items():
                table.setdefault(gram[:-1], {})[ord(gram[-1])] = a
            if self.discount is not None:
                discounts = (self.discount,) * 3
            else:
                discounts = modified_discounts(Counter(a for a in grams.values() if a <= 4))
            stats = {}
            for context, followers in table.items():
                gamma = sum(discounts[min(a, 3) - 1] for a in followers.values())
                stats[context] = (sum(followers.values()), gamma)
            self.tables_.append(table)
            self.stats_.append(stats)
            self.discounts_.append(tuple(float(d) for d in discounts))

    # -- probabilities ---------------------------------------------------------------------------
    def _discount(self, k: int, a: int) -> float:
        return self.discounts_[k][min(a, 3) - 1] if a else 0.0

    def probability(self, history: str, token: int) -> float:
        """P(token | the last order-1 ids of ``history``) (ids as in ``encode``)."""
        p = 1.0 / len(self.vocabulary_)
        for k in range(self.order):
            context = history[len(history) - k :] if k else ""
            stats = self.stats_[k].get(context)
            if stats is None:  # unseen context: no longer one is seen either
                break
            total, gamma = stats
            a = self.tables_[k][context].get(token, 0)
            p = (max(a - self._discount(k, a), 0.0) + gamma * p) / total
        return p

    def distribution(self, history: str) -> np.ndarray:
        """P(. | history) over the whole vocabulary (sums to 1)."""
        if self._unigram is None:  # every context interpolates down to it: computed once
            self._unigram = self._interpolate(np.full(len(self.vocabulary_), 1.0 / len(self.vocabulary_)), "", 0, 1)
        return self._interpolate(self._unigram.copy(), history, 1, self.order)

    def _interpolate(self, p: np.ndarray, history: str, first: int, stop: int) -> np.ndarray:
        """Orders first..stop-1 of the interpolation, on top of ``p`` (the lower orders' result)."""
        for k in range(first, stop):
            context = history[len(history) - k :] if k else ""
            stats = self.stats_[k].get(context)
            if stats is None:
                break
            total, gamma = stats
            p *= gamma / total
            for token, a in self.tables_[k][context].items():
                p[token] += (a - self._discount(k, a)) / total
        return p

    def log_likelihood(self, tokens) -> tuple[float, int, int]:
        """(sum of natural-log probabilities, tokens scored, unknown tokens) of one sequence;
        every token and the final ``</s>`` is scored, none of the beginning marks."""
        ids = self.encode(tokens)
        start = self.order - 1
        total = sum(math.log(self.probability(ids[i - start : i], ord(ids[i]))) for i in range(start, len(ids)))
        unknown = sum(1 for c in ids[start:] if ord(c) == 1)
        return total, len(ids) - start, unknown

    def parameter_count(self) -> int:
        """Stored n-gram counts, every order."""
        return sum(len(followers) for table in self.tables_ for followers in table.values())

    # -- saving (plain arrays, no pickle) --------------------------------------------------------
    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        arrays = {"unigram_counts": self.unigram_counts_}
        for k, table in enumerate(self.tables_):
            grams = np.array(
                [[ord(c) for c in context] + [token] for context, followers in table.items() for token in followers],
                dtype=np.int32,
            ).reshape(-1, k + 1)
            arrays[f"grams.{k + 1}"] = grams
            arrays[f"counts.{k + 1}"] = np.array(
                [a for followers in table.values() for a in followers.values()], dtype=np.int64
            )
        return {**self.get_params(), "vocabulary": self.vocabulary_}, arrays

    @classmethod
    def from_state(cls, settings: dict, arrays: dict) -> "KneserNeyLM":
        settings = dict(settings)
        model = cls(**{k: v for k, v in settings.items() if k != "vocabulary"})
        model.vocabulary_ = settings["vocabulary"]
        model._index()
        model.unigram_counts_ = arrays["unigram_counts"]
        adjusted = []
        for k in range(1, model.order + 1):
            grams, counts = arrays[f"grams.{k}"], arrays[f"counts.{k}"]
            adjusted.append({"".join(map(chr, row)): int(a) for row, a in zip(grams.tolist(), counts.tolist())})
        model.set_counts(adjusted)
        return model

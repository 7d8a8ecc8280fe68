"""A feature-based linear-chain CRF tagger on python-crfsuite (Okazaki, 2007): the classic NER
baseline before neural taggers (features after Ratinov & Roth, 2009, without gazetteers).

Each word is described by its identity, lowercase form, shape (``Xxxx``, ``dd``), prefixes and
suffixes, capitalisation and digit flags, and the same (shorter) description of its neighbours up
to ``window`` words away, plus the lowercase bigrams around it. crfsuite trains with L-BFGS and
elastic-net regularisation (``c1`` L1, ``c2`` L2). The trained model is crfsuite's own binary file
(not a pickle), kept in memory as bytes and saved as such.
"""

import os
import string
import tempfile
from itertools import groupby

from sklearn.base import BaseEstimator

_SHAPE = str.maketrans(string.ascii_uppercase + string.ascii_lowercase + string.digits, "X" * 26 + "x" * 26 + "d" * 10)


def word_shape(word: str) -> str:
    """``Obama`` -> ``Xxxxx``; other letters (Chinese, accented) keep themselves."""
    return word.translate(_SHAPE)


def short_shape(word: str) -> str:
    """The shape with repeats collapsed: ``Xxxxx`` -> ``Xx``, ``dd-dd`` -> ``d-d``."""
    return "".join(mark for mark, _ in groupby(word_shape(word)))


def _neighbour(lower: str, short: str, title: bool, prefix: str) -> list[str]:
    """What a neighbour contributes: lowercase form, short shape, title case."""
    return [f"{prefix}w={lower}", f"{prefix}sh={short}", f"{prefix}t={title}"]


def word_features(tokens: list[str], i: int, window: int = 2) -> list[str]:
    """The crfsuite attributes of word ``i`` of a sentence."""
    return sentence_features(tokens, window)[i]


def sentence_features(tokens: list[str], window: int = 2) -> list[list[str]]:
    """The crfsuite attributes of every word of a sentence (each word's own description is
    computed once and shared with its neighbours)."""
    lower = [t.lower() for t in tokens]
    short = [short_shape(t) for t in tokens]
    title = [t.istitle() for t in tokens]
    out = []
    for i, word in enumerate(tokens):
        low = lower[i]
        feats = [
            "bias",
            f"w={word}",
            f"lw={low}",
            f"sh={word_shape(word)[:8]}",
            f"ssh={short[i]}",
            f"t={title[i]}",
            f"u={word.isupper()}",
            f"d={word.isdigit()}",
            f"hd={any(c.isdigit() for c in word)}",
            f"hy={'-' in word}",
            f"len={min(len(word), 8)}",
        ]
        feats += [f"p{k}={low[:k]}" for k in (1, 2, 3, 4) if len(low) >= k]
        feats += [f"s{k}={low[-k:]}" for k in (1, 2, 3, 4) if len(low) >= k]
        for offset in range(-window, window + 1):
            j = i + offset
            if offset and 0 <= j < len(tokens):
                feats += _neighbour(lower[j], short[j], title[j], f"{offset:+d}:")
            elif offset:
                feats.append(f"{offset:+d}:{'BOS' if j < 0 else 'EOS'}")
        if i > 0:
            feats.append(f"-1|0={lower[i - 1]}|{low}")
        if i + 1 < len(tokens):
            feats.append(f"0|+1={low}|{lower[i + 1]}")
        out.append(feats)
    return out


class CrfTagger(BaseEstimator):
    """A linear-chain CRF over word features, following scikit-learn's estimator contract
    (``fit(sentences, tags)`` returns self; ``model_bytes_`` is what it learned)."""

    def __init__(
        self, c1: float = 0.1, c2: float = 0.05, max_iterations: int = 100, window: int = 2, min_freq: int = 1
    ):
        self.c1, self.c2, self.max_iterations = c1, c2, max_iterations
        self.window, self.min_freq = window, min_freq

    def fit(self, sentences: list[list[str]], tags: list[list[str]]):
        import pycrfsuite

        trainer = pycrfsuite.Trainer(algorithm="lbfgs", verbose=False)
        trainer.set_params(
            {
                "c1": self.c1,
                "c2": self.c2,
                "max_iterations": self.max_iterations,
                "feature.minfreq": self.min_freq,
                "feature.possible_transitions": True,
            }
        )
        for tokens, sequence in zip(sentences, tags):
            if tokens:
                trainer.append(sentence_features(tokens, self.window), sequence)
        handle, path = tempfile.mkstemp(suffix=".crfsuite")
        os.close(handle)
        try:
            trainer.train(path)
            with open(path, "rb") as model_file:
                self.model_bytes_ = model_file.read()
        finally:
            os.unlink(path)
        self._open()
        return self

    def _open(self) -> None:
        import pycrfsuite

        self.tagger_ = pycrfsuite.Tagger()
        self.tagger_.open_inmemory(self.model_bytes_)
        info = self.tagger_.info()
        self.weights_ = len(info.state_features) + len(info.transitions)

    @classmethod
    def from_bytes(cls, settings: dict, model_bytes: bytes) -> "CrfTagger":
        tagger = cls(**settings)
        tagger.model_bytes_ = model_bytes
        tagger._open()
        return tagger

    def predict_marginals(self, sentences: list[list[str]]) -> list[tuple[list[str], list[float]]]:
        """Best tag sequence (Viterbi) and the marginal probability of each chosen tag."""
        out = []
        for tokens in sentences:
            self.tagger_.set(sentence_features(tokens, self.window))
            tags = self.tagger_.tag()
            out.append((tags, [self.tagger_.marginal(t, i) for i, t in enumerate(tags)]))
        return out

    def predict(self, sentences: list[list[str]]) -> list[list[str]]:
        return [tags for tags, _ in self.predict_marginals(sentences)]

    def sequence_nll(self, tokens: list[str], tags: list[str]) -> float:
        """-log P(tags | tokens) under the model."""
        import math

        self.tagger_.set(sentence_features(tokens, self.window))
        return -math.log(max(self.tagger_.probability(tags), 1e-300))

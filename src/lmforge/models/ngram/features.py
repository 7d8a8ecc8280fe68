"""Bag of word and character n-grams: TF-IDF (or binary) feature vectors for linear classifiers.

An estimator in scikit-learn's sense (``__init__`` stores settings, ``fit`` learns the vocabularies
and inverse document frequencies, ``transform`` is pure). What it learns is plain data -- one list
of terms and one idf vector per analyzer -- so a saved model is JSON plus an array, never a pickle:
``from_state`` rebuilds an equal featurizer from them. Character n-grams need no word segmentation,
which is what makes the family read Chinese.
"""

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.preprocessing import normalize

# (name, scikit-learn analyzer): char_wb n-grams stay inside a word (padded by spaces), as in the
# usual strong baselines; a Chinese sentence without spaces is one "word", so nothing is lost.
ANALYZERS = (("word", "word"), ("char", "char_wb"))
WORD_PATTERN = r"(?u)\b\w+\b|[^\w\s]"  # words of one letter and punctuation count too


class NgramFeatures(BaseEstimator, TransformerMixin):
    """Word and character n-gram features; ``weighting`` is ``tfidf`` (sublinear tf, smoothed idf,
    each analyzer's block L2-normalised) or ``binary`` (1 where an n-gram occurs: NB-SVM's input)."""

    def __init__(
        self, word_ngrams=(1, 2), char_ngrams=(2, 5), min_df=2, max_features=None, lowercase=True, weighting="tfidf"
    ):
        self.word_ngrams, self.char_ngrams = word_ngrams, char_ngrams
        self.min_df, self.max_features = min_df, max_features
        self.lowercase, self.weighting = lowercase, weighting

    def _ranges(self) -> list[tuple[str, str, tuple[int, int]]]:
        ranges = {"word": self.word_ngrams, "char": self.char_ngrams}
        return [(name, analyzer, tuple(ranges[name])) for name, analyzer in ANALYZERS if ranges[name]]

    def _vectorizer(self, analyzer: str, ngram_range, vocabulary=None, fitting=False):
        options = dict(
            analyzer=analyzer,
            ngram_range=ngram_range,
            lowercase=self.lowercase,
            token_pattern=WORD_PATTERN if analyzer == "word" else None,
            dtype=np.float32,
        )
        if fitting:
            return TfidfVectorizer(min_df=self.min_df, max_features=self.max_features, sublinear_tf=True, **options)
        return CountVectorizer(vocabulary=vocabulary, **options)

    def fit(self, texts, y=None):
        self.fit_transform(texts)
        return self

    def fit_transform(self, texts, y=None) -> sp.csr_matrix:
        """Learn the vocabularies and idf, and return the features of ``texts``, counting each text
        once (``transform`` after ``fit`` would count them twice: the n-gram counting is the cost)."""
        if not self._ranges():
            raise ValueError("at least one of word_ngrams and char_ngrams must be set")
        self.terms_, self.idf_, self._built = {}, {}, None
        blocks = []
        for name, analyzer, ngram_range in self._ranges():
            vectorizer = self._vectorizer(analyzer, ngram_range, fitting=True)
            try:
                block = vectorizer.fit_transform(texts)  # sublinear tf x idf, L2 rows: transform's own
            except ValueError:  # no n-gram reaches min_df (tiny data): this block is empty
                self.terms_[name], self.idf_[name] = [], np.zeros(0, dtype=np.float32)
                continue
            terms = [""] * len(vectorizer.vocabulary_)
            for term, index in vectorizer.vocabulary_.items():
                terms[index] = term
            self.terms_[name], self.idf_[name] = terms, vectorizer.idf_.astype(np.float32)
            if self.weighting == "binary":
                block.data[:] = 1.0  # every counted n-gram has a positive weight
            blocks.append(block)
        if not any(self.terms_.values()):
            raise ValueError(f"no n-gram occurs in at least min_df={self.min_df} texts")
        return sp.hstack(blocks, format="csr", dtype=np.float32)

    @property
    def n_features(self) -> int:
        return sum(len(t) for t in self.terms_.values())

    def _counters(self) -> list:
        """(counting vectorizer, idf diagonal) per non-empty block, built once: a vectorizer
        indexes its vocabulary on first use, which costs more than counting one text."""
        if getattr(self, "_built", None) is None:
            self._built = []
            for name, analyzer, ngram_range in self._ranges():
                if self.terms_[name]:
                    self._built.append(
                        (
                            self._vectorizer(analyzer, ngram_range, vocabulary=self.terms_[name]),
                            sp.diags(self.idf_[name]),
                        )
                    )
        return self._built

    def transform(self, texts) -> sp.csr_matrix:
        blocks = []
        for counter, idf in self._counters():
            counts = counter.transform(texts)
            if self.weighting == "binary":
                counts.data[:] = 1.0
                blocks.append(counts)
                continue
            counts.data = 1.0 + np.log(counts.data)  # sublinear tf
            blocks.append(normalize(counts @ idf))
        return sp.hstack(blocks, format="csr", dtype=np.float32)

    # -- saving (plain data, no pickle) ------------------------------------------------------------
    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able settings and vocabularies, arrays) that ``from_state`` turns back into this."""
        settings = {**self.get_params(), "terms": self.terms_}
        return settings, {f"idf.{name}": idf for name, idf in self.idf_.items()}

    @classmethod
    def from_state(cls, settings: dict, arrays: dict) -> "NgramFeatures":
        settings = dict(settings)
        terms = settings.pop("terms")
        features = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
        features.terms_ = terms
        features.idf_ = {name: arrays[f"idf.{name}"] for name in terms}
        return features

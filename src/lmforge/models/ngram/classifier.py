"""Text classification with n-gram features and a linear model, as a one-pass lmforge model:
TF-IDF word + character n-grams with logistic regression (``classifier: logreg``), or NB-SVM on
binary n-grams (``classifier: nbsvm``, see ``nbsvm.py``)."""

from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from lmforge.errors import DataError
from lmforge.models.ngram.features import NgramFeatures
from lmforge.models.ngram.nbsvm import NbSvmClassifier
from lmforge.models.ngram.storage import load_folder, save_folder

PAIR_SEPARATOR = " \n|| "  # joins a text pair into one text for the bag of n-grams


def joined(texts: list[str], pairs: list[str | None] | None) -> list[str]:
    if not pairs:
        return list(texts)
    return [t if p is None else t + PAIR_SEPARATOR + p for t, p in zip(texts, pairs)]


class NgramClassifier:
    fits_in_one_pass = True

    def __init__(self, settings: dict, labels: list[str]):
        self.settings, self.labels = dict(settings), list(labels)
        s = self.settings
        weighting = "binary" if s["classifier"] == "nbsvm" else "tfidf"
        self.features = NgramFeatures(
            s["word_ngrams"], s["char_ngrams"], s["min_df"], s["max_features"], s["lowercase"], weighting
        )
        self.classifier = (
            NbSvmClassifier(C=s["C"]) if s["classifier"] == "nbsvm" else LogisticRegression(C=s["C"], max_iter=1000)
        )

    @classmethod
    def from_spec(cls, spec, labels: list[str]) -> "NgramClassifier":
        settings = {
            "classifier": spec.classifier,
            "word_ngrams": spec.word_ngrams,
            "char_ngrams": spec.char_ngrams,
            "min_df": spec.min_df,
            "max_features": spec.max_features,
            "lowercase": spec.lowercase,
            "C": spec.C,
        }
        return cls(settings, labels)

    # -- training --------------------------------------------------------------------------------
    def fit(self, task, data) -> "NgramClassifier":
        texts = joined([ex.text for ex in data.train], [ex.text_pair for ex in data.train])
        try:
            x = self.features.fit_transform(texts)
        except ValueError as exc:
            raise DataError(f"data.train: {exc} (lower model.min_df)") from None
        self.classifier.fit(x, np.array([ex.label_id for ex in data.train]))
        return self

    def parameter_count(self) -> int:
        return int(np.count_nonzero(self.classifier.coef_) + self.classifier.intercept_.size)

    # -- inference -------------------------------------------------------------------------------
    def probabilities(self, texts: list[str], pairs: list[str] | None = None) -> torch.Tensor:
        """(N, labels) probabilities; a label training never saw gets 0."""
        probs = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        if texts:
            probs[:, self.classifier.classes_] = self.classifier.predict_proba(
                self.features.transform(joined(texts, pairs))
            )
        return torch.from_numpy(probs).float()

    def feature_contributions(self, text: str, pair: str | None, label: int, top: int = 20) -> list[dict]:
        """The n-grams of a text that move the score of label index ``label`` most, each with its
        value in the text, its weight in the linear model and their product (what it adds to that
        label's score before the softmax / sigmoid), largest magnitude first."""
        x = self.features.transform(joined([text], [pair] if pair is not None else None)).tocsr()
        c = self.classifier
        weights = c.coef_ * c.r_ if isinstance(c, NbSvmClassifier) else c.coef_
        if isinstance(c, NbSvmClassifier):
            x.data[:] = 1.0  # NB-SVM scores binarised features
        classes = list(c.classes_)
        if label not in classes:
            return []
        if weights.shape[0] == 1:  # two classes: one weight vector, for the second against the first
            row = weights[0] if classes.index(label) == 1 else -weights[0]
        else:
            row = weights[classes.index(label)]
        names = [(kind, term) for kind, terms in self.features.terms_.items() for term in terms]
        found = [
            {
                "feature": names[j][1],
                "kind": names[j][0],
                "value": round(float(v), 6),
                "weight": round(float(row[j]), 6),
                "contribution": round(float(v * row[j]), 6),
            }
            for j, v in zip(x.indices, x.data)
        ]
        return sorted(found, key=lambda f: -abs(f["contribution"]))[:top]

    def evaluate(self, task, examples: list, labels):
        probs = self.probabilities([ex.text for ex in examples], [ex.text_pair for ex in examples])
        # Log-probabilities are logits whose softmax is the probabilities themselves.
        return task.result(probs.clamp(min=1e-12).log(), examples, labels)

    # -- saving ----------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        settings, arrays = self.features.state()
        c = self.classifier
        arrays.update(
            {
                "coef": c.coef_.astype(np.float32),
                "intercept": c.intercept_.astype(np.float32),
                "classes": c.classes_.astype(np.int64),
            }
        )
        if isinstance(c, NbSvmClassifier):
            arrays["r"] = c.r_.astype(np.float32)
        config = {
            "head": "sequence_classification",
            **self.settings,
            "parameters": self.parameter_count(),
            "features": self.features.n_features,
        }
        save_folder(folder, config, {"features": settings, "labels": self.labels}, arrays)

    @classmethod
    def load(cls, folder: Path) -> "NgramClassifier":
        config, state, arrays = load_folder(folder)
        model = cls(
            {
                k: config[k]
                for k in ("classifier", "word_ngrams", "char_ngrams", "min_df", "max_features", "lowercase", "C")
            },
            state["labels"],
        )
        model.features = NgramFeatures.from_state(state["features"], arrays)
        c = model.classifier
        c.coef_, c.intercept_ = arrays["coef"].astype(np.float64), arrays["intercept"].astype(np.float64)
        c.classes_ = arrays["classes"]
        if isinstance(c, NbSvmClassifier):
            c.r_ = arrays["r"].astype(np.float64)
        return model

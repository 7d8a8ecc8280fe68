"""NB-SVM (Wang & Manning, 2012, "Baselines and Bigrams"): a linear model on binarised n-gram
features scaled by the naive-Bayes log-count ratio.

For a class c against the rest, with binarised feature rows x (1 where an n-gram occurs):

    p = alpha + sum of x over the rows of c,   q = alpha + sum of x over the other rows
    r = log( (p / |p|_1) / (q / |q|_1) )

and the classifier is trained on x * r (elementwise). Wang & Manning fit an L2 SVM with weight
interpolation; like most later uses (Mesnil et al., 2014) this one fits a logistic regression, which
also gives probabilities. More than two classes: one r and one model per class (one-vs-rest),
probabilities normalised over the classes. Scoring needs only ``coef_ * r_`` as one weight vector.
"""

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression


def log_count_ratio(x, positive: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """r = log((p/|p|1) / (q/|q|1)) for binarised rows ``x`` and a boolean mask of positive rows."""
    x = sp.csr_matrix(x)
    p = alpha + np.asarray(x[positive].sum(axis=0)).ravel()
    q = alpha + np.asarray(x[~positive].sum(axis=0)).ravel()
    return np.log((p / p.sum()) / (q / q.sum()))


def _binarised(x) -> sp.csr_matrix:
    x = sp.csr_matrix(x, dtype=np.float64, copy=True)
    x.data[:] = 1.0
    return x


class NbSvmClassifier(BaseEstimator, ClassifierMixin):
    """Logistic regression on naive-Bayes-scaled binary features; ``C`` is its inverse L2 strength,
    ``alpha`` the count smoothing of the ratio."""

    def __init__(self, C: float = 1.0, alpha: float = 1.0, max_iter: int = 1000):
        self.C, self.alpha, self.max_iter = C, alpha, max_iter

    def fit(self, x, y):
        x, y = _binarised(x), np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError("NB-SVM needs at least two classes")
        # Two classes: one model, for the second class against the first (as scikit-learn does).
        targets = self.classes_[1:] if len(self.classes_) == 2 else self.classes_
        ratios, coefs, intercepts = [], [], []
        for target in targets:
            positive = y == target
            r = log_count_ratio(x, positive, self.alpha)
            model = LogisticRegression(C=self.C, max_iter=self.max_iter, solver="liblinear")
            model.fit(x @ sp.diags(r), positive.astype(int))
            ratios.append(r)
            coefs.append(model.coef_[0])
            intercepts.append(model.intercept_[0])
        self.r_, self.coef_ = np.vstack(ratios), np.vstack(coefs)
        self.intercept_ = np.asarray(intercepts)
        return self

    def decision_function(self, x) -> np.ndarray:
        """(n, models) scores: binarised x times the NB-scaled weights."""
        return _binarised(x) @ (self.coef_ * self.r_).T + self.intercept_

    def predict_proba(self, x) -> np.ndarray:
        sigmoid = 1.0 / (1.0 + np.exp(-self.decision_function(x)))
        if len(self.classes_) == 2:
            return np.hstack([1.0 - sigmoid, sigmoid])
        return sigmoid / sigmoid.sum(axis=1, keepdims=True)

    def predict(self, x) -> np.ndarray:
        return self.classes_[self.predict_proba(x).argmax(axis=1)]

import numpy as np
import pytest
from sklearn import metrics as sk

from lmforge.evaluation.classification import classification_metrics


@pytest.mark.parametrize("seed", range(5))
def test_parity_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    k = 4
    gold = rng.integers(0, k, 200).tolist()
    # Label 3 is never predicted in odd seeds: zero-division conventions must match too.
    pred = rng.integers(0, k - seed % 2, 200).tolist()
    names = [f"c{i}" for i in range(k)]
    ours = classification_metrics(gold, pred, names)
    labels = list(range(k))
    assert ours["accuracy"] == pytest.approx(sk.accuracy_score(gold, pred))
    for avg in ("macro", "micro", "weighted"):
        p, r, f, _ = sk.precision_recall_fscore_support(gold, pred, labels=labels, average=avg, zero_division=0)
        assert ours[f"{avg}_f1"] == pytest.approx(f)
        if avg != "micro":
            assert ours[f"{avg}_precision"] == pytest.approx(p)
            assert ours[f"{avg}_recall"] == pytest.approx(r)
    p, r, f, s = sk.precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
    for i, name in enumerate(names):
        row = ours["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx((p[i], r[i], f[i], s[i]))
    assert ours["confusion_matrix"] == sk.confusion_matrix(gold, pred, labels=labels).tolist()


def test_hand_computed_example():
    out = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], ["a", "b"])
    assert out["accuracy"] == 0.75
    assert out["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert out["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert out["confusion_matrix"] == [[1, 1], [0, 2]]

"""Classification metrics as pure functions (tested for parity with scikit-learn).

Precision, recall and F1 follow scikit-learn's conventions: a class with no predicted (or no true)
example has precision (or recall) 0, and F1 is 0 where precision + recall is 0. Macro averages are
over every label in the label set, micro over all examples, weighted by true support.
"""

import numpy as np


def confusion_matrix(gold: list[int], pred: list[int], num_labels: int) -> np.ndarray:
    """``m[i, j]`` counts examples of true label ``i`` predicted as ``j``."""
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return matrix


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def precision_recall_f1(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix."""
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return precision, recall, f1, support


def classification_metrics(gold: list[int], pred: list[int], names: list[str]) -> dict:
    """Accuracy, macro/micro/weighted P/R/F1, per-class P/R/F1/support and the confusion matrix."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    matrix = confusion_matrix(gold, pred, len(names))
    precision, recall, f1, support = precision_recall_f1(matrix)
    total = max(int(support.sum()), 1)
    correct = int(np.trace(matrix))
    weights = support / total
    # Single-label: micro precision = micro recall = micro F1 = accuracy.
    micro = correct / total
    return {
        "accuracy": correct / total,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "micro_f1": micro,
        "weighted_precision": float((precision * weights).sum()),
        "weighted_recall": float((recall * weights).sum()),
        "weighted_f1": float((f1 * weights).sum()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "confusion_matrix": matrix.tolist(),
        "labels": list(names),
        "count": int(support.sum()),
    }


SCALAR_METRICS = (
    "accuracy",
    "macro_f1",
    "micro_f1",
    "weighted_f1",
    "macro_precision",
    "macro_recall",
    "weighted_precision",
    "weighted_recall",
)

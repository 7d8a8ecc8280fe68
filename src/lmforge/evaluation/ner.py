"""Entity-level NER metrics as pure functions (tested for parity with seqeval 1.2.2).

An entity counts as correct only if its type, first and last token all match a gold entity (exact
match, CoNLL-2003 shared task; ``conlleval``). Entities are read leniently with
``lmforge.data.tagging.to_spans``, as ``seqeval``'s default mode reads them. Averages follow
seqeval's ``classification_report``: per-type scores over the types found in gold or predictions;
micro over all entities; macro the plain mean over types; weighted by gold support. A score whose
denominator is zero is 0.0 (seqeval's default ``zero_division``).
"""

from collections import Counter

from lmforge.data.tagging import Span, to_spans


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def _prf(tp: int, predicted: int, support: int) -> tuple[float, float, float]:
    """Precision, recall and F1; F1 from P and R (not from counts) so floats match seqeval's."""
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    return precision, recall, _ratio(2 * precision * recall, precision + recall)


def _overlaps(a: Span, b: Span) -> int:
    """Number of tokens two spans share."""
    return max(0, min(a[2], b[2]) - max(a[1], b[1]))


def _sentence_confusions(gold: list[Span], pred: list[Span]) -> list[tuple[str, str]]:
    """``(gold, pred)`` label pairs for one sentence's errors.

    A gold entity with no exact match is confused with the predicted entity overlapping it most
    (the earlier one on a tie): a type error, or ``"TYPE (boundary)"`` when the types agree; with
    no overlap it was missed (``"O"``). A predicted entity overlapping no gold one is spurious.
    """
    pred_set = set(pred)
    pairs = []
    for g in gold:
        if g in pred_set:
            continue
        hits = [p for p in pred if _overlaps(g, p)]
        if not hits:
            pairs.append((g[0], "O"))
            continue
        best = max(hits, key=lambda p: (_overlaps(g, p), -p[1]))
        pairs.append((g[0], f"{g[0]} (boundary)" if best[0] == g[0] else best[0]))
    pairs.extend(("O", p[0]) for p in pred if not any(_overlaps(g, p) for g in gold))
    return pairs


def _top_confusions(counts: Counter, limit: int) -> list[dict]:
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [{"gold": g, "pred": p, "count": n} for (g, p), n in rows[:limit]]


def _per_type(gold: list[list[Span]], pred: list[list[Span]]) -> dict[str, dict]:
    """``{type: {"tp", "predicted", "support"}}`` over all sentences, types sorted by name."""
    counts: dict[str, Counter] = {}
    for g_spans, p_spans in zip(gold, pred):
        matched = set(g_spans) & set(p_spans)
        for key, spans in (("support", g_spans), ("predicted", p_spans), ("tp", matched)):
            for span in spans:
                counts.setdefault(span[0], Counter())[key] += 1
    return {name: counts[name] for name in sorted(counts)}


def entity_metrics(gold: list[list[str]], pred: list[list[str]], scheme: str = "bio", top_confusions: int = 10) -> dict:
    """Micro/macro/weighted entity P/R/F1, per-type scores, token accuracy and the most frequent
    errors, for sentences of gold and predicted tags. The result is JSON-serialisable."""
    if top_confusions < 0:
        raise ValueError(f"top_confusions must be >= 0, got {top_confusions}")
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    for i, (gold_tags, pred_tags) in enumerate(zip(gold, pred)):
        if len(gold_tags) != len(pred_tags):
            raise ValueError(f"sentence {i}: {len(gold_tags)} gold tags but {len(pred_tags)} predicted")
    gold_spans = [to_spans(tags, scheme) for tags in gold]
    pred_spans = [to_spans(tags, scheme) for tags in pred]

    per_type = {}
    for name, c in _per_type(gold_spans, pred_spans).items():
        p, r, f = _prf(c["tp"], c["predicted"], c["support"])
        per_type[name] = {"precision": p, "recall": r, "f1": f, "support": c["support"]}
    rows = list(per_type.values())
    support = sum(row["support"] for row in rows)
    n_pred = sum(len(spans) for spans in pred_spans)
    tp = sum(len(set(g) & set(p)) for g, p in zip(gold_spans, pred_spans))
    precision, recall, f1 = _prf(tp, n_pred, support)

    def macro(key: str) -> float:
        return _ratio(sum(row[key] for row in rows), len(rows))

    def weighted(key: str) -> float:
        return _ratio(sum(row[key] * row["support"] for row in rows), support)

    counts = Counter(pair for g, p in zip(gold_spans, pred_spans) for pair in _sentence_confusions(g, p))
    tokens = sum(len(tags) for tags in gold)
    correct = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "macro_precision": macro("precision"),
        "macro_recall": macro("recall"),
        "macro_f1": macro("f1"),
        "weighted_precision": weighted("precision"),
        "weighted_recall": weighted("recall"),
        "weighted_f1": weighted("f1"),
        "per_type": per_type,
        "per_class": {name: dict(row) for name, row in per_type.items()},  # the HTML report's key
        "token_accuracy": _ratio(correct, tokens),
        "count": len(gold),
        "entities": support,
        "predicted_entities": n_pred,
        "confusions": _top_confusions(counts, top_confusions),
    }

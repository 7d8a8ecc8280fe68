import json
import math
import random
import warnings

import pytest

from lmforge.data.tagging import convert, repair
from lmforge.evaluation.ner import entity_metrics

TYPES = ("PER", "LOC", "MISC")


def random_corpus(rng: random.Random, prefixes: str = "BI", n: int = 30) -> tuple[list, list]:
    """Gold and noisy predicted sentences (any tags, valid or not), the prediction a corrupted gold
    so that most entities match and the rest exercise every kind of error."""

    def tag() -> str:
        return "O" if rng.random() < 0.4 else f"{rng.choice(prefixes)}-{rng.choice(TYPES)}"

    gold, pred = [], []
    for _ in range(n):
        g = [tag() for _ in range(rng.randint(0, 10))]
        gold.append(g)
        pred.append([t if rng.random() < 0.7 else tag() for t in g])
    return gold, pred


HAND_MADE = [
    ([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]]),  # perfect
    ([["O", "O"]], [["O", "O"]]),  # no entities anywhere
    ([["O", "O"]], [["B-X", "O"]]),  # only spurious
    ([["B-X", "O"]], [["O", "O"]]),  # only missed
    ([["O", "I-PER", "I-PER", "B-LOC"], []], [["B-PER", "I-PER", "O", "I-LOC"], []]),  # invalid BIO
    ([["B-A", "I-A"], ["I-A", "B-B"]], [["B-A", "I-A"], ["B-B", "I-B"]]),  # no entity crosses sentences
]


def assert_matches_report(ours: dict, report: dict, per_type: bool = True) -> None:
    """Our numbers against seqeval's classification_report(output_dict=True)."""
    if per_type:
        names = [k for k in report if not k.endswith(" avg")]
        assert list(ours["per_type"]) == names
        for name in names:
            row = ours["per_type"][name]
            want = report[name]
            assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(
                (want["precision"], want["recall"], want["f1-score"])
            )
            assert row["support"] == want["support"]
    micro = report["micro avg"]
    assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx(
        (micro["precision"], micro["recall"], micro["f1-score"])
    )
    assert ours["entities"] == micro["support"]
    macro = report["macro avg"]
    # With no entity anywhere seqeval's macro average is nan (a mean over no types); ours is 0.0.
    want = [0.0 if math.isnan(x) else x for x in (macro["precision"], macro["recall"], macro["f1-score"])]
    assert (ours["macro_precision"], ours["macro_recall"], ours["macro_f1"]) == pytest.approx(want)
    weighted = report["weighted avg"]
    assert (ours["weighted_precision"], ours["weighted_recall"], ours["weighted_f1"]) == pytest.approx(
        (weighted["precision"], weighted["recall"], weighted["f1-score"])
    )


def seqeval_check(gold, pred, **kwargs) -> None:
    metrics = pytest.importorskip("seqeval.metrics")
    ours = entity_metrics(gold, pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UndefinedMetricWarning and numpy's mean-of-empty warning
        assert_matches_report(ours, metrics.classification_report(gold, pred, output_dict=True, **kwargs))
        assert ours["f1"] == pytest.approx(metrics.f1_score(gold, pred, **kwargs))
        assert ours["precision"] == pytest.approx(metrics.precision_score(gold, pred, **kwargs))
        assert ours["recall"] == pytest.approx(metrics.recall_score(gold, pred, **kwargs))
    if any(gold):
        assert ours["token_accuracy"] == pytest.approx(metrics.accuracy_score(gold, pred))


@pytest.mark.parametrize("gold, pred", HAND_MADE)
def test_parity_with_seqeval_hand_made(gold, pred):
    seqeval_check(gold, pred)


@pytest.mark.parametrize("seed", range(8))
def test_parity_with_seqeval_default_mode(seed):
    gold, pred = random_corpus(random.Random(seed), "BIES" if seed % 2 else "BI")
    seqeval_check(gold, pred)


@pytest.mark.parametrize("seed", range(4))
def test_parity_with_seqeval_strict_iob2_on_valid_sequences(seed):
    scheme = pytest.importorskip("seqeval.scheme")
    gold, pred = random_corpus(random.Random(100 + seed))
    gold = [repair(g)[0] for g in gold]
    pred = [repair(p)[0] for p in pred]
    seqeval_check(gold, pred, mode="strict", scheme=scheme.IOB2)


@pytest.mark.parametrize("seed", range(4))
def test_parity_with_seqeval_strict_iobes(seed):
    scheme = pytest.importorskip("seqeval.scheme")
    gold, pred = random_corpus(random.Random(200 + seed))
    gold = [convert(g, "bio", "iobes") for g in gold]
    pred = [convert(p, "bio", "iobes") for p in pred]
    assert entity_metrics(gold, pred, "iobes")["f1"] == entity_metrics(gold, pred)["f1"]
    seqeval_check(gold, pred, mode="strict", scheme=scheme.IOBES)


def test_hand_computed_metrics_and_confusions():
    gold = [
        ["B-PER", "I-PER", "O", "B-LOC", "O"],  # PER right; LOC predicted as ORG
        ["B-PER", "I-PER", "I-PER", "O", "O"],  # PER boundary error
        ["B-LOC", "O", "O", "O", "B-MISC"],  # LOC missed; MISC right; spurious PER
    ]
    pred = [
        ["B-PER", "I-PER", "O", "B-ORG", "O"],
        ["B-PER", "I-PER", "O", "O", "O"],
        ["O", "O", "B-PER", "O", "B-MISC"],
    ]
    out = entity_metrics(gold, pred)
    # 5 gold entities, 5 predicted, 2 exact matches.
    assert (out["entities"], out["predicted_entities"], out["count"]) == (5, 5, 3)
    assert (out["precision"], out["recall"], out["f1"]) == pytest.approx((0.4, 0.4, 0.4))
    assert list(out["per_type"]) == ["LOC", "MISC", "ORG", "PER"]
    assert out["per_type"]["PER"] == {
        "precision": pytest.approx(1 / 3),
        "recall": 0.5,
        "f1": pytest.approx(0.4),
        "support": 2,
    }
    assert out["per_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert out["per_class"] == out["per_type"]
    assert out["macro_f1"] == pytest.approx((0 + 1 + 0 + 0.4) / 4)
    assert out["weighted_f1"] == pytest.approx((2 * 0 + 1 * 1 + 2 * 0.4) / 5)
    assert out["token_accuracy"] == pytest.approx(11 / 15)
    assert out["confusions"] == [
        {"gold": "LOC", "pred": "O", "count": 1},
        {"gold": "LOC", "pred": "ORG", "count": 1},
        {"gold": "O", "pred": "PER", "count": 1},
        {"gold": "PER", "pred": "PER (boundary)", "count": 1},
    ]
    assert entity_metrics(gold, pred, top_confusions=2)["confusions"] == out["confusions"][:2]
    json.dumps(out)


def test_confusion_counts_sort_by_count_then_names():
    gold = [["B-A", "O", "B-B"], ["B-A", "O", "B-B"]]
    pred = [["O", "O", "B-B"], ["O", "B-C", "B-B"]]
    assert entity_metrics(gold, pred)["confusions"] == [
        {"gold": "A", "pred": "O", "count": 2},
        {"gold": "O", "pred": "C", "count": 1},
    ]


def test_overlap_picks_the_largest_predicted_entity():
    out = entity_metrics([["B-PER", "I-PER", "I-PER"]], [["B-PER", "B-LOC", "I-LOC"]])
    assert out["confusions"] == [{"gold": "PER", "pred": "LOC", "count": 1}]


def test_length_mismatch_names_the_sentence():
    with pytest.raises(ValueError, match="sentence 1: 2 gold tags but 1 predicted"):
        entity_metrics([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        entity_metrics([["O"], ["O"]], [["O"]])


def test_empty_input():
    out = entity_metrics([], [])
    assert (out["f1"], out["macro_f1"], out["token_accuracy"], out["confusions"]) == (0.0, 0.0, 0.0, [])

"""What ``lmforge eval`` and ``lmforge prompt`` print is the task's wording (``headline``,
``count_phrase``, ``report_lines``, ``sample_lines``): exact lines on hand-made metrics."""

from lmforge.tasks import get_task

CLASSES = {
    "accuracy": 0.5,
    "macro_f1": 1 / 3,
    "micro_f1": 0.5,
    "loss": 0.6931,
    "count": 16,
    "per_class": {
        "neg": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 8},
        "pos": {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 8},
    },
    "labels": ["neg", "pos"],
    "confusion_matrix": [[0, 8], [0, 8]],
}

ENTITIES = {
    "f1": 0.9,
    "precision": 0.88,
    "recall": 0.92,
    "count": 16,
    "entities": 24,
    "entity_bias": {
        "folds": [{"bias": -0.75, "tuned_on": "odd sentences", "held_out_f1": 0.9167, "held_out_f1_no_bias": 1.0}],
        "whole_data_bias": 0.0,
        "whole_data_f1": 0.9388,
        "no_bias_f1": 0.9388,
    },
    "per_type": {"LOC": {"precision": 0.8462, "recall": 0.9167, "f1": 0.88, "support": 12}},
    "confusions": [{"gold": "LOC", "pred": "LOC (boundary)", "count": 1}],
}


def test_classification_report():
    task = get_task("classification")
    assert task.headline(CLASSES) == "accuracy 0.5000  macro F1 0.3333 (16 examples)"
    assert task.count_phrase(CLASSES) == "16 examples" and task.predicts == "labels"
    assert task.report_lines(CLASSES) == [
        "  accuracy         0.5000",
        "  macro_f1         0.3333",
        "  micro_f1         0.5000",
        "  loss             0.6931",
        "  label                precision    recall        f1  support",
        "  neg                     0.0000    0.0000    0.0000        8",
        "  pos                     0.5000    1.0000    0.6667        8",
        "  confusion matrix (rows: true, columns: predicted):",
        "  neg                       0      8",
        "  pos                       0      8",
    ]
    calibrated = {**CLASSES, "calibrated": {"accuracy": 0.625, "macro_f1": 0.5636}}
    assert task.report_lines(calibrated)[-1] == "  calibrated: accuracy 0.6250, macro_f1 0.5636"
    assert task.sample_lines([{"text": "x"}]) == []


def test_entity_report():
    task = get_task("token_classification")
    assert task.headline(ENTITIES) == "entity F1 0.9000  precision 0.8800  recall 0.9200 (16 sentences)"
    assert task.count_phrase(ENTITIES) == "16 sentences, 24 entities" and task.predicts == "entity spans"
    assert task.report_lines(ENTITIES) == [
        "  f1               0.9000",
        "  precision        0.8800",
        "  recall           0.9200",
        "  entity bias -0.75 tuned on the odd sentences: held-out f1 0.9167 (no bias 1.0000)",
        "  entity bias best on all of it: +0.00 (f1 0.9388, tuned; no bias 0.9388); the f1 above is cross-validated",
        "  type                 precision    recall        f1  support",
        "  LOC                     0.8462    0.9167    0.8800       12",
        "  most frequent errors (gold -> predicted):",
        "                   LOC -> LOC (boundary)                1",
    ]


def test_language_model_report_and_generated_samples():
    task = get_task("causal_lm")
    metrics = {"loss": 4.714, "perplexity": 111.5, "tokens": 109, "count": 36, "chinese_tokenization": False}
    assert task.headline(metrics) == "loss 4.7140, perplexity 111.5000"
    assert task.count_phrase(metrics) == "36 examples"
    assert task.report_lines(metrics) == [
        "  loss             4.7140",
        "  perplexity       111.5000",
        "  tokens           109",
        "  count            36",
    ]
    rows = [{"where": f"sft.jsonl:{i}", "reference": str(i), "generated": "4"} for i in range(1, 5)]
    assert task.sample_lines(rows)[:3] == ["  sample: sft.jsonl:1", "    reference: '1'", "    generated: '4'"]
    assert len(task.sample_lines(rows)) == 9  # the first three rows
    generated = {"rougeL": 0.5, "rouge1": 0.25, "bleu": 12.345, "exact_match": 0.0, "count": 6}
    for name in ("causal_lm", "seq2seq"):
        assert get_task(name).headline(generated) == (
            "ROUGE-L 0.5000  ROUGE-1 0.2500  BLEU 12.35  exact match 0.0000 (6 examples)"
        )
    assert get_task("masked_lm").sample_lines(rows) == []  # it does not generate

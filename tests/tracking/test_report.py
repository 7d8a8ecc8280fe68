"""The HTML run report: built from a fake run folder, robust to missing and truncated inputs."""

import json
from pathlib import Path

from lmforge.tracking.report import write_report

IMG = '<img src="data:image/png;base64,'
LABELS = ["negative", "neutral", "positive"]
PER_CLASS = {
    "negative": {"precision": 0.8125, "recall": 0.7, "f1": 0.752, "support": 10},
    "neutral": {"precision": 0.5, "recall": 0.6667, "f1": 0.57143, "support": 6},
    "positive": {"precision": 0.9, "recall": 0.875, "f1": 0.88722, "support": 8},
}
CONFUSION = [[7, 2, 1], [1, 4, 1], [0, 1, 7]]
SCRIPT = "<script>alert(1)</script>"
CHINESE = "这部电影非常精彩"


def _metrics() -> dict:
    return {
        "accuracy": 0.75,
        "macro_f1": 0.7369,
        "micro_f1": 0.75,
        "weighted_f1": 0.7551,
        "count": 24,
        "per_class": PER_CLASS,
        "confusion_matrix": CONFUSION,
        "labels": LABELS,
    }


def _write_jsonl(path: Path, rows: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + tail, encoding="utf-8")


def _metric_rows() -> list[dict]:
    train = [
        {
            "kind": "train",
            "step": s,
            "epoch": s / 20,
            "loss": 1.1 - s / 50,
            "lr": 5e-5 * (1 - s / 50),
            "grad_norm": 1.0,
            "examples_per_s": 100.0,
            "elapsed_s": s / 10,
        }
        for s in (5, 10, 15, 20, 25, 30, 35, 40)
    ]
    evals = [
        {
            "kind": "eval",
            "split": "validation",
            "step": s,
            "epoch": s / 20,
            "loss": 0.9 - s / 100,
            "accuracy": 0.5 + s / 200,
            "macro_f1": 0.45 + s / 200,
            "weighted_f1": 0.48 + s / 200,
            "micro_f1": 0.5 + s / 200,
        }
        for s in (20, 40)
    ]
    final = [{"kind": "final", "split": "test", "checkpoint": "best", "accuracy": 0.75, "macro_f1": 0.7369}]
    return train + evals + final


def _predictions() -> list[dict]:
    def row(text, gold, label, score=0.9):
        return {
            "split": "validation",
            "text": text,
            "gold": gold,
            "label": label,
            "score": score,
            "top_k": [{"label": label, "score": score}],
            "where": "dev.jsonl:1",
        }

    return [
        row(SCRIPT, "negative", "positive"),
        row(CHINESE, "positive", "positive"),
        row("x" * 1000, "neutral", "negative", 0.51),
        row("fine", "neutral", "neutral"),
    ]


def _base_run(run: Path) -> Path:
    run.mkdir()
    meta = {
        "task": "classification",
        "labels": {"names": LABELS, "raw_to_name": {l: l for l in LABELS}},
        "model": {"family": "transformer", "source": "minilm"},
        "parameters": {"trainable": 1234567, "total": 2345678},
        "best": {"metric": "macro_f1", "value": 0.65, "step": 40},
        "lmforge_version": "0.1.0",
        "created": "2024-01-01T00:00:00",
        "training": {"wall_time_s": 12.3, "steps": 40, "stopped_early": False},
    }
    (run / "lmforge.json").write_text(json.dumps(meta), encoding="utf-8")
    (run / "config.yaml").write_text("task: classification\nmodel:\n  source: minilm # <b>\n", encoding="utf-8")
    return run


def _full_run(run: Path) -> Path:
    _base_run(run)
    _write_jsonl(run / "metrics.jsonl", _metric_rows())
    results = {"validation": _metrics(), "test": _metrics()}
    (run / "eval_results.json").write_text(json.dumps(results), encoding="utf-8")
    _write_jsonl(run / "predictions.jsonl", _predictions())
    return run


def test_full_report(tmp_path):
    path = write_report(_full_run(tmp_path / "run-full"))
    assert path == tmp_path / "run-full" / "report.html" and path.is_file()
    page = path.read_text(encoding="utf-8")
    # loss, lr, validation metrics, then per split (validation, test): per-class bars + confusion matrix
    assert page.count(IMG) == 3 + 2 * 2
    assert '<meta charset="utf-8">' in page and "run-full" in page
    for label in LABELS:
        assert label in page
    for scores in PER_CLASS.values():
        assert f"{scores['f1']:.4f}" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert SCRIPT not in page and "<script" not in page
    assert CHINESE in page
    assert "x" * 300 in page and "x" * 301 not in page
    assert "minilm # &lt;b&gt;" in page and "1,234,567" in page and "12.3 s" in page
    # the headline at the top: task, model, the validation split's main metrics, steps, time
    top = page[page.index('<div class="headline">') : page.index("<h2>")]
    assert '<span class="k">validation accuracy</span><span class="v">0.7500</span>' in top
    assert "classification" in top and "12.3 s" in top
    # every table scrolls inside its box instead of widening the page
    assert page.count("<table>") == page.count('<div class="table-wrap"><table>')
    assert "could not be rendered" not in page
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_minimal_run_has_no_images(tmp_path):
    path = write_report(_base_run(tmp_path / "run-min"))
    page = path.read_text(encoding="utf-8")
    assert IMG not in page
    assert "minilm" in page and "task: classification" in page
    assert "Samples" not in page and "Evaluation" not in page


def test_truncated_metrics_line(tmp_path):
    run = _base_run(tmp_path / "run-cut")
    _write_jsonl(run / "metrics.jsonl", _metric_rows()[:8], tail='\n{"kind": "train", "step": 45, "lo')
    page = write_report(run).read_text(encoding="utf-8")
    assert page.count(IMG) == 2  # train loss and lr; no eval rows, so no metric curves
    assert "could not be rendered" not in page


def test_empty_folder(tmp_path):
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<h1>" in page and IMG not in page


def test_error_analysis_for_classification_and_ner(tmp_path):
    import re

    page = write_report(_full_run(tmp_path / "run-errors")).read_text(encoding="utf-8")
    assert "Error analysis" in page and "Accuracy by text length" in page
    # the most confident mistake comes first: SCRIPT's (0.9) before the 1000-x text's (0.51)
    samples = page[page.index("<h2>Samples</h2>") :]
    assert samples.index("alert(1)") < samples.index("x" * 300)
    confused = page[page.index("Most confused labels") :]
    assert re.search(r"<td>negative</td><td>positive</td><td class=\"num\">1</td>", confused)
    # lengths in quartiles: 4 texts, one each; accuracy 0 for the shortest ("fine" is right: 1.0)
    assert '<td>4–4</td><td class="num">1</td><td class="num">1.0000</td>' in page

    ner = tmp_path / "ner"
    ner.mkdir()
    (ner / "lmforge.json").write_text(json.dumps({"task": "token_classification", "head": "token_classification"}))

    def entity(label, start, text):
        return {"label": label, "start_token": start, "end_token": start + 1, "text": text}

    rows = [
        {"split": "validation", "tokens": ["Ann", "met", "Bob"], "correct": False,
         "gold_entities": [entity("PER", 0, "Ann"), entity("PER", 2, "Bob")], "entities": [entity("PER", 0, "Ann")]},
        {"split": "validation", "tokens": ["in", "Paris"], "correct": False,
         "gold_entities": [entity("LOC", 1, "Paris")], "entities": [entity("ORG", 1, "Paris")]},
        {"split": "validation", "tokens": ["ok"], "correct": True, "gold_entities": [], "entities": []},
        {"split": "validation", "tokens": ["Rome", "is", "old", "."], "correct": True,
         "gold_entities": [entity("LOC", 0, "Rome")], "entities": [entity("LOC", 0, "Rome")]},
    ]  # fmt: skip
    _write_jsonl(ner / "predictions.jsonl", rows)
    page = write_report(ner).read_text(encoding="utf-8")
    assert "Entities by type" in page and "could not be rendered" not in page
    cells = lambda *values: "".join(f'<td class="num">{v}</td>' for v in values)  # noqa: E731
    assert "<td>PER</td>" + cells(2, 1, 1, 0) in page  # Bob missed
    assert "<td>LOC</td>" + cells(2, 1, 1, 0) in page  # Paris missed as LOC
    assert "<td>ORG</td>" + cells(0, 1, 0, 1) in page  # and found as ORG: spurious

"""The n-gram family end to end through the CLI: train (one pass) -> run folder -> predict / eval /
generate, for classification (TF-IDF logreg, NB-SVM), NER (CRF, every NER input format) and
language modelling (Kneser-Ney, words and characters); a few dozen rows of the real data sets when
they are present."""

import json
import math
from pathlib import Path

import pytest

from conftest import SHARED_DATA, write_jsonl
from training.test_ner_end_to_end import ner_sentences, to_span_rows, write_conll

RUN_FILES = {"config.yaml", "lmforge.json", "metrics.jsonl", "eval_results.json", "predictions.jsonl", "report.html"}


def job(tmp_path: Path, task: str, *overrides: str) -> list[str]:
    config = tmp_path / f"{task}.yaml"
    config.write_text(f"task: {task}\n")
    return ["train", str(config), *overrides]


def check_run_folder(out: Path, task: str, saved: set[str]) -> dict:
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    meta = json.loads((out / "lmforge.json").read_text())
    assert meta["finished"] and meta["task"] == task and meta["model"]["family"] == "ngram"
    assert meta["parameters"]["total"] > 0 and meta["training"]["steps"] == 1
    # JSON, safetensors and crfsuite's file only: nothing a loader would unpickle
    assert {p.name for p in (out / "model").iterdir()} == {"config.json", "state.json", "model.safetensors"} | saved
    kinds = [json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert kinds == ["start", "train", "eval", "final"]
    return meta


@pytest.mark.parametrize("classifier", ["logreg", "nbsvm"])
def test_classification_train_predict_eval(classifier, tiny_data, tmp_path, run_cli):
    out = tmp_path / classifier
    code, stdout, _ = run_cli(
        *job(
            tmp_path,
            "classification",
            f"data.train={tiny_data['train']}",
            f"data.validation={tiny_data['dev']}",
            f"output={out}",
            f"model={{family: ngram, classifier: {classifier}, min_df: 1, C: 10}}",
        )
    )
    assert code == 0, stdout
    meta = check_run_folder(out, "classification", set())
    assert meta["labels"]["names"] == ["neg", "pos"]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and {"split", "where", "gold", "label", "score", "top_k", "text"} <= set(rows[0])
    assert json.loads((out / "eval_results.json").read_text())["validation"]["accuracy"] >= 0.9
    code, stdout, _ = run_cli("predict", str(out), "--text", "an absolute delight", "--text", "a dull , lifeless mess")
    assert code == 0
    assert [json.loads(line)["label"] for line in stdout.splitlines()] == ["pos", "neg"]
    code, stdout, _ = run_cli("eval", str(out), "--data", str(tiny_data["dev"]), "--json")
    assert code == 0 and json.loads(stdout)["accuracy"] >= 0.9
    code, _, err = run_cli("eval", str(out), "--data", str(tiny_data["dev"]), "--precision", "bf16")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--precision bf16" in err and "n-gram" in err, err
    check_compare_can_time(out, [row["text"] for row in rows])


def check_compare_can_time(out: Path, texts: list[str]) -> None:
    """``lmforge compare`` times a run through ``RunPredictor`` and counts its learned values."""
    from lmforge.selection.measure import measure_run

    cost = measure_run(out, texts)
    assert cost["parameters_total"] == json.loads((out / "lmforge.json").read_text())["parameters"]["total"]
    assert cost["latency_p50_ms"] > 0 and cost["throughput_per_s"] > 0 and cost["size_bytes"] > 0


def test_resume_fits_again_from_scratch(tiny_data, tmp_path, run_cli):
    out = tmp_path / "again"
    args = job(
        tmp_path,
        "classification",
        f"data.train={tiny_data['train']}",
        f"data.validation={tiny_data['dev']}",
        f"output={out}",
        "model={family: ngram, min_df: 1}",
    )
    assert run_cli(*args)[0] == 0
    first = json.loads((out / "eval_results.json").read_text())
    assert run_cli(*args, "resume=true")[0] == 0
    check_run_folder(out, "classification", set())  # one start/train/eval/final, not two
    assert json.loads((out / "eval_results.json").read_text()) == first
    code, _, err = run_cli(*args, "model.C=3.0", "resume=true")
    assert code != 0 and "config changed" in err


def ner_files(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    train, dev = ner_sentences(40, 0), ner_sentences(12, 1)
    if kind == "conll":
        return write_conll(tmp_path / "train.conll", train), write_conll(tmp_path / "dev.conll", dev)
    if kind == "tokens":
        rows = lambda sents: [{"tokens": t, "tags": g} for t, g in sents]  # noqa: E731
        return write_jsonl(tmp_path / "train.jsonl", rows(train)), write_jsonl(tmp_path / "dev.jsonl", rows(dev))
    return (
        write_jsonl(tmp_path / "train.jsonl", to_span_rows(train)),
        write_jsonl(tmp_path / "dev.jsonl", to_span_rows(dev)),
    )


@pytest.mark.parametrize("kind", ["conll", "tokens", "spans"])
def test_crf_ner_train_predict_eval(kind, tmp_path, run_cli):
    train, dev = ner_files(tmp_path, kind)
    out = tmp_path / "crf"
    code, stdout, _ = run_cli(
        *job(
            tmp_path,
            "token_classification",
            f"data.train={train}",
            f"data.validation={dev}",
            f"output={out}",
            "model={family: ngram, max_iterations: 50, min_df: 1}",
        )
    )
    assert code == 0, stdout
    check_run_folder(out, "token_classification", {"crf.crfsuite"})
    results = json.loads((out / "eval_results.json").read_text())["validation"]
    assert results["f1"] >= 0.9 and set(results["per_type"]) == {"LOC", "PER"}
    row = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    assert {"tokens", "gold", "pred", "entities", "gold_entities", "where"} <= set(row)
    text = "Mary visited Berlin on Monday ."
    code, stdout, _ = run_cli("predict", str(out), "--text", text)
    assert code == 0
    entities = json.loads(stdout)["entities"]
    assert [(e["label"], e["start"], e["end"], e["text"]) for e in entities] == [
        ("PER", 0, 4, "Mary"),
        ("LOC", 13, 19, "Berlin"),
    ]
    assert all(0 < e["score"] <= 1 for e in entities)
    code, stdout, _ = run_cli("eval", str(out), "--data", str(dev), "--json")
    assert code == 0 and json.loads(stdout)["f1"] == pytest.approx(results["f1"])
    if kind == "spans":
        check_compare_can_time(out, [text, "Nobody came ."])


CORPUS = [
    "the cat sat on the mat .",
    "the dog sat on the log .",
    "a cat and a dog met on the mat .",
    "the cat saw the dog and the dog saw the cat .",
    "on the mat the cat sat all day .",
] * 6


@pytest.mark.parametrize(
    "unit,text", [("word", CORPUS), ("char", ["今天天气很好。", "我们去公园散步。", "天气很好我们很开心。"] * 8)]
)
def test_kneser_ney_train_eval_generate(unit, text, tmp_path, run_cli):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(text) + "\n", encoding="utf-8")
    out = tmp_path / f"kn_{unit}"
    code, stdout, _ = run_cli(
        *job(
            tmp_path,
            "causal_lm",
            f"data.train={corpus}",
            "data.split=0.2",
            f"output={out}",
            f"model={{family: ngram, unit: {unit}, order: 3}}",
        )
    )
    assert code == 0, stdout
    check_run_folder(out, "causal_lm", set())
    metrics = json.loads((out / "eval_results.json").read_text())["validation"]
    assert 1 < metrics["perplexity"] < metrics["unigram_perplexity"]
    assert metrics["tokens"] > metrics["count"]
    assert metrics["bits_per_char"] == pytest.approx(
        metrics["loss"] * metrics["tokens"] / metrics["characters"] / math.log(2)
    )
    if unit == "char":  # one token per character (and per document end): the same figure
        assert metrics["tokens"] == metrics["characters"]
        assert metrics["char_perplexity"] == pytest.approx(metrics["perplexity"])
    prompt = "the cat" if unit == "word" else "今天"
    args = ("generate", str(out), prompt, "--temperature", "0.8", "--seed", "3", "--max-new-tokens", "6", "--json")
    code, first, _ = run_cli(*args)
    assert code == 0
    again = run_cli(*args)[1]
    generated = json.loads(first)
    assert generated == {
        **json.loads(again),
        "seconds": generated["seconds"],
        "tokens_per_s": generated["tokens_per_s"],
    }
    assert 1 <= generated["new_tokens"] <= 6 and generated["text"]
    code, stdout, _ = run_cli("eval", str(out), "--data", str(corpus), "--json")
    assert code == 0 and json.loads(stdout)["perplexity"] > 1
    from lmforge.errors import ModelError
    from lmforge.inference.generator import Generator

    with pytest.raises(ModelError, match="n-gram language model run"):
        Generator(str(out))  # what the server loads: a clear refusal, not a traceback


# -- real data (skipped on a fresh install) --------------------------------------------------------
needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "sst2").is_dir() or not (SHARED_DATA / "conll2003").is_dir(), reason="../shared/data is not here"
)


@needs_shared
def test_sst2_few_dozen_rows(tmp_path, run_cli):
    out = tmp_path / "sst2"
    code, stdout, _ = run_cli(
        *job(
            tmp_path,
            "classification",
            f"data.train={{path: {SHARED_DATA}/sst2/train.tsv, limit: 60}}",
            f"data.validation={{path: {SHARED_DATA}/sst2/dev.tsv, limit: 40, fields: {{text: content, label: label}}}}",
            "data.fields={text: sentence, label: label}",
            f"output={out}",
            "model={family: ngram, classifier: nbsvm, min_df: 1}",
        )
    )
    assert code == 0, stdout
    results = json.loads((out / "eval_results.json").read_text())["validation"]
    assert results["count"] == 40 and 0 <= results["accuracy"] <= 1


def first_sentences(source: Path, target: Path, n: int) -> Path:
    """The first ``n`` sentences of a CoNLL file (blank-line separated), as a file of their own."""
    blocks = source.read_text(encoding="utf-8").split("\n\n")[:n]
    target.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return target


@needs_shared
def test_conll_few_dozen_sentences(tmp_path, run_cli):
    out = tmp_path / "conll"
    train = first_sentences(SHARED_DATA / "conll2003" / "train.txt", tmp_path / "train.txt", 60)
    dev = first_sentences(SHARED_DATA / "conll2003" / "valid.txt", tmp_path / "valid.txt", 30)
    code, stdout, _ = run_cli(
        *job(
            tmp_path,
            "token_classification",
            f"data.train={train}",
            f"data.validation={dev}",
            f"output={out}",
            "model={family: ngram, max_iterations: 30, min_df: 1}",
        )
    )
    assert code == 0, stdout
    assert json.loads((out / "eval_results.json").read_text())["validation"]["count"] < 40
    code, stdout, _ = run_cli("predict", str(out), "--text", "EU rejects German call to boycott British lamb .")
    assert code == 0 and isinstance(json.loads(stdout)["entities"], list)

"""Ensembles: the merged tag path is the best valid one under the mean posteriors; runs that cannot
be combined are refused in one line; an end-to-end ensemble of two tiny taggers and classifiers."""

import itertools
import json

import pytest
import torch

from conftest import write_jsonl
from lmforge.data.tagging import allowed_transitions
from lmforge.tasks.ensemble import decode_posteriors

NAMES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def test_decoding_takes_the_best_valid_path_of_the_mean_posteriors():
    start, trans, end = allowed_transitions(NAMES, "bio")
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 4):
        for _ in range(5):
            mean = torch.rand(n, len(NAMES), generator=gen).softmax(-1)
            [path] = decode_posteriors([mean], NAMES, "bio")
            valid = [p for p in itertools.product(range(len(NAMES)), repeat=n)
                     if start[p[0]] and end[p[-1]] and all(trans[a][b] for a, b in zip(p, p[1:]))]
            best = max(valid, key=lambda p: sum(mean[t, y].log().item() for t, y in enumerate(p)))
            assert tuple(path) == best
    # the per-word argmax "O I-PER" is invalid; the merged path never is
    mean = torch.tensor([[0.9, 0.05, 0.0, 0.05, 0.0], [0.3, 0.1, 0.6, 0.0, 0.0]])
    assert [NAMES[t] for t in decode_posteriors([mean], NAMES, "bio")[0]] == ["O", "O"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny NER runs (different seeds and heads) and one classification run."""
    from lmforge.cli.main import main

    from test_ner_end_to_end import ner_sentences, write_conll

    folder = tmp_path_factory.mktemp("ensemble")
    train = write_conll(folder / "train.conll", ner_sentences(48, 0))
    dev = write_conll(folder / "dev.conll", ner_sentences(16, 1))
    model = "model={family: lstm, layers: 1, hidden: 32, embedding: 16, vocab_size: 200}"
    out = {}
    for name, extra in (("crf", ["head.crf=true", "train.seed=1"]), ("softmax", ["train.seed=2"])):
        config = folder / f"{name}.yaml"
        config.write_text("task: token_classification\n")
        assert main(["train", "--quiet", str(config), f"data.train={train}",
                    f"data.validation={dev}", model, "train.epochs=4", "train.lr=2e-2", "train.threads=1",
                    f"output={folder / name}", *extra]) == 0
        out[name] = folder / name
    rows = [{"text": f"{'good great' if i % 2 else 'bad awful'} {i}", "label": "pos" if i % 2 else "neg"}
            for i in range(24)]
    write_jsonl(folder / "cls.jsonl", rows)
    config = folder / "cls.yaml"
    config.write_text("task: classification\n")
    assert main(["train", "--quiet", str(config), f"data.train={folder / 'cls.jsonl'}",
                 f"data.validation={folder / 'cls.jsonl'}", model, "train.epochs=3", "train.lr=1e-2",
                 "train.threads=1", f"output={folder / 'cls'}"]) == 0
    out.update(cls=folder / "cls", dev=dev, cls_data=folder / "cls.jsonl")
    return out


def test_ner_ensemble_reports_itself_and_each_member(runs, run_cli):
    code, stdout, err = run_cli("eval", str(runs["crf"]), "--ensemble", str(runs["softmax"]),
                                "--data", str(runs["dev"]), "--json")
    assert code == 0, err
    metrics = json.loads(stdout)
    assert [m["run"] for m in metrics["members"]] == [str(runs["crf"]), str(runs["softmax"])]
    # each member alone scores what `lmforge eval` gives it
    for member in metrics["members"]:
        code, alone, err = run_cli("eval", member["run"], "--data", str(runs["dev"]), "--json")
        assert code == 0, err
        assert member["f1"] == pytest.approx(json.loads(alone)["f1"])
    assert {"f1", "precision", "recall", "per_type", "loss"} <= set(metrics)
    assert metrics["f1"] >= min(m["f1"] for m in metrics["members"]) - 0.1
    code, stdout, err = run_cli("eval", str(runs["crf"]), "--ensemble", str(runs["softmax"]),
                                "--data", str(runs["dev"]))
    assert code == 0 and "an ensemble of 2 runs" in stdout and f"member {runs['softmax']}: f1" in stdout


def test_classification_ensemble_of_a_run_with_itself_is_the_run(runs, run_cli):
    code, alone, err = run_cli("eval", str(runs["cls"]), "--data", str(runs["cls_data"]), "--json")
    assert code == 0, err
    code, both, err = run_cli("eval", str(runs["cls"]), "--ensemble", str(runs["cls"]),
                              "--data", str(runs["cls_data"]), "--json")
    assert code == 0, err
    alone, both = json.loads(alone), json.loads(both)
    for key in ("accuracy", "macro_f1", "loss"):
        assert both[key] == pytest.approx(alone[key], abs=1e-6), key


def test_runs_that_cannot_be_combined_are_refused(runs, run_cli):
    code, _, err = run_cli("eval", str(runs["crf"]), "--ensemble", str(runs["cls"]), "--data", str(runs["dev"]))
    assert code == 2 and "cannot join an ensemble of token_classification runs" in err
    assert len(err.strip().splitlines()) == 1, err


def test_predict_with_an_ensemble(runs, run_cli):
    text = "Omar lives in Lima ."
    code, alone, err = run_cli("predict", str(runs["crf"]), "--text", text)
    assert code == 0, err
    code, both, err = run_cli("predict", str(runs["crf"]), "--ensemble", str(runs["softmax"]), "--text", text)
    assert code == 0, err
    entities = json.loads(both)["entities"]
    assert all(text[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1 for e in entities)
    # a run with itself predicts the labels and probabilities it predicts alone
    code, alone, err = run_cli("predict", str(runs["cls"]), "--text", "good great 99", "--text", "bad awful 98")
    assert code == 0, err
    code, both, err = run_cli("predict", str(runs["cls"]), "--ensemble", str(runs["cls"]),
                              "--text", "good great 99", "--text", "bad awful 98")
    assert code == 0, err
    for a, b in zip(alone.splitlines(), both.splitlines()):
        a, b = json.loads(a), json.loads(b)
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-6)


@pytest.mark.parametrize("name", ["crf", "softmax"])
def test_decoding_with_the_word_probabilities_at_hand_is_decoding_without(runs, name):
    from lmforge.config.schema import DataConfig, DataSource
    from lmforge.data.readers import Problems
    from lmforge.data.tagged import read_tagged
    from lmforge.tasks.predictor import RunPredictor

    p = RunPredictor(str(runs[name]))
    examples = read_tagged(DataSource(path=str(runs["dev"])), DataConfig(), Problems(), need_tags=False)
    features = p.task.encode(p.tokenizer, examples, p.max_length)
    scores = p.task.word_scores(p.model, p.tokenizer, features, examples, 8, p.device)
    paths, confidence = p.task.decode(p.model, scores)
    again, at_hand = p.task.decode(p.model, scores, p.task.word_probabilities(p.model, scores))
    assert again == paths
    assert all(torch.allclose(a, b) for a, b in zip(confidence, at_hand))

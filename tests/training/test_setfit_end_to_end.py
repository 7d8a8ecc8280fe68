"""The SetFit recipe end to end on a tiny BERT: the contrastive phase changes the body, the head is
scikit-learn's logistic regression, and the saved run is an ordinary classification run --
``lmforge predict``, ``eval``, ``explain`` and the server give the labels its training evaluation
reported."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from transformers import BertForSequenceClassification

import lmforge.training.setfit as setfit_recipe
from conftest import tiny_bert_config, tiny_overrides
from lmforge.config import load_config
from lmforge.config.schema import TuningConfig
from lmforge.inference.predictor import RunPredictor
from lmforge.training.recipe import train
from lmforge.training.setfit import embeddings, fit_head, templated_features
from lmforge.tuning import apply_tuning
from lmforge.tuning.setfit import check_data

SETFIT = ["tuning.method=setfit", "tuning.pair_iterations=2", "train.threads=1"]


@pytest.fixture(scope="module")
def setfit_run(tmp_path_factory):
    """A tiny setfit run (48 examples, 2 rounds of pairs: 192 pairs), with the body's weights just
    before and just after the contrastive phase."""
    from conftest import sentiment_rows, write_jsonl

    root = tmp_path_factory.mktemp("setfit")
    data = {
        "train": write_jsonl(root / "train.jsonl", sentiment_rows(48, 0)),
        "dev": write_jsonl(root / "dev.jsonl", sentiment_rows(16, 1)),
    }
    seen = {}
    contrastive = setfit_recipe._contrastive

    def spy(job, model, *args, **kwargs):
        seen["before"] = {k: v.clone() for k, v in model.state_dict().items()}
        contrastive(job, model, *args, **kwargs)
        seen["after"] = {k: v.clone() for k, v in model.state_dict().items()}

    setfit_recipe._contrastive = spy
    try:
        outcome = train(load_config(None, tiny_overrides(data, root / "run", *SETFIT)), quiet=True)
    finally:
        setfit_recipe._contrastive = contrastive
    assert outcome.stopped_by is None
    return {"run": root / "run", "data": data, **seen}


def test_the_contrastive_phase_changes_the_body_and_not_the_head(setfit_run):
    before, after = setfit_run["before"], setfit_run["after"]
    body = [k for k in before if k.startswith("bert.")]
    assert body and all(k.startswith(("bert.", "classifier.")) for k in before)
    changed = [k for k in body if not torch.equal(before[k], after[k])]
    assert "bert.embeddings.word_embeddings.weight" in changed
    assert any(".encoder.layer.1." in k for k in changed)
    assert torch.equal(before["classifier.weight"], after["classifier.weight"])  # fitted afterwards


def test_the_run_is_recorded_like_any_classification_run(setfit_run):
    run = setfit_run["run"]
    record = json.loads((run / "lmforge.json").read_text())
    assert record["finished"] and record["tuning"] == "setfit" and record["head"] == "sequence_classification"
    assert json.loads((run / "model" / "config.json").read_text())["model_type"] == "lmforge_mean_pooled_bert"
    assert sorted(p.name for p in (run / "model").iterdir() if p.suffix in (".bin", ".pt", ".pkl")) == []
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    start = lines[0]
    assert start["kind"] == "start" and start["pairs"] == 2 * 2 * 48 and start["steps"] == 2 * 192 // 8
    assert [r["kind"] for r in lines if r["kind"] != "train"] == ["start", "eval", "final"]
    assert record["training"]["steps"] == start["steps"]


def test_the_saved_run_predicts_what_its_training_evaluation_reported(setfit_run, run_cli, tmp_path):
    run, dev = setfit_run["run"], setfit_run["data"]["dev"]
    reported = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    results = json.loads((run / "eval_results.json").read_text())["validation"]
    texts = [row["text"] for row in reported]
    predictor = RunPredictor(run, device="cpu")
    assert [p["label"] for p in predictor.predict(texts)] == [row["label"] for row in reported]
    out = tmp_path / "predicted.jsonl"
    assert run_cli("predict", str(run), "--input", str(dev), "--output", str(out), "--device", "cpu")[0] == 0
    predicted = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["label"] for p in predicted] == [row["label"] for row in reported]
    code, stdout, _ = run_cli("eval", str(run), "--data", str(dev), "--device", "cpu")
    assert code == 0 and f"{results['accuracy']:.4f}" in stdout
    code, stdout, _ = run_cli("explain", str(run), "--text", texts[0], "--device", "cpu")
    assert code == 0 and f"predicted {reported[0]['label']}" in stdout


def test_the_server_classifies_a_setfit_run_as_its_training_evaluation_did(setfit_run):
    pytest.importorskip("fastapi")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
    from fastapi.testclient import TestClient

    from lmforge.serving.app import create_app
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings
    from lmforge.serving.state import ServerState

    run = setfit_run["run"]
    reported = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    settings = ServeSettings(sources=[str(run)], api_key="k" * 16, device="cpu")
    settings.check()
    state = ServerState(settings, open_models(settings))
    state.load()
    try:
        with TestClient(create_app(state), headers={"Authorization": f"Bearer {'k' * 16}"}) as client:
            body = client.post("/v1/classify", json={"input": [r["text"] for r in reported]}).json()
    finally:
        state.close()
    assert [row["label"] for row in body["data"]] == [r["label"] for r in reported]


def test_the_head_gives_scikit_learns_probabilities():
    torch.manual_seed(0)
    bert = BertForSequenceClassification(tiny_bert_config(num_labels=2))
    model = apply_tuning(bert, TuningConfig(method="setfit"), "classification")
    features = [{"input_ids": [2, 5 + i % 7, 6 + i % 3, 3], "label": i % 2} for i in range(12)]
    accuracy = fit_head(model, features, _Pad(), seed=0, device="cpu", batch_size=4)
    x = embeddings(model, features, 0, "cpu", 4).numpy()
    labels = [f["label"] for f in features]
    reference = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(x, labels)
    probs = model.eval()(input_ids=torch.tensor([f["input_ids"] for f in features])).logits.softmax(-1)
    torch.testing.assert_close(probs, torch.tensor(reference.predict_proba(x), dtype=torch.float32), atol=1e-5, rtol=0)
    assert accuracy == reference.score(x, labels)


def test_templated_examples_name_each_label(setfit_run):
    from transformers import AutoTokenizer

    from lmforge.data.examples import LabelSet, TextExample
    from lmforge.errors import ConfigError
    from lmforge.tasks import get_task

    overrides = [
        "data.train=x.jsonl",
        "tuning.method=setfit",
        "tuning.label_templates=2",
        "tuning.template=It is {label}",
    ]
    job = SimpleNamespace(
        config=load_config(None, overrides),
        data=SimpleNamespace(train=[TextExample("a film")], labels=LabelSet(["neg", "pos"], {})),
        task=get_task("classification"),
        tokenizer=AutoTokenizer.from_pretrained(setfit_run["run"] / "model"),
    )
    features = templated_features(job)
    assert [f["label"] for f in features] == [0, 0, 1, 1]
    assert [job.tokenizer.decode(f["input_ids"], skip_special_tokens=True) for f in features] == [
        "it is neg",
        "it is neg",
        "it is pos",
        "it is pos",
    ]
    with pytest.raises(ConfigError, match="tuning.label_templates: .* text pairs"):
        check_data([0, 1], ["neg", "pos"], 2, text_pairs=True)
    check_data([0, 0, 1], ["neg", "pos"], 0, text_pairs=True)  # no templates: text pairs are fine
    check_data([0, 1], ["好评", "差评"], 2, text_pairs=False)  # Chinese names are words


class _Pad:
    pad_token_id = 0


def test_a_stopped_setfit_run_says_it_left_no_checkpoint(setfit_run, run_cli, tmp_path, monkeypatch):
    """SetFit keeps no checkpoints: a stop must not point the user at one (the loop's message did)."""

    def stopped(job, model, features, pairs, total, scheduler, metrics, stop, quiet, state):
        stop.requested = "SIGTERM"

    monkeypatch.setattr(setfit_recipe, "_contrastive", stopped)
    run, config = tmp_path / "stopped", tmp_path / "setfit.yaml"
    config.write_text("task: classification\n")
    code, _, err = run_cli("train", str(config), *tiny_overrides(setfit_run["data"], run, *SETFIT), "--quiet")
    assert code == 143  # nothing to resume: not a success
    assert "checkpoint saved" not in err and not (run / "checkpoints").exists()
    assert "no checkpoint (tuning.method=setfit keeps none); start again with: lmforge train" in err
    assert err.rstrip().endswith("resume=true")
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "stopped" and last["signal"] == "SIGTERM"  # `lmforge runs` lists it as stopped


@pytest.mark.parametrize(
    "rows, extra, message",
    [
        (
            [{"text": "good", "label": "1"}, {"text": "bad", "label": "0"}] * 4,
            ["tuning.label_templates=2"],
            "tuning.label_templates: templated examples need label names that are words, not '0', '1'",
        ),
        (
            [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}],
            [],
            "data.train: tuning.method=setfit needs two examples of one label at least",
        ),
    ],
    ids=["numbers-as-label-names", "no-positive-pair"],
)
def test_data_setfit_cannot_use_fails_before_the_run_folder_is_written(tmp_path, run_cli, rows, extra, message):
    from conftest import write_jsonl

    data = {"train": write_jsonl(tmp_path / "train.jsonl", rows), "dev": write_jsonl(tmp_path / "dev.jsonl", rows)}
    config, run = tmp_path / "setfit.yaml", tmp_path / "run"
    config.write_text("task: classification\n")
    code, _, err = run_cli("train", str(config), *tiny_overrides(data, run, *SETFIT, *extra), "--quiet")
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    assert not run.exists()  # nothing written: the corrected command runs into the same folder


def test_a_setfit_run_started_again_logs_only_its_own_run(setfit_run, tmp_path, monkeypatch):
    """resume=true runs SetFit again from its start: the stopped run's metrics rows go."""
    run = tmp_path / "again"
    overrides = tiny_overrides(setfit_run["data"], run, *SETFIT)
    contrastive = setfit_recipe._contrastive

    def stop_after_logging(job, model, features, pairs, total, scheduler, metrics, stop, quiet, state):
        metrics.write({"kind": "train", "step": 3, "loss": 9.0})  # what a stopped run left
        stop.requested = "SIGTERM"

    monkeypatch.setattr(setfit_recipe, "_contrastive", stop_after_logging)
    assert train(load_config(None, overrides), quiet=True).stopped_by == "SIGTERM"
    monkeypatch.setattr(setfit_recipe, "_contrastive", contrastive)
    assert train(load_config(None, [*overrides, "resume=true"]), quiet=True).stopped_by is None
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in lines].count("start") == 1 and all(r.get("loss") != 9.0 for r in lines)

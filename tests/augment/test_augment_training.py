"""data.augment in training (counted, logged, shown in the report, resumable) and ``lmforge augment``."""

import json
import shutil

import torch
from safetensors.torch import load_file

from conftest import tiny_overrides
from training.test_ner_end_to_end import ner_sentences, write_conll

STEPS = "[{method: synonym, p: 0.3, source: wordnet}, {method: swap, copies: 2}]"


def _config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("task: classification\n")
    return str(path)


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_training_with_augmentation_counts_logs_and_reports(tiny_data, tmp_path, run_cli):
    out = tmp_path / "run"
    code, _, err = run_cli(
        "train", _config(tmp_path), *tiny_overrides(tiny_data, out, f"data.augment={STEPS}", "--quiet")
    )
    assert code == 0, err
    start, *rows = [r for r in _rows(out / "metrics.jsonl") if r["kind"] in ("start", "augment")]
    assert start["examples"] == 48 * 4  # originals + 1 synonym copy + 2 swap copies
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[0]["made"] == {"synonym": 48, "swap": 96}
    assert 0 < rows[0]["changed"]["synonym"] <= 48
    samples = _rows(out / "augment-samples.jsonl")
    assert {s["method"] for s in samples} == {"synonym", "swap"}
    assert all(s["original"] != s["augmented"] for s in samples)
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "Data augmentation" in report and samples[0]["augmented"].replace("'", "&#x27;") in report


def test_a_resumed_run_draws_the_same_epochs(tiny_data, tmp_path, run_cli):
    """Resumed from a checkpoint inside the second epoch, the run ends on the same weights: each
    epoch's copies are drawn from (seed, epoch), not from where the process started."""
    part = tmp_path / "run"
    base = [f"data.augment={STEPS}", "train.epochs=3", "train.save_every=10", "train.keep_checkpoints=10"]
    base += ["train.keep_optimizer=true", "train.dropout=0.1", "train.precision=fp32"]
    assert run_cli("train", "--quiet", _config(tmp_path), *tiny_overrides(tiny_data, part, *base))[0] == 0
    whole = load_file(part / "model" / "model.safetensors")
    for folder in (part / "checkpoints").iterdir():  # 24 steps an epoch: step-40 is in the second
        if int(folder.name.split("-")[1]) > 40:
            shutil.rmtree(folder)
    shutil.rmtree(part / "model")
    (part / "eval_results.json").unlink()
    code, _, err = run_cli("train", "--quiet", "--resume", _config(tmp_path), *tiny_overrides(tiny_data, part, *base))
    assert code == 0, err
    resumed = load_file(part / "model" / "model.safetensors")
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], atol=1e-6, rtol=0)


def test_ner_training_with_mention_replacement(tmp_path, run_cli):
    train = write_conll(tmp_path / "train.txt", ner_sentences(32, 0))
    dev = write_conll(tmp_path / "dev.txt", ner_sentences(8, 1))
    out = tmp_path / "ner"
    code, _, err = run_cli(
        "train",
        _config(tmp_path),
        "task=token_classification",
        f"data.train={train}",
        f"data.validation={dev}",
        "model={family: transformer, arch: bert, layers: 2, hidden: 32, heads: 2, vocab_size: 200}",
        "data.augment=[{method: mention, p: 1.0}, {method: delete}]",
        "train.epochs=1",
        "train.batch_size=8",
        f"output={out}",
        "--quiet",
    )
    assert code == 0, err
    samples = _rows(out / "augment-samples.jsonl")
    mention = [s for s in samples if s["method"] == "mention"]
    assert mention and all(len(s["augmented"].split()) == len(s["augmented_tags"].split()) for s in mention)


def test_augment_command_writes_the_training_set(tiny_data, tmp_path, run_cli):
    config = tmp_path / "c.yaml"
    config.write_text(f"task: classification\ndata:\n  train: {tiny_data['train']}\n  augment: {STEPS}\n")
    target = tmp_path / "aug.jsonl"
    code, out, err = run_cli("augment", str(config), "--output", str(target))
    assert code == 0, err
    rows = _rows(target)
    assert len(rows) == 48 * 4 and "192 examples written" in out
    assert [r["augmentation"] for r in rows[:48]] == ["original"] * 48
    assert {r["augmentation"] for r in rows[48:]} == {"synonym", "swap"}
    assert all(r["label"] in ("pos", "neg") for r in rows)
    again = tmp_path / "again.jsonl"
    assert run_cli("augment", str(config), "--output", str(again), "--only-new")[0] == 0
    assert _rows(again) == rows[48:]  # the same seed draws the same copies


def test_bad_augment_settings_are_one_line_errors(tiny_data, tmp_path, run_cli):
    code, _, err = run_cli(
        "train", _config(tmp_path), *tiny_overrides(tiny_data, tmp_path / "r", "data.augment=[{method: mention}]")
    )
    assert code != 0 and "data.augment[0].method: mention" in err and "Traceback" not in err
    code, _, err = run_cli(
        "train", _config(tmp_path), *tiny_overrides(tiny_data, tmp_path / "r", "data.augment=[{method: shuffle}]")
    )
    assert code != 0 and "data.augment" in err and "method" in err
    code, _, err = run_cli(
        "train", _config(tmp_path), *tiny_overrides(tiny_data, tmp_path / "r", "data.augment=[{method: swap, p: 0}]")
    )
    assert code != 0 and "p" in err
    assert not (tmp_path / "r").exists()
    # lmforge augment checks the steps before it loads anything, as train does
    code, _, err = run_cli(
        "augment",
        _config(tmp_path),
        *tiny_overrides(tiny_data, tmp_path / "r", "data.augment=[{method: contextual, p: 0.5}]"),
        "--output",
        str(tmp_path / "a.jsonl"),
    )
    assert code == 2 and "data.augment[0].model: contextual needs a masked LM" in err and "Traceback" not in err

"""Distillation: the loss against a hand-computed value, and a tiny teacher distilled into an LSTM
student end to end (both runs, the report, the cached teacher logits)."""

import json

import pytest
import torch

from conftest import tiny_overrides
from lmforge.training.distil import CACHE, distillation_loss

STUDENT = "{family: lstm, layers: 1, hidden: 16, embedding: 16, vocab_size: 200}"


def test_loss_equals_hand_computed_value():
    student = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    teacher = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([1, 0])
    # KL(teacher_T || student_T) averaged over the batch = 0.128702, CE = 0.503204 (by hand, T = 2)
    loss = distillation_loss(student, teacher, labels, temperature=2.0, alpha=0.5)
    assert loss.item() == pytest.approx(0.5 * 4 * 0.12870158 + 0.5 * 0.50320443, abs=1e-6)
    assert loss.item() == pytest.approx(0.50900538, abs=1e-6)
    # alpha 0 is plain cross-entropy; equal logits make the soft term zero
    assert distillation_loss(student, teacher, labels, 2.0, 0.0).item() == pytest.approx(0.50320443, abs=1e-6)
    assert distillation_loss(student, student, labels, 3.0, 1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_distil_end_to_end(tiny_data, run_cli):
    config = tiny_data["dir"] / "c.yaml"
    config.write_text("task: classification\n")
    teacher = tiny_data["dir"] / "teacher"
    code, _, err = run_cli("train", str(config), *tiny_overrides(tiny_data, teacher), "--quiet")
    assert code == 0, err
    out = tiny_data["dir"] / "student"
    student = [*tiny_overrides(tiny_data, out), f"model={STUDENT}", "distil.temperature=3", "distil.alpha=0.7"]
    code, stdout, err = run_cli("distil", str(teacher), "--student", str(config), *student, "--quiet")
    assert code == 0, err
    assert "distilled" in stdout and "labels_only" in stdout and "teacher" in stdout
    report = json.loads((out / "distillation.json").read_text())
    assert report["temperature"] == 3 and report["alpha"] == 0.7
    assert report["distilled"]["alpha"] == 0.7 and report["labels_only"]["alpha"] == 0.0
    assert report["distilled"]["steps"] == report["labels_only"]["steps"] > 0
    for name in ("distilled", "labels_only"):
        assert (out / name / "model" / "model.safetensors").is_file()
        assert "accuracy" in report[name]["results"]["validation"]
    assert (out / CACHE).is_file()
    code, stdout, _ = run_cli("eval", str(out / "distilled"), "--data", str(tiny_data["dev"]), "--json")
    assert code == 0 and "accuracy" in stdout
    # --resume: finished runs of the same config are reused, not trained again
    code, _, err = run_cli("distil", str(teacher), "--student", str(config), *student, "--resume")
    assert code == 0, err
    assert err.count("results are reused") == 2
    assert json.loads((out / "distillation.json").read_text())["distilled"] == report["distilled"]


def test_distil_refuses_a_teacher_that_is_not_a_classifier(tiny_data, run_cli, tmp_path):
    config = tiny_data["dir"] / "c.yaml"
    config.write_text("task: classification\n")
    code, _, err = run_cli(
        "distil",
        str(tmp_path / "nothing"),
        "--student",
        str(config),
        *tiny_overrides(tiny_data, tmp_path / "s"),
        "--quiet",
    )
    assert code != 0 and "lmforge: error:" in err and "nothing" in err

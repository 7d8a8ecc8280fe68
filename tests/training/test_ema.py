"""train.ema: the weight average is computed as documented, evaluated, saved and resumed."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_overrides
from lmforge.training.ema import WeightAverage


def _model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model[1].bias.requires_grad_(False)
    return model


def test_average_follows_the_documented_decay():
    model = _model()
    average = WeightAverage(model, decay=0.9)
    assert "1.bias" not in average.shadow  # frozen: not averaged
    expected = model[0].weight.detach().clone()
    for step in range(30):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        d = min(0.9, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * model[0].weight.detach()
        average.update(model)
    torch.testing.assert_close(average.shadow["0.weight"], expected)
    assert average.current_decay() == pytest.approx(31 / 40)  # still rising toward 0.9


def test_applied_swaps_in_the_average_and_restores_the_weights():
    model = _model()
    average = WeightAverage(model, decay=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(2.0)
    own = {k: v.clone() for k, v in model.state_dict().items()}
    with average.applied(model):
        torch.testing.assert_close(model[0].weight, before["0.weight"])
        torch.testing.assert_close(model[1].bias, own["1.bias"])  # frozen: the model's own
    for key, value in model.state_dict().items():
        assert torch.equal(value, own[key])


def test_save_and_load_round_trip(tmp_path):
    model = _model()
    average = WeightAverage(model, decay=0.99)
    for _ in range(5):
        with torch.no_grad():
            model[0].weight.mul_(1.1)
        average.update(model)
    average.save(tmp_path)
    restored = WeightAverage(_model(), decay=0.99)
    restored.load(tmp_path)
    assert restored.updates == 5
    torch.testing.assert_close(restored.shadow["0.weight"], average.shadow["0.weight"])


def test_damaged_average_is_refused(tmp_path):
    (tmp_path / "ema.safetensors").write_text("garbage")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        WeightAverage(_model(), decay=0.9).load(tmp_path)


def test_training_evaluates_and_saves_the_average(tiny_data, tmp_path, run_cli):
    out = tmp_path / "run"
    code, _, err = run_cli(
        "train",
        "--quiet",
        str(tiny_data["dir"] / "job.yaml"),
        *tiny_overrides(tiny_data, out, "train.ema=0.9", "train.epochs=3"),
    )
    assert code == 0, err
    evals = [
        json.loads(line)
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "eval"
    ]
    assert len(evals) == 3 and all("raw_macro_f1" in row and "macro_f1" in row for row in evals)
    last = sorted((out / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))[-1]
    average, raw = load_file(last / "ema.safetensors"), load_file(last / "model.safetensors")
    saved = load_file(out / "model" / "model.safetensors")
    key = next(k for k in average if k.endswith("classifier.weight"))
    torch.testing.assert_close(saved[key], average[key])  # model/ holds the average
    assert not torch.allclose(raw[key], average[key])  # which is not the last weights


def test_lora_run_averages_only_what_trains(tiny_data, tmp_path, run_cli):
    out = tmp_path / "lora"
    code, _, err = run_cli(
        "train",
        "--quiet",
        str(tiny_data["dir"] / "job.yaml"),
        *tiny_overrides(tiny_data, out, "train.ema=0.9", "tuning.method=lora"),
    )
    assert code == 0, err
    last = sorted((out / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))[-1]
    names = load_file(last / "ema.safetensors").keys()
    assert names and all("lora_" in n or "classifier" in n or "modules_to_save" in n for n in names)
    assert (out / "model" / "model.safetensors").is_file()


def test_one_pass_family_refuses_ema(tiny_data, tmp_path, run_cli):
    out = tmp_path / "ngram"
    code, _, err = run_cli(
        "train",
        "--quiet",
        str(tiny_data["dir"] / "job.yaml"),
        *tiny_overrides(tiny_data, out, "train.ema=0.9"),
        "model={family: ngram, min_df: 1}",
    )
    assert code == 2
    assert "train.ema" in err and "one pass" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.fixture(autouse=True)
def _job_yaml(tiny_data):
    (tiny_data["dir"] / "job.yaml").write_text("task: classification\n")

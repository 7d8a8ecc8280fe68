"""SetFit in ``lmforge compare``: a candidate modifier, in the default learning curve of a transformer
classifier, trained on pairs of the N labelled examples on its own schedule (no minimum of loop
steps), left out at N=all, and in the curve, the table and the recommendation like any candidate."""

import json

import pytest

from conftest import TINY_MODEL, sentiment_rows, write_jsonl
from lmforge.config import load_config
from lmforge.selection.candidates import parse_candidates
from lmforge.selection.compare import plan
from lmforge.selection.compare_run import default_models


def _job(tmp_path, model: str = TINY_MODEL, task: str = "classification"):
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(48, 0))
    dev = write_jsonl(tmp_path / "dev.jsonl", sentiment_rows(16, 1))
    config = tmp_path / "job.yaml"
    config.write_text(
        f"task: {task}\n"
        f"data: {{train: {train}, validation: {dev}, label_names: {{neg: negative, pos: positive}}}}\n"
        f"model: {model}\n"
        "train: {epochs: 2, batch_size: 8, lr: 3.0e-3, warmup: 0, threads: 1}\n"
        "tuning: {pair_iterations: 2}\n"
        f"output: {tmp_path / 'out'}\n"
    )
    return config


def test_setfit_is_a_candidate_and_in_the_default_learning_curve(tmp_path):
    (setfit,) = parse_candidates("minilm:setfit")
    assert setfit.kind == "train" and setfit.overrides[:2] == ["model=minilm", "tuning.method=setfit"]
    config = _job(tmp_path)
    assert default_models(load_config(str(config), []), curve=True) == "config,config:setfit,prompt"
    assert default_models(load_config(str(config), ["model=minilm"]), curve=True) == "minilm,minilm:setfit,prompt"
    lstm = load_config(str(config), ["model={family: lstm}"])
    assert default_models(lstm, curve=True) == "config,prompt"  # setfit tunes a transformer encoder
    llama = load_config(str(config), ["model={family: transformer, arch: llama}"])
    assert default_models(llama, curve=True) == "config,prompt"
    assert "setfit" not in default_models(load_config(str(config), []), curve=False)


def test_setfit_trains_on_its_own_schedule_and_not_at_all(tmp_path):
    config = _job(tmp_path)
    _, steps, _ = plan(str(config), [], "config,config:setfit", ["4", "16", "all"], None, None, 32, False)
    assert [(s.candidate.name, s.labelled) for s in steps] == [
        ("config", "4"),
        ("config", "16"),
        ("config", "all"),
        ("config:setfit", "4"),
        ("config:setfit", "16"),
    ]
    plain, setfit = steps[0], steps[3]
    assert "train.epochs=50" in plain.overrides  # 4 examples: one step an epoch, 50 steps at least
    assert not any(o.startswith("train.epochs=") for o in setfit.overrides)
    assert setfit.config.tuning.method == "setfit" and setfit.config.data.train_limit == 4


def test_the_jobs_cross_entropy_settings_do_not_stop_its_setfit_candidate(tmp_path):
    """A setfit config refuses EMA, R-Drop, early stopping ... (they would do nothing); a compare of a
    job that has them gives its setfit candidate the values that turn them off instead of failing."""
    config = _job(tmp_path)
    job = ["train.ema=0.9", "train.rdrop=1.0", "train.early_stopping={patience: 2}", "train.class_weights=balanced"]
    _, steps, _ = plan(str(config), job, "config,config:setfit", ["4"], None, None, 32, False)
    plain, setfit = steps
    assert plain.config.train.ema == 0.9 and plain.config.train.rdrop == 1.0
    assert setfit.config.train.ema is None and setfit.config.train.rdrop == 0.0
    assert setfit.config.train.early_stopping is None and setfit.config.train.class_weights is None


@pytest.mark.slow
def test_the_learning_curve_and_recommendation_include_setfit(tmp_path, run_cli):
    config = _job(tmp_path)
    code, out, err = run_cli(
        "compare", str(config), "--models", "config,config:setfit", "--shots", "8,all", "--min-steps", "4", "--quiet"
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "compare" / "compare.json").read_text())
    rows = [(r["candidate"], r["labelled"]) for r in summary["rows"]]
    assert rows == [("config", "8"), ("config", "all"), ("config:setfit", "8")]
    setfit = summary["rows"][2]
    assert 0 <= setfit["quality"] <= 1 and setfit["latency_p50_ms"] > 0 and setfit["train_seconds"] > 0
    assert "config:setfit @ 8" in summary["recommendation"]["within_budget"]
    curve = (tmp_path / "out" / "compare" / "compare.md").read_text().split("Learning curve")[1]
    assert "| config:setfit | " in curve and "| N=8 | N=all |" in out
    record = json.loads((tmp_path / "out" / "compare" / "runs" / "config_setfit-n8" / "lmforge.json").read_text())
    # 2 rounds of 16 pairs (one same-label, one other per example), 2 epochs, batches of 8 pairs
    assert record["tuning"] == "setfit" and record["training"]["steps"] == 2 * (2 * 16) // 8

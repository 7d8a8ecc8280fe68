"""End to end: ``lmforge prompt`` on a few dozen sentiment rows with a tiny causal LM run (few-shot,
calibrated) and with MiniLM similarity writes a run folder that ``lmforge eval`` reads; bad
verbalizers are named."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))

import pytest  # noqa: E402
from served import runs  # noqa: E402,F401  (fixture: a tiny chat SFT run among others)

from conftest import SHARED_DATA, sentiment_rows, write_jsonl  # noqa: E402


def _config(tmp_path, model, *extra) -> Path:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(32, 0))
    dev = write_jsonl(tmp_path / "dev.jsonl", sentiment_rows(24, 1))
    config = tmp_path / "prompt.yaml"
    config.write_text(
        "task: classification\n"
        f"data: {{train: {train}, validation: {dev}, label_names: {{neg: negative, pos: positive}}}}\n"
        f"prompt: {{model: '{model}', shots: 2, selection: balanced, seed: 1}}\n" + "".join(extra)
    )
    return config


def test_few_shot_run_folder_is_read_by_eval(tmp_path, run_cli, runs):
    config = _config(tmp_path, runs["chat"])
    out = tmp_path / "run"
    code, stdout, err = run_cli("prompt", str(config), f"output={out}", "--quiet")
    assert code == 0, err
    for name in ("config.yaml", "lmforge.json", "eval_results.json", "predictions.jsonl", "report.html"):
        assert (out / name).is_file(), name
    results = json.loads((out / "eval_results.json").read_text())
    assert results["validation"]["count"] == 24 and "validation_calibrated" in results
    meta = json.loads((out / "lmforge.json").read_text())
    assert meta["prompt"]["shots"] == 2 and len(meta["prompt"]["examples"]) == 2 and meta["prompt"]["seed"] == 1
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and {r["label"] for r in rows} <= {"negative", "positive"}
    code, stdout, err = run_cli("eval", str(out), "--data", str(tmp_path / "dev.jsonl"), "--json")
    assert code == 0, err
    again = json.loads(stdout)
    assert again["accuracy"] == results["validation"]["accuracy"]  # same prompt, same answers
    assert again["calibrated"]["accuracy"] == results["validation_calibrated"]["accuracy"]


def test_minilm_similarity_zero_shot(tmp_path, run_cli):
    config = _config(tmp_path, "minilm")
    out = tmp_path / "sim"
    code, _, err = run_cli("prompt", str(config), f"output={out}", "--method", "similarity", "--quiet")
    assert code == 0, err
    results = json.loads((out / "eval_results.json").read_text())
    assert results["validation"]["count"] == 24 and "validation_calibrated" not in results
    assert results["validation"]["accuracy"] > 0.5  # the reviews are plain; MiniLM reads them


def test_bad_verbalizers_are_named(tmp_path, run_cli, runs):
    config = _config(tmp_path, runs["chat"], "")
    code, _, err = run_cli("prompt", str(config), f"output={tmp_path / 'x'}", "prompt.verbalizers={neutral: meh}")
    assert code != 0 and "prompt.verbalizers" in err and "neutral" in err


def test_prompting_uses_train_threads(tmp_path, run_cli):
    import torch

    config = _config(tmp_path, "minilm")
    before = torch.get_num_threads()
    try:
        code, _, err = run_cli(
            "prompt", str(config), f"output={tmp_path / 'one'}", "train.threads=1", "--method", "similarity", "--quiet"
        )
        assert code == 0, err
        assert torch.get_num_threads() == 1  # not every core, as before
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "sst2").is_dir(), reason="../shared/data is not here")
def test_zero_shot_on_real_sst2_rows_is_read_back_by_eval(tmp_path, run_cli):
    """The bundled SmolLM2, zero-shot, on 40 real SST-2 dev rows: a run folder ``eval`` reads back."""
    dev = tmp_path / "dev.tsv"
    dev.write_text(
        "".join((SHARED_DATA / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines(True)[:41]), encoding="utf-8"
    )
    config = tmp_path / "sst2.yaml"
    config.write_text(
        "task: classification\n"
        f"data: {{train: {{path: {SHARED_DATA}/sst2/train.tsv, limit: 40, fields: {{text: sentence}}}},\n"
        f"       validation: {dev}, fields: {{text: content}}, label_names: [negative, positive]}}\n"
        "prompt: {model: smollm2, shots: 0}\n"
    )
    out = tmp_path / "zero"
    code, _, err = run_cli("prompt", str(config), f"output={out}", "--quiet")
    assert code == 0, err
    results = json.loads((out / "eval_results.json").read_text())
    assert results["validation"]["count"] == 40 and "validation_calibrated" in results
    code, stdout, err = run_cli("eval", str(out), "--data", str(dev), "--json")
    assert code == 0, err
    again = json.loads(stdout)
    assert again["count"] == 40 and again["accuracy"] == results["validation"]["accuracy"]

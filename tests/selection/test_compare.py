"""``lmforge compare``: candidate names, budgets and the recommendation on hand-made rows; end to end
on a few dozen rows (every candidate in the table and report, a finished run reused, a bad name
refused before anything trains); the learning curve with a prompting candidate."""

import json
import sys
from pathlib import Path

import pytest

from lmforge.errors import ConfigError
from lmforge.selection.candidates import parse_candidates
from lmforge.selection.compare import parse_budget, parse_shots
from lmforge.selection.results import recommend

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))

from served import runs  # noqa: E402,F401  (fixture: a tiny chat SFT run among others)

from conftest import TINY_MODEL, sentiment_rows, write_jsonl  # noqa: E402

SMALL_LSTM = "lstm:model.hidden=16:model.embedding=16"


def test_candidates_become_overrides():
    lora, shots, chat, lstm, sim = parse_candidates(
        f"minilm:lora, prompt:8shot, smollm2:4shots, {SMALL_LSTM}, similarity"
    )
    assert lora.kind == "train" and lora.overrides == ["model=minilm", "tuning.method=lora"]
    assert shots.kind == "prompt" and shots.shots == 8 and shots.overrides == ["prompt.shots=8"]
    assert chat.kind == "prompt" and chat.overrides == ["prompt.model=smollm2", "prompt.shots=4"]
    assert lstm.overrides[0].startswith("model={family: lstm") and lstm.overrides[-2:] == [
        "model.hidden=16",
        "model.embedding=16",
    ]
    assert sim.overrides == ["prompt.method=similarity", "prompt.model=minilm"]
    assert lstm.slug == "lstm_model.hidden=16_model.embedding=16"
    (own,) = parse_candidates("config:train.lr=1e-3")
    assert own.kind == "train" and own.overrides == ["train.lr=1e-3"]  # the config's model as written


@pytest.mark.parametrize(
    "text, named",
    [
        ("lstm,nosuch", "nosuch"),
        ("lstm,lstm", "twice"),
        ("minilm:sideways", "sideways"),
        ("similarity:8shot", "no examples"),
        (" , ", "no candidate"),
    ],
)
def test_bad_candidates_are_named(text, named):
    with pytest.raises(ConfigError, match=named):
        parse_candidates(text)


def test_budget_and_shots_are_checked():
    assert parse_budget("latency_ms=20, memory_mb=1500") == {"latency_ms": 20.0, "memory_mb": 1500.0}
    with pytest.raises(ConfigError, match="speed=3"):
        parse_budget("speed=3")
    with pytest.raises(ConfigError, match="fast"):
        parse_budget("latency_ms=fast")
    assert parse_shots("0,8,all") == ["0", "8", "all"]
    with pytest.raises(ConfigError, match="-8"):
        parse_shots("0,-8")


def _row(name, quality, p50, memory):
    return {"candidate": name, "labelled": None, "quality": quality, "latency_p50_ms": p50, "memory_mb": memory}


def test_recommendation_is_best_within_budget_and_cheapest_within_a_point():
    rows = [
        _row("big", 0.91, 40.0, 1800),
        _row("mid", 0.905, 8.0, 900),
        _row("small", 0.86, 0.5, 300),
        {"candidate": "broken", "labelled": None, "quality": None, "error": "boom"},
    ]
    free = recommend(rows, {})
    assert free["best"] == "big" and free["cheapest_close"] == "mid"  # 0.905 is within 0.01 of 0.91
    tight = recommend(rows, {"latency_ms": 10.0})
    assert tight["best"] == "mid" and tight["within_budget"] == ["mid", "small"]
    assert recommend(rows, {"memory_mb": 100})["best"] is None


def _job(tmp_path) -> Path:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(48, 0))
    dev = write_jsonl(tmp_path / "dev.jsonl", sentiment_rows(16, 1))
    config = tmp_path / "job.yaml"
    config.write_text(
        "task: classification\n"
        f"data: {{train: {train}, validation: {dev}, label_names: {{neg: negative, pos: positive}}}}\n"
        f"model: {TINY_MODEL}\n"
        "train: {epochs: 2, batch_size: 8, lr: 3.0e-3, warmup: 0}\n"
        f"output: {tmp_path / 'out'}\n"
    )
    return config


def test_a_bad_candidate_fails_before_anything_trains(tmp_path, run_cli):
    config = _job(tmp_path)
    code, _, err = run_cli("compare", str(config), "--models", "transformer,gpt9000")
    assert code == 2 and "gpt9000" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    code, _, err = run_cli("compare", str(config), "--models", "transformer:train.lr=fast")
    assert code == 2 and "train.lr" in err and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_compare_reports_every_candidate_and_reuses_finished_runs(tmp_path, run_cli):
    config = _job(tmp_path)
    code, out, err = run_cli(
        "compare", str(config), "--models", f"{SMALL_LSTM},transformer", "--budget", "latency_ms=5000", "--quiet"
    )
    assert code == 0, err
    folder = tmp_path / "out" / "compare"
    summary = json.loads((folder / "compare.json").read_text())
    names = [r["candidate"] for r in summary["rows"]]
    assert names == [SMALL_LSTM, "transformer"] and summary["evaluated"] == 16
    for row in summary["rows"]:
        assert 0 <= row["quality"] <= 1 and row["quality"] == row["macro_f1"]
        for key in (
            "latency_p50_ms",
            "latency_p95_ms",
            "throughput_per_s",
            "memory_mb",
            "size_mb",
            "parameters_total",
            "parameters_trainable",
            "train_seconds",
            "job_seconds",
        ):
            assert isinstance(row[key], (int, float)) and row[key] > 0, key
        assert row["latency_p95_ms"] >= row["latency_p50_ms"]
    assert summary["recommendation"]["best"] in names and summary["recommendation"]["budget"] == {"latency_ms": 5000}
    page = (folder / "report.html").read_text()
    assert all(name in page for name in names) and "Quality against latency" in page and "<img" in page
    assert "| transformer |" in (folder / "compare.md").read_text() and "best within budget" in out

    code, _, err = run_cli("compare", str(config), "--models", f"{SMALL_LSTM},transformer", "--quiet")
    assert code == 0, err
    again = json.loads((folder / "compare.json").read_text())
    assert [r["quality"] for r in again["rows"]] == [r["quality"] for r in summary["rows"]]
    assert [r["job_seconds"] for r in again["rows"]] == [r["job_seconds"] for r in summary["rows"]]  # not re-trained


@pytest.mark.slow
def test_a_changed_candidate_is_not_reused_silently(tmp_path, run_cli):
    config = _job(tmp_path)
    assert run_cli("compare", str(config), "--models", "transformer", "--quiet")[0] == 0
    code, _, err = run_cli("compare", str(config), "train.epochs=1", "--models", "transformer", "--quiet")
    assert code == 2 and "--overwrite" in err
    assert (
        run_cli("compare", str(config), "train.epochs=1", "--models", "transformer", "--overwrite", "--quiet")[0] == 0
    )


@pytest.mark.slow
def test_learning_curve_prompts_and_trains_on_the_same_rows(tmp_path, run_cli, runs):
    config = _job(tmp_path)
    code, out, err = run_cli(
        "compare",
        str(config),
        f"prompt.model={runs['chat']}",
        "--models",
        "transformer,prompt",
        "--shots",
        "0,4,all",
        "--min-steps",
        "10",
        "--quiet",
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "compare" / "compare.json").read_text())
    steps = [(r["candidate"], r["labelled"]) for r in summary["rows"]]
    # training needs labels (no N=0 run); prompting shows N examples in context (and is calibrated)
    assert steps == [
        ("transformer", "4"),
        ("transformer", "all"),
        ("prompt", "0"),
        ("prompt +calibration", "0"),
        ("prompt", "4"),
        ("prompt +calibration", "4"),
    ]
    meta = json.loads((tmp_path / "out" / "compare" / "runs" / "transformer-n4" / "lmforge.json").read_text())
    # 4 examples are one step an epoch at batch 8: --min-steps 10 makes that 10 epochs (2 for 'all')
    assert meta["training"]["examples_seen"] == 10 * 4 and meta["training"]["steps"] == 10
    full = json.loads((tmp_path / "out" / "compare" / "runs" / "transformer-nall" / "lmforge.json").read_text())
    assert full["training"]["examples_seen"] == 2 * 48
    prompted = json.loads((tmp_path / "out" / "compare" / "runs" / "prompt-n4" / "lmforge.json").read_text())
    assert prompted["prompt"]["shots"] == 4
    assert "learning curve" in out and "| N=0 | N=4 | N=all |" in out
    assert (tmp_path / "out" / "compare" / "report.html").read_text().count("<img") == 2  # quality/latency, curve


@pytest.mark.slow
def test_ner_compare_scores_every_candidate_on_the_same_sentences(tmp_path, run_cli, runs):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    from test_ner_end_to_end import ner_sentences, write_conll

    train = write_conll(tmp_path / "train.conll", ner_sentences(40, 0))
    dev = write_conll(tmp_path / "dev.conll", ner_sentences(20, 1))
    config = tmp_path / "ner.yaml"
    config.write_text(
        f"task: token_classification\ndata: {{train: {train}, validation: {dev}}}\n"
        f"prompt: {{model: '{runs['chat']}', max_new_tokens: 8}}\noutput: {tmp_path / 'out'}\n"
    )
    code, out, err = run_cli("compare", str(config), "--models", "ngram,prompt:2shot", "--limit", "6", "--quiet")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "compare" / "compare.json").read_text())
    assert summary["metric"] == "f1" and summary["evaluated"] == 6  # the prompt's sample, for both
    crf, prompted = summary["rows"]
    assert crf["candidate"] == "ngram" and prompted["candidate"] == "prompt:2shot"
    assert crf["f1"] > 0.9 and 0 <= prompted["f1"] <= 1  # templated names: the CRF learns them
    assert prompted["latency_p50_ms"] > 0 and crf["latency_p50_ms"] > 0


def _stop_when_trained_past(process, metrics: Path, step: int) -> str:
    """SIGTERM ``process`` once its run has logged a training step past ``step``; its stderr."""
    import signal
    import time

    deadline = time.time() + 240
    while time.time() < deadline and _last_step(metrics) <= step:
        time.sleep(0.5)
    assert _last_step(metrics) > step, "the worker never trained that far"
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=120)[1]


def _last_step(metrics: Path) -> int:
    if not metrics.is_file():
        return 0
    steps = [json.loads(line).get("step", 0) for line in metrics.read_text().splitlines() if line.strip()]
    return max(steps, default=0)


@pytest.mark.slow
def test_sigterm_stops_compare_and_its_worker_and_the_same_command_resumes(tmp_path):
    import os
    import subprocess

    config = _job(tmp_path)
    command = ["lmforge", "compare", str(config), "train.epochs=500", "train.save_every=20", "--models", "transformer"]
    run = tmp_path / "out" / "compare" / "runs" / "transformer"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = _stop_when_trained_past(process, run / "metrics.jsonl", 0)
    last = err.strip().splitlines()[-1]
    assert process.returncode != 0 and last.startswith("lmforge: error: compare: stopped by SIGTERM")
    step = str(tmp_path / "out" / "compare" / "logs" / "transformer.train.step.json")
    left = subprocess.run(["pgrep", "-f", step], capture_output=True, text=True).stdout.split()
    assert [pid for pid in left if int(pid) != os.getpid()] == []  # no worker left behind
    assert json.loads((run / "lmforge.json").read_text())["finished"] is False
    stopped_at = _last_step(run / "metrics.jsonl")

    again = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _stop_when_trained_past(again, run / "metrics.jsonl", stopped_at)  # it went on, not from step 0
    log = (tmp_path / "out" / "compare" / "logs" / "transformer.train.log").read_text()
    assert "resum" in log.lower()
